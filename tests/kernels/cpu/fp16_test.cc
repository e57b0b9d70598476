#include "kernels/cpu/fp16.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "tests/kernels/cpu/test_util.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace crescent::kernels {
namespace {

bool IsNanHalf(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0; }
bool IsNanBf16(uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0; }

// Independent oracle: the half nearest to f (ties to the even code), by binary search over the
// ordered positive finite halves, with IEEE overflow (|f| >= 65520 -> inf).
uint16_t NearestHalf(float f) {
  static const std::vector<double> kValues = [] {
    std::vector<double> v;
    for (uint32_t h = 0; h <= 0x7BFF; ++h) {
      const uint32_t e = h >> 10, m = h & 0x3FF;
      v.push_back(e == 0 ? std::ldexp(static_cast<double>(m), -24)
                         : std::ldexp(1.0 + m / 1024.0, static_cast<int>(e) - 15));
    }
    return v;
  }();
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7C00;
  auto it = std::lower_bound(kValues.begin(), kValues.end(), a);
  uint32_t hi = static_cast<uint32_t>(it - kValues.begin());
  if (hi == 0) return sign;
  if (hi > 0x7BFF) return sign | 0x7BFF;
  const uint32_t lo = hi - 1;
  const double dl = a - kValues[lo], dh = kValues[hi] - a;
  uint32_t pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
  return static_cast<uint16_t>(sign | pick);
}

TEST(Fp16Test, ExhaustiveHalfRoundTrip) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    ASSERT_EQ(F32ToF16(f), h) << std::hex << h;
    if (IsNanHalf(static_cast<uint16_t>(h))) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
    }
  }
}

TEST(Fp16Test, HalfToFloatKnownValues) {
  EXPECT_EQ(F16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(F16ToF32(0xC000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7BFF), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToF32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(F16ToF32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_TRUE(std::signbit(F16ToF32(0x8000)));
  EXPECT_EQ(F16ToF32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToF32(0xFC00), -std::numeric_limits<float>::infinity());
}

TEST(Fp16Test, FloatToHalfRoundsToNearestEven) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65519.99f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);  // tie between 65504 and 65536 (odd/even): inf
  EXPECT_EQ(F32ToF16(1e10f), 0x7C00);
  EXPECT_EQ(F32ToF16(-1e10f), 0xFC00);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  // 1 + 3 * 2^-11 is halfway between odd 0x3C01 and even 0x3C02.
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // half the smallest subnormal: even
  EXPECT_EQ(F32ToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 steps: tie -> even (2)
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(F32ToF16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_TRUE(IsNanHalf(F32ToF16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload sits only in the low 13 bits must not turn into infinity.
  EXPECT_TRUE(IsNanHalf(F32ToF16(std::bit_cast<float>(0x7F800001u))));
}

TEST(Fp16Test, FloatToHalfMatchesNearestOracleOnSampledFloats) {
  // Every 4099th bit pattern (about a million floats across all exponents and signs).
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(u));
    const uint16_t got = F32ToF16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(IsNanHalf(got)) << std::hex << u;
    } else if (std::isinf(f)) {
      ASSERT_EQ(got, f > 0 ? 0x7C00 : 0xFC00);
    } else {
      ASSERT_EQ(got, NearestHalf(f)) << std::hex << u << " " << f;
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t HardwareF32ToF16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float HardwareF16ToF32(uint16_t h) { return _cvtsh_ss(h); }

TEST(Fp16Test, MatchesF16cHardware) {
  if (DetectIsa() < Isa::kAvx2) GTEST_SKIP() << "no F16C on this CPU";  // AVX2 level implies F16C
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = F16ToF32(static_cast<uint16_t>(h)),
                b = HardwareF16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      ASSERT_TRUE(std::isnan(a));
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b)) << std::hex << h;
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToF16(f), HardwareF32ToF16(f)) << f;
  }
}
#endif

TEST(Fp16Test, Bf16RoundTripAndRounding) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = BF16ToF32(static_cast<uint16_t>(h));
    if (IsNanBf16(static_cast<uint16_t>(h))) {
      ASSERT_TRUE(std::isnan(f));
      ASSERT_TRUE(IsNanBf16(F32ToBF16(f)));
    } else {
      ASSERT_EQ(F32ToBF16(f), h) << std::hex << h;
    }
  }
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  // 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7: stays 1.
  EXPECT_EQ(F32ToBF16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  // 1 + 3 * 2^-8: halfway between 0x3F81 (odd) and 0x3F82.
  EXPECT_EQ(F32ToBF16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  EXPECT_EQ(F32ToBF16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
  EXPECT_TRUE(IsNanBf16(F32ToBF16(std::bit_cast<float>(0x7F800001u))));
}

TEST(Fp16Test, RowConvertersMatchScalarOnEveryIsa) {
  std::mt19937 rng(1);
  std::vector<float> src = testing::RandomFloats(rng, 1001, -70000.0f, 70000.0f);
  const float specials[] = {0.0f,
                            -0.0f,
                            1e-8f,
                            -6e-5f,
                            65504.0f,
                            65520.0f,
                            1e30f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            3.0e-39f};
  for (size_t i = 0; i < std::size(specials); ++i) src[i * 7] = specials[i];
  for (size_t i = 0; i < 300; ++i) src[500 + i] *= 1e-8f;  // subnormal halves
  for (Isa isa : testing::AvailableIsas()) {
    testing::ScopedIsa scoped(isa);
    for (int64_t n : {0, 1, 7, 8, 9, 1001}) {
      std::vector<uint16_t> h(n), b(n);
      std::vector<float> back(n), back_b(n);
      F32ToF16Row(src.data(), h.data(), n);
      F32ToBF16Row(src.data(), b.data(), n);
      F16ToF32Row(h.data(), back.data(), n);
      BF16ToF32Row(b.data(), back_b.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(h[i], F32ToF16(src[i])) << IsaName(isa) << " i=" << i << " " << src[i];
        ASSERT_EQ(b[i], F32ToBF16(src[i])) << IsaName(isa) << " i=" << i;
        ASSERT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(F16ToF32(h[i])));
        ASSERT_EQ(std::bit_cast<uint32_t>(back_b[i]), std::bit_cast<uint32_t>(BF16ToF32(b[i])));
      }
    }
    // NaNs stay NaNs.
    const float nan_in[9] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    uint16_t h9[9], b9[9];
    F32ToF16Row(nan_in, h9, 9);
    F32ToBF16Row(nan_in, b9, 9);
    for (int i = 0; i < 9; ++i) {
      EXPECT_TRUE(IsNanHalf(h9[i]));
      EXPECT_TRUE(IsNanBf16(b9[i]));
    }
  }
}

}  // namespace
}  // namespace crescent::kernels
