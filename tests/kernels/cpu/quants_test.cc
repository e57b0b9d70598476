#include "kernels/cpu/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp16.h"
#include "tests/kernels/cpu/test_util.h"

namespace crescent::kernels {
namespace {

using testing::RefValue;

std::vector<uint8_t> Pattern(size_t n, int mul, int add) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((i * mul + add) & 0xFF);
  return b;
}

void PutHalf(uint8_t* p, float v) {
  const uint16_t h = F32ToF16(v);
  std::memcpy(p, &h, 2);
}

struct Golden {
  GgmlType type;
  int mul, add;
  std::vector<std::pair<int, float>> scale_fields;  // (byte offset, value) written as f16.
  double sum;
  std::vector<std::pair<int, double>> values;
};

// Expected values computed with the `gguf` Python package (gguf.quants.dequantize), an
// implementation independent of this library, over a fixed byte pattern.
const std::vector<Golden>& Goldens() {
  static const std::vector<Golden> g = {
      {GgmlType::kQ4_0,
       37,
       11,
       {{0, 0.125f}},
       -2.625,
       {{0, -0.375}, {1, 0.25}, {15, -1.0}, {16, -0.375}, {17, -0.125}, {31, 0.0}}},
      {GgmlType::kQ4_1,
       37,
       11,
       {{0, 0.0625f}, {2, -0.5f}},
       -0.6875,
       {{0, 0.4375}, {1, -0.25}, {15, 0.125}, {16, 0.0625}, {17, 0.25}, {31, 0.25}}},
      {GgmlType::kQ8_0,
       37,
       11,
       {{0, 0.01f}},
       -1.7603759765625,
       {{0, 0.8501815795898438},
        {1, 1.2202606201171875},
        {15, -1.2802734375},
        {16, -0.9101943969726562},
        {17, -0.5401153564453125},
        {31, -0.4801025390625}}},
      {GgmlType::kQ4_K,
       37,
       11,
       {{0, 0.02f}, {2, 0.01f}},
       1089.0325927734375,
       {{0, 6.311347961425781},
        {1, -0.5101089477539062},
        {31, 3.2106857299804688},
        {32, 0.1600341796875},
        {63, 0.8001708984375},
        {64, 8.411796569824219},
        {100, 1.9004058837890625},
        {127, 1.6203460693359375},
        {128, 8.461807250976562},
        {150, 6.9014739990234375},
        {191, 0.9001922607421875},
        {192, 10.612266540527344},
        {255, 0.9702072143554688}}},
      {GgmlType::kQ5_K,
       53,
       7,
       {{0, 0.02f}, {2, 0.01f}},
       2022.9920654296875,
       {{0, 11.952552795410156},
        {1, 6.011283874511719},
        {31, 0.6101303100585938},
        {32, 9.562042236328125},
        {63, 6.681427001953125},
        {64, 2.0504379272460938},
        {100, 25.385421752929688},
        {127, -0.1400299072265625},
        {128, 23.064926147460938},
        {150, 4.7010040283203125},
        {191, 1.0102157592773438},
        {192, 13.20281982421875},
        {255, 7.0214996337890625}}},
      {GgmlType::kQ6_K,
       41,
       3,
       {{208, 0.003f}},
       -35.29505157470703,
       {{0, -3.4773006439208984},
        {1, 3.6603164672851562},
        {31, -0.6000518798828125},
        {32, -1.827157974243164},
        {63, 1.8601608276367188},
        {64, -9.88885498046875},
        {100, 4.260368347167969},
        {127, 1.3501167297363281},
        {128, 0.6270542144775391},
        {150, -1.0920944213867188},
        {191, -3.6603164672851562},
        {192, -0.9720840454101562},
        {255, 0.6300544738769531}}},
  };
  return g;
}

TEST(QuantsTest, DequantizeMatchesIndependentGoldenValues) {
  for (const Golden& g : Goldens()) {
    const TypeInfo info = GetTypeInfo(g.type);
    std::vector<uint8_t> block = Pattern(info.type_size, g.mul, g.add);
    for (auto [offset, v] : g.scale_fields) PutHalf(block.data() + offset, v);
    std::vector<float> out(info.block_size);
    DequantizeRow(g.type, block.data(), out.data(), info.block_size);
    double sum = 0;
    for (float v : out) sum += v;
    EXPECT_NEAR(sum, g.sum, 1e-4 * std::max(1.0, std::fabs(g.sum))) << info.name;
    for (auto [i, v] : g.values) {
      EXPECT_NEAR(out[i], v, 1e-5 * std::max(1.0, std::fabs(v))) << info.name << " [" << i << "]";
      EXPECT_NEAR(RefValue(g.type, block.data(), i), v, 1e-5 * std::max(1.0, std::fabs(v)))
          << "test reference decoder, " << info.name << " [" << i << "]";
    }
  }
}

TEST(QuantsTest, ScalePackingRoundTripsEveryValue) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    uint8_t sc[8], m[8], packed[12], sc2[8], m2[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = static_cast<uint8_t>(rng() % 64);
      m[j] = static_cast<uint8_t>(rng() % 64);
    }
    PackScalesK4(sc, m, packed);
    UnpackScalesK4(packed, sc2, m2);
    for (int j = 0; j < 8; ++j) {
      ASSERT_EQ(sc2[j], sc[j]);
      ASSERT_EQ(m2[j], m[j]);
      int rs, rm;
      testing::Scale6(packed, j, &rs, &rm);
      ASSERT_EQ(rs, sc[j]);
      ASSERT_EQ(rm, m[j]);
    }
  }
}

