// A fixed pool of worker threads for data-parallel loops. Created once per session (threads are
// started up front, never during prefill or decode); parallel_for does not allocate.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::cpu {

// A non-owning reference to a callable void(int, int): unlike std::function it never allocates,
// so dispatching work to the pool is allocation-free on the prefill/decode path.
class TaskRef {
 public:
  template <typename F>
  TaskRef(F& fn) : object_(&fn), call_([](void* o, int a, int b) { (*static_cast<F*>(o))(a, b); }) {}
  void operator()(int a, int b) const { call_(object_, a, b); }

 private:
  void* object_;
  void (*call_)(void*, int, int);
};

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads <= 0: hardware concurrency
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, n_threads) once on each of the n_threads threads (the caller is
  // thread 0) and returns when all are done. fn splits the work by its thread index.
  template <typename F>
  void run(F&& fn) {
    run_task(TaskRef(fn));
  }

  // Calls fn(begin, end) over [0, n) split into contiguous ranges, one per thread, each range a
  // multiple of `grain` (except the last).
  template <typename F>
  void parallel_for(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    const int64_t chunks = (n + grain - 1) / grain;
    if (n_threads_ == 1 || chunks == 1) {
      fn(int64_t{0}, n);
      return;
    }
    run([&](int ith, int nth) {
      const int64_t per = (chunks + nth - 1) / nth;
      const int64_t begin = std::min(n, per * ith * grain);
      const int64_t end = std::min(n, per * (ith + 1) * grain);
      if (begin < end) fn(begin, end);
    });
  }

 private:
  void run_task(TaskRef task);
  void worker(int index);
  int n_threads_;
  std::vector<std::thread> workers_;
  // A forward pass dispatches hundreds of short jobs per token: workers spin briefly on
  // generation_ before sleeping on the condition variable, and the caller spins for completion.
  std::mutex mutex_;
  std::condition_variable start_cv_;
  const TaskRef* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace keel::cpu
