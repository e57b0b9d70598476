#include "kernels/cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/internal/prefetch_walk.h"
#include "kernels/cpu/internal/vec_internal.h"

namespace crescent::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Queries x heads of one KV head handled together (they share every K/V load).
constexpr int kMaxRows = 48;
// Positions [k * kSegment, (k + 1) * kSegment) form segment k. Each row's softmax is computed
// per segment, in one pass over the segment's scores, and the segments folded in order (see
// Fold), whether or not the positions are split over threads and whatever the page size, so
// the result is the same for every batch shape, thread count and block_tokens. The score tile
// of a segment (rows x kSegment floats) stays in L1.
constexpr int64_t kSegment = 64;

// One piece of work: queries [j0, j1) of sequence `seq` against KV heads [g0, g1), over
// positions [p_begin, p_end) (whole segments, except where the sequence ends). Its rows are
// head-major: row r is KV head g0 + r / rows_per_head, query j0 + (r % rows_per_head) / group,
// query head (g0 + r / rows_per_head) * group + r % group.
struct Item {
  int seq;
  int g0, g1;
  int j0, j1;
  int64_t p_begin, p_end;
  int64_t partial;  // index of its first row in the partial buffers, or -1 (final).
};

struct Scratch {
  std::vector<float> q, scores, acc, m, l;  // one segment's state
  std::vector<float> fm, fl, facc;          // the folded state of a final item
};

Scratch& ThreadScratch() {
  thread_local Scratch s;
  return s;
}

struct Shape {
  int n_heads, n_kv_heads, head_dim, block_tokens, group;
  float scale;
};

// Asks for the K and V rows of KV heads [g0, g1) at positions [t0, t1) (all on one page) ahead
// of use. In decode the KV rows come from DRAM (a decode step streams all weights through the
// caches in between); with every KV head of a position taken together the rows are one
// contiguous run of the page. The hint is T1 (into L2): with the next item's prefetch
// (Attention), decode steps at batch 8 and 32 were 1.5-2 % faster than with T0.
void PrefetchKv(const AttentionSeq& seq, int64_t page, int64_t t0, int64_t t1, size_t kv_stride,
                int64_t bt, int g0, int g1, int hd) {
  const size_t offset =
      static_cast<size_t>(t0 - page * bt) * kv_stride + static_cast<size_t>(g0) * hd;
  const char* k = reinterpret_cast<const char*>(seq.k_blocks[page] + offset);
  const char* v = reinterpret_cast<const char*>(seq.v_blocks[page] + offset);
  size_t row_bytes = static_cast<size_t>(g1 - g0) * hd * sizeof(uint16_t);
  const size_t stride_bytes = kv_stride * sizeof(uint16_t);
  int64_t rows = t1 - t0;
  if (row_bytes == stride_bytes) {  // all KV heads: the rows are one contiguous run
    row_bytes *= static_cast<size_t>(rows);
    rows = 1;
  }
  for (int64_t t = 0; t < rows; ++t, k += stride_bytes, v += stride_bytes) {
    for (size_t off = 0; off < row_bytes; off += 64) {
      __builtin_prefetch(k + off, 0, 2);
      __builtin_prefetch(v + off, 0, 2);
    }
  }
}

// The K and V of the item a thread runs next, asked for a little at a time while it runs the
// current one (RunItem: `lines_per_run` lines at each of its page runs, the rest at its end), so
// that they arrive before they are read without a burst of requests that the core would drop.
// Only for items over all KV heads (decode), whose page runs are contiguous.
struct KvAhead {
  std::vector<ThreadPool::ByteRange> ranges;
  internal::PrefetchWalk walk;  // over `ranges`
  int64_t lines_per_run = 0;
};

// The softmax state of one row over some positions: running max m, sum l of exp(score - m),
// and acc = sum of exp(score - m) * v (unnormalized).
// Folds a segment's state (m, l, a) into the running state (*fm, *fl, fa). Every row's result
// is the left fold of its segments' states in position order, whichever item or thread
// computed them, so that it is bit-identical for any batch shape and split (with int8
// activation quantization downstream, a one-ulp difference here can flip a code and grow).
__attribute__((noinline)) void Fold(const internal::VecKernels& vk, float* fm, float* fl, float* fa,
                                    float m, float l, const float* a, int hd) {
  if (m == kNegInf) return;  // the segment lies wholly after the row's position.
  if (*fm == kNegInf) {
    *fm = m;
    *fl = l;
    std::copy(a, a + hd, fa);
    return;
  }
  const float mx = std::max(*fm, m);
  const float ca = std::exp(*fm - mx), cb = std::exp(m - mx);
  *fl = *fl * ca + l * cb;
  vk.axpby(fa, ca, a, cb, fa, hd);
  *fm = mx;
}

