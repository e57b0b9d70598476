#include "kernels/cpu/cpu_features.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace crescent::kernels {
namespace {

constexpr int kNoOverride = -1;
std::atomic<int> g_override{kNoOverride};

#if defined(__x86_64__) && defined(CRESCENT_KERNELS_X86)
// XCR0: which register state the OS saves on context switches.
uint64_t ReadXcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

// cpuid feature bits plus the OS's promise (XCR0) to preserve ymm / zmm state.
Isa Detect() {
#if defined(__x86_64__) && defined(CRESCENT_KERNELS_X86)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::kScalar;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12);
  const bool f16c = c & (1u << 29);
  if (!osxsave || !avx || !fma || !f16c) return Isa::kScalar;
  const uint64_t xcr0 = ReadXcr0();
  if ((xcr0 & 0x6) != 0x6) return Isa::kScalar;  // SSE and AVX state
  if (__get_cpuid_max(0, nullptr) < 7) return Isa::kScalar;
  __cpuid_count(7, 0, a, b, c, d);
  if (!(b & (1u << 5))) return Isa::kScalar;  // AVX2
  const bool avx512 = (b & (1u << 16)) &&     // F
                      (b & (1u << 17)) &&     // DQ
                      (b & (1u << 30)) &&     // BW
                      (b & (1u << 31)) &&     // VL
                      (c & (1u << 11)) &&     // VNNI
                      (xcr0 & 0xE0) == 0xE0;  // opmask, upper zmm0-15, zmm16-31 state
  return avx512 ? Isa::kAvx512Vnni : Isa::kAvx2;
#else
  return Isa::kScalar;
#endif
}

Isa EnvCapped() {
  Isa isa = DetectIsa();
  if (const char* env = std::getenv("CRESCENT_ISA")) {
    Isa cap;
    if (ParseIsa(env, &cap) && cap < isa) isa = cap;
  }
  return isa;
}

}  // namespace

Isa DetectIsa() {
  static const Isa detected = Detect();
  return detected;
}

Isa ActiveIsa() {
  const int forced = g_override.load(std::memory_order_relaxed);
  if (forced != kNoOverride) return static_cast<Isa>(forced);
  static const Isa active = EnvCapped();
  return active;
}

Isa SetIsaForTesting(Isa isa) {
  if (isa > DetectIsa()) isa = DetectIsa();
  g_override.store(static_cast<int>(isa), std::memory_order_relaxed);
  return isa;
}

void ClearIsaForTesting() { g_override.store(kNoOverride, std::memory_order_relaxed); }

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512Vnni:
      return "avx512vnni";
  }
  return "unknown";
}

bool ParseIsa(std::string_view name, Isa* isa) {
  if (name == "scalar") {
    *isa = Isa::kScalar;
  } else if (name == "avx2") {
    *isa = Isa::kAvx2;
  } else if (name == "avx512" || name == "avx512vnni") {
    *isa = Isa::kAvx512Vnni;
  } else {
    return false;
  }
  return true;
}

}  // namespace crescent::kernels
