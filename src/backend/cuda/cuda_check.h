// CUDA runtime errors as keel::Error: every runtime call goes through check(), with the call
// named, so a failure says what failed and why.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "keel/error.h"

namespace keel::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(std::string("CUDA: ") + what + " failed: " + cudaGetErrorString(status));
}

}  // namespace keel::cuda