// Runs one item: for each segment of its positions, the scores of all its rows (page by page),
// one softmax pass per row, then the weighted sum of V (page by page). A final item folds the
// segments and writes the normalized output; a piece of a split writes each segment's
// (m, l, acc) into the partial buffers (segment k of the item at rows it.partial + k * nr).
// `ahead` (may be null): the next item's KV, prefetched along.
void RunItem(const AttentionSeq& seq, const Item& it, const Shape& sh,
             const internal::VecKernels& vk, float* part_m, float* part_l, float* part_acc,
             KvAhead* ahead) {
  const int hd = sh.head_dim, group = sh.group;
  const int per_head = (it.j1 - it.j0) * group;
  const int heads = it.g1 - it.g0;
  const int nr = heads * per_head;
  Scratch& s = ThreadScratch();
  s.q.resize(static_cast<size_t>(nr) * hd);
  s.acc.resize(static_cast<size_t>(nr) * hd);
  s.scores.resize(static_cast<size_t>(nr) * kSegment);
  s.m.resize(nr);
  s.l.resize(nr);
  const bool final = it.partial < 0;
  if (final) {
    s.fm.assign(nr, kNegInf);
    s.fl.assign(nr, 0.0f);
    s.facc.assign(static_cast<size_t>(nr) * hd, 0.0f);
  }
  auto query_of = [&](int r) { return it.j0 + (r % per_head) / group; };
  auto head_of = [&](int r) { return (it.g0 + r / per_head) * group + r % group; };
  for (int r = 0; r < nr; ++r) {
    const float* src = seq.q + (static_cast<int64_t>(query_of(r)) * sh.n_heads + head_of(r)) * hd;
    vk.scale(src, sh.scale, s.q.data() + static_cast<size_t>(r) * hd, hd);
  }
  const size_t kv_stride = static_cast<size_t>(sh.n_kv_heads) * hd;
  const int64_t bt = sh.block_tokens;
  // The run of positions from t0 that lies on one page and in one segment: [t0, *t1).
  auto run_at = [&](int64_t t0, int64_t* page, int64_t* t1) {
    *page = t0 / bt;
    *t1 = std::min({it.p_end, (*page + 1) * bt, (t0 / kSegment + 1) * kSegment});
  };
  auto prefetch_run = [&](int64_t t0) {
    if (t0 >= it.p_end) return;
    int64_t page, t1;
    run_at(t0, &page, &t1);
    PrefetchKv(seq, page, t0, t1, kv_stride, bt, it.g0, it.g1, hd);
  };
  auto kv_offset = [&](int64_t t0, int64_t page, int gi) {
    return static_cast<size_t>(t0 - page * bt) * kv_stride + static_cast<size_t>(it.g0 + gi) * hd;
  };
  prefetch_run(it.p_begin);
  int64_t seg_index = 0;
  for (int64_t seg0 = it.p_begin; seg0 < it.p_end; ++seg_index) {
    const int64_t seg1 = std::min(it.p_end, (seg0 / kSegment + 1) * kSegment);
    const int nt = static_cast<int>(seg1 - seg0);
    // Scores, a page run at a time; the next run's K and V are fetched meanwhile.
    for (int64_t t0 = seg0; t0 < seg1;) {
      int64_t page, t1;
      run_at(t0, &page, &t1);
      prefetch_run(t1);
      if (ahead != nullptr) ahead->walk.Prefetch(ahead->lines_per_run);
      for (int gi = 0; gi < heads; ++gi) {
        vk.scores_f16(s.q.data() + static_cast<size_t>(gi) * per_head * hd, per_head, hd,
                      seq.k_blocks[page] + kv_offset(t0, page, gi), kv_stride,
                      static_cast<int>(t1 - t0),
                      s.scores.data() + static_cast<size_t>(gi) * per_head * kSegment + (t0 - seg0),
                      kSegment);
      }
      t0 = t1;
    }
    for (int r = 0; r < nr; ++r) {
      float* row = s.scores.data() + static_cast<size_t>(r) * kSegment;
      const int64_t limit = seq.q_pos0 + query_of(r);  // last position this row sees.
      const int valid = static_cast<int>(std::clamp<int64_t>(limit - seg0 + 1, 0, nt));
      // Positions past the row's own add exact zeros below: the result does not depend on
      // which later queries share the call.
      std::fill(row + valid, row + nt, 0.0f);
      s.m[r] = kNegInf;
      s.l[r] = 0.0f;
      if (valid == 0) continue;
      s.m[r] = vk.max(row, valid);
      s.l[r] = vk.exp_shift_sum(row, row, valid, s.m[r]);
    }
    std::fill(s.acc.begin(), s.acc.end(), 0.0f);
    for (int64_t t0 = seg0; t0 < seg1;) {
      int64_t page, t1;
      run_at(t0, &page, &t1);
      for (int gi = 0; gi < heads; ++gi) {
        vk.accum_f16(s.scores.data() + static_cast<size_t>(gi) * per_head * kSegment + (t0 - seg0),
                     kSegment, per_head, seq.v_blocks[page] + kv_offset(t0, page, gi), kv_stride,
                     static_cast<int>(t1 - t0), hd,
                     s.acc.data() + static_cast<size_t>(gi) * per_head * hd);
      }
      t0 = t1;
    }
    for (int r = 0; r < nr; ++r) {
      const float* a = s.acc.data() + static_cast<size_t>(r) * hd;
      if (final) {
        Fold(vk, &s.fm[r], &s.fl[r], s.facc.data() + static_cast<size_t>(r) * hd, s.m[r], s.l[r], a,
             hd);
      } else {
        const int64_t pr = it.partial + seg_index * nr + r;
        part_m[pr] = s.m[r];
        part_l[pr] = s.l[r];
        std::copy(a, a + hd, part_acc + pr * hd);
      }
    }
    seg0 = seg1;
  }
  if (ahead != nullptr) ahead->walk.Prefetch(std::numeric_limits<int64_t>::max());
  if (!final) return;
  for (int r = 0; r < nr; ++r) {
    const float* a = s.facc.data() + static_cast<size_t>(r) * hd;
    float* dst = seq.out + (static_cast<int64_t>(query_of(r)) * sh.n_heads + head_of(r)) * hd;
    vk.scale(a, 1.0f / s.fl[r], dst, hd);
  }
}

}  // namespace