// Random bytes with sane f16 scale fields: DequantizeRow must agree with the element-wise
// reference decoder for every value of every layout.
TEST(QuantsTest, DequantizeMatchesReferenceDecoderOnRandomBlocks) {
  std::mt19937 rng(5);
  const GgmlType types[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0,
                            GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K,
                            GgmlType::kF16,  GgmlType::kBF16, GgmlType::kF32};
  for (GgmlType t : types) {
    const TypeInfo info = GetTypeInfo(t);
    const int64_t n = info.block_size == 1 ? 77 : info.block_size * 3;
    std::vector<uint8_t> row(RowBytes(t, n));
    for (auto& b : row) b = static_cast<uint8_t>(rng());
    auto fix_half = [&](size_t off) {
      PutHalf(row.data() + off, std::ldexp(1.0f + (rng() % 100) / 100.0f, -(int)(rng() % 8)));
    };
    const size_t nblocks = info.block_size == 1 ? 0 : static_cast<size_t>(n / info.block_size);
    for (size_t b = 0; b < nblocks; ++b) {
      const size_t base = b * info.type_size;
      switch (t) {
        case GgmlType::kQ4_0:
        case GgmlType::kQ8_0:
          fix_half(base);
          break;
        case GgmlType::kQ4_1:
        case GgmlType::kQ4_K:
        case GgmlType::kQ5_K:
          fix_half(base);
          fix_half(base + 2);
          break;
        case GgmlType::kQ6_K:
          fix_half(base + 208);
          break;
        default:
          break;
      }
    }
    if (t == GgmlType::kF16 || t == GgmlType::kF32) {  // keep NaN/inf bit patterns out
      for (int64_t i = 0; i < n; ++i) {
        if (t == GgmlType::kF16)
          PutHalf(row.data() + 2 * i, (static_cast<int>(rng() % 2001) - 1000) / 7.0f);
        if (t == GgmlType::kF32) {
          const float v = (static_cast<int>(rng() % 2001) - 1000) / 7.0f;
          std::memcpy(row.data() + 4 * i, &v, 4);
        }
      }
    }
    if (t == GgmlType::kBF16) {
      for (int64_t i = 0; i < n; ++i) row[2 * i + 1] &= 0x7E;  // exponent never all-ones
    }
    for (Isa isa : testing::AvailableIsas()) {
      testing::ScopedIsa scoped(isa);
      std::vector<float> out(n);
      DequantizeRow(t, row.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = RefValue(t, row.data(), i);
        ASSERT_NEAR(out[i], ref, 1e-6 * std::max(1.0, std::fabs(ref)))
            << info.name << " i=" << i << " isa=" << IsaName(isa);
      }
    }
  }
}

// Data shapes that stress quantizers: mixed magnitudes, all-negative and all-positive blocks,
// constant blocks, exact zeros, a lone outlier.
std::vector<float> StressData(std::mt19937& rng, int64_t n) {
  std::vector<float> x = testing::RandomFloats(rng, n, -1.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t blk = i / 32;
    switch (blk % 7) {
      case 1:
        x[i] = -std::fabs(x[i]) * 3.0f - 0.5f;
        break;
      case 2:
        x[i] = std::fabs(x[i]) * 0.01f + 2.0f;
        break;
      case 3:
        x[i] = 0.25f;
        break;
      case 4:
        x[i] = 0.0f;
        break;
      case 5:
        x[i] = (i % 32 == 5) ? 40.0f : x[i] * 0.1f;
        break;
      default:
        x[i] *= static_cast<float>(1 + blk % 5);
        break;
    }
  }
  return x;
}

