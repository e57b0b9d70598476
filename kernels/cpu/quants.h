// Quantized block layouts, byte for byte as GGUF (ggml) stores them, and row-level
// quantize / dequantize.
//
// Every struct below is the on-disk block; multi-byte fields are little-endian f16 bits
// (uint16_t), read with F16ToF32. REQUIRES for any pointer to blocks: aligned to the block's
// alignof (2 bytes; 4 for BlockQ8K) — GGUF tensor data is 32-byte aligned and every block size is
// a multiple of its alignment.
#ifndef CRESCENT_KERNELS_CPU_QUANTS_H_
#define CRESCENT_KERNELS_CPU_QUANTS_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/types.h"

namespace crescent::kernels {

inline constexpr int kQK = 32;    // values per block of the 32-value formats.
inline constexpr int kQKK = 256;  // values per super-block of the K-quants.

// value[i] = d * (q[i] - 8); q[i] for i < 16 is the low nibble of qs[i], for i >= 16 the high
// nibble of qs[i - 16].
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// value[i] = d * q[i] + m; nibbles as in BlockQ4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};

// value[i] = d * qs[i].
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};

// value[i] = d * qs[i]; s = d * sum(qs), the partner of Q4_1's min in dot products.
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[kQK];
};

// 8 sub-blocks of 32: value = d * sc[j] * q - dmin * m[j], with 6-bit sc[j], m[j] packed in
// `scales` (see UnpackScalesK4) and 4-bit q: the 32 bytes qs[32c .. 32c+31] hold sub-block 2c in
// their low nibbles and sub-block 2c+1 in their high nibbles.
struct BlockQ4K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};

// As BlockQ4K with a fifth bit: bit j of qh[l] is bit 4 of element l of sub-block j.
struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};

// 16 sub-blocks of 16: value = d * scales[j] * (q - 32), q 6-bit. In each half h (128 values),
// element 32k + l (k < 4, l < 32) has low 4 bits in ql[64h + l + 32 (k & 1)] (low nibble for
// k < 2, high nibble otherwise) and high 2 bits at bit 2k of qh[32h + l].
struct BlockQ6K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};

// value[i] = d * qs[i]; bsums[j] = sum of qs[16j .. 16j+15]. Activations' partner of the
// K-quants; d is a float here, not f16.
struct BlockQ8K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};

static_assert(sizeof(BlockQ4_0) == GetTypeInfo(GgmlType::kQ4_0).type_size);
static_assert(sizeof(BlockQ4_1) == GetTypeInfo(GgmlType::kQ4_1).type_size);
static_assert(sizeof(BlockQ8_0) == GetTypeInfo(GgmlType::kQ8_0).type_size);
static_assert(sizeof(BlockQ8_1) == GetTypeInfo(GgmlType::kQ8_1).type_size);
static_assert(sizeof(BlockQ4K) == GetTypeInfo(GgmlType::kQ4_K).type_size);
static_assert(sizeof(BlockQ5K) == GetTypeInfo(GgmlType::kQ5_K).type_size);
static_assert(sizeof(BlockQ6K) == GetTypeInfo(GgmlType::kQ6_K).type_size);
static_assert(sizeof(BlockQ8K) == GetTypeInfo(GgmlType::kQ8_K).type_size);
static_assert(GetTypeInfo(GgmlType::kQ4_K).block_size == kQKK);

// Unpacks the 12-byte scale field of Q4_K / Q5_K into 8 six-bit scales and 8 six-bit mins.
void UnpackScalesK4(const uint8_t packed[12], uint8_t sc[8], uint8_t m[8]);
// The inverse. REQUIRES: every sc[j], m[j] < 64.
void PackScalesK4(const uint8_t sc[8], const uint8_t m[8], uint8_t packed[12]);

// True for the types DequantizeRow handles: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q8_1, Q4_K, Q5_K,
// Q6_K, Q8_K.
bool CanDequantize(GgmlType type);

// Decodes the row of `n` values at `src` into dst[0..n). REQUIRES: CanDequantize(type),
// n % block_size == 0. Thread-safe.
void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n);

// Encodes src[0..n) as RowBytes(type, n) bytes at `dst`. Q8_0, Q8_1, Q4_0 and Q4_1 follow
// ggml's reference quantizers (scale from the block's extreme values, its rounding); Q8_K uses
// d = amax / 127 and bsums; Q4_K, Q5_K and Q6_K use a simple quantizer (no search for the best
// scales) that rounds scales up so that every value lies within half a quantization step of the
// input; F32, F16 and BF16 are converted. Returns false, writing nothing, for any other type.
// REQUIRES: n % block_size == 0; finite inputs. Thread-safe.
bool QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n);

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_QUANTS_H_
