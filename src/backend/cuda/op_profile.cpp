#include "backend/cuda/op_profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace keel::cuda {

OpProfile::OpProfile(cudaStream_t stream) : stream_(stream) {
  const char* env = std::getenv("KEEL_PROFILE");
  enabled_ = env && std::strcmp(env, "0") != 0;
}

OpProfile::~OpProfile() {
  if (!enabled_) return;
  collect();
  for (Pending& p : pending_) {
    cudaEventDestroy(p.start);
    cudaEventDestroy(p.stop);
  }
  std::vector<std::pair<std::string, std::pair<double, long>>> rows(totals_.begin(), totals_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  double all = 0;
  for (const auto& r : rows) all += r.second.first;
  std::fprintf(stderr, "device time per op (KEEL_PROFILE):\n");
  for (const auto& [name, t] : rows)
    std::fprintf(stderr, "  %-18s %10.1f ms %5.1f%%  %8ld calls\n", name.c_str(), t.first, 100.0 * t.first / all, t.second);
  std::fprintf(stderr, "  %-18s %10.1f ms\n", "total", all);
}

OpProfile::Scope OpProfile::time(const char* name) {
  if (!enabled_) return Scope(nullptr, 0);
  if (used_ == pending_.size()) {
    Pending p{name, nullptr, nullptr};
    cudaEventCreate(&p.start);
    cudaEventCreate(&p.stop);
    pending_.push_back(p);
  }
  pending_[used_].name = name;
  cudaEventRecord(pending_[used_].start, stream_);
  return Scope(this, used_++);
}

OpProfile::Scope::~Scope() {
  if (p_) cudaEventRecord(p_->pending_[index_].stop, p_->stream_);
}

void OpProfile::collect() {
  if (!enabled_ || used_ == 0) return;
  cudaEventSynchronize(pending_[used_ - 1].stop);
  for (size_t i = 0; i < used_; ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, pending_[i].start, pending_[i].stop);
    auto& t = totals_[pending_[i].name];
    t.first += ms;
    t.second += 1;
  }
  used_ = 0;
}

}  // namespace keel::cuda
