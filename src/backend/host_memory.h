// Host memory for the plan's host-side buffers (the CPU backend's everything; any backend's
// per-call metadata): zeroed, 64-byte aligned, every page touched now so the plan is resident.
#pragma once
#include <cstddef>
#include <string_view>

#include "backend/backend.h"

namespace keel::backend {

// Throws keel::Error(refused) naming `name` when it cannot. Fault injection for tests: with the
// environment variable KEEL_FAIL_ALLOC set to a buffer's name (or "*": every buffer), that
// allocation fails as if memory were exhausted.
Memory allocate_host(std::string_view name, size_t bytes);
// Frees what allocate_host returned (its Memory's deleter; for a backend that rewraps it).
void free_host(void* p);

}  // namespace keel::backend
