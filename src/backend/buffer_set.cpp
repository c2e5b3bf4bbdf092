#include "backend/buffer_set.h"

#include "keel/error.h"

namespace keel::backend {

void BufferSet::add(Backend& backend, std::string name, size_t bytes) {
  if (contains(name)) throw Error("internal: buffer '" + name + "' planned twice");
  Memory data = backend.allocate(name, bytes);
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

}  // namespace keel::backend
