// Which kernel set this CPU runs (matmul.h: Isa, best_isa): CPUID on x86-64; on AArch64 the
// kernel's hardware capability bits (Linux, getauxval) or sysctl (Apple). KEEL_CPU_ISA caps it.
#include <cstdlib>
#include <string>

#include "backend/cpu/matmul.h"

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace keel::cpu {
namespace {

#if defined(__x86_64__)
// CPUID leaf 1, ECX bit 29: clang 14 rejects "f16c" in __builtin_cpu_supports, GCC accepts it.
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

// CPUID leaf 7, sub-leaf 1, EAX bit 4: AVX-VNNI, the VEX-encoded vpdpbusd (clang 14 has no name for
// it in __builtin_cpu_supports).
bool cpu_has_avx_vnni() {
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4)) != 0;
  }();
  return has;
}

Isa detect() {
  __builtin_cpu_init();
  // The AVX2 files are also compiled with -mf16c -mbmi2 (F16C converts f16 scales).
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c() &&
                    __builtin_cpu_supports("bmi2");
  if (!avx2) return Isa::generic;
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  return cpu_has_avx_vnni() ? Isa::avxvnni : Isa::avx2;
}
#elif defined(__aarch64__)
#if defined(__linux__)
// The Linux arm64 ABI's bits (asm/hwcap.h), spelled out so older headers do not matter.
constexpr unsigned long kHwcapAsimdDp = 1ul << 20;  // AT_HWCAP:  HWCAP_ASIMDDP, SDOT/UDOT
constexpr unsigned long kHwcap2I8mm = 1ul << 13;    // AT_HWCAP2: HWCAP2_I8MM, SMMLA/UMMLA
bool has_dotprod() { return (getauxval(AT_HWCAP) & kHwcapAsimdDp) != 0; }
bool has_i8mm() { return (getauxval(AT_HWCAP2) & kHwcap2I8mm) != 0; }
#elif defined(__APPLE__)
bool sysctl_flag(const char* name) {
  int value = 0;
  size_t size = sizeof value;
  return sysctlbyname(name, &value, &size, nullptr, 0) == 0 && value != 0;
}
bool has_dotprod() { return sysctl_flag("hw.optional.arm.FEAT_DotProd"); }
bool has_i8mm() { return sysctl_flag("hw.optional.arm.FEAT_I8MM"); }
#else
bool has_dotprod() { return false; }
bool has_i8mm() { return false; }
#endif

Isa detect() {
  // Advanced SIMD (NEON) is part of every AArch64 CPU; the *_i8mm.cpp files may use SDOT too.
  if (!has_dotprod()) return Isa::neon;
  return has_i8mm() ? Isa::i8mm : Isa::dotprod;
}
#else
Isa detect() { return Isa::generic; }
#endif

bool is_arm(Isa isa) { return isa == Isa::neon || isa == Isa::dotprod || isa == Isa::i8mm; }

// The rank of a level within its architecture's chain (each level includes the ones below).
int rank(Isa isa) {
  switch (isa) {
    case Isa::avx2: case Isa::neon: return 1;
    case Isa::avxvnni: case Isa::dotprod: return 2;
    case Isa::avx512: case Isa::i8mm: return 3;
    default: return 0;
  }
}

// Whether the kernels of `isa` run where `detected` was found (an AVX-512 CPU need not have
// AVX-VNNI: Zen 4 and Ice Lake have AVX-512 VNNI only).
bool within(Isa isa, Isa detected) {
  if (isa == Isa::generic) return true;
#if defined(__x86_64__)
  if (isa == Isa::avxvnni && !cpu_has_avx_vnni()) return false;
#endif
  return is_arm(isa) == is_arm(detected) && rank(isa) <= rank(detected);
}

// KEEL_CPU_ISA (a level's name) lowers the detected level; unknown names and levels the CPU
// lacks are ignored.
Isa capped(Isa detected, const char* cap) {
  if (!cap) return detected;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avxvnni, Isa::avx512, Isa::neon, Isa::dotprod, Isa::i8mm})
    if (std::string(cap) == isa_name(isa) && within(isa, detected)) return isa;
  return detected;
}

const char* isa_cap() {
  static const char* cap = std::getenv("KEEL_CPU_ISA");
  return cap;
}

}  // namespace

Isa best_isa() {
  static const Isa isa = capped(detect(), isa_cap());
  return isa;
}

bool isa_capped_to(Isa isa) { return isa_cap() && std::string(isa_cap()) == isa_name(isa); }

bool isa_supported(Isa isa) { return within(isa, best_isa()); }

namespace {

enum class AmxProducts { bf16, int8 };

// Whether the CPU has the AMX tiles with these products (CPUID.(7, 0).EDX: AMX-BF16 bit 22,
// AMX-INT8 bit 25, AMX-TILE bit 24) and the AVX-512 extension their kernels pair them with
// (AVX512_BF16; VNNI), and the OS grants this process the tile data (Linux 5.16 on, on request;
// asked once). The kernels pair the tiles with AVX-512 (F, BW, VL), so KEEL_CPU_ISA=avx512 keeps
// those without the tiles and a lower cap turns both off.
bool amx_usable(AmxProducts products) {
#if defined(__x86_64__) && defined(__linux__)
  if (!isa_supported(Isa::avx512) || isa_capped_to(Isa::avx512)) return false;
  if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")) return false;
  const bool bf16 = products == AmxProducts::bf16;
  if (!(bf16 ? __builtin_cpu_supports("avx512bf16") : __builtin_cpu_supports("avx512vnni"))) return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned needed = (1u << 24) | (bf16 ? 1u << 22 : 1u << 25);
  if ((edx & needed) != needed) return false;
  static const bool granted = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
#else
  (void)products;
  return false;
#endif
}

}  // namespace

bool amx_bf16_usable() {
  static const bool usable = amx_usable(AmxProducts::bf16);
  return usable;
}

bool amx_int8_usable() {
  static const bool usable = amx_usable(AmxProducts::int8);
  return usable;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::avxvnni: return "avxvnni";
    case Isa::neon: return "neon";
    case Isa::dotprod: return "dotprod";
    case Isa::i8mm: return "i8mm";
    default: return "generic";
  }
}

}  // namespace keel::cpu
