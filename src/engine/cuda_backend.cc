#include "src/engine/cuda_backend.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/get_rows.h"
#include "kernels/cuda/kv_store.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/rope.h"
#include "src/common/status.h"

namespace crescent::engine {
namespace {

namespace kc = kernels::cuda;

// Grows `buf` to at least `bytes` (contents not kept).
absl::Status Ensure(kc::DeviceBuffer* buf, size_t bytes) {
  if (buf->size() >= bytes) return absl::OkStatus();
  *buf = kc::DeviceBuffer();  // free first: the device may not hold both
  CRESCENT_ASSIGN_OR_RETURN(*buf, kc::DeviceBuffer::Create(bytes + bytes / 4));
  return absl::OkStatus();
}

float* Floats(const kc::DeviceBuffer& b) { return static_cast<float*>(b.data()); }

}  // namespace

CudaBackend::CudaBackend(const model::ModelConfig& config) : config_(config) {}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const model::ModelConfig& config, const model::ModelWeights& weights) {
  CRESCENT_RETURN_IF_ERROR(kc::CheckDevice());
  if (config.head_dim > 256) {
    return absl::UnimplementedError(absl::StrCat(
        "the CUDA attention takes head_dim up to 256, the model has ", config.head_dim));
  }
  CRESCENT_RETURN_IF_ERROR(CheckMatrixTypes(weights, kc::MatMulSupports, "CUDA"));
  if (!kc::MatMulSupports(weights.token_embd.type)) {
    return absl::UnimplementedError(absl::StrCat("tensor token_embd has type ",
                                                 kernels::GetTypeInfo(weights.token_embd.type).name,
                                                 ", which has no CUDA decoder"));
  }
  std::unique_ptr<CudaBackend> backend(new CudaBackend(config));
  CRESCENT_RETURN_IF_ERROR(backend->Upload(weights));
  return backend;
}

absl::StatusOr<const void*> CudaBackend::DeviceCopy(const model::TensorRef& t) {
  if (!t.present()) return nullptr;
  for (const auto& [host, dev] : uploaded_) {
    if (host == t.data) return dev;
  }
  CRESCENT_ASSIGN_OR_RETURN(kc::DeviceBuffer buf, kc::DeviceBuffer::Create(t.nbytes));
  CRESCENT_RETURN_IF_ERROR(kc::CopyToDevice(buf.data(), t.data, t.nbytes));
  uploaded_.emplace_back(t.data, buf.data());
  weight_buffers_.push_back(std::move(buf));
  return weight_buffers_.back().data();
}

absl::Status CudaBackend::Upload(const model::ModelWeights& weights) {
  inv_freq_ = RopeInverseFrequencies(config_, weights);

  auto matrix = [&](const model::TensorRef& t, kc::DeviceMatrix* m) -> absl::Status {
    CRESCENT_ASSIGN_OR_RETURN(const void* data, DeviceCopy(t));
    *m = kc::DeviceMatrix{t.type, t.rows, t.cols, data, t.row_stride};
    return absl::OkStatus();
  };
  auto vec = [&](const model::TensorRef& t, const float** v) -> absl::Status {
    CRESCENT_ASSIGN_OR_RETURN(const void* data, DeviceCopy(t));
    *v = static_cast<const float*>(data);
    return absl::OkStatus();
  };
  CRESCENT_RETURN_IF_ERROR(matrix(weights.token_embd, &token_embd_));
  CRESCENT_RETURN_IF_ERROR(matrix(weights.output, &output_));
  CRESCENT_RETURN_IF_ERROR(vec(weights.output_norm, &output_norm_));
  layers_.resize(weights.layers.size());
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    const model::LayerWeights& lw = weights.layers[l];
    Layer& d = layers_[l];
    CRESCENT_RETURN_IF_ERROR(vec(lw.attn_norm, &d.attn_norm));
    CRESCENT_RETURN_IF_ERROR(vec(lw.ffn_norm, &d.ffn_norm));
    CRESCENT_RETURN_IF_ERROR(vec(lw.attn_q_bias, &d.q_bias));
    CRESCENT_RETURN_IF_ERROR(vec(lw.attn_k_bias, &d.k_bias));
    CRESCENT_RETURN_IF_ERROR(vec(lw.attn_v_bias, &d.v_bias));
    CRESCENT_RETURN_IF_ERROR(matrix(lw.attn_q, &d.q));
    CRESCENT_RETURN_IF_ERROR(matrix(lw.attn_k, &d.k));
    CRESCENT_RETURN_IF_ERROR(matrix(lw.attn_v, &d.v));
    CRESCENT_RETURN_IF_ERROR(matrix(lw.attn_output, &d.o));
    CRESCENT_RETURN_IF_ERROR(matrix(lw.ffn_gate, &d.gate));
    CRESCENT_RETURN_IF_ERROR(matrix(lw.ffn_up, &d.up));
    CRESCENT_RETURN_IF_ERROR(matrix(lw.ffn_down, &d.down));
  }
  return kc::Synchronize();
}

