// Device time per backend operation, for finding where a workload's time goes: with
// KEEL_PROFILE=1 in the environment every op of the CUDA backend is bracketed by two CUDA events
// and, when the backend is destroyed, the sums per op go to stderr. Off (the default) it records
// nothing and costs one branch per op.
#pragma once
#include <cuda_runtime_api.h>

#include <map>
#include <string>
#include <vector>

namespace keel::cuda {

class OpProfile {
 public:
  explicit OpProfile(cudaStream_t stream);
  ~OpProfile();  // prints the table
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  class Scope {
   public:
    Scope(OpProfile* p, size_t index) : p_(p), index_(index) {}
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfile* p_;
    size_t index_;
  };
  // Times the rest of the caller's block as op `name` (a string literal).
  Scope time(const char* name);
  // Adds the finished ops' times to the sums (waits for them).
  void collect();

 private:
  struct Pending {
    const char* name;
    cudaEvent_t start, stop;
  };
  bool enabled_ = false;
  cudaStream_t stream_;
  std::vector<Pending> pending_;  // this round's ops; events reused across rounds
  size_t used_ = 0;
  std::map<std::string, std::pair<double, long>> totals_;  // name -> (ms, calls)
};

}  // namespace keel::cuda
