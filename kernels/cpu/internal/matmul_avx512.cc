// AVX-512 VL + VNNI matmul kernels (compiled with CRESCENT_AVX512_FLAGS).
#define CRESCENT_SIMD_NS avx512
#define CRESCENT_SIMD_ENTRY GemmAvx512
#define CRESCENT_SIMD_QUANTIZE QuantizeGroupedAvx512
#define CRESCENT_SIMD_B1_SHARED GemmB1SharedAvx512
#include "kernels/cpu/internal/matmul_simd.inc"
