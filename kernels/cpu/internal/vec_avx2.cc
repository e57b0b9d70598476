// AVX2 + FMA + F16C vector primitives (compiled with CRESCENT_AVX2_FLAGS).
#define CRESCENT_SIMD_NS avx2
#define CRESCENT_SIMD_TABLE VecKernelsAvx2
#include "kernels/cpu/internal/vec_simd.inc"
