#include "kernels/cpu/internal/matmul_internal.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quants.h"
#include "src/common/thread_pool.h"
#include "tests/kernels/cpu/test_util.h"

#if defined(CRESCENT_KERNELS_X86)
namespace crescent::kernels::internal {
namespace {

// A repacked (kGroup8) matrix and one row of x quantized for it, as MatMul prepares them.
struct Fixture {
  GgmlType type;
  int64_t rows, cols;
  size_t stride;
  std::vector<uint8_t> packed;
  std::vector<XGroup8> xg;
  QuantizedX q;
  std::vector<float> want;  // y from the plain batch-1 kernel over all rows.

  MatrixView view() const {
    MatrixView v{type, rows, cols, packed.data(), stride};
    v.layout = MatrixLayout::kGroup8;
    return v;
  }
};

Fixture MakeFixture(std::mt19937& rng, GgmlType type, int64_t rows, int64_t cols) {
  Fixture f{type, rows, cols, RowBytes(type, cols), {}, {}, {}, {}};
  std::vector<uint8_t> gguf(f.stride * rows);
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> v = testing::RandomFloats(rng, cols, -0.3f, 0.3f);
    EXPECT_TRUE(QuantizeRow(type, v.data(), gguf.data() + r * f.stride, cols));
  }
  f.packed.resize(gguf.size());
  RepackRowsGroup8(type, cols, rows, f.stride, gguf.data(), f.packed.data());
  f.q.wtype = type;
  f.q.m = 1;
  f.q.k = cols;
  f.q.nb = cols / 32;
  f.q.ng = (f.q.nb + 7) / 8;
  f.xg.resize(f.q.ng);
  f.q.xg = f.xg.data();
  const std::vector<float> x = testing::RandomFloats(rng, cols, -1.0f, 1.0f);
  QuantizeGroupedAvx512(x.data(), 0, 1, f.q);
  f.want.resize(rows);
  GemmAvx512(f.view(), f.q, f.want.data(), 0, rows);
  return f;
}

constexpr float kUnset = -12345.0f;

bool HaveVnni() { return DetectIsa() == Isa::kAvx512Vnni; }

// Rows [b, e) of y must be the plain kernel's; every other row still kUnset.
void ExpectRows(const Fixture& f, const std::vector<float>& y, int64_t b, int64_t e,
                const char* what) {
  for (int64_t n = 0; n < f.rows; ++n) {
    const float expect = n >= b && n < e ? f.want[n] : kUnset;
    ASSERT_EQ(y[n], expect) << what << " " << GetTypeInfo(f.type).name << " rows=" << f.rows
                            << " cols=" << f.cols << " n=" << n;
  }
}

// Whoever claims them, the iterations map to the rows of the kB1Parts parts, the rows after
// the parts are the owner's, and every row comes out with the plain kernel's bits.
TEST(GemmB1SharedTest, ClaimsFromEitherEndCoverEachRowOnce) {
  if (!HaveVnni()) GTEST_SKIP() << "no AVX-512 VNNI on this machine";
  std::mt19937 rng(7);
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    for (int64_t cols : {576, 1536}) {
      for (int64_t rows : {7, 37, 130, 1001}) {
        const Fixture f = MakeFixture(rng, t, rows, cols);
        const int64_t b = 3, e = rows - 1;  // a range that is not the whole matrix
        const int64_t part = (e - b) / kB1Parts;
        const int64_t parts_end = part >= 2 ? b + kB1Parts * part : b;

        // The owner alone: everything.
        std::vector<float> y(rows, kUnset);
        B1Rows r;
        r.Reset(b, e);
        GemmB1SharedAvx512(f.view(), f.q, y.data(), &r, /*owner=*/true);
        ExpectRows(f, y, b, e, "owner alone");

        // A helper first takes every iteration, but never the rows after the parts.
        std::fill(y.begin(), y.end(), kUnset);
        r.Reset(b, e);
        GemmB1SharedAvx512(f.view(), f.q, y.data(), &r, /*owner=*/false);
        ExpectRows(f, y, b, parts_end, "helper first");
        GemmB1SharedAvx512(f.view(), f.q, y.data(), &r, /*owner=*/true);
        ExpectRows(f, y, b, e, "then the owner");
        if (part < 2) continue;

        // Iterations [2, part - 1) left unclaimed: a helper computes exactly their rows.
        std::fill(y.begin(), y.end(), kUnset);
        r.Reset(b, e);
        const int64_t i0 = 2, i1 = part - 1;
        r.claim.store((static_cast<uint64_t>(i1) << 32) | static_cast<uint64_t>(i0));
        GemmB1SharedAvx512(f.view(), f.q, y.data(), &r, /*owner=*/false);
        for (int64_t n = 0; n < rows; ++n) {
          const int64_t i = (n - b) % part;
          const bool in_parts = n >= b && n < parts_end;
          const float expect = in_parts && i >= i0 && i < i1 ? f.want[n] : kUnset;
          ASSERT_EQ(y[n], expect) << GetTypeInfo(t).name << " rows=" << rows << " n=" << n;
        }
        GemmB1SharedAvx512(f.view(), f.q, y.data(), &r, /*owner=*/true);  // nothing to claim
        for (int64_t n = parts_end; n < e; ++n) ASSERT_EQ(y[n], f.want[n]) << "rest n=" << n;
      }
    }
  }
}

