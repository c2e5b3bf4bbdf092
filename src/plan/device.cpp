#include "plan/device.h"
#ifdef KEEL_HAS_CUDA
#include "backend/cuda/device_info.h"
#endif

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "keel/error.h"

namespace keel::plan {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

DeviceProfile apple(std::string name, uint64_t working_set, uint64_t max_buffer) {
  return DeviceProfile{.name = std::move(name), .memory = "unified", .budget_bytes = working_set, .max_buffer_bytes = max_buffer,
                       .budget_source = "recommendedMaxWorkingSetSize"};
}

// "MemAvailable:   12345678 kB" -> bytes; 0 when the key is absent.
uint64_t meminfo_bytes(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(key.size() + 1));
    uint64_t kb = 0;
    fields >> kb;
    return kb * 1024;
  }
  return 0;
}

}  // namespace

std::vector<DeviceProfile> apple_profiles() {
  // docs/ANCHORS.md "Apple device limits". The M4 Pro 24 GB figures are quoted there only as
  // ≈17.8 GiB / ≈13.3 GiB; they are stored rounded down to whole MiB.
  return {
      apple("apple-m1-16g", 11'453'251'584ull, 8'589'934'592ull),
      apple("apple-m4-pro-24g", 18'227ull * kMiB, 13'619ull * kMiB),
      apple("apple-m4-max-36g", 28'991'029'248ull, 22'613'000'192ull),
      apple("apple-m4-pro-48g", 40'200'896'512ull, 30'150'672'384ull),
      apple("apple-m5-max-128g", 115'448'725'504ull, 86'586'540'032ull),
      apple("apple-m3-ultra-256g", 223'338'299'392ull, 167'503'724'544ull),
  };
}

DeviceProfile cpu_profile() {
  DeviceProfile d;
  d.name = "cpu";
  d.memory = "host";
  d.budget_bytes = meminfo_bytes("MemAvailable");
  d.budget_source = "MemAvailable";
  if (d.budget_bytes == 0) {
    d.budget_bytes = meminfo_bytes("MemTotal");
    d.budget_source = "MemTotal";
  }
  if (d.budget_bytes == 0) {  // no /proc: plan against something finite rather than nothing
    d.budget_bytes = 8 * kGiB;
    d.budget_source = "default (no /proc/meminfo)";
  }
  d.max_buffer_bytes = d.budget_bytes;
  return d;
}

std::vector<std::string> device_names() {
  std::vector<std::string> names = {"auto", "cpu", "cuda", "cuda:N"};
  for (const DeviceProfile& p : apple_profiles()) names.push_back(p.name);
  return names;
}

std::string gpu_unsupported(const std::string& gpu, int major, int minor) {
  if (major >= 9) return "";
  return gpu + " (compute capability " + std::to_string(major) + "." + std::to_string(minor) +
         ") cannot run this keel's CUDA kernels, which are built for compute capability 9.0 (Hopper: H100, H200)";
}

DeviceProfile cuda_profile(int ordinal) {
  DeviceProfile p;
  p.name = "cuda:" + std::to_string(ordinal);
  p.memory = p.name;
  p.backend = backend::Device::cuda;
  p.ordinal = ordinal;
#ifdef KEEL_HAS_CUDA
  uint64_t free_bytes = 0, total_bytes = 0;
  std::string gpu;
  if (cuda::device_memory(ordinal, free_bytes, total_bytes, gpu)) {
    p.budget_bytes = free_bytes > cuda::kContextReserveBytes ? free_bytes - cuda::kContextReserveBytes : 0;
    p.max_buffer_bytes = p.budget_bytes;
    p.budget_source = gpu + ": " + format_bytes(free_bytes) + " free (cudaMemGetInfo) minus " +
                      format_bytes(cuda::kContextReserveBytes) + " for the CUDA context";
    int major = 0, minor = 0;
    if (cuda::device_capability(ordinal, major, minor)) p.absent = gpu_unsupported(gpu, major, minor);
    return p;
  }
  p.budget_source = "no CUDA device " + std::to_string(ordinal) + " on this machine: give --budget";
  const int count = cuda::device_count();
  p.absent = "no CUDA device " + std::to_string(ordinal) + " on this machine (it has " +
             (count == 0 ? std::string("no NVIDIA GPU the driver can see") : std::to_string(count) + " GPU" + (count > 1 ? "s" : "")) + ")";
#else
  p.budget_source = "keel was built without CUDA: give --budget";
  p.absent = "this keel was built without CUDA (no nvcc at build time; -DKEEL_CUDA=ON requires it)";
#endif
  p.max_buffer_bytes = UINT64_MAX;  // no cap of its own; --budget bounds it
  return p;
}

