#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/fp16.h"
#include "src/common/thread_pool.h"
#include "tests/kernels/cpu/test_util.h"

namespace crescent::kernels {
namespace {

using testing::AvailableIsas;
using testing::ScopedIsa;

constexpr uint16_t kHalfNaN = 0x7E00;

// One sequence's paged KV cache, filled for positions [0, n_pos); every other slot of its pages
// holds NaN, so reading any position the queries may not see poisons the output.
struct PagedSeq {
  int64_t n_pos = 0;
  std::vector<std::unique_ptr<uint16_t[]>> k_pages, v_pages;
  std::vector<const uint16_t*> k_ptrs, v_ptrs;
  std::vector<float> k_dense, v_dense;  // [n_pos][n_kv][hd], the f16 values as floats
  std::vector<float> q;                 // [n_q][n_heads][hd]
  std::vector<float> out;
  int n_q = 0;
  int64_t q_pos0 = 0;
};

struct Shape {
  int n_heads, n_kv, hd, bt;
};

PagedSeq MakeSeq(std::mt19937& rng, const Shape& s, int n_q, int64_t q_pos0, float q_scale) {
  PagedSeq seq;
  seq.n_q = n_q;
  seq.q_pos0 = q_pos0;
  seq.n_pos = q_pos0 + n_q;
  const int64_t pages = (seq.n_pos + s.bt - 1) / s.bt;
  const size_t page_elems = static_cast<size_t>(s.bt) * s.n_kv * s.hd;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  seq.k_dense.resize(seq.n_pos * s.n_kv * s.hd);
  seq.v_dense.resize(seq.n_pos * s.n_kv * s.hd);
  for (int64_t p = 0; p < pages; ++p) {
    seq.k_pages.emplace_back(new uint16_t[page_elems]);
    seq.v_pages.emplace_back(new uint16_t[page_elems]);
    std::fill_n(seq.k_pages.back().get(), page_elems, kHalfNaN);
    std::fill_n(seq.v_pages.back().get(), page_elems, kHalfNaN);
    seq.k_ptrs.push_back(seq.k_pages.back().get());
    seq.v_ptrs.push_back(seq.v_pages.back().get());
  }
  for (int64_t pos = 0; pos < seq.n_pos; ++pos) {
    for (int e = 0; e < s.n_kv * s.hd; ++e) {
      const uint16_t kh = F32ToF16(dist(rng)), vh = F32ToF16(dist(rng));
      const size_t slot = static_cast<size_t>(pos % s.bt) * s.n_kv * s.hd + e;
      seq.k_pages[pos / s.bt][slot] = kh;
      seq.v_pages[pos / s.bt][slot] = vh;
      seq.k_dense[pos * s.n_kv * s.hd + e] = F16ToF32(kh);
      seq.v_dense[pos * s.n_kv * s.hd + e] = F16ToF32(vh);
    }
  }
  seq.q =
      testing::RandomFloats(rng, static_cast<int64_t>(n_q) * s.n_heads * s.hd, -q_scale, q_scale);
  seq.out.assign(seq.q.size(), -999.0f);
  return seq;
}

// Dense causal attention in double.
void ExpectMatchesReference(const PagedSeq& seq, const Shape& s, float scale,
                            const std::string& what) {
  const int group = s.n_heads / s.n_kv;
  for (int j = 0; j < seq.n_q; ++j) {
    const int64_t last = seq.q_pos0 + j;
    for (int h = 0; h < s.n_heads; ++h) {
      const int kvh = h / group;
      const float* q = seq.q.data() + (static_cast<int64_t>(j) * s.n_heads + h) * s.hd;
      std::vector<double> w(last + 1);
      double mx = -INFINITY, max_abs_score = 0;
      for (int64_t p = 0; p <= last; ++p) {
        const float* k = seq.k_dense.data() + (p * s.n_kv + kvh) * s.hd;
        double dot = 0;
        for (int d = 0; d < s.hd; ++d) dot += static_cast<double>(q[d]) * k[d];
        w[p] = dot * scale;
        mx = std::max(mx, w[p]);
        max_abs_score = std::max(max_abs_score, std::fabs(w[p]));
      }
      double denom = 0;
      for (double& v : w) denom += (v = std::exp(v - mx));
      for (int d = 0; d < s.hd; ++d) {
        double ref = 0;
        for (int64_t p = 0; p <= last; ++p)
          ref += w[p] * seq.v_dense[(p * s.n_kv + kvh) * s.hd + d];
        ref /= denom;
        const float got = seq.out[(static_cast<int64_t>(j) * s.n_heads + h) * s.hd + d];
        // fp32 scores carry a relative error of ~1e-6 of their magnitude, which the softmax
        // turns into an absolute error of the weights.
        ASSERT_NEAR(got, ref, 1e-5 * (2 + max_abs_score))
            << what << " j=" << j << " h=" << h << " d=" << d;
      }
    }
  }
}

void RunCase(std::mt19937& rng, const Shape& s,
             const std::vector<std::pair<int, int64_t>>& seq_specs, ThreadPool* pool, float q_scale,
             const std::string& what) {
  std::vector<PagedSeq> seqs;
  for (auto [n_q, pos0] : seq_specs) seqs.push_back(MakeSeq(rng, s, n_q, pos0, q_scale));
  std::vector<AttentionSeq> views;
  for (PagedSeq& p : seqs) {
    views.push_back(
        AttentionSeq{p.q.data(), p.n_q, p.q_pos0, p.k_ptrs.data(), p.v_ptrs.data(), p.out.data()});
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
  Attention(pool, views.data(), static_cast<int>(views.size()), s.n_heads, s.n_kv, s.hd, s.bt,
            scale);
  for (size_t i = 0; i < seqs.size(); ++i) {
    ExpectMatchesReference(seqs[i], s, scale, what + " seq=" + std::to_string(i));
  }
}

TEST(AttentionTest, DecodeGqaAcrossPagesOnEveryIsa) {
  std::mt19937 rng(1);
  ThreadPool pool(2);
  const Shape s{9, 3, 64, 16};  // the reference model's heads
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    // Position 0 alone, a partial first page, exactly one full page, many pages + a partial one.
    for (int64_t pos0 : {0, 5, 15, 16, 100}) {
      RunCase(rng, s, {{1, pos0}}, nullptr, 1.0f,
              std::string(IsaName(isa)) + " pos0=" + std::to_string(pos0));
      RunCase(rng, s, {{1, pos0}}, &pool, 1.0f,
              std::string(IsaName(isa)) + " pool pos0=" + std::to_string(pos0));
    }
  }
}

TEST(AttentionTest, LongDecodeSplitsPositionsAcrossThreads) {
  std::mt19937 rng(2);
  ThreadPool pool2(2), pool3(3);
  const Shape s{4, 1, 64, 32};  // multi-query: one KV head, so one piece unless split
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    RunCase(rng, s, {{1, 2000}}, &pool2, 2.0f, std::string(IsaName(isa)) + " pool2");
    RunCase(rng, s, {{2, 1500}}, &pool3, 2.0f, std::string(IsaName(isa)) + " pool3");
  }
}

TEST(AttentionTest, ShortDecodeWithFewKvHeadsSplitsPositions) {
  std::mt19937 rng(12);
  ThreadPool pool2(2);
  const Shape s{9, 3, 64, 16};  // the reference model's shape: 3 pieces for 2 threads
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    for (int64_t pos : {0, 15, 63, 64, 130, 191}) {
      RunCase(rng, s, {{1, pos}}, &pool2, 1.0f,
              std::string(IsaName(isa)) + " pos " + std::to_string(pos));
    }
    RunCase(rng, s, {{1, 130}, {1, 70}}, &pool2, 1.0f, std::string(IsaName(isa)) + " two seqs");
  }
}

