// IEEE binary16 ("half", GGUF's F16) and bfloat16 conversions, as raw uint16_t bits.
//
// Scalar conversions are exact software implementations: round-to-nearest-even, infinities
// and NaNs kept (a NaN's payload is kept as far as the narrower format holds it; a NaN whose
// kept payload would be zero becomes a quiet NaN), subnormals handled both ways. All pure and
// thread-safe.
#ifndef CRESCENT_KERNELS_CPU_FP16_H_
#define CRESCENT_KERNELS_CPU_FP16_H_

#include <bit>
#include <cstdint>

namespace crescent::kernels {

// binary16 -> binary32; exact (every half is representable as a float).
inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float arithmetic.
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

// binary32 -> binary16 with round-to-nearest-even; overflow gives +-inf.
inline uint16_t F32ToF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t mag = u & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) {  // NaN: keep the top payload bits; never let it become inf.
    uint16_t payload = static_cast<uint16_t>((mag >> 13) & 0x3FFu);
    if (payload == 0) payload = 0x200;
    return static_cast<uint16_t>(sign | 0x7C00u | payload);
  }
  if (mag >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520: inf.
  if (mag < 0x38800000u) {
    // Below the smallest normal half (2^-14): adding 0.5 makes the FPU round the value to a
    // multiple of 2^-24 (the subnormal step) with round-to-nearest-even.
    const float sum = std::bit_cast<float>(mag) + 0.5f;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(sum) - 0x3F000000u));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even.
  const uint32_t odd = (mag >> 13) & 1u;
  return static_cast<uint16_t>(sign | ((mag - 0x38000000u + 0xFFFu + odd) >> 13));
}

// bfloat16 -> binary32; exact.
inline float BF16ToF32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

// binary32 -> bfloat16 with round-to-nearest-even; NaNs stay NaN (made quiet).
inline uint16_t F32ToBF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// Row converters, vectorized for ActiveIsa(). Results equal the scalar functions above for
// every non-NaN input; a NaN stays a NaN but its payload bits may differ between ISAs (the
// hardware converters make signaling NaNs quiet). `n` may be any count >= 0; source and
// destination must not overlap. Thread-safe.
void F16ToF32Row(const uint16_t* src, float* dst, int64_t n);
void F32ToF16Row(const float* src, uint16_t* dst, int64_t n);
void BF16ToF32Row(const uint16_t* src, float* dst, int64_t n);
void F32ToBF16Row(const float* src, uint16_t* dst, int64_t n);

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_FP16_H_
