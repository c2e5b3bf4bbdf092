#include "backend/cuda/memory.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "keel/error.h"

namespace keel::cuda {
namespace {

std::atomic<uint64_t> g_device_malloc_calls{0};

std::string gib(uint64_t bytes) { return std::to_string(static_cast<double>(bytes) / (1ull << 30)) + " GiB"; }

}  // namespace

uint64_t device_malloc_calls() { return g_device_malloc_calls.load(); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

void* device_malloc(size_t bytes) {
  ++g_device_malloc_calls;
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error("CUDA: cannot allocate " + std::to_string(bytes) + " bytes of device memory: " +
                cudaGetErrorString(status));
  }
  return ptr;
}

void device_free(void* ptr) {
  if (ptr) cudaFree(ptr);
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  ptr_ = device_malloc(bytes);
  // cudaMemset runs on the legacy default stream, unordered with non-blocking streams: wait for
  // it, or a kernel on such a stream could write the buffer before the zeros land.
  cudaError_t zeroed = cudaMemset(ptr_, 0, bytes);
  if (zeroed == cudaSuccess) zeroed = cudaStreamSynchronize(nullptr);
  if (zeroed != cudaSuccess) {
    cudaFree(ptr_);
    ptr_ = nullptr;
    check(zeroed, "cudaMemset");
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t status = cudaMallocHost(&ptr_, bytes);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    ptr_ = nullptr;
    throw Error("CUDA: cannot allocate " + std::to_string(bytes) + " bytes of pinned host memory: " +
                cudaGetErrorString(status));
  }
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Stream::Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
Stream::~Stream() {
  if (stream_) cudaStreamDestroy(stream_);
}
void Stream::synchronize() const { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

Event::Event() { check(cudaEventCreate(&event_), "cudaEventCreate"); }
Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}
void Event::record(cudaStream_t stream) const { check(cudaEventRecord(event_, stream), "cudaEventRecord"); }
void Event::synchronize() const { check(cudaEventSynchronize(event_), "cudaEventSynchronize"); }
float Event::ms_since(const Event& start) const {
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start.event_, event_), "cudaEventElapsedTime");
  return ms;
}

void* DeviceArena::allocate(const std::string& name, size_t bytes) {
  if (frozen_)
    throw Error("internal: device buffer '" + name + "' requested after session start; every device byte must be planned");
  const size_t rounded = (bytes + 255) / 256 * 256;
  try {
    buffers_.push_back({name, DeviceBuffer(rounded)});
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (buffer '" + name + "', " + gib(total_) + " already allocated)");
  }
  total_ += rounded;
  return buffers_.back().buffer.data();
}

void upload_staged(void* dst, const void* src, size_t bytes, PinnedBuffer& staging, cudaStream_t stream) {
  if (bytes == 0) return;
  const size_t half = staging.bytes() / 2;
  if (half == 0) throw Error("internal: upload staging buffer is empty");
  Event done[2];
  bool used[2] = {false, false};
  auto* out = static_cast<uint8_t*>(dst);
  const auto* in = static_cast<const uint8_t*>(src);
  int slot = 0;
  for (size_t off = 0; off < bytes; off += half, slot ^= 1) {
    const size_t n = std::min(half, bytes - off);
    if (used[slot]) done[slot].synchronize();  // the copy out of this half has finished
    uint8_t* stage = static_cast<uint8_t*>(staging.data()) + slot * half;
    std::memcpy(stage, in + off, n);
    check(cudaMemcpyAsync(out + off, stage, n, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (upload)");
    done[slot].record(stream);
    used[slot] = true;
  }
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (upload)");
}

}  // namespace keel::cuda
