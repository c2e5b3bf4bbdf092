#include "backend/host_memory.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "keel/error.h"

namespace keel::backend {
namespace {
void free_host(void* p) { std::free(p); }
}  // namespace

Memory allocate_host(std::string_view name, size_t bytes) {
  const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p)
    throw Error("cannot allocate " + std::to_string(bytes) + " bytes for '" + std::string(name) + "'",
                ErrorKind::refused);
  std::memset(p, 0, rounded);
  return Memory(static_cast<uint8_t*>(p), MemoryFree{free_host});
}

}  // namespace keel::backend
