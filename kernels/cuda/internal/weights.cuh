// Device-side decoding of one value of a weight row as GGUF stores it, and the host-side switch
// that instantiates a kernel per type. Only for .cu files.
#ifndef CRESCENT_KERNELS_CUDA_INTERNAL_WEIGHTS_CUH_
#define CRESCENT_KERNELS_CUDA_INTERNAL_WEIGHTS_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/types.h"

namespace crescent::kernels::cuda::internal {

// An f16 at p (2-byte aligned). The host path (tests/kernels/cuda/weights_test.cu checks the
// decoders below on the host, where there may be no device) is the CPU kernels' conversion.
__host__ __device__ __forceinline__ float HalfAt(const uint8_t* p) {
  const uint16_t bits = *reinterpret_cast<const uint16_t*>(p);
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(bits));
#else
  return F16ToF32(bits);
#endif
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block, from its 12-byte
// packed field (kernels::UnpackScalesK4's layout).
__host__ __device__ __forceinline__ void ScaleMinK4(const uint8_t* packed, int j, int* sc,
                                                    int* m) {
  if (j < 4) {
    *sc = packed[j] & 63;
    *m = packed[j + 4] & 63;
  } else {
    *sc = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
    *m = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

// Value k of a row starting at `row` (2-byte aligned), encoded as T, as kernels::DequantizeRow
// decodes it. Q4_0 / Q4_1 / Q8_0: block k / 32 of type_size bytes, GGUF's nibble order (values
// j and j + 16 share byte j). K-quants: super-block k / 256 (kernels/cpu/quants.h lays out
// BlockQ4K, BlockQ5K and BlockQ6K).
template <GgmlType T>
__host__ __device__ __forceinline__ float WeightAt(const uint8_t* row, int64_t k) {
  if constexpr (T == GgmlType::kQ4_K || T == GgmlType::kQ5_K) {
    // d, dmin, scales[12], (Q5_K: qh[32],) qs[128].
    constexpr size_t kBytes = GetTypeInfo(T).type_size;
    const uint8_t* b = row + static_cast<size_t>(k / 256) * kBytes;
    const int i = static_cast<int>(k % 256);
    const int j = i / 32;  // sub-block
    const int l = i % 32;
    int sc, m;
    ScaleMinK4(b + 4, j, &sc, &m);
    const uint8_t* qs = b + (T == GgmlType::kQ5_K ? 48 : 16);
    const uint8_t byte = qs[32 * (j / 2) + l];
    int q = (j & 1) ? (byte >> 4) : (byte & 0x0F);
    if constexpr (T == GgmlType::kQ5_K) q |= ((b[16 + l] >> j) & 1) << 4;
    const float d = HalfAt(b) * static_cast<float>(sc);
    const float mn = HalfAt(b + 2) * static_cast<float>(m);
    return d * static_cast<float>(q) - mn;
  } else if constexpr (T == GgmlType::kQ6_K) {
    // ql[128], qh[64], scales[16] (int8), d. Half h of 128 values; quarter c of 32 in it.
    constexpr size_t kBytes = GetTypeInfo(T).type_size;
    const uint8_t* b = row + static_cast<size_t>(k / 256) * kBytes;
    const int i = static_cast<int>(k % 256);
    const int h = i / 128, c = (i % 128) / 32, l = i % 32;
    const uint8_t lo = b[64 * h + l + 32 * (c & 1)];
    const int low4 = c < 2 ? (lo & 0x0F) : (lo >> 4);
    const int high2 = (b[128 + 32 * h + l] >> (2 * c)) & 3;
    const int q = (low4 | (high2 << 4)) - 32;
    const int sc = static_cast<int8_t>(b[192 + 8 * h + l / 16 + 2 * c]);
    return HalfAt(b + 208) * static_cast<float>(sc * q);
  } else if constexpr (T == GgmlType::kF32) {
    return reinterpret_cast<const float*>(row)[k];
  } else if constexpr (T == GgmlType::kF16) {
    return HalfAt(row + 2 * k);
  } else if constexpr (T == GgmlType::kBF16) {
    const uint16_t bits = reinterpret_cast<const uint16_t*>(row)[k];
#ifdef __CUDA_ARCH__
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
#else
    return BF16ToF32(bits);
#endif
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
         t == GgmlType::kQ4_0 || t == GgmlType::kQ4_1 || t == GgmlType::kQ8_0 ||
         t == GgmlType::kQ4_K || t == GgmlType::kQ5_K || t == GgmlType::kQ6_K;
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
    case GgmlType::kQ4_K: f(std::integral_constant<GgmlType, GgmlType::kQ4_K>{}); return true;
    case GgmlType::kQ5_K: f(std::integral_constant<GgmlType, GgmlType::kQ5_K>{}); return true;
    case GgmlType::kQ6_K: f(std::integral_constant<GgmlType, GgmlType::kQ6_K>{}); return true;
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
