#include "runtime/buffer_set.h"

#include <cstdlib>
#include <cstring>

#include "keel/error.h"

namespace keel::runtime {

void AlignedFree::operator()(void* p) const { std::free(p); }

namespace {
bool injected_failure(std::string_view name) {
  const char* fail = std::getenv("KEEL_FAIL_ALLOC");
  return fail && *fail && (std::string_view(fail) == "*" || std::string_view(fail) == name);
}
}  // namespace

AlignedBytes allocate_aligned(size_t bytes, std::string_view name) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = injected_failure(name) ? nullptr : std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p)
    throw Error("cannot allocate " + std::to_string(bytes) + " bytes for buffer '" + std::string(name) +
                    "': out of memory",
                ErrorKind::refused);
  std::memset(p, 0, rounded == 0 ? 64 : rounded);  // touch every page now: the plan is resident
  return AlignedBytes(static_cast<uint8_t*>(p));
}

void BufferSet::add(std::string name, size_t bytes) {
  if (contains(name)) throw Error("internal: buffer '" + name + "' planned twice");
  AlignedBytes data = allocate_aligned(bytes, name);
  entries_.push_back({std::move(name), bytes, std::move(data)});
  total_ += bytes;
}

bool BufferSet::contains(std::string_view name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return true;
  return false;
}

uint8_t* BufferSet::get(std::string_view name, size_t min_bytes) const {
  for (const Entry& e : entries_) {
    if (e.name != name) continue;
    if (e.bytes < min_bytes)
      throw Error("internal: buffer '" + std::string(name) + "' has " + std::to_string(e.bytes) +
                  " bytes, the forward pass needs " + std::to_string(min_bytes));
    return e.data.get();
  }
  throw Error("internal: buffer '" + std::string(name) + "' is not in the plan");
}

}  // namespace keel::runtime
