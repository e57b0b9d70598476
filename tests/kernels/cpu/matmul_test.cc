#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/quants.h"
#include "src/common/thread_pool.h"
#include "tests/kernels/cpu/test_util.h"

namespace crescent::kernels {
namespace {

using testing::AvailableIsas;
using testing::RefValue;
using testing::ScopedIsa;

// A weight matrix made by quantizing random values, optionally with padded rows.
struct Weights {
  GgmlType type;
  int64_t rows, cols;
  size_t stride;
  std::vector<uint8_t> bytes;
  std::vector<double> dense;  // rows x cols, decoded by the test's reference decoder.
  MatrixView view() const { return MatrixView{type, rows, cols, bytes.data(), stride}; }
};

Weights MakeWeights(std::mt19937& rng, GgmlType type, int64_t rows, int64_t cols, size_t pad = 0) {
  Weights w{type, rows, cols, RowBytes(type, cols) + pad, {}, {}};
  w.bytes.assign(w.stride * rows + 64, 0xA5);
  for (int64_t r = 0; r < rows; ++r) {
    // Rows of different magnitude and offset, so per-block scales and mins all matter.
    const float scale = 0.05f + 0.2f * static_cast<float>(r % 5);
    const float offset = (r % 3 == 0) ? 0.03f : 0.0f;
    std::vector<float> v = testing::RandomFloats(rng, cols, -scale, scale);
    for (float& f : v) f += offset;
    EXPECT_TRUE(QuantizeRow(type, v.data(), w.bytes.data() + r * w.stride, cols));
  }
  w.dense.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) {
      w.dense[r * cols + k] = RefValue(type, w.bytes.data() + r * w.stride, k);
    }
  }
  return w;
}

std::vector<float> MakeX(std::mt19937& rng, int64_t m, int64_t cols) {
  std::vector<float> x = testing::RandomFloats(rng, m * cols, -1.0f, 1.0f);
  for (int64_t i = 0; i < m * cols; ++i) {
    if ((i / 32) % 4 == 1) x[i] *= 10.0f;  // blocks of very different scale
    if ((i / 32) % 9 == 4) x[i] = 0.0f;    // an all-zero block
  }
  return x;
}

bool IsQuantized(GgmlType t) { return GetTypeInfo(t).quantized; }

// |y - exact| bound: x is quantized to 8 bits per block (error <= amax/254 per value) for the
// quantized weight types; float accumulation adds a relative 1e-5 of sum |w x|.
void ExpectMatches(const Weights& w, const std::vector<float>& x, int64_t m,
                   const std::vector<float>& y, const std::string& what) {
  const int64_t k = w.cols;
  const int64_t xblk =
      w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ5_K || w.type == GgmlType::kQ6_K ? 256
                                                                                          : 32;
  for (int64_t i = 0; i < m; ++i) {
    std::vector<double> half_step(k, 0.0);
    if (IsQuantized(w.type)) {
      for (int64_t b = 0; b < k; b += xblk) {
        float amax = 0;
        for (int64_t j = b; j < b + xblk; ++j) amax = std::max(amax, std::fabs(x[i * k + j]));
        for (int64_t j = b; j < b + xblk; ++j) half_step[j] = amax / 254.0 * 1.0001;
      }
    }
    for (int64_t n = 0; n < w.rows; ++n) {
      double exact = 0, abs_sum = 0, quant_err = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double wv = w.dense[n * k + j];
        exact += wv * x[i * k + j];
        abs_sum += std::fabs(wv * x[i * k + j]);
        quant_err += std::fabs(wv) * half_step[j];
      }
      const double tol = quant_err + 1e-5 * abs_sum + 1e-6;
      const double got = y[i * w.rows + n];
      ASSERT_NEAR(got, exact, tol) << what << " i=" << i << " n=" << n;
    }
  }
}