TEST(AttentionTest, ChunkedPrefillWithEarlierContext) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  const Shape s{6, 2, 32, 16};
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    // A first chunk from 0, then a later chunk starting mid-page with more queries than fit in
    // one work piece (48 rows / group 3 = 16 queries).
    RunCase(rng, s, {{37, 0}}, &pool, 1.0f, std::string(IsaName(isa)) + " first chunk");
    RunCase(rng, s, {{40, 21}}, &pool, 1.0f, std::string(IsaName(isa)) + " later chunk");
    RunCase(rng, s, {{40, 21}}, nullptr, 1.0f, std::string(IsaName(isa)) + " later chunk 1t");
  }
}

TEST(AttentionTest, SeveralSequencesOfDifferentLengthsInOneCall) {
  std::mt19937 rng(4);
  ThreadPool pool(3);
  const Shape s{8, 8, 16, 7};  // plain multi-head attention, odd page size
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    RunCase(rng, s, {{1, 0}, {1, 50}, {5, 3}, {12, 64}, {0, 9}}, &pool, 1.0f, IsaName(isa));
  }
}

TEST(AttentionTest, OddHeadDimAndLargeScores) {
  std::mt19937 rng(5);
  const Shape s{4, 2, 36, 256};  // head_dim with a vector tail; one big page
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    // Large |q| makes scores of hundreds: the online softmax must rescale without overflow.
    RunCase(rng, s, {{3, 300}}, nullptr, 30.0f, std::string(IsaName(isa)) + " large scores");
  }
}

}  // namespace
}  // namespace crescent::kernels

