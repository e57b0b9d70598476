#include "src/engine/cpu_backend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "src/common/status.h"

namespace crescent::engine {
namespace {

kernels::MatrixView View(const model::TensorRef& t) {
  return kernels::MatrixView{t.type, t.rows, t.cols, t.data, t.row_stride, t.layout};
}

// The views of `ws` (at most 4) into `views`; returns how many. *same: they share a type and
// width, so MatMulShared takes them in one pass.
int ViewsOf(std::initializer_list<const model::TensorRef*> ws, kernels::MatrixView* views,
            bool* same) {
  int n = 0;
  *same = true;
  for (const model::TensorRef* w : ws) {
    views[n] = View(*w);
    *same = *same && views[n].type == views[0].type && views[n].cols == views[0].cols;
    ++n;
  }
  return n;
}

// y_i = x W_i^T for several weight matrices over the same x. When they share a type and width
// the kernel quantizes x once and wakes the pool once; otherwise one MatMul each.
void MatMulMany(ThreadPool* pool, std::initializer_list<const model::TensorRef*> ws,
                std::initializer_list<float*> ys, const float* x, int64_t m) {
  kernels::MatrixView views[4];
  bool same;
  const int n = ViewsOf(ws, views, &same);
  float* const* outs = ys.begin();
  if (same) {
    kernels::MatMulShared(pool, views, outs, n, x, m);
    return;
  }
  for (int i = 0; i < n; ++i) kernels::MatMul(pool, views[i], x, m, outs[i]);
}

// Tells the pool's workers which matrices the matmul after the next one reads (as MatMulMany
// will run them: all in one pass, or the first alone), so that they fetch the start of their
// rows while the caller does the row operations in between (kernels::PrefetchNextMatMul; batch
// 1 only).
void HintNextMatMul(ThreadPool* pool, std::initializer_list<const model::TensorRef*> ws,
                    int64_t m) {
  kernels::MatrixView views[4];
  bool same;
  const int n = ViewsOf(ws, views, &same);
  kernels::PrefetchNextMatMul(pool, views, same ? n : 1, m);
}

// At batch 1, asks the pool's threads to fetch the K and V this layer's attention will read
// (positions before the new one; its own are written after the projections) while they stream
// the Q/K/V projections (kernels::PrefetchDuringNextMatMul): read in attention itself they come
// from DRAM at a latency-bound pace, far below what a sequential stream gets. Thread t takes the
// t-th contiguous part of the pages. Alternating on the decode steps of one run (SmolLM2, 2
// threads): steps 1.2 % faster at 64-192 positions (16 of 20 runs), 1.8 % at 64-320 (12 of
// 12), 2.6 % at 64-1088 (8 of 8).
void HintAttentionKv(ThreadPool* pool, const SequenceBatch& s, KvCache* cache, int layer) {
  const int64_t bt = cache->config().block_tokens;
  const size_t row_bytes =
      static_cast<size_t>(cache->config().n_kv_heads) * cache->config().head_dim * sizeof(uint16_t);
  const int64_t pages = (s.pos0 + bt - 1) / bt;
  const int threads = pool->num_threads();
  ThreadPool::ByteRange ranges[kernels::kMaxSidePrefetchRanges];
  for (int t = 0; t < threads; ++t) {
    int n = 0;
    for (int64_t b = pages * t / threads;
         b < pages * (t + 1) / threads && n + 2 <= kernels::kMaxSidePrefetchRanges; ++b) {
      const size_t bytes = static_cast<size_t>(std::min(bt, s.pos0 - b * bt)) * row_bytes;
      ranges[n++] = {cache->KPage(s.block_table[b], layer), bytes};
      ranges[n++] = {cache->VPage(s.block_table[b], layer), bytes};
    }
    kernels::PrefetchDuringNextMatMul(pool, t, ranges, n);
  }
}

void AddBias(float* rows, int64_t n_rows, const model::TensorRef& bias, int64_t width,
             std::vector<float>* scratch) {
  if (!bias.present()) return;
  scratch->resize(width);
  kernels::GetRow(bias.type, bias.data, width, scratch->data());
  for (int64_t r = 0; r < n_rows; ++r) {
    float* row = rows + r * width;
    for (int64_t i = 0; i < width; ++i) row[i] += (*scratch)[i];
  }
}

// Rotates `n_heads` heads of one token with the angles of its position (cos/sin tables of
// rot_dim/2 entries). Normal: pairs (2i, 2i+1); NeoX: pairs (i, i + rot_dim/2).
void ApplyRope(float* x, int n_heads, int head_dim, int rot_dim, bool neox, const float* cos,
               const float* sin) {
  const int half = rot_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    if (neox) {
      for (int i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos[i] - b * sin[i];
        v[i + half] = a * sin[i] + b * cos[i];
      }
    } else {
      for (int i = 0; i < half; ++i) {
        float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * cos[i] - b * sin[i];
        v[2 * i + 1] = a * sin[i] + b * cos[i];
      }
    }
  }
}

// Sums a Forward's phases into a ForwardPhases (CpuBackend::MeasurePhases); does nothing when
// that is nullptr. Mark(slot) adds the time since the previous reading to *slot; Skip() starts
// the next phase without adding. The whole call counts once Finish() runs.
class PhaseTimer {
 public:
  PhaseTimer(ForwardPhases* phases, const Clock* clock) : phases_(phases), clock_(clock) {
    if (phases_ != nullptr) start_ = last_ = clock_->NowNanos();
  }

