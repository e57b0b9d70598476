// AVX2 + FMA + F16C matmul kernels (compiled with CRESCENT_AVX2_FLAGS).
#define CRESCENT_SIMD_NS avx2
#define CRESCENT_SIMD_ENTRY GemmAvx2
#define CRESCENT_SIMD_QUANTIZE QuantizeGroupedAvx2
#include "kernels/cpu/internal/matmul_simd.inc"