namespace crescent::kernels {
namespace {

// Each query row's output is the same bits whether it is computed in one prefill call, in
// chunks, alone (decode, positions split over threads) or beside other sequences.
TEST(AttentionTest, RowsAreBitIdenticalForAnyChunkingBatchAndThreads) {
  std::mt19937 rng(31);
  ThreadPool pool2(2);
  for (const Shape& s : {Shape{9, 3, 64, 16}, Shape{4, 1, 32, 4}, Shape{4, 2, 16, 128}}) {
    const int n = 200;  // several 64-position segments
    PagedSeq seq = MakeSeq(rng, s, n, 0, 2.0f);
    PagedSeq other = MakeSeq(rng, s, 2, 90, 2.0f);
    const int64_t row = static_cast<int64_t>(s.n_heads) * s.hd;
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
    for (Isa isa : AvailableIsas()) {
      ScopedIsa scoped(isa);
      std::vector<float> full(n * row);
      AttentionSeq all{seq.q.data(), n, 0, seq.k_ptrs.data(), seq.v_ptrs.data(), full.data()};
      Attention(nullptr, &all, 1, s.n_heads, s.n_kv, s.hd, s.bt, scale);
      for (int chunk : {1, 3, 64}) {
        for (bool with_other : {false, true}) {
          std::vector<float> out(n * row, -999.0f);
          for (int j0 = 0; j0 < n; j0 += chunk) {
            const int nq = std::min(chunk, n - j0);
            AttentionSeq views[2] = {{other.q.data(), other.n_q, other.q_pos0, other.k_ptrs.data(),
                                      other.v_ptrs.data(), other.out.data()},
                                     {seq.q.data() + j0 * row, nq, j0, seq.k_ptrs.data(),
                                      seq.v_ptrs.data(), out.data() + j0 * row}};
            Attention(&pool2, with_other ? views : views + 1, with_other ? 2 : 1, s.n_heads, s.n_kv,
                      s.hd, s.bt, scale);
          }
          for (int64_t i = 0; i < n * row; ++i) {
            ASSERT_EQ(out[i], full[i])
                << IsaName(isa) << " heads=" << s.n_heads << " bt=" << s.bt << " chunk=" << chunk
                << " other=" << with_other << " query=" << i / row;
          }
        }
      }
    }
  }
}

TEST(AttentionTest, RowsAreBitIdenticalForAnyPageSize) {
  ThreadPool pool2(2);
  for (Isa isa : AvailableIsas()) {
    ScopedIsa scoped(isa);
    for (auto [n_q, pos0] : {std::pair<int, int64_t>{1, 150}, {5, 200}, {70, 0}}) {
      std::vector<float> first;
      for (int bt : {16, 1, 5, 64, 256}) {
        std::mt19937 rng(47);  // the same K, V and q whatever the page size
        const Shape s{9, 3, 64, bt};
        PagedSeq seq = MakeSeq(rng, s, n_q, pos0, 2.0f);
        AttentionSeq view{seq.q.data(),      seq.n_q,           seq.q_pos0,
                          seq.k_ptrs.data(), seq.v_ptrs.data(), seq.out.data()};
        Attention(&pool2, &view, 1, s.n_heads, s.n_kv, s.hd, s.bt, 0.125f);
        if (first.empty()) {
          first = seq.out;
          continue;
        }
        for (size_t i = 0; i < first.size(); ++i) {
          ASSERT_EQ(seq.out[i], first[i]) << IsaName(isa) << " bt=" << bt << " n_q=" << n_q;
        }
      }
    }
  }
}

}  // namespace
}  // namespace crescent::kernels
