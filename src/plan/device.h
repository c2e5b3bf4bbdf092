// Device profiles: how much memory a session may use in total (the budget) and the largest single
// buffer the device accepts (the cap). `cpu` reads the machine; the Apple profiles carry the
// working-set and maxBufferLength figures of real Macs (docs/ANCHORS.md), so `keel plan` can
// answer "will this run on that Mac" on any machine.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/types.h"

namespace keel::plan {

struct DeviceProfile {
  std::string name;               // "cpu", "apple-m4-max-36g", ... ("+ overrides" when edited)
  std::string memory;             // where buffers live: "host" (cpu) or "unified" (Apple GPU)
  uint64_t budget_bytes = 0;      // everything the session owns, weights included
  uint64_t max_buffer_bytes = 0;  // no single buffer may be larger
  std::string budget_source;      // why the budget is what it is ("MemAvailable", "recommendedMaxWorkingSetSize", "--budget")
  backend::Device backend = backend::Device::host;  // the backend a session on this device runs
  int ordinal = 0;                // which GPU (cuda:N)
  std::string absent{};           // why a session cannot run here ("": it can): no such GPU, no CUDA
};

// GPU `ordinal` ("cuda:N"): budget = the free memory cudaMemGetInfo reports minus the CUDA
// context reserve; without such a GPU (or without CUDA in this build) the budget is 0 and the
// plan refuses unless --budget gives one (so `keel plan --device cuda --budget 80GB` works anywhere).
DeviceProfile cuda_profile(int ordinal);

// Why GPU `gpu` of compute capability major.minor cannot run this keel's CUDA kernels, "" when it
// can: they are built for compute capability 9.0 (sm_90a machine code and compute_90 PTX, which
// a newer GPU's driver compiles), so a GPU before Hopper has no kernel image to load.
std::string gpu_unsupported(const std::string& gpu, int major, int minor);

// Throws keel::Error when a session cannot run on `device` (a GPU this machine or this build
// does not have), with the way out; planning for it (keel plan --budget) needs no check.
void require_present(const DeviceProfile& device);

// The machine this runs on: budget = MemAvailable from /proc/meminfo (total RAM when absent),
// cap = the budget (host memory has no per-buffer limit of its own).
DeviceProfile cpu_profile();

// A named profile ("cpu", "cuda", "cuda:N" or an Apple one); nullopt when unknown.
std::optional<DeviceProfile> find_device(std::string_view name);
// As find_device, but throws keel::Error(usage) listing the names.
DeviceProfile require_device(std::string_view name);
std::vector<std::string> device_names();   // "cpu" first, then the Apple profiles by size
std::vector<DeviceProfile> apple_profiles();

// Applies --budget / --max-buffer overrides (either may be absent); the cap never exceeds the budget.
DeviceProfile with_overrides(DeviceProfile device, std::optional<uint64_t> budget, std::optional<uint64_t> max_buffer);

// The device of the --device / --budget / --max-buffer flags (each may be absent: cpu, no
// overrides). Throws keel::Error(usage) for an unknown name or an unreadable size.
// What --device auto means here: "cuda:N" for the first GPU that can run this keel's CUDA
// kernels (gpu_unsupported), else "cpu", saying on stderr why a GPU that is there goes unused.
// Without --device, $KEEL_DEVICE names the device, else auto.
std::string auto_device_name();

DeviceProfile device_from_flags(std::optional<std::string> name, std::optional<std::string> budget,
                                std::optional<std::string> max_buffer);

// "1048576", "24MiB", "1.5GiB", "27GB", "512K" (K/M/G/T: powers of 1000 with B, of 1024 with iB
// or alone, as in "16G" = 16 GiB). Throws keel::Error(usage) naming the text.
uint64_t parse_bytes(std::string_view text);

// "19.22 GB (17.90 GiB)" style: decimal and binary units side by side.
std::string format_bytes(uint64_t bytes);

}  // namespace keel::plan