absl::Status CudaBackend::MapCache(KvCache* cache) {
  if (mapped_cache_id_ == cache->id()) return absl::OkStatus();
  kv_map_ = kc::HostMapping();
  mapped_cache_id_ = 0;
  CRESCENT_ASSIGN_OR_RETURN(
      kv_map_, kc::HostMapping::Create(cache->BlockData(0), KvCache::MemoryBytes(cache->config())));
  mapped_cache_id_ = cache->id();
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(std::span<const SequenceBatch> seqs, KvCache* cache,
                                  const LayerHook* hook, std::vector<float>* logits) {
  if (seqs.empty()) {
    logits->clear();
    return absl::OkStatus();
  }
  absl::Status s = ValidateForward(config_, seqs, *cache);
  if (s.ok()) s = Run(seqs, cache, hook, logits);
  if (!s.ok()) logits->clear();
  return s;
}

absl::Status CudaBackend::Run(std::span<const SequenceBatch> seqs, KvCache* cache,
                              const LayerHook* hook, std::vector<float>* logits) {
  CRESCENT_RETURN_IF_ERROR(MapCache(cache));
  const int d = config_.n_embd;
  const int hd = config_.head_dim;
  const int nh = config_.n_heads;
  const int nkv = config_.n_kv_heads;
  const int q_dim = nh * hd;
  const int kv_dim = nkv * hd;
  const int ff = config_.n_ff;
  const int half = config_.rope_dim / 2;
  const int bt = cache->config().block_tokens;

  // Host side of the call's small tables, sent in one copy each:
  //   ints: tokens[T] pos[T] table_off[T] logit_rows[n_out] table[...]
  //   rope: cos[T * half] sin[T * half]
  int64_t T = 0, n_out = 0, table_len = 0;
  for (const SequenceBatch& sq : seqs) {
    const int64_t n = static_cast<int64_t>(sq.tokens.size());
    T += n;
    n_out += sq.logits == LogitsMode::kAll ? n : sq.logits == LogitsMode::kLast ? 1 : 0;
    table_len += (sq.pos0 + n + bt - 1) / bt;
  }
  std::vector<int32_t> ints(3 * T + n_out + table_len);
  int32_t* tokens = ints.data();
  int32_t* pos = tokens + T;
  int32_t* table_off = pos + T;
  int32_t* logit_rows = table_off + T;
  int32_t* table = logit_rows + n_out;
  std::vector<float> rope(2 * T * half);
  {
    int64_t row = 0, out = 0, off = 0;
    for (const SequenceBatch& sq : seqs) {
      const int64_t n = static_cast<int64_t>(sq.tokens.size());
      const int64_t blocks = (sq.pos0 + n + bt - 1) / bt;
      for (int64_t b = 0; b < blocks; ++b) table[off + b] = sq.block_table[b];
      for (int64_t i = 0; i < n; ++i, ++row) {
        const int64_t p = sq.pos0 + i;
        tokens[row] = sq.tokens[i];
        pos[row] = static_cast<int32_t>(p);
        table_off[row] = static_cast<int32_t>(off);
        for (int j = 0; j < half; ++j) {
          const double theta = static_cast<double>(p) * inv_freq_[j];
          rope[row * half + j] = static_cast<float>(std::cos(theta));
          rope[T * half + row * half + j] = static_cast<float>(std::sin(theta));
        }
        if (sq.logits == LogitsMode::kAll || (sq.logits == LogitsMode::kLast && i == n - 1)) {
          logit_rows[out++] = static_cast<int32_t>(row);
        }
      }
      off += blocks;
    }
  }
  CRESCENT_RETURN_IF_ERROR(Ensure(&ints_, ints.size() * sizeof(int32_t)));
  CRESCENT_RETURN_IF_ERROR(Ensure(&rope_, rope.size() * sizeof(float) + sizeof(float)));
  CRESCENT_RETURN_IF_ERROR(Ensure(&x_, sizeof(float) * T * d));
  CRESCENT_RETURN_IF_ERROR(Ensure(&xn_, sizeof(float) * T * d));
  CRESCENT_RETURN_IF_ERROR(Ensure(&q_, sizeof(float) * T * q_dim));
  CRESCENT_RETURN_IF_ERROR(Ensure(&k_, sizeof(float) * T * kv_dim));
  CRESCENT_RETURN_IF_ERROR(Ensure(&v_, sizeof(float) * T * kv_dim));
  CRESCENT_RETURN_IF_ERROR(Ensure(&attn_, sizeof(float) * T * q_dim));
  CRESCENT_RETURN_IF_ERROR(Ensure(&gate_, sizeof(float) * T * ff));
  CRESCENT_RETURN_IF_ERROR(Ensure(&up_, sizeof(float) * T * ff));
  CRESCENT_RETURN_IF_ERROR(kc::CopyToDevice(ints_.data(), ints.data(), ints.size() * 4));
  CRESCENT_RETURN_IF_ERROR(kc::CopyToDevice(rope_.data(), rope.data(), rope.size() * 4));
  const auto* dints = static_cast<const int32_t*>(ints_.data());
  const int32_t* d_tokens = dints;
  const int32_t* d_pos = dints + T;
  const int32_t* d_table_off = d_pos + T;
  const int32_t* d_logit_rows = d_table_off + T;
  const int32_t* d_table = d_logit_rows + n_out;
  const float* d_cos = Floats(rope_);
  const float* d_sin = d_cos + T * half;

  const kc::KvPages pages{static_cast<uint8_t*>(kv_map_.device()),
                          cache->config().BlockBytes(),
                          cache->config().PageBytes(),
                          bt,
                          nkv,
                          hd};
  const kc::AttentionRows attn_rows{Floats(q_), Floats(attn_), d_pos, d_table, d_table_off, T};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const bool neox = config_.rope_style == model::RopeStyle::kNeox;
  float* x = Floats(x_);
  float* xn = Floats(xn_);

  CRESCENT_RETURN_IF_ERROR(
      kc::GetRows(token_embd_.type, token_embd_.data, token_embd_.row_stride, d_tokens, T, d, x));
  for (int l = 0; l < config_.n_layers; ++l) {
    const Layer& L = layers_[l];
    CRESCENT_RETURN_IF_ERROR(kc::RmsNorm(x, L.attn_norm, T, d, config_.rms_eps, xn));
    CRESCENT_RETURN_IF_ERROR(kc::MatMul(L.q, xn, T, Floats(q_)));
    CRESCENT_RETURN_IF_ERROR(kc::MatMul(L.k, xn, T, Floats(k_)));
    CRESCENT_RETURN_IF_ERROR(kc::MatMul(L.v, xn, T, Floats(v_)));
    if (L.q_bias != nullptr) {
      CRESCENT_RETURN_IF_ERROR(kc::AddRowBias(Floats(q_), T, L.q_bias, q_dim));
    }
    if (L.k_bias != nullptr) {
      CRESCENT_RETURN_IF_ERROR(kc::AddRowBias(Floats(k_), T, L.k_bias, kv_dim));
    }
    if (L.v_bias != nullptr) {
      CRESCENT_RETURN_IF_ERROR(kc::AddRowBias(Floats(v_), T, L.v_bias, kv_dim));
    }
    CRESCENT_RETURN_IF_ERROR(kc::Rope(Floats(q_), T, nh, hd, config_.rope_dim, d_cos, d_sin, neox));
    CRESCENT_RETURN_IF_ERROR(
        kc::Rope(Floats(k_), T, nkv, hd, config_.rope_dim, d_cos, d_sin, neox));
    CRESCENT_RETURN_IF_ERROR(
        kc::StoreKv(Floats(k_), Floats(v_), T, d_pos, d_table, d_table_off, pages, l));
    CRESCENT_RETURN_IF_ERROR(kc::Attention(attn_rows, pages, l, nh, scale));
    CRESCENT_RETURN_IF_ERROR(kc::MatMul(L.o, Floats(attn_), T, xn));
    CRESCENT_RETURN_IF_ERROR(kc::Add(x, xn, x, T * d));
    CRESCENT_RETURN_IF_ERROR(kc::RmsNorm(x, L.ffn_norm, T, d, config_.rms_eps, xn));
    CRESCENT_RETURN_IF_ERROR(kc::MatMul(L.gate, xn, T, Floats(gate_)));
    CRESCENT_RETURN_IF_ERROR(kc::MatMul(L.up, xn, T, Floats(up_)));
    CRESCENT_RETURN_IF_ERROR(kc::SwiGLU(Floats(gate_), Floats(up_), Floats(gate_), T * ff));
    CRESCENT_RETURN_IF_ERROR(kc::MatMul(L.down, Floats(gate_), T, xn));
    CRESCENT_RETURN_IF_ERROR(kc::Add(x, xn, x, T * d));
    if (hook != nullptr && *hook) {
      // The layer's K/V must be in the host pages before the hook reads them.
      CRESCENT_RETURN_IF_ERROR(kc::Synchronize());
      (*hook)(l);
    }
  }

  if (n_out == 0) {
    logits->clear();
    return kc::Synchronize();
  }
  // The rows that want logits (gathered as an f32 "table"), final norm, output projection.
  CRESCENT_RETURN_IF_ERROR(Ensure(&rows_out_, sizeof(float) * n_out * d));
  CRESCENT_RETURN_IF_ERROR(
      Ensure(&logits_, sizeof(float) * static_cast<size_t>(n_out) * config_.vocab_size));
  CRESCENT_RETURN_IF_ERROR(
      kc::GetRows(kernels::GgmlType::kF32, x, sizeof(float) * d, d_logit_rows, n_out, d, xn));
  CRESCENT_RETURN_IF_ERROR(
      kc::RmsNorm(xn, output_norm_, n_out, d, config_.rms_eps, Floats(rows_out_)));
  CRESCENT_RETURN_IF_ERROR(kc::MatMul(output_, Floats(rows_out_), n_out, Floats(logits_)));
  logits->resize(static_cast<size_t>(n_out) * config_.vocab_size);
  CRESCENT_RETURN_IF_ERROR(
      kc::CopyToHost(logits->data(), logits_.data(), logits->size() * sizeof(float)));
  return kc::Synchronize();
}

}  // namespace crescent::engine
