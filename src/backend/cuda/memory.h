// Device memory, pinned host memory and streams as RAII handles, and the planned arena every
// device byte of a session comes from.
//
// Rule (docs/ARCHITECTURE.md, "Plan, then allocate once"): a session allocates its whole plan at
// start-up through one DeviceArena, then freezes it; after that, an allocation throws. Every
// cudaMalloc keel makes goes through device_malloc() below, which counts the calls process-wide
// so a test can assert that none happens after start.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace keel::cuda {

// cudaMalloc calls keel has made in this process (all devices, all sessions). A diagnostic
// counter, read by tests; it holds no state that any computation depends on.
uint64_t device_malloc_calls();

// cudaMalloc through keel's counter (throws keel::Error with the size) and its cudaFree.
void* device_malloc(size_t bytes);
void device_free(void* ptr);

// Number of CUDA devices (0 when there is no driver or no GPU; never throws).
int device_count();

// Owns one cudaMalloc allocation on the current device.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);  // zero-filled; throws keel::Error with the size when it cannot
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <class T> T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Owns page-locked host memory (cudaMallocHost): the staging buffer for uploads.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Owns a non-blocking stream.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

// Owns an event (timing enabled).
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream) const;
  void synchronize() const;
  float ms_since(const Event& start) const;  // elapsed from `start` to this event

 private:
  cudaEvent_t event_ = nullptr;
};

// The planned device memory of one session: named buffers requested at start, one cudaMalloc
// each (each buffer is bounded by the plan's per-buffer cap, so none grows with the context).
// freeze() ends the start-up; any later allocate() throws.
class DeviceArena {
 public:
  // Allocates `bytes` (rounded up to 256) for `name`; throws after freeze() or when the device
  // refuses, naming the buffer, its size and the bytes already held.
  void* allocate(const std::string& name, size_t bytes);
  void freeze() { frozen_ = true; }
  bool frozen() const { return frozen_; }
  uint64_t bytes() const { return total_; }
  size_t buffers() const { return buffers_.size(); }

 private:
  struct Named {
    std::string name;
    DeviceBuffer buffer;
  };
  std::vector<Named> buffers_;
  uint64_t total_ = 0;
  bool frozen_ = false;
};

// Upload `bytes` from host memory `src` (any, e.g. mmapped) to `dst` on the device through the
// pinned staging buffer, in pieces of at most staging.bytes()/2 (double-buffered: the copy of
// one piece overlaps the memcpy into the other half). Host memory used stays bounded by the
// staging size. Synchronous on return.
void upload_staged(void* dst, const void* src, size_t bytes, PinnedBuffer& staging, cudaStream_t stream);

}  // namespace keel::cuda