  void Mark(double ForwardPhases::*slot) {
    if (phases_ == nullptr) return;
    const int64_t now = clock_->NowNanos();
    phases_->*slot += static_cast<double>(now - last_) * 1e-9;
    last_ = now;
  }

  void Skip() {
    if (phases_ != nullptr) last_ = clock_->NowNanos();
  }

  void Finish() {
    if (phases_ == nullptr) return;
    phases_->total += static_cast<double>(clock_->NowNanos() - start_) * 1e-9;
    phases_->calls += 1;
  }

 private:
  ForwardPhases* phases_;
  const Clock* clock_;
  int64_t start_ = 0, last_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const model::ModelConfig& config,
                                                               const model::ModelWeights& weights,
                                                               int num_threads) {
  CRESCENT_RETURN_IF_ERROR(CheckMatrixTypes(weights, kernels::MatMulSupports, "CPU"));
  if (num_threads <= 0) num_threads = ThreadPool::DefaultThreadCount();
  std::unique_ptr<CpuBackend> backend(new CpuBackend(config, weights, num_threads));
  auto env_is = [](const char* name, char value) {
    const char* env = std::getenv(name);
    return env != nullptr && env[0] == value;
  };
  const kernels::Isa isa = kernels::ActiveIsa();
  const bool repack = kernels::Group8Native(isa) && !env_is("CRESCENT_REPACK_WEIGHTS", '0');
  const bool rows16 = kernels::Rows16Native(isa) && !env_is("CRESCENT_REPACK_WEIGHTS", 'g');
  if (repack || env_is("CRESCENT_HUGE_WEIGHTS", '1')) {
    CRESCENT_RETURN_IF_ERROR(backend->CopyWeights(repack, rows16));
  }
  return backend;
}

absl::Status CpuBackend::CopyWeights(bool repack, bool rows16) {
  copied_weights_ = *weights_;
  std::vector<model::TensorRef*> mats;
  for (model::LayerWeights& lw : copied_weights_.layers) {
    for (model::TensorRef* t : {&lw.attn_q, &lw.attn_k, &lw.attn_v, &lw.attn_output, &lw.ffn_gate,
                                &lw.ffn_up, &lw.ffn_down}) {
      mats.push_back(t);
    }
  }
  mats.push_back(&copied_weights_.output);
  size_t total = 0;
  for (const model::TensorRef* t : mats) total += (t->nbytes + 63) / 64 * 64;
  CRESCENT_ASSIGN_OR_RETURN(weight_copy_, kernels::HugePageBuffer::Create(total));
  auto* dst = static_cast<uint8_t*>(weight_copy_->data());
  // Copied in parallel so that first touch spreads the pages over the pool's threads.
  std::vector<std::pair<model::TensorRef*, uint8_t*>> jobs;
  for (model::TensorRef* t : mats) {
    jobs.emplace_back(t, dst);
    dst += (t->nbytes + 63) / 64 * 64;
  }
  // The layout each copy gets: a GGUF matrix is repacked where `repack` allows, any other one
  // copied as it is.
  using kernels::MatrixLayout;
  std::vector<MatrixLayout> layouts;
  for (const auto& [t, p] : jobs) {
    MatrixLayout l = t->layout;
    if (repack && l == MatrixLayout::kGguf) {
      if (rows16 && kernels::Rows16Supported(t->type, t->rows)) {
        l = MatrixLayout::kRows16;
      } else if (kernels::Group8Supported(t->type)) {
        l = MatrixLayout::kGroup8;
      }
    }
    layouts.push_back(l);
  }
  pool_.ParallelFor(static_cast<int64_t>(jobs.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const model::TensorRef& t = *jobs[i].first;
      if (layouts[i] == t.layout) {
        std::memcpy(jobs[i].second, t.data, t.nbytes);
      } else if (layouts[i] == MatrixLayout::kRows16) {
        kernels::RepackRowsRows16(t.type, t.cols, t.rows, t.row_stride, t.data, jobs[i].second);
      } else {
        kernels::RepackRowsGroup8(t.type, t.cols, t.rows, t.row_stride, t.data, jobs[i].second);
      }
    }
  });
  for (size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].first->layout = layouts[i];
    jobs[i].first->data = jobs[i].second;
  }
  weights_ = &copied_weights_;
  return absl::OkStatus();
}

