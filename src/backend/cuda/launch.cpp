#include <cstdlib>
#include <cstring>

#include "backend/cuda/launch.cuh"

namespace keel::cuda {

bool pdl_enabled() {
  static const bool enabled = [] {
    const char* pdl = std::getenv("KEEL_CUDA_PDL");
    const char* profile = std::getenv("KEEL_PROFILE");
    return !(pdl && std::strcmp(pdl, "0") == 0) && !(profile && std::strcmp(profile, "0") != 0);
  }();
  return enabled;
}

bool wgmma_available() {
  static const bool available = [] {
    const char* env = std::getenv("KEEL_CUDA_WGMMA");
    if (env && std::strcmp(env, "0") == 0) return false;
    int device = 0, major = 0, minor = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
           cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess && major == 9 &&
           minor == 0;
  }();
  return available;
}

}  // namespace keel::cuda