// An owner and helpers on real threads, started together, many times: no row is lost or
// computed wrong however the claims interleave.
TEST(GemmB1SharedTest, ConcurrentOwnerAndHelpers) {
  if (!HaveVnni()) GTEST_SKIP() << "no AVX-512 VNNI on this machine";
  std::mt19937 rng(8);
  const Fixture f = MakeFixture(rng, GgmlType::kQ4_1, 1001, 576);
  std::vector<float> y(f.rows);
  B1Rows r;
  for (int round = 0; round < 200; ++round) {
    std::fill(y.begin(), y.end(), kUnset);
    r.Reset(0, f.rows);
    std::atomic<int> ready{0};
    auto work = [&](bool owner) {
      ready.fetch_add(1);
      while (ready.load() < 3) {
      }
      GemmB1SharedAvx512(f.view(), f.q, y.data(), &r, owner);
    };
    std::thread h1(work, false), h2(work, false);
    work(true);
    h1.join();
    h2.join();
    ASSERT_EQ(y, f.want) << "round " << round;
  }
}

// Calls MatMulShared at batch 1 on the three `views` (the first `counts(round)` of them) over
// pools of 2 to 4 threads on however many cores there are (threads get descheduled mid-share,
// and others help), 50 rounds each, every odd round after PrefetchNextMatMul's hint for the
// first `hints(round)`, every third with PrefetchDuringNextMatMul's ranges for each thread (a
// few hundred, from the weights, x and a block freed before the call); expects every output
// written, with the single-threaded call's bits.
template <typename Counts, typename Hints>
void ExpectSingleThreadBitsOnPools(const MatrixView (&views)[3], const std::vector<float>& x,
                                   Counts counts, Hints hints) {
  std::vector<float> want[3], got[3];
  for (int j = 0; j < 3; ++j) {
    want[j].resize(views[j].rows);
    got[j].resize(views[j].rows);
  }
  float* want_ptrs[3] = {want[0].data(), want[1].data(), want[2].data()};
  float* got_ptrs[3] = {got[0].data(), got[1].data(), got[2].data()};
  MatMulShared(nullptr, views, want_ptrs, 3, x.data(), 1);
  for (int threads : {2, 3, 4}) {
    ThreadPool pool(threads);
    for (int round = 0; round < 50; ++round) {
      for (auto& g : got) std::fill(g.begin(), g.end(), kUnset);
      if (round % 2 == 1) PrefetchNextMatMul(&pool, views, hints(round), 1);
      if (round % 3 == 0) {
        std::vector<ThreadPool::ByteRange> ranges;
        auto stale = std::make_unique<uint8_t[]>(4096);
        for (int i = 0; i < 300; ++i) {
          ranges.push_back({views[i % 3].data, static_cast<size_t>(64 * (i % 7))});
          ranges.push_back({x.data(), x.size() * sizeof(float)});
          ranges.push_back({stale.get(), 4096});
        }
        stale.reset();
        for (int t = 0; t < threads; ++t) {
          PrefetchDuringNextMatMul(&pool, t, ranges.data() + t,
                                   static_cast<int>(ranges.size()) - t);
        }
      }
      const int count = counts(round);
      MatMulShared(&pool, views, got_ptrs, count, x.data(), 1);
      for (int j = 0; j < count; ++j) {
        ASSERT_EQ(got[j], want[j]) << GetTypeInfo(views[j].type).name << " threads=" << threads
                                   << " count=" << count << " matrix " << j;
      }
    }
  }
}