const GgmlType kAllTypes[] = {GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16,
                              GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0,
                              GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

std::vector<int64_t> ColsFor(GgmlType t) {
  const int64_t bs = GetTypeInfo(t).block_size;
  if (bs == 256) return {256, 768};
  if (bs == 32) return {32, 96, 576};
  return {1, 7, 33, 576};
}

TEST(MatMulTest, SupportsTheDocumentedTypes) {
  for (GgmlType t : kAllTypes) EXPECT_TRUE(MatMulSupports(t)) << GetTypeInfo(t).name;
  for (GgmlType t :
       {GgmlType::kQ5_0, GgmlType::kQ8_1, GgmlType::kQ8_K, GgmlType::kQ2_K, GgmlType::kI32}) {
    EXPECT_FALSE(MatMulSupports(t)) << GetTypeInfo(t).name;
  }
}

// Every type x every ISA x odd shapes x the batch sizes decode and prefill use.
TEST(MatMulTest, MatchesDenseReferenceForEveryTypeIsaAndBatch) {
  std::mt19937 rng(17);
  for (GgmlType t : kAllTypes) {
    for (int64_t cols : ColsFor(t)) {
      for (int64_t rows : {1, 5, 13}) {
        const Weights w = MakeWeights(rng, t, rows, cols);
        for (int64_t m : {1, 2, 3, 4, 5, 8, 17, 32}) {
          const std::vector<float> x = MakeX(rng, m, cols);
          for (Isa isa : AvailableIsas()) {
            ScopedIsa scoped(isa);
            std::vector<float> y(m * rows, -12345.0f);
            MatMul(nullptr, w.view(), x.data(), m, y.data());
            ExpectMatches(w, x, m, y,
                          std::string(GetTypeInfo(t).name) + " " + IsaName(isa) +
                              " rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) +
                              " m=" + std::to_string(m));
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

// The SIMD kernels do the same integer arithmetic as the scalar ones; only the float summation
// order differs, so they must agree far more tightly than with the exact result.
TEST(MatMulTest, SimdIsasAgreeWithScalar) {
  if (AvailableIsas().size() < 2) GTEST_SKIP() << "only the scalar ISA on this machine";
  std::mt19937 rng(19);
  for (GgmlType t : kAllTypes) {
    const int64_t cols = GetTypeInfo(t).block_size == 256 ? 1024 : 576;
    const Weights w = MakeWeights(rng, t, 37, cols);
    for (int64_t m : {1, 3, 8}) {
      const std::vector<float> x = MakeX(rng, m, cols);
      std::vector<float> ref(m * w.rows);
      {
        ScopedIsa scoped(Isa::kScalar);
        MatMul(nullptr, w.view(), x.data(), m, ref.data());
      }
      for (Isa isa : AvailableIsas()) {
        ScopedIsa scoped(isa);
        std::vector<float> y(m * w.rows);
        MatMul(nullptr, w.view(), x.data(), m, y.data());
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t n = 0; n < w.rows; ++n) {
            double abs_sum = 0;
            for (int64_t j = 0; j < cols; ++j)
              abs_sum += std::fabs(w.dense[n * cols + j] * x[i * cols + j]);
            ASSERT_NEAR(y[i * w.rows + n], ref[i * w.rows + n], 2e-6 * abs_sum + 1e-6)
                << GetTypeInfo(t).name << " " << IsaName(isa) << " m=" << m << " n=" << n;
          }
        }
      }
    }
  }
}

TEST(MatMulTest, ThreadPoolSplitsGiveTheSameResult) {
  std::mt19937 rng(23);
  ThreadPool pool2(2), pool3(3);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ6_K, GgmlType::kF16}) {
    const int64_t cols = GetTypeInfo(t).block_size == 256 ? 512 : 576;
    const Weights w = MakeWeights(rng, t, 203, cols);  // not a multiple of any tile
    for (int64_t m : {1, 6}) {
      const std::vector<float> x = MakeX(rng, m, cols);
      for (Isa isa : AvailableIsas()) {
        ScopedIsa scoped(isa);
        std::vector<float> y1(m * w.rows), y2(m * w.rows), y3(m * w.rows);
        MatMul(nullptr, w.view(), x.data(), m, y1.data());
        MatMul(&pool2, w.view(), x.data(), m, y2.data());
        MatMul(&pool3, w.view(), x.data(), m, y3.data());
        for (size_t i = 0; i < y1.size(); ++i) {
          ASSERT_NEAR(y2[i], y1[i], 1e-6 * (1 + std::fabs(y1[i])))
              << GetTypeInfo(t).name << " " << i;
          ASSERT_NEAR(y3[i], y1[i], 1e-6 * (1 + std::fabs(y1[i])))
              << GetTypeInfo(t).name << " " << i;
        }
        ExpectMatches(w, x, m, y3, std::string("pool3 ") + GetTypeInfo(t).name);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(MatMulTest, SharedActivationsMatchSeparateCalls) {
  std::mt19937 rng(27);
  ThreadPool pool(3);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ6_K, GgmlType::kF16}) {
    const int64_t cols = GetTypeInfo(t).block_size == 256 ? 512 : 576;
    // Row counts that make the thread ranges start and end inside and between matrices.
    std::vector<Weights> ws;
    for (int64_t rows : {57, 1, 130, 6}) ws.push_back(MakeWeights(rng, t, rows, cols));
    std::vector<MatrixView> views;
    for (const Weights& w : ws) views.push_back(w.view());
    for (int64_t m : {1, 3}) {
      const std::vector<float> x = MakeX(rng, m, cols);
      for (Isa isa : AvailableIsas()) {
        ScopedIsa scoped(isa);
        for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
          std::vector<std::vector<float>> ys;
          std::vector<float*> ptrs;
          for (const Weights& w : ws) ys.emplace_back(m * w.rows, -1.0f);
          for (auto& y : ys) ptrs.push_back(y.data());
          MatMulShared(p, views.data(), ptrs.data(), static_cast<int>(views.size()), x.data(), m);
          for (size_t j = 0; j < ws.size(); ++j) {
            std::vector<float> single(m * ws[j].rows);
            MatMul(nullptr, views[j], x.data(), m, single.data());
            for (size_t e = 0; e < single.size(); ++e) {
              ASSERT_NEAR(ys[j][e], single[e], 1e-6 * (1 + std::fabs(single[e])))
                  << GetTypeInfo(t).name << " matrix " << j << " element " << e;
            }
            ExpectMatches(ws[j], x, m, ys[j], std::string("shared ") + GetTypeInfo(t).name);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

TEST(MatMulTest, LargeBatchQuantizesActivationsInParallel) {
  // m * cols above the threshold where x is quantized on the pool.
  std::mt19937 rng(29);
  ThreadPool pool(2);
  for (GgmlType t : {GgmlType::kQ4_0, GgmlType::kQ5_K}) {
    const int64_t cols = 512, m = 160;
    const Weights w = MakeWeights(rng, t, 9, cols);
    const std::vector<float> x = MakeX(rng, m, cols);
    std::vector<float> y(m * w.rows);
    MatMul(&pool, w.view(), x.data(), m, y.data());
    ExpectMatches(w, x, m, y, GetTypeInfo(t).name);
  }
}

TEST(MatMulTest, PaddedRowStrideIsHonored) {
  std::mt19937 rng(31);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ4_K, GgmlType::kBF16}) {
    const int64_t cols = GetTypeInfo(t).block_size == 256 ? 256 : 64;
    const Weights w = MakeWeights(rng, t, 11, cols, /*pad=*/64);
    const std::vector<float> x = MakeX(rng, 3, cols);
    for (Isa isa : AvailableIsas()) {
      ScopedIsa scoped(isa);
      std::vector<float> y(3 * w.rows);
      MatMul(nullptr, w.view(), x.data(), 3, y.data());
      ExpectMatches(w, x, 3, y, std::string("padded ") + GetTypeInfo(t).name);
    }
  }
}

TEST(MatMulTest, MatMulRowsWritesOnlyItsRange) {
  std::mt19937 rng(37);
  const Weights w = MakeWeights(rng, GgmlType::kQ8_0, 20, 64);
  const std::vector<float> x = MakeX(rng, 2, 64);
  std::vector<float> full(2 * 20), part(2 * 20, 7.0f);
  MatMul(nullptr, w.view(), x.data(), 2, full.data());
  MatMulRows(w.view(), x.data(), 2, part.data(), 5, 14);
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t n = 0; n < 20; ++n) {
      if (n >= 5 && n < 14) {
        EXPECT_FLOAT_EQ(part[i * 20 + n], full[i * 20 + n]) << n;
      } else {
        EXPECT_EQ(part[i * 20 + n], 7.0f) << n;
      }
    }
  }
}

TEST(MatMulTest, ZeroBatchWritesNothing) {
  std::mt19937 rng(41);
  const Weights w = MakeWeights(rng, GgmlType::kQ4_0, 4, 32);
  float y = 3.0f;
  MatMul(nullptr, w.view(), nullptr, 0, &y);
  EXPECT_EQ(y, 3.0f);
}

}  // namespace
}  // namespace crescent::kernels

namespace crescent::kernels {
namespace {

// Each output row depends only on its own activation row: the same bits whatever the batch
// size, the row's place in the batch and the thread split. The serving engine relies on it
// (chunked prefill, recompute after preemption, prefill on one node and decode on another);
// with int8 activations downstream even a one-ulp difference can flip a code and grow.
TEST(MatMulTest, RowsAreBitIdenticalForAnyBatchShapeAndThreadSplit) {
  std::mt19937 rng(41);
  ThreadPool pool2(2), pool3(3);
  for (GgmlType t : kAllTypes) {
    for (int64_t cols : ColsFor(t)) {
      const Weights w = MakeWeights(rng, t, 67, cols);
      const int64_t m = 70;  // more than one 64-row pass
      const std::vector<float> x = MakeX(rng, m, cols);
      for (Isa isa : AvailableIsas()) {
        ScopedIsa scoped(isa);
        std::vector<float> full(m * w.rows);
        MatMul(&pool2, w.view(), x.data(), m, full.data());
        for (int64_t batch : {1, 2, 5}) {
          for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool3}) {
            for (int64_t i0 = 0; i0 < m; i0 += batch) {
              const int64_t mc = std::min(batch, m - i0);
              std::vector<float> part(mc * w.rows);
              MatMul(pool, w.view(), x.data() + i0 * cols, mc, part.data());
              for (int64_t i = 0; i < mc * w.rows; ++i) {
                ASSERT_EQ(part[i], full[i0 * w.rows + i])
                    << GetTypeInfo(t).name << " " << IsaName(isa) << " cols=" << cols
                    << " batch=" << batch << " row=" << i0 + i / w.rows << " n=" << i % w.rows;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace crescent::kernels

namespace crescent::kernels {
namespace {

TEST(MatMulGroup8Test, RepackThenUnpackRestoresEveryByte) {
  std::mt19937 rng(43);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    ASSERT_TRUE(Group8Supported(t));
    for (int64_t cols : {32, 224, 256, 576, 1536}) {
      const Weights w = MakeWeights(rng, t, 9, cols, /*pad=*/24);
      std::vector<uint8_t> packed(w.bytes.size()), back(w.bytes.size());
      RepackRowsGroup8(t, cols, w.rows, w.stride, w.bytes.data(), packed.data());
      UnpackRowsGroup8(t, cols, w.rows, w.stride, packed.data(), back.data());
      // Rows of more than one block change; the round trip restores them, padding included.
      if (cols > 32) {
        EXPECT_NE(packed, w.bytes) << GetTypeInfo(t).name << " cols=" << cols;
      }
      EXPECT_TRUE(std::equal(back.begin(), back.begin() + w.stride * w.rows, w.bytes.begin()))
          << GetTypeInfo(t).name << " cols=" << cols;
    }
  }
  EXPECT_FALSE(Group8Supported(GgmlType::kQ4_0));
  EXPECT_FALSE(Group8Supported(GgmlType::kQ4_K));
  EXPECT_FALSE(Group8Supported(GgmlType::kF16));
}

// The repacked layout is a faster encoding of the same matrix: every ISA (natively on AVX-512
// VNNI, by unpacking elsewhere), batch shape and thread split gives the GGUF view's bits.
TEST(MatMulGroup8Test, SameBitsAsTheGgufLayout) {
  std::mt19937 rng(44);
  ThreadPool pool2(2);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    // Short groups of 1, 2 with no full group, 3, 7, 0, 4 (the longest that batch 1 pairs),
    // 2 and 0 blocks. Batch 1 takes Q4_1 rows four at a time where their short groups fit one
    // register (1 or 2 blocks), in pairs otherwise; the GGUF layout always in pairs.
    for (int64_t cols : {32, 64, 96, 224, 256, 384, 576, 1536}) {
      const Weights w = MakeWeights(rng, t, 37, cols, /*pad=*/8);
      std::vector<uint8_t> packed(w.bytes.size());
      RepackRowsGroup8(t, cols, w.rows, w.stride, w.bytes.data(), packed.data());
      MatrixView pv = w.view();
      pv.data = packed.data();
      pv.layout = MatrixLayout::kGroup8;
      for (int64_t m : {1, 2, 65}) {
        const std::vector<float> x = MakeX(rng, m, cols);
        for (Isa isa : AvailableIsas()) {
          ScopedIsa scoped(isa);
          for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2}) {
            std::vector<float> want(m * w.rows), got(m * w.rows, -1.0f);
            MatMul(pool, w.view(), x.data(), m, want.data());
            MatMul(pool, pv, x.data(), m, got.data());
            ASSERT_EQ(got, want) << GetTypeInfo(t).name << " " << IsaName(isa) << " cols=" << cols
                                 << " m=" << m;
          }
          std::vector<float> rows(m * w.rows, 7.0f);
          MatMulRows(pv, x.data(), m, rows.data(), 5, 30);
          std::vector<float> want(m * w.rows);
          MatMul(nullptr, w.view(), x.data(), m, want.data());
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t n = 0; n < w.rows; ++n) {
              const float expect = n >= 5 && n < 30 ? want[i * w.rows + n] : 7.0f;
              ASSERT_EQ(rows[i * w.rows + n], expect) << IsaName(isa) << " i=" << i << " n=" << n;
            }
          }
        }
      }
    }
  }
}

// Prefill-sized batches in the kGroup8 layout go in chunks of rows of x over blocks of weight
// rows (256 KiB each): a matrix of several blocks, a batch of several chunks and a partial one.
TEST(MatMulGroup8Test, PrefillChunksOverWeightBlocksGiveTheGgufLayoutsBits) {
  std::mt19937 rng(45);
  ThreadPool pool2(2);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    const int64_t cols = 1536;
    const Weights w = MakeWeights(rng, t, 700, cols);  // 2 or more blocks of rows
    ASSERT_GT(w.stride * w.rows, size_t{2} << 18) << GetTypeInfo(t).name;
    std::vector<uint8_t> packed(w.bytes.size());
    RepackRowsGroup8(t, cols, w.rows, w.stride, w.bytes.data(), packed.data());
    MatrixView pv = w.view();
    pv.data = packed.data();
    pv.layout = MatrixLayout::kGroup8;
    const int64_t m = 75;  // chunks of 32, 32 and 11 rows
    const std::vector<float> x = MakeX(rng, m, cols);
    for (Isa isa : AvailableIsas()) {
      ScopedIsa scoped(isa);
      std::vector<float> want(m * w.rows), got(m * w.rows, -1.0f);
      MatMul(nullptr, w.view(), x.data(), m, want.data());
      MatMul(&pool2, pv, x.data(), m, got.data());
      ASSERT_EQ(got, want) << GetTypeInfo(t).name << " " << IsaName(isa);
    }
  }
}

}  // namespace
}  // namespace crescent::kernels

namespace crescent::kernels {
namespace {

// A Q4_1 or Q8_0 matrix repacked to kRows16 beside its GGUF bytes.
struct Rows16Weights {
  Weights w;
  std::vector<uint8_t> packed;
  MatrixView view() const {
    MatrixView v = w.view();
    v.data = packed.data();
    v.layout = MatrixLayout::kRows16;
    return v;
  }
};

Rows16Weights MakeRows16(std::mt19937& rng, GgmlType t, int64_t rows, int64_t cols,
                         size_t pad = 0) {
  Rows16Weights r{MakeWeights(rng, t, rows, cols, pad), {}};
  r.packed.assign(r.w.bytes.size(), 0);
  RepackRowsRows16(t, cols, rows, r.w.stride, r.w.bytes.data(), r.packed.data());
  return r;
}

constexpr GgmlType kRows16Types[] = {GgmlType::kQ4_1, GgmlType::kQ8_0};

TEST(MatMulRows16Test, RepackThenUnpackRestoresEveryByte) {
  std::mt19937 rng(51);
  for (GgmlType t : kRows16Types) {
    for (int64_t cols : {32, 96, 576, 1536}) {
      for (size_t pad : {size_t{0}, size_t{12}}) {
        const Rows16Weights r = MakeRows16(rng, t, 48, cols, pad);
        std::vector<uint8_t> back(r.packed.size());
        UnpackRowsRows16(t, cols, 48, r.w.stride, r.packed.data(), back.data());
        EXPECT_NE(r.packed, r.w.bytes) << GetTypeInfo(t).name << " cols=" << cols;
        EXPECT_TRUE(std::equal(back.begin(), back.begin() + r.w.stride * 48, r.w.bytes.begin()))
            << GetTypeInfo(t).name << " cols=" << cols << " pad=" << pad;
      }
    }
  }
  EXPECT_TRUE(Rows16Supported(GgmlType::kQ4_1, 16));
  EXPECT_TRUE(Rows16Supported(GgmlType::kQ4_1, 49152));
  EXPECT_TRUE(Rows16Supported(GgmlType::kQ8_0, 64));
  EXPECT_FALSE(Rows16Supported(GgmlType::kQ4_1, 24));
  EXPECT_FALSE(Rows16Supported(GgmlType::kQ8_0, 40));
  EXPECT_FALSE(Rows16Supported(GgmlType::kQ4_1, 0));
  EXPECT_FALSE(Rows16Supported(GgmlType::kQ4_0, 64));
  EXPECT_FALSE(Rows16Supported(GgmlType::kQ4_K, 64));
}

// Against the exact product on every ISA, batch shape and thread split; where the ISA does not
// read kRows16 natively it unpacks, and gives the GGUF view's bits.
TEST(MatMulRows16Test, MatchesDenseReferenceForEveryIsaAndBatch) {
  std::mt19937 rng(52);
  ThreadPool pool2(2), pool3(3);
  for (GgmlType t : kRows16Types) {
    for (int64_t cols : {32, 96, 576}) {
      for (int64_t rows : {16, 64}) {
        const Rows16Weights r = MakeRows16(rng, t, rows, cols, cols == 96 ? 8 : 0);
        for (int64_t m : {1, 2, 7, 8, 9, 33}) {
          const std::vector<float> x = MakeX(rng, m, cols);
          for (Isa isa : AvailableIsas()) {
            ScopedIsa scoped(isa);
            for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2, &pool3}) {
              std::vector<float> y(m * rows, -12345.0f);
              MatMul(pool, r.view(), x.data(), m, y.data());
              const std::string what = std::string(GetTypeInfo(t).name) + " " + IsaName(isa) +
                                       " rows=" + std::to_string(rows) +
                                       " cols=" + std::to_string(cols) + " m=" + std::to_string(m);
              ExpectMatches(r.w, x, m, y, what);
              if (HasFatalFailure()) return;
              if (!Rows16Native(isa)) {
                std::vector<float> gguf(m * rows);
                MatMul(pool, r.w.view(), x.data(), m, gguf.data());
                ASSERT_EQ(y, gguf) << what;
              }
            }
          }
        }
      }
    }
  }
}

// The property the engine relies on (RowsAreBitIdenticalForAnyBatchShapeAndThreadSplit), for
// kRows16: a row's bits do not depend on the batch, the row's place in it or the thread split,
// nor on which matrices share the call.
TEST(MatMulRows16Test, RowsAreBitIdenticalForAnyBatchShapeAndThreadSplit) {
  std::mt19937 rng(53);
  ThreadPool pool2(2), pool3(3);
  for (GgmlType t : kRows16Types) {
    for (int64_t cols : {64, 576, 1536}) {
      const Rows16Weights r = MakeRows16(rng, t, 112, cols);
      const Rows16Weights r2 = MakeRows16(rng, t, 32, cols);
      const int64_t m = 21;
      const std::vector<float> x = MakeX(rng, m, cols);
      for (Isa isa : AvailableIsas()) {
        ScopedIsa scoped(isa);
        std::vector<float> full(m * r.w.rows), full2(m * r2.w.rows);
        MatMul(&pool2, r.view(), x.data(), m, full.data());
        MatMul(nullptr, r2.view(), x.data(), m, full2.data());
        for (int64_t batch : {1, 3, 8}) {
          for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &pool2, &pool3}) {
            for (int64_t i0 = 0; i0 < m; i0 += batch) {
              const int64_t mc = std::min(batch, m - i0);
              std::vector<float> part(mc * r.w.rows), part2(mc * r2.w.rows);
              const MatrixView views[2] = {r.view(), r2.view()};
              float* const outs[2] = {part.data(), part2.data()};
              MatMulShared(pool, views, outs, 2, x.data() + i0 * cols, mc);
              for (int64_t i = 0; i < mc * r.w.rows; ++i) {
                ASSERT_EQ(part[i], full[i0 * r.w.rows + i])
                    << GetTypeInfo(t).name << " " << IsaName(isa) << " cols=" << cols
                    << " batch=" << batch << " row=" << i0 + i / r.w.rows << " n=" << i % r.w.rows;
              }
              for (int64_t i = 0; i < mc * r2.w.rows; ++i) {
                ASSERT_EQ(part2[i], full2[i0 * r2.w.rows + i]) << IsaName(isa) << " second matrix";
              }
            }
          }
        }
        // Rows ranges that cut panels: only the range is written, with the full call's bits.
        std::vector<float> rows(m * r.w.rows, 7.0f);
        MatMulRows(r.view(), x.data(), m, rows.data(), 5, 37);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t n = 0; n < r.w.rows; ++n) {
            const float expect = n >= 5 && n < 37 ? full[i * r.w.rows + n] : 7.0f;
            ASSERT_EQ(rows[i * r.w.rows + n], expect) << IsaName(isa) << " i=" << i << " n=" << n;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace crescent::kernels