void require_present(const DeviceProfile& device) {
  if (device.absent.empty()) return;
  const std::string name = device.name.substr(0, device.name.find(' '));  // without " (overridden)"
  throw Error("--device " + name + ": " + device.absent + "; --device cpu runs on the CPU (keel plan --device " +
              name + " --budget 80GB plans for a GPU that is not here)");
}

std::optional<DeviceProfile> find_device(std::string_view name) {
  if (name == "cpu") return cpu_profile();
  if (name == "cuda") return cuda_profile(0);
  if (name.substr(0, 5) == "cuda:" && name.size() > 5 && name.size() < 8 &&
      name.substr(5).find_first_not_of("0123456789") == std::string_view::npos)
    return cuda_profile(std::stoi(std::string(name.substr(5))));
  for (DeviceProfile& p : apple_profiles())
    if (p.name == name) return p;
  return std::nullopt;
}

DeviceProfile require_device(std::string_view name) {
  if (auto d = find_device(name)) return *d;
  std::string list;
  for (const std::string& n : device_names()) list += (list.empty() ? "" : ", ") + n;
  throw Error("unknown device '" + std::string(name) + "' (known: " + list + ")", ErrorKind::usage);
}

DeviceProfile with_overrides(DeviceProfile device, std::optional<uint64_t> budget, std::optional<uint64_t> max_buffer) {
  if (budget) {
    device.budget_bytes = *budget;
    device.budget_source = "--budget";
    if (!max_buffer) device.max_buffer_bytes = std::min(device.max_buffer_bytes, *budget);
  }
  if (max_buffer) device.max_buffer_bytes = *max_buffer;
  device.max_buffer_bytes = std::min(device.max_buffer_bytes, device.budget_bytes);
  if (budget || max_buffer) device.name += " (overridden)";
  return device;
}

namespace {

// --device auto: the first GPU that can run this keel's CUDA kernels, else the CPU (saying why a
// GPU that is there goes unused). The profile it vetted is the one the session gets.
DeviceProfile auto_device() {
#ifdef KEEL_HAS_CUDA
  std::string unused;
  for (int i = 0, n = cuda::device_count(); i < n; ++i) {
    DeviceProfile gpu = cuda_profile(i);
    if (gpu.absent.empty()) return gpu;
    unused += (unused.empty() ? "" : "; ") + gpu.absent;
  }
  if (!unused.empty()) std::fprintf(stderr, "keel: running on the CPU: %s\n", unused.c_str());
#endif
  return cpu_profile();
}

}  // namespace

std::string auto_device_name() { return auto_device().name; }

DeviceProfile device_from_flags(std::optional<std::string> name, std::optional<std::string> budget,
                                std::optional<std::string> max_buffer) {
  std::optional<uint64_t> b, m;
  if (budget) b = parse_bytes(*budget);
  if (max_buffer) m = parse_bytes(*max_buffer);
  const char* env = std::getenv("KEEL_DEVICE");
  const std::string chosen = name.value_or(env && *env ? env : "auto");
  return with_overrides(chosen == "auto" ? auto_device() : require_device(chosen), b, m);
}

uint64_t parse_bytes(std::string_view text) {
  auto bad = [&] {
    return Error("cannot read '" + std::string(text) +
                     "' as a size in bytes (examples: 1048576, 24MiB, 1.5GiB, 27GB)",
                 ErrorKind::usage);
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) throw bad();
  double number = 0;
  try {
    size_t used = 0;
    number = std::stod(std::string(text.substr(0, i)), &used);
    if (used != i) throw bad();
  } catch (const std::logic_error&) {
    throw bad();
  }
  std::string unit;
  for (char c : text.substr(i))
    if (c != ' ') unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  const std::string prefixes = "kmgt";
  if (scale == 0 && !unit.empty() && prefixes.find(unit[0]) != std::string::npos) {
    const int power = static_cast<int>(prefixes.find(unit[0])) + 1;
    const std::string rest = unit.substr(1);
    if (rest == "b") scale = std::pow(1000.0, power);
    else if (rest.empty() || rest == "ib") scale = std::pow(1024.0, power);
  }
  if (scale == 0) throw bad();
  const double bytes = number * scale;
  if (!(bytes >= 1) || bytes > 9.0e18) throw bad();
  return static_cast<uint64_t>(std::llround(bytes));
}

std::string format_bytes(uint64_t bytes) {
  char buf[96];
  const double b = static_cast<double>(bytes);
  if (bytes >= 1'000'000'000ull)
    std::snprintf(buf, sizeof buf, "%.2f GB (%.2f GiB)", b / 1e9, b / kGiB);
  else if (bytes >= 1'000'000ull)
    std::snprintf(buf, sizeof buf, "%.2f MB (%.2f MiB)", b / 1e6, b / kMiB);
  else if (bytes >= 1'000ull)
    std::snprintf(buf, sizeof buf, "%.1f kB (%.1f KiB)", b / 1e3, b / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

}  // namespace keel::plan
