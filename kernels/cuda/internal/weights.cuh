// Device-side decoding of one value of a weight row as GGUF stores it, and the host-side switch
// that instantiates a kernel per type. Only for .cu files.
#ifndef CRESCENT_KERNELS_CUDA_INTERNAL_WEIGHTS_CUH_
#define CRESCENT_KERNELS_CUDA_INTERNAL_WEIGHTS_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cpu/types.h"

namespace crescent::kernels::cuda::internal {

__device__ __forceinline__ float HalfAt(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const uint16_t*>(p)));
}

// Value k of a row starting at `row` (2-byte aligned), encoded as T. Quantized types: block
// k / 32 of type_size bytes; GGUF's nibble order (values j and j + 16 share byte j).
template <GgmlType T>
__device__ __forceinline__ float WeightAt(const uint8_t* row, int64_t k) {
  if constexpr (T == GgmlType::kF32) {
    return reinterpret_cast<const float*>(row)[k];
  } else if constexpr (T == GgmlType::kF16) {
    return __half2float(reinterpret_cast<const __half*>(row)[k]);
  } else if constexpr (T == GgmlType::kBF16) {
    const uint16_t bits = reinterpret_cast<const uint16_t*>(row)[k];
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  } else {
    constexpr size_t kBytes = GetTypeInfo(T).type_size;
    const uint8_t* b = row + static_cast<size_t>(k / 32) * kBytes;
    const int j = static_cast<int>(k % 32);
    if constexpr (T == GgmlType::kQ8_0) {
      return HalfAt(b) * static_cast<float>(static_cast<int8_t>(b[2 + j]));
    } else {
      constexpr int kCodes = T == GgmlType::kQ4_1 ? 4 : 2;  // bytes before the codes
      const uint8_t byte = b[kCodes + (j & 15)];
      const int q = j < 16 ? (byte & 0x0F) : (byte >> 4);
      if constexpr (T == GgmlType::kQ4_1) return HalfAt(b) * static_cast<float>(q) + HalfAt(b + 2);
      return HalfAt(b) * static_cast<float>(q - 8);  // Q4_0
    }
  }
}

// True for the types WeightAt decodes.
constexpr bool Decodable(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16 ||
         t == GgmlType::kQ4_0 || t == GgmlType::kQ4_1 || t == GgmlType::kQ8_0;
}

// Calls f(std::integral_constant<GgmlType, T>{}) for a Decodable `type`; returns false (and
// calls nothing) for any other type.
template <typename F>
bool DispatchType(GgmlType type, F&& f) {
  switch (type) {
    case GgmlType::kF32: f(std::integral_constant<GgmlType, GgmlType::kF32>{}); return true;
    case GgmlType::kF16: f(std::integral_constant<GgmlType, GgmlType::kF16>{}); return true;
    case GgmlType::kBF16: f(std::integral_constant<GgmlType, GgmlType::kBF16>{}); return true;
    case GgmlType::kQ4_0: f(std::integral_constant<GgmlType, GgmlType::kQ4_0>{}); return true;
    case GgmlType::kQ4_1: f(std::integral_constant<GgmlType, GgmlType::kQ4_1>{}); return true;
    case GgmlType::kQ8_0: f(std::integral_constant<GgmlType, GgmlType::kQ8_0>{}); return true;
    default: return false;
  }
}

// Sum of v over the 32 lanes of a warp, in every lane.
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace crescent::kernels::cuda::internal

#endif  // CRESCENT_KERNELS_CUDA_INTERNAL_WEIGHTS_CUH_
