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

}  // namespace keel::cuda