// Through MatMulShared at batch 1: three kGroup8 matrices, always the bits of the
// single-threaded call, with or without PrefetchNextMatMul's hints (for the Q4_1 pair or its
// first matrix).
TEST(GemmB1SharedTest, MatMulSharedOnPoolsGivesTheSingleThreadBits) {
  if (!HaveVnni()) GTEST_SKIP() << "no AVX-512 VNNI on this machine";
  std::mt19937 rng(9);
  const Fixture a = MakeFixture(rng, GgmlType::kQ4_1, 576, 576);
  const Fixture b = MakeFixture(rng, GgmlType::kQ4_1, 192, 576);
  const Fixture c = MakeFixture(rng, GgmlType::kQ8_0, 203, 576);
  const MatrixView views[3] = {a.view(), b.view(), c.view()};
  const std::vector<float> x = testing::RandomFloats(rng, 576, -1.0f, 1.0f);
  ExpectSingleThreadBitsOnPools(
      views, x, [](int) { return 3; }, [](int round) { return 1 + (round / 2) % 2; });
}

// A kRows16 matrix (rows a multiple of 16) of random weights.
struct Rows16Matrix {
  GgmlType type;
  int64_t rows, cols;
  std::vector<uint8_t> packed;

  MatrixView view() const {
    MatrixView v{type, rows, cols, packed.data(), RowBytes(type, cols)};
    v.layout = MatrixLayout::kRows16;
    return v;
  }
};

Rows16Matrix MakeRows16(std::mt19937& rng, GgmlType type, int64_t rows, int64_t cols) {
  const size_t stride = RowBytes(type, cols);
  std::vector<uint8_t> gguf(stride * rows);
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> v = testing::RandomFloats(rng, cols, -0.3f, 0.3f);
    EXPECT_TRUE(QuantizeRow(type, v.data(), gguf.data() + r * stride, cols));
  }
  Rows16Matrix m{type, rows, cols, std::vector<uint8_t>(gguf.size())};
  RepackRowsRows16(type, cols, rows, stride, gguf.data(), m.packed.data());
  return m;
}

// Batch 1 on kRows16 matrices shares their panels between the threads (each claims its own
// from the front, then the others' from the back): every output written once, with the bits
// of the single-threaded call, for one, two or all three matrices in a call.
TEST(Rows16SharedTest, MatMulSharedOnPoolsGivesTheSingleThreadBits) {
  if (!HaveVnni()) GTEST_SKIP() << "no AVX-512 VNNI on this machine";
  std::mt19937 rng(10);
  for (GgmlType type : {GgmlType::kQ4_1, GgmlType::kQ8_0}) {
    // Panels: 36 + 12 + 1, so that shares end inside a matrix and a matrix of one panel.
    const Rows16Matrix a = MakeRows16(rng, type, 576, 576);
    const Rows16Matrix b = MakeRows16(rng, type, 192, 576);
    const Rows16Matrix c = MakeRows16(rng, type, 16, 576);
    const MatrixView views[3] = {a.view(), b.view(), c.view()};
    const std::vector<float> x = testing::RandomFloats(rng, 576, -1.0f, 1.0f);
    ExpectSingleThreadBitsOnPools(
        views, x, [](int round) { return 1 + round % 3; },
        [](int round) { return 1 + (round / 2) % 3; });
  }
}

}  // namespace
}  // namespace crescent::kernels::internal
#endif  // CRESCENT_KERNELS_X86
