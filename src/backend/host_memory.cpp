#include "backend/host_memory.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "keel/error.h"

namespace keel::backend {
namespace {
bool injected_failure(std::string_view name) {
  const char* fail = std::getenv("KEEL_FAIL_ALLOC");
  return fail && *fail && (std::string_view(fail) == "*" || std::string_view(fail) == name);
}
}  // namespace

void free_host(void* p) { std::free(p); }

Memory allocate_host(std::string_view name, size_t bytes) {
  const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  void* p = injected_failure(name) ? nullptr : std::aligned_alloc(64, rounded);
  if (!p)
    throw Error("cannot allocate " + std::to_string(bytes) + " bytes for buffer '" + std::string(name) +
                    "': out of memory",
                ErrorKind::refused);
  std::memset(p, 0, rounded);
  return Memory(static_cast<uint8_t*>(p), MemoryFree{free_host});
}

}  // namespace keel::backend
