// What the rest of keel (planner, backend factory) asks of the CUDA backend, in plain C++ (no
// CUDA headers): declared always, defined in keel_cuda, called only where KEEL_HAS_CUDA is set.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace keel::cuda {

// Device memory the CUDA context, cuBLAS's handle state and the kernel images take outside the
// plan: the device profile subtracts it from the free memory cudaMemGetInfo reports. Measured on
// the H200 (CUDA 13, a 27B qwen35 session at 173K tokens): 1.22 GB beyond the plan's buffers.
constexpr uint64_t kContextReserveBytes = uint64_t{3} << 29;  // 1.5 GiB

// CUDA devices on this machine (0 without a driver or a GPU).
int device_count();

// Free and total memory of device `ordinal` and its name (false when there is no such device).
bool device_memory(int ordinal, uint64_t& free_bytes, uint64_t& total_bytes, std::string& name);

// Compute capability of device `ordinal` (false when there is no such device or it cannot be read).
bool device_capability(int ordinal, int& major, int& minor);

// The CUDA backend's own workspaces for `shape` (names "matmul", "blas", "attention", "meta").
std::vector<backend::BufferSpec> workspace_buffers(const backend::WorkloadShape& shape);

// The backend on device `ordinal` (throws keel::Error(usage) when there is no such device).
std::unique_ptr<backend::Backend> make_cuda_backend(int ordinal);

}  // namespace keel::cuda
