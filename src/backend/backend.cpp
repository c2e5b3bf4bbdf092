#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "backend/host_memory.h"
#include "keel/error.h"
#ifdef KEEL_HAS_CUDA
#include "backend/cuda/device_info.h"
#endif

namespace keel::backend {

Memory Backend::allocate_host_block(std::string_view name, size_t bytes) { return allocate_host(name, bytes); }

std::vector<BufferSpec> workspace_buffers(Device device, const WorkloadShape& shape) {
  switch (device) {
    case Device::host: return cpu::workspace_buffers(shape);
    case Device::cuda:
#ifdef KEEL_HAS_CUDA
      return cuda::workspace_buffers(shape);
#else
      break;
#endif
  }
  throw Error("keel was built without CUDA: no backend for device '" + std::string(device_name(device)) + "'",
              ErrorKind::usage);
}

std::unique_ptr<Backend> make_backend(Device device, int n_threads, int ordinal) {
  switch (device) {
    case Device::host: return std::make_unique<cpu::CpuBackend>(n_threads);
    case Device::cuda:
#ifdef KEEL_HAS_CUDA
      return cuda::make_cuda_backend(ordinal);
#else
      break;
#endif
  }
  throw Error("keel was built without CUDA: no backend for device '" + std::string(device_name(device)) + "'",
              ErrorKind::usage);
}

}  // namespace keel::backend
