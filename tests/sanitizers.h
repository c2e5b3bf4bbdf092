// KEEL_TEST_UNDER_ASAN is 1 when the suite is built with AddressSanitizer, by GCC (which defines
// __SANITIZE_ADDRESS__) or by clang (which answers __has_feature): tests of resident memory or
// address-space limits skip themselves there, since the sanitizer's shadow and quarantine are not
// the program's memory.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define KEEL_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEL_TEST_UNDER_ASAN 1
#endif
#endif
#ifndef KEEL_TEST_UNDER_ASAN
#define KEEL_TEST_UNDER_ASAN 0
#endif