// For each type, the largest error a value may carry: half a quantization step of its block
// (a whole step for Q4_0, whose codes reach -8 d but only +7 d), plus the f16 rounding of the
// block's scales.
double StepBound(GgmlType t, const std::vector<float>& x, int64_t i) {
  struct Stats {
    double lo, hi, amax;
  };
  auto stats = [&](int64_t len) {
    const int64_t b = i / len * len;
    Stats s{x[b], x[b], 0};
    for (int64_t j = b; j < b + len; ++j) {
      s.lo = std::min<double>(s.lo, x[j]);
      s.hi = std::max<double>(s.hi, x[j]);
      s.amax = std::max<double>(s.amax, std::fabs(x[j]));
    }
    return s;
  };
  // K-quants code [min(lo, 0), max(hi, 0)] per sub-block; their 6-bit (Q6_K: 8-bit) scales
  // can widen a sub-block's step by one step of the super-block scale.
  auto k_bound = [&](int64_t sub, double levels, double scale_levels) {
    const Stats s = stats(sub), super = stats(256);
    const double span = std::max(s.hi, 0.0) - std::min(s.lo, 0.0);
    return 0.5 * (span / levels + 3.0 * super.amax / levels / scale_levels) + 1e-6;
  };
  switch (t) {
    case GgmlType::kQ4_0:
      return stats(32).amax / 8 + stats(32).amax * 1e-3;
    case GgmlType::kQ4_1:
      return (stats(32).hi - stats(32).lo) / 30 + stats(32).amax * 2e-3;
    case GgmlType::kQ8_0:
    case GgmlType::kQ8_1:
      return stats(32).amax / 254 + stats(32).amax * 1e-3;
    case GgmlType::kQ8_K:
      return stats(256).amax / 254 * 1.001 + 1e-7;
    case GgmlType::kQ4_K:
      return k_bound(32, 15, 63);
    case GgmlType::kQ5_K:
      return k_bound(32, 31, 63);
    case GgmlType::kQ6_K:
      return 0.5 * (stats(16).amax / 31 + stats(256).amax / 31 / 127 * 1.01) + 1e-6;
    case GgmlType::kF16:
      return std::fabs(x[i]) * std::ldexp(1.0, -11) + 1e-7;
    case GgmlType::kBF16:
      return std::fabs(x[i]) * std::ldexp(1.0, -8);
    default:
      return 0;
  }
}

TEST(QuantsTest, QuantizeThenDequantizeStaysWithinHalfAStep) {
  std::mt19937 rng(11);
  const GgmlType types[] = {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ8_1,
                            GgmlType::kQ8_K, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K,
                            GgmlType::kF16,  GgmlType::kBF16, GgmlType::kF32};
  for (GgmlType t : types) {
    const int64_t n = 256 * 7;
    const std::vector<float> x = StressData(rng, n);
    std::vector<uint8_t> q(RowBytes(t, n));
    ASSERT_TRUE(QuantizeRow(t, x.data(), q.data(), n)) << GetTypeInfo(t).name;
    std::vector<float> back(n);
    DequantizeRow(t, q.data(), back.data(), n);
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double err = std::fabs(static_cast<double>(back[i]) - x[i]);
      const double bound = StepBound(t, x, i);
      ASSERT_LE(err, bound) << GetTypeInfo(t).name << " i=" << i << " x=" << x[i]
                            << " got=" << back[i];
      worst = std::max(worst, err);
      // The element-wise reference decoder reads the same encoding the same way.
      if (t != GgmlType::kQ8_1 && t != GgmlType::kQ8_K) {
        ASSERT_NEAR(RefValue(t, q.data(), i), back[i],
                    1e-6 * std::max(1.0, std::fabs(static_cast<double>(back[i]))));
      }
    }
    if (t == GgmlType::kF32) {
      EXPECT_EQ(worst, 0.0);
    }
  }
}

TEST(QuantsTest, PartnerFormatsCarryTheirSums) {
  std::mt19937 rng(13);
  const std::vector<float> x = testing::RandomFloats(rng, 512, -3.0f, 3.0f);
  std::vector<BlockQ8_1> q81(16);
  ASSERT_TRUE(QuantizeRow(GgmlType::kQ8_1, x.data(), q81.data(), 512));
  for (const BlockQ8_1& b : q81) {
    int sum = 0;
    for (int8_t v : b.qs) sum += v;
    EXPECT_NEAR(F16ToF32(b.s), F16ToF32(b.d) * sum, 2e-3 * std::fabs(F16ToF32(b.d) * sum) + 1e-6);
  }
  std::vector<BlockQ8K> q8k(2);
  ASSERT_TRUE(QuantizeRow(GgmlType::kQ8_K, x.data(), q8k.data(), 512));
  for (const BlockQ8K& b : q8k) {
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b.qs[16 * j + l];
      EXPECT_EQ(b.bsums[j], sum);
    }
  }
}

TEST(QuantsTest, Q8_0MatchesGgmlReferenceRounding) {
  // d = amax / 127 stored as f16, q = round-half-away(x / d).
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = (i - 16) * 0.5f;  // amax = 8 at i = 0
  BlockQ8_0 b;
  ASSERT_TRUE(QuantizeRow(GgmlType::kQ8_0, x, &b, 32));
  EXPECT_EQ(b.d, F32ToF16(8.0f / 127.0f));
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(b.qs[i], static_cast<int8_t>(std::lround(x[i] * (127.0f / 8.0f)))) << i;
  }
}

TEST(QuantsTest, UnsupportedTypesAreRefused) {
  float x[256] = {};
  uint8_t out[1024];
  for (GgmlType t : {GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ2_K, GgmlType::kQ3_K,
                     GgmlType::kI8, GgmlType::kF64}) {
    EXPECT_FALSE(QuantizeRow(t, x, out, 256)) << GetTypeInfo(t).name;
    EXPECT_FALSE(CanDequantize(t)) << GetTypeInfo(t).name;
  }
  for (GgmlType t :
       {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
        GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    EXPECT_TRUE(CanDequantize(t)) << GetTypeInfo(t).name;
  }
}

}  // namespace
}  // namespace crescent::kernels
