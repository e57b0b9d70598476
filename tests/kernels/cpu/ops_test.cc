#include "kernels/cpu/ops.h"

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/quants.h"
#include "tests/kernels/cpu/test_util.h"

namespace crescent::kernels {
namespace {

using testing::AvailableIsas;
using testing::ScopedIsa;

TEST(OpsTest, RmsNormMatchesDoubleReference) {
  std::mt19937 rng(1);
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    for (int64_t n : {1, 7, 64, 576, 1001}) {
      const std::vector<float> x = testing::RandomFloats(rng, n, -4.0f, 4.0f);
      const std::vector<float> w = testing::RandomFloats(rng, n, 0.5f, 1.5f);
      std::vector<float> out(n), out_nw(n), inplace = x;
      const float eps = 1e-5f;
      RmsNorm(x.data(), w.data(), n, eps, out.data());
      RmsNorm(x.data(), nullptr, n, eps, out_nw.data());
      RmsNorm(inplace.data(), w.data(), n, eps, inplace.data());
      double ss = 0;
      for (float v : x) ss += static_cast<double>(v) * v;
      const double scale = 1.0 / std::sqrt(ss / n + eps);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = x[i] * scale * w[i];
        ASSERT_NEAR(out[i], ref, 1e-5 * (1 + std::fabs(ref))) << IsaName(isa) << " n=" << n;
        ASSERT_NEAR(out_nw[i], x[i] * scale, 1e-5 * (1 + std::fabs(x[i] * scale)));
        ASSERT_EQ(inplace[i], out[i]);
      }
    }
  }
}

// Straight from the definition, in double.
void RefRope(std::vector<double>& x, int n_heads, int head_dim, int rot_dim, int64_t pos,
             double base, double scale, RopeMode mode) {
  for (int h = 0; h < n_heads; ++h) {
    double* v = x.data() + h * head_dim;
    for (int i = 0; i < rot_dim / 2; ++i) {
      const double theta = pos * scale * std::pow(base, -2.0 * i / rot_dim);
      const int a = mode == RopeMode::kNormal ? 2 * i : i;
      const int b = mode == RopeMode::kNormal ? 2 * i + 1 : i + rot_dim / 2;
      const double va = v[a], vb = v[b];
      v[a] = va * std::cos(theta) - vb * std::sin(theta);
      v[b] = va * std::sin(theta) + vb * std::cos(theta);
    }
  }
}

TEST(OpsTest, RopeMatchesDefinitionInBothModes) {
  std::mt19937 rng(2);
  struct Case {
    int n_heads, head_dim, rot_dim;
    int64_t pos;
    float base, scale;
  };
  const Case cases[] = {{9, 64, 64, 0, 10000.0f, 1.0f},
                        {9, 64, 64, 1, 10000.0f, 1.0f},
                        {3, 64, 64, 4097, 100000.0f, 1.0f},
                        {2, 128, 64, 77, 10000.0f, 0.25f},
                        {1, 8, 8, 123456, 500000.0f, 1.0f}};
  for (RopeMode mode : {RopeMode::kNormal, RopeMode::kNeox}) {
    for (const Case& c : cases) {
      const int n = c.n_heads * c.head_dim;
      std::vector<float> x = testing::RandomFloats(rng, n, -2.0f, 2.0f);
      std::vector<double> ref(x.begin(), x.end());
      Rope(x.data(), c.n_heads, c.head_dim, c.rot_dim, c.pos, c.base, c.scale, mode);
      RefRope(ref, c.n_heads, c.head_dim, c.rot_dim, c.pos, c.base, c.scale, mode);
      for (int i = 0; i < n; ++i) {
        ASSERT_NEAR(x[i], ref[i], 2e-6 * 4)
            << "mode=" << static_cast<int>(mode) << " pos=" << c.pos << " i=" << i;
      }
      // A second call at the same position (the cached table) rotates identically.
      std::vector<float> y(ref.begin(), ref.end());
      std::vector<double> ref2 = ref;
      Rope(y.data(), c.n_heads, c.head_dim, c.rot_dim, c.pos, c.base, c.scale, mode);
      RefRope(ref2, c.n_heads, c.head_dim, c.rot_dim, c.pos, c.base, c.scale, mode);
      for (int i = 0; i < n; ++i) ASSERT_NEAR(y[i], ref2[i], 1e-5);
    }
  }
}

