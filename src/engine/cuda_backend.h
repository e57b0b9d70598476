// CudaBackend: the llama-family forward pass on the CUDA kernels (kernels/cuda), on the current
// device. Built wherever nvcc is found (CRESCENT_HAVE_CUDA); picked with `--backend cuda`.
//
// Where the data lives. The weights are copied to device memory once, as GGUF encodes them
// (decoded where used by each kernel). The KV cache stays the engine's KvCache in host memory,
// mapped for the device (cudaHostRegister): the kernels write the new K/V and read the pages
// over the bus, so the rest of the system (prefix cache, the prefill node's per-layer pushes,
// the pool) sees the same pages as with the CPU backend. That keeps every node's KV path
// unchanged at the price of attention reading KV over PCIe; a device-resident cache is the
// next step (docs/architecture.md, "Backends").
//
// Numerics: f32 activations throughout (the CPU kernels quantize activations to 8 bits for
// their integer dot products), so logits differ from CpuBackend's within that quantization's
// error; greedy output is expected to match on the reference prompts (cuda_backend_test).
#ifndef CRESCENT_SRC_ENGINE_CUDA_BACKEND_H_
#define CRESCENT_SRC_ENGINE_CUDA_BACKEND_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/matmul.h"
#include "src/engine/backend.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"

namespace crescent::engine {

class CudaBackend final : public Backend {
 public:
  // `config` must outlive the backend; `weights` need only live through Create (they are
  // copied to the device).
  // Errors: FailedPrecondition without a usable device; Unimplemented when a weight's type has
  // no CUDA kernel (naming the tensor and type) or head_dim > 256; ResourceExhausted when the
  // weights do not fit in device memory.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const model::ModelConfig& config,
                                                             const model::ModelWeights& weights);

  // As Backend::Forward. The first call with a cache maps that cache's memory for the device
  // (pinning it) until a call with another cache (KvCache::id) or the backend's end; a cache
  // destroyed while mapped is unmapped then.
  // Errors: as Backend::Forward, plus Internal for a kernel or copy the device failed (the
  // cache may then hold partial KV of this call's new tokens; logits is cleared).
  absl::Status Forward(std::span<const SequenceBatch> seqs, KvCache* cache, const LayerHook* hook,
                       std::vector<float>* logits) override;
  const char* name() const override { return "cuda"; }

 private:
  struct Layer {
    const float* attn_norm = nullptr;
    const float* ffn_norm = nullptr;
    const float* q_bias = nullptr;  // nullptr when the model has none
    const float* k_bias = nullptr;
    const float* v_bias = nullptr;
    kernels::cuda::DeviceMatrix q, k, v, o, gate, up, down;
  };

  explicit CudaBackend(const model::ModelConfig& config);
  absl::Status Upload(const model::ModelWeights& weights);
  // The device copy of `t` (uploaded once per distinct host pointer: tied embeddings share).
  absl::StatusOr<const void*> DeviceCopy(const model::TensorRef& t);
  absl::Status MapCache(KvCache* cache);
  absl::Status Run(std::span<const SequenceBatch> seqs, KvCache* cache, const LayerHook* hook,
                   std::vector<float>* logits);

  const model::ModelConfig& config_;
  std::vector<double> inv_freq_;  // rope_dim / 2 rotary frequencies (scale and factors applied)
  std::vector<kernels::cuda::DeviceBuffer> weight_buffers_;
  std::vector<std::pair<const void*, const void*>> uploaded_;  // host data -> device copy
  std::vector<Layer> layers_;
  kernels::cuda::DeviceMatrix token_embd_, output_;
  const float* output_norm_ = nullptr;

  // Per-call device scratch, grown as batches grow.
  kernels::cuda::DeviceBuffer x_, xn_, q_, k_, v_, attn_, gate_, up_, rows_out_, logits_, ints_,
      rope_;
  // The mapped KV cache.
  kernels::cuda::HostMapping kv_map_;
  uint64_t mapped_cache_id_ = 0;  // 0: none
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_CUDA_BACKEND_H_
