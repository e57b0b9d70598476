// Which x86 instruction-set level the CPU kernels use, chosen at run time.
//
// Every kernel has a scalar version; AVX2 (with FMA and F16C) and AVX-512 VNNI versions live in
// separate translation units built with their own -m flags, and a dispatcher picks one per call
// from ActiveIsa(). The base build has no -march, so the library runs on any x86-64.
#ifndef CRESCENT_KERNELS_CPU_CPU_FEATURES_H_
#define CRESCENT_KERNELS_CPU_CPU_FEATURES_H_

#include <string_view>

namespace crescent::kernels {

// Ordered: a higher level implies every lower one.
enum class Isa : int {
  kScalar = 0,
  kAvx2 = 1,        // AVX2 + FMA + F16C.
  kAvx512Vnni = 2,  // AVX-512 F/BW/VL/DQ + VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later).
};

// What this CPU and OS support (cpuid feature bits, and XCR0 for the OS saving ymm / zmm state).
// Pure after the first call; thread-safe.
Isa DetectIsa();

// The level the kernels use: DetectIsa(), capped by the environment variable
// CRESCENT_ISA=scalar|avx2|avx512 (read once, at the first call; an unknown value is ignored),
// unless SetIsaForTesting() forced one. Thread-safe.
Isa ActiveIsa();

// Forces ActiveIsa() to `isa`, capped at DetectIsa() so that a test can never select an
// instruction set the machine lacks. Returns the level now active. Thread-safe, but kernels
// already running keep the level they started with; meant for tests that loop over levels.
Isa SetIsaForTesting(Isa isa);

// Undoes SetIsaForTesting(): ActiveIsa() goes back to the detected, environment-capped level.
void ClearIsaForTesting();

// "scalar", "avx2", "avx512vnni".
const char* IsaName(Isa isa);

// Parses the CRESCENT_ISA spellings ("scalar", "avx2", "avx512"; "avx512vnni" too). Returns
// false and leaves *isa alone for anything else.
bool ParseIsa(std::string_view name, Isa* isa);

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_CPU_FEATURES_H_