TEST(OpsTest, RopeNormalAndNeoxPairDifferentElements) {
  // With one pair turned by 90 degrees the two modes must move different elements.
  std::vector<float> a(4, 0.0f), b(4, 0.0f);
  a[0] = b[0] = 1.0f;
  // rot_dim 4: pair 0 has theta = pos; pos = pi/2 is not an integer, so use pos = 1 and compare
  // with the definition directly.
  Rope(a.data(), 1, 4, 4, 1, 10000.0f, 1.0f, RopeMode::kNormal);
  Rope(b.data(), 1, 4, 4, 1, 10000.0f, 1.0f, RopeMode::kNeox);
  EXPECT_NEAR(a[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(a[1], std::sin(1.0), 1e-6);  // normal: partner of x[0] is x[1]
  EXPECT_NEAR(b[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(b[2], std::sin(1.0), 1e-6);  // neox: partner of x[0] is x[2]
  EXPECT_EQ(a[2], 0.0f);
  EXPECT_EQ(b[1], 0.0f);
}

TEST(OpsTest, SwiGLUMatchesDefinition) {
  std::mt19937 rng(3);
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    for (int64_t n : {1, 8, 13, 1536}) {
      std::vector<float> g = testing::RandomFloats(rng, n, -12.0f, 12.0f);
      const std::vector<float> u = testing::RandomFloats(rng, n, -3.0f, 3.0f);
      if (n > 8) {
        g[0] = -100.0f;  // exp(100) territory: silu -> -0
        g[1] = 100.0f;
        g[2] = 0.0f;
      }
      std::vector<float> out(n);
      SwiGLU(g.data(), u.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
        ASSERT_NEAR(out[i], ref, 2e-6 * (1 + std::fabs(ref))) << IsaName(isa) << " g=" << g[i];
      }
    }
  }
}

TEST(OpsTest, SoftmaxIsStableAndSumsToOne) {
  std::mt19937 rng(4);
  const float inf = std::numeric_limits<float>::infinity();
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    for (int64_t n : {1, 5, 8, 100, 49152}) {
      std::vector<float> x = testing::RandomFloats(rng, n, -30.0f, 30.0f);
      if (n >= 5) {
        x[1] = -inf;
        x[3] = 1000.0f;  // would overflow without the max shift
        x[4] = 999.0f;
      }
      std::vector<double> ref(n);
      double mx = -INFINITY, sum = 0;
      for (float v : x) mx = std::max<double>(mx, v);
      for (int64_t i = 0; i < n; ++i) sum += (ref[i] = std::exp(x[i] - mx));
      Softmax(x.data(), n);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(x[i], ref[i] / sum, 1e-6 + 1e-5 * ref[i] / sum) << IsaName(isa) << " i=" << i;
        total += x[i];
      }
      EXPECT_NEAR(total, 1.0, 1e-5);
      if (n >= 5) {
        EXPECT_EQ(x[1], 0.0f);
      }
    }
  }
}

// Straight from the contract: the lowest index of the largest number, NaNs skipped.
int64_t RefArgMax(const std::vector<float>& x) {
  int64_t best = -1;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) continue;
    if (best < 0 || x[i] > x[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
  }
  return best < 0 ? 0 : best;
}

TEST(OpsTest, ArgMaxTakesTheFirstLargestAndSkipsNaNs) {
  std::mt19937 rng(6);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    EXPECT_EQ(ArgMax(nullptr, 0), 0) << IsaName(isa);
    for (int64_t n : {1, 7, 8, 31, 32, 33, 100, 49152}) {
      std::vector<float> x = testing::RandomFloats(rng, n, -20.0f, 20.0f);
      ASSERT_EQ(ArgMax(x.data(), n), RefArgMax(x)) << IsaName(isa) << " n=" << n;
      // Ties: every position of the maximum in turn, plus a later copy of it.
      for (int64_t at : {int64_t{0}, n / 3, n - 1}) {
        std::vector<float> y = x;
        y[at] = 100.0f;
        if (at + 5 < n) y[at + 5] = 100.0f;
        ASSERT_EQ(ArgMax(y.data(), n), at) << IsaName(isa) << " n=" << n << " at=" << at;
        // A NaN anywhere, the first element included, is skipped.
        y[0] = nan;
        y[n / 2] = nan;
        ASSERT_EQ(ArgMax(y.data(), n), RefArgMax(y)) << IsaName(isa) << " n=" << n;
      }
      std::vector<float> all_nan(n, nan);
      EXPECT_EQ(ArgMax(all_nan.data(), n), 0) << IsaName(isa) << " n=" << n;
      std::vector<float> low(n, -inf);
      low[n - 1] = -1e30f;
      EXPECT_EQ(ArgMax(low.data(), n), n - 1) << IsaName(isa) << " n=" << n;
    }
  }
}