void Attention(ThreadPool* pool, const AttentionSeq* seqs, int n_seqs, int n_heads, int n_kv_heads,
               int head_dim, int block_tokens, float scale) {
  const Shape sh{n_heads, n_kv_heads, head_dim, block_tokens, n_heads / n_kv_heads, scale};
  const int q_chunk = std::max(1, kMaxRows / sh.group);
  const int threads = pool != nullptr ? pool->num_threads() : 1;

  // Units of work: a chunk of one sequence's queries against one KV head, or, for a single
  // query (decode), against all KV heads at once, so that each page is read front to back.
  // When there are fewer units than the pool can use well, their positions are split into
  // pieces of whole segments, merged at the end.
  auto heads_per_unit = [&](int queries) { return queries == 1 ? n_kv_heads : 1; };
  int64_t units = 0;
  for (int s = 0; s < n_seqs; ++s) {
    for (int j0 = 0; j0 < seqs[s].n_q; j0 += q_chunk) {
      units += n_kv_heads / heads_per_unit(std::min(seqs[s].n_q - j0, q_chunk));
    }
  }
  const int64_t want = 4 * static_cast<int64_t>(threads);

  thread_local std::vector<Item> items;
  items.clear();
  int64_t partial_rows = 0;
  struct Merge {
    int seq, g0, g1, j0, j1, segments;  // segments of the rows' positions
    int64_t first_row;  // partial row of segment 0; segment k's rows follow at k * rows.
  };
  thread_local std::vector<Merge> merges;
  merges.clear();
  for (int s = 0; s < n_seqs; ++s) {
    const AttentionSeq& seq = seqs[s];
    for (int j0 = 0; j0 < seq.n_q; j0 += q_chunk) {
      const int j1 = std::min(seq.n_q, j0 + q_chunk);
      const int step = heads_per_unit(j1 - j0);
      for (int g0 = 0; g0 < n_kv_heads; g0 += step) {
        const int g1 = g0 + step;
        const int64_t n_pos = seq.q_pos0 + j1;  // positions [0, n_pos).
        const int64_t segs = (n_pos + kSegment - 1) / kSegment;
        int64_t splits = 1;
        if (threads > 1 && units < want) splits = std::min((want + units - 1) / units, segs);
        if (splits <= 1) {
          items.push_back({s, g0, g1, j0, j1, 0, n_pos, -1});
          continue;
        }
        const int rows = step * (j1 - j0) * sh.group;
        merges.push_back({s, g0, g1, j0, j1, static_cast<int>(segs), partial_rows});
        // Pieces of whole segments; piece i's segment k is segment seg_b + k of the row.
        for (int64_t i = 0; i < splits; ++i) {
          const int64_t seg_b = segs * i / splits, seg_e = segs * (i + 1) / splits;
          if (seg_b == seg_e) continue;
          items.push_back({s, g0, g1, j0, j1, seg_b * kSegment, std::min(n_pos, seg_e * kSegment),
                           partial_rows + seg_b * rows});
        }
        partial_rows += segs * rows;
      }
    }
  }

  thread_local std::vector<float> part_m, part_l, part_acc;
  part_m.resize(partial_rows);
  part_l.resize(partial_rows);
  part_acc.resize(static_cast<size_t>(partial_rows) * head_dim);
  const internal::VecKernels& vk = internal::ActiveVecKernels();
  float* pm = part_m.data();
  float* pl = part_l.data();
  float* pa = part_acc.data();
  const Item* item_data = items.data();
  const int64_t n_items = static_cast<int64_t>(items.size());
  // An item's first page runs are only asked for as it starts (RunItem), and each run's KV is
  // a few KiB in pages far apart, too short for the hardware prefetchers: so each thread
  // prefetches its next item's KV while it runs the current one. Alternating on the decode
  // steps of one run (SmolLM2, 2 threads): batch 32 5-8 %, batch 8 ~4 % faster; batch 1
  // unchanged (its KV already rides along with the Q/K/V matmul). All of the next item at the
  // start of the current one instead gained nothing (docs/benchmarks.md, 2026-11-24, night).
  const size_t kv_stride = static_cast<size_t>(n_kv_heads) * head_dim;
  auto run_item = [&](const Item& it, const Item* next) {
    thread_local KvAhead ahead;
    KvAhead* use = nullptr;
    if (next != nullptr && next->g0 == 0 && next->g1 == n_kv_heads) {
      const AttentionSeq& ns = seqs[next->seq];
      ahead.ranges.clear();
      int64_t lines = 0;
      for (int64_t t0 = next->p_begin; t0 < next->p_end;) {
        const int64_t page = t0 / block_tokens;
        const int64_t t1 = std::min(next->p_end, (page + 1) * block_tokens);
        const size_t offset = static_cast<size_t>(t0 - page * block_tokens) * kv_stride;
        const size_t bytes = static_cast<size_t>(t1 - t0) * kv_stride * sizeof(uint16_t);
        ahead.ranges.push_back({ns.k_blocks[page] + offset, bytes});
        ahead.ranges.push_back({ns.v_blocks[page] + offset, bytes});
        lines += 2 * static_cast<int64_t>((bytes + 63) / 64);
        t0 = t1;
      }
      const int64_t runs = (it.p_end - it.p_begin + block_tokens - 1) / block_tokens + 1;
      ahead.walk = {ahead.ranges.data(), ahead.ranges.size()};
      ahead.lines_per_run = lines / runs + 1;
      use = &ahead;
    }
    RunItem(seqs[it.seq], it, sh, vk, pm, pl, pa, use);
  };
  if (pool != nullptr && threads > 1 && n_items > 1) {
    // Items are claimed one at a time, each thread claiming its next one before it runs the
    // current one (so that it knows what to prefetch) while at least one is left per thread.
    std::atomic<int64_t> next{0};
    pool->Run([&](int, int nt) {
      int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      while (i < n_items) {
        int64_t j = n_items;
        if (next.load(std::memory_order_relaxed) + nt <= n_items) {
          j = next.fetch_add(1, std::memory_order_relaxed);
        }
        run_item(item_data[i], j < n_items ? &item_data[j] : nullptr);
        i = j < n_items ? j : next.fetch_add(1, std::memory_order_relaxed);
      }
    });
  } else {
    for (int64_t i = 0; i < n_items; ++i) {
      run_item(item_data[i], i + 1 < n_items ? &item_data[i + 1] : nullptr);
    }
  }

  // Fold each split row's segments in order, exactly as a final item does.
  thread_local std::vector<float> fold_acc;
  fold_acc.resize(head_dim);
  for (const Merge& mg : merges) {
    const AttentionSeq& seq = seqs[mg.seq];
    const int per_head = (mg.j1 - mg.j0) * sh.group;
    const int rows = (mg.g1 - mg.g0) * per_head;
    for (int r = 0; r < rows; ++r) {
      float fm = kNegInf, fl = 0;
      for (int k = 0; k < mg.segments; ++k) {
        const int64_t pr = mg.first_row + static_cast<int64_t>(k) * rows + r;
        Fold(vk, &fm, &fl, fold_acc.data(), pm[pr], pl[pr], pa + pr * head_dim, head_dim);
      }
      const int j = mg.j0 + (r % per_head) / sh.group;
      const int h = (mg.g0 + r / per_head) * sh.group + r % sh.group;
      float* dst = seq.out + (static_cast<int64_t>(j) * n_heads + h) * head_dim;
      vk.scale(fold_acc.data(), 1.0f / fl, dst, head_dim);
    }
  }
}

}  // namespace crescent::kernels