CpuBackend::CpuBackend(const model::ModelConfig& config, const model::ModelWeights& weights,
                       int num_threads)
    : config_(config), weights_(&weights), pool_(num_threads) {
  inv_freq_ = RopeInverseFrequencies(config_, *weights_);
}

absl::Status CpuBackend::Forward(std::span<const SequenceBatch> seqs, KvCache* cache,
                                 const LayerHook* hook, std::vector<float>* logits) {
  // `logits` keeps its storage from call to call: the output projection overwrites every
  // value, so resizing to the same size (the usual decode step) costs nothing.
  if (seqs.empty()) {
    logits->clear();
    return absl::OkStatus();
  }
  PhaseTimer timer(phases_, phase_clock_);
  absl::Status valid = ValidateForward(config_, seqs, *cache);
  if (!valid.ok()) {
    logits->clear();
    return valid;
  }

  const int d = config_.n_embd;
  const int hd = config_.head_dim;
  const int nh = config_.n_heads;
  const int nkv = config_.n_kv_heads;
  const int q_dim = nh * hd;
  const int kv_dim = nkv * hd;
  const int ff = config_.n_ff;
  const int rot = config_.rope_dim;
  const int half = rot / 2;
  const bool neox = config_.rope_style == model::RopeStyle::kNeox;
  const int bt = cache->config().block_tokens;

  // Rows of the activation matrix: every new token of every sequence; and the rows that want
  // logits (the output projection's batch).
  int64_t T = 0, n_logit_rows = 0;
  for (const SequenceBatch& s : seqs) {
    T += static_cast<int64_t>(s.tokens.size());
    if (s.logits == LogitsMode::kAll) n_logit_rows += static_cast<int64_t>(s.tokens.size());
    if (s.logits == LogitsMode::kLast) n_logit_rows += 1;
  }
  x_.resize(T * d);
  xn_.resize(T * d);
  q_.resize(T * q_dim);
  k_.resize(T * kv_dim);
  v_.resize(T * kv_dim);
  attn_.resize(T * q_dim);
  gate_.resize(T * ff);
  up_.resize(T * ff);
  positions_.resize(T);
  rope_cos_.resize(T * half);
  rope_sin_.resize(T * half);

  // Embeddings and rotary angles (shared by every layer).
  {
    int64_t row = 0;
    const model::TensorRef& emb = weights_->token_embd;
    for (const SequenceBatch& s : seqs) {
      for (size_t i = 0; i < s.tokens.size(); ++i, ++row) {
        const uint8_t* src = static_cast<const uint8_t*>(emb.data) +
                             static_cast<size_t>(s.tokens[i]) * emb.row_stride;
        kernels::GetRow(emb.type, src, d, &x_[row * d]);
        int64_t pos = s.pos0 + static_cast<int64_t>(i);
        positions_[row] = pos;
        for (int j = 0; j < half; ++j) {
          const double theta = static_cast<double>(pos) * inv_freq_[j];
          rope_cos_[row * half + j] = static_cast<float>(std::cos(theta));
          rope_sin_[row * half + j] = static_cast<float>(std::sin(theta));
        }
      }
    }
  }

  // Page pointer tables per sequence, rebuilt per layer.
  std::vector<std::vector<const uint16_t*>> k_pages(seqs.size()), v_pages(seqs.size());
  std::vector<kernels::AttentionSeq> attn_seqs(seqs.size());
  std::vector<float> bias_scratch;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  timer.Skip();  // embeddings and rotary angles count in the total only

  for (int l = 0; l < config_.n_layers; ++l) {
    const model::LayerWeights& lw = weights_->layers[l];
    const float* attn_norm = static_cast<const float*>(lw.attn_norm.data);
    for (int64_t r = 0; r < T; ++r) {
      kernels::RmsNorm(&x_[r * d], attn_norm, d, config_.rms_eps, &xn_[r * d]);
    }
    HintNextMatMul(&pool_, {&lw.attn_output}, T);
    if (T == 1) HintAttentionKv(&pool_, seqs[0], cache, l);
    MatMulMany(&pool_, {&lw.attn_q, &lw.attn_k, &lw.attn_v}, {q_.data(), k_.data(), v_.data()},
               xn_.data(), T);
    AddBias(q_.data(), T, lw.attn_q_bias, q_dim, &bias_scratch);
    AddBias(k_.data(), T, lw.attn_k_bias, kv_dim, &bias_scratch);
    AddBias(v_.data(), T, lw.attn_v_bias, kv_dim, &bias_scratch);
    timer.Mark(&ForwardPhases::qkv);

    // RoPE, then this layer's new K/V into the cache pages (f16).
    int64_t row = 0;
    for (size_t si = 0; si < seqs.size(); ++si) {
      const SequenceBatch& s = seqs[si];
      for (size_t i = 0; i < s.tokens.size(); ++i, ++row) {
        const float* c = &rope_cos_[row * half];
        const float* sn = &rope_sin_[row * half];
        ApplyRope(&q_[row * q_dim], nh, hd, rot, neox, c, sn);
        ApplyRope(&k_[row * kv_dim], nkv, hd, rot, neox, c, sn);
        int64_t pos = positions_[row];
        KvCache::BlockId block = s.block_table[pos / bt];
        size_t slot = static_cast<size_t>(pos % bt) * kv_dim;
        kernels::F32ToF16Row(&k_[row * kv_dim], cache->KPage(block, l) + slot, kv_dim);
        kernels::F32ToF16Row(&v_[row * kv_dim], cache->VPage(block, l) + slot, kv_dim);
      }
    }

    // Attention per sequence over its pages.
    row = 0;
    for (size_t si = 0; si < seqs.size(); ++si) {
      const SequenceBatch& s = seqs[si];
      int64_t end = s.pos0 + static_cast<int64_t>(s.tokens.size());
      int64_t nblocks = (end + bt - 1) / bt;
      k_pages[si].resize(nblocks);
      v_pages[si].resize(nblocks);
      for (int64_t b = 0; b < nblocks; ++b) {
        k_pages[si][b] = cache->KPage(s.block_table[b], l);
        v_pages[si][b] = cache->VPage(s.block_table[b], l);
      }
      kernels::AttentionSeq& as = attn_seqs[si];
      as.q = &q_[row * q_dim];
      as.n_q = static_cast<int>(s.tokens.size());
      as.q_pos0 = s.pos0;
      as.k_blocks = k_pages[si].data();
      as.v_blocks = v_pages[si].data();
      as.out = &attn_[row * q_dim];
      row += static_cast<int64_t>(s.tokens.size());
    }
    kernels::Attention(&pool_, attn_seqs.data(), static_cast<int>(attn_seqs.size()), nh, nkv, hd,
                       bt, scale);
    timer.Mark(&ForwardPhases::attention);

    // Output projection + residual (xn_ reused as the projection's output).
    HintNextMatMul(&pool_, {&lw.ffn_gate, &lw.ffn_up}, T);
    kernels::MatMul(&pool_, View(lw.attn_output), attn_.data(), T, xn_.data());
    for (int64_t i = 0; i < T * d; ++i) x_[i] += xn_[i];
    timer.Mark(&ForwardPhases::attn_output);

    // Feed-forward: SwiGLU.
    const float* ffn_norm = static_cast<const float*>(lw.ffn_norm.data);
    for (int64_t r = 0; r < T; ++r) {
      kernels::RmsNorm(&x_[r * d], ffn_norm, d, config_.rms_eps, &xn_[r * d]);
    }
    HintNextMatMul(&pool_, {&lw.ffn_down}, T);
    MatMulMany(&pool_, {&lw.ffn_gate, &lw.ffn_up}, {gate_.data(), up_.data()}, xn_.data(), T);
    kernels::SwiGLU(gate_.data(), up_.data(), gate_.data(), T * ff);
    timer.Mark(&ForwardPhases::ffn_gate_up);
    if (l + 1 < config_.n_layers) {
      const model::LayerWeights& next = weights_->layers[l + 1];
      HintNextMatMul(&pool_, {&next.attn_q, &next.attn_k, &next.attn_v}, T);
    } else {
      HintNextMatMul(&pool_, {&weights_->output}, n_logit_rows);
    }
    kernels::MatMul(&pool_, View(lw.ffn_down), gate_.data(), T, xn_.data());
    for (int64_t i = 0; i < T * d; ++i) x_[i] += xn_[i];
    timer.Mark(&ForwardPhases::ffn_down);

    if (hook != nullptr && *hook) (*hook)(l);
    timer.Skip();  // the hook counts in the total only
  }

  // Final norm and the output projection for the rows that want logits.
  int64_t n_out = 0;
  {
    int64_t row = 0;
    for (const SequenceBatch& s : seqs) {
      int64_t n = static_cast<int64_t>(s.tokens.size());
      if (s.logits == LogitsMode::kAll) {
        for (int64_t i = 0; i < n; ++i)
          std::memcpy(&xn_[(n_out++) * d], &x_[(row + i) * d], d * sizeof(float));
      } else if (s.logits == LogitsMode::kLast) {
        std::memcpy(&xn_[(n_out++) * d], &x_[(row + n - 1) * d], d * sizeof(float));
      }
      row += n;
    }
  }
  if (n_out == 0) {
    logits->clear();
    timer.Mark(&ForwardPhases::logits);
    timer.Finish();
    return absl::OkStatus();
  }
  const float* out_norm = static_cast<const float*>(weights_->output_norm.data);
  out_rows_.resize(n_out * d);
  for (int64_t r = 0; r < n_out; ++r) {
    kernels::RmsNorm(&xn_[r * d], out_norm, d, config_.rms_eps, &out_rows_[r * d]);
  }
  logits->resize(static_cast<size_t>(n_out) * config_.vocab_size);
  kernels::MatMul(&pool_, View(weights_->output), out_rows_.data(), n_out, logits->data());
  timer.Mark(&ForwardPhases::logits);
  timer.Finish();
  return absl::OkStatus();
}

}  // namespace crescent::engine