// The sampler's reproducibility rests on PortableExpScaled giving PortableExp's bits on every ISA
// (no fused multiply-add, no libm); and PortableExp must be e^x.
TEST(OpsTest, PortableExpIsExpAndTheSameBitsOnEveryIsa) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(5);
  std::vector<float> x = testing::RandomFloats(rng, 4099, -60.0f, 60.0f);
  // Edges: the ends of the normal range after scaling, signed zeros, infinities, NaN.
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, -kInf, kInf, std::nanf(""), -707.9f, -708.0f,
                  -708.1f, 709.0f, 3.4e38f, -3.4e38f}) {
    x.push_back(v);
  }
  for (const auto& [shift, scale] : {std::pair{0.0, 1.0}, std::pair{12.5, 1.0 / 0.7},
                                     std::pair{-3.0, 0.1}, std::pair{60.0, 20.0}}) {
    std::vector<double> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      want[i] = PortableExp((static_cast<double>(x[i]) - shift) * scale);
    }
    for (Isa isa : AvailableIsas()) {
      ScopedIsa scoped(isa);
      for (size_t n : {x.size(), size_t{3}, size_t{0}}) {  // vector body, tail alone, nothing
        std::vector<double> got(n + 1, -1.0);
        PortableExpScaled(x.data(), static_cast<int64_t>(n), shift, scale, got.data());
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(std::bit_cast<uint64_t>(got[i]), std::bit_cast<uint64_t>(want[i]))
              << IsaName(isa) << " x=" << x[i] << " shift=" << shift << " scale=" << scale
              << " got " << got[i] << " want " << want[i];
        }
        EXPECT_EQ(got[n], -1.0) << "wrote past n";
      }
    }
  }
  for (double v : {0.0, -1e-12, -0.5, -1.0, -10.0, -100.0, -700.0}) {
    EXPECT_NEAR(PortableExp(v), std::exp(v), 1e-15 * std::exp(v)) << v;
  }
  EXPECT_EQ(PortableExp(3.0), 1.0);  // x > 0 counts as 0
  EXPECT_EQ(PortableExp(-708.0), 0.0);
  EXPECT_EQ(PortableExp(-std::numeric_limits<double>::infinity()), 0.0);
  EXPECT_EQ(PortableExp(std::nan("")), 0.0);
}

TEST(OpsTest, AddAndGetRow) {
  const float a[5] = {1, 2, 3, 4, 5}, b[5] = {0.5f, -2, 0, 1e-3f, -5};
  float out[5];
  Add(a, b, out, 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(out[i], a[i] + b[i]);

  std::mt19937 rng(5);
  const std::vector<float> src = testing::RandomFloats(rng, 576, -1.0f, 1.0f);
  for (GgmlType t : {GgmlType::kQ8_0, GgmlType::kQ4_1, GgmlType::kF16, GgmlType::kQ6_K}) {
    const int64_t n = GetTypeInfo(t).block_size == 256 ? 512 : 576;
    std::vector<uint8_t> row(RowBytes(t, n));
    ASSERT_TRUE(QuantizeRow(t, src.data(), row.data(), n));
    std::vector<float> got(n);
    GetRow(t, row.data(), n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(got[i], testing::RefValue(t, row.data(), i), 1e-6) << GetTypeInfo(t).name;
    }
  }
}

}  // namespace
}  // namespace crescent::kernels
