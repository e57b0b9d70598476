// AVX-512 vector primitives (compiled with CRESCENT_AVX512_FLAGS).
#define CRESCENT_SIMD_NS avx512
#define CRESCENT_SIMD_TABLE VecKernelsAvx512
#include "kernels/cpu/internal/vec_simd.inc"
