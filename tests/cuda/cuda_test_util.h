// Helpers of the CUDA tests: skip without a GPU, device copies of host vectors, random data.
#pragma once
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <random>
#include <string>
#include <vector>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/memory.h"

namespace keel::cuda_test {

// Skips the calling test (reported SKIPPED, never passed) on a machine without a CUDA device.
#define KEEL_SKIP_WITHOUT_GPU()                                                     \
  do {                                                                              \
    if (keel::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device here";     \
  } while (0)

template <class T>
cuda::DeviceBuffer upload(const std::vector<T>& v) {
  cuda::DeviceBuffer b(v.size() * sizeof(T) + 256);
  cuda::check(cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return b;
}

template <class T>
std::vector<T> download(const cuda::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  cuda::check(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return v;
}

inline void sync() { cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

// An attention batch over device int32 arrays: n_tokens tokens in n_seqs sequences, page table
// rows of max_pages (q_start null: kv_write reads no token ranges).
inline cuda::AttentionBatch attention_batch(int n_tokens, int n_seqs, const cuda::DeviceBuffer& seq,
                                            const cuda::DeviceBuffer& pos, const cuda::DeviceBuffer* q_start,
                                            const cuda::DeviceBuffer& pages, int max_pages) {
  cuda::AttentionBatch b;
  b.n_tokens = n_tokens;
  b.n_seqs = n_seqs;
  b.seq = seq.as<int32_t>();
  b.pos = pos.as<int32_t>();
  b.q_start = q_start ? q_start->as<int32_t>() : nullptr;
  b.pages = pages.as<int32_t>();
  b.max_pages_per_seq = max_pages;
  return b;
}

inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& f : v) f = normal(rng);
  return v;
}

}  // namespace keel::cuda_test
