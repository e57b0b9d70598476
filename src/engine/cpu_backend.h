// CpuBackend: the llama-family forward pass on the CPU kernels (kernels/cpu).
#ifndef CRESCENT_SRC_ENGINE_CPU_BACKEND_H_
#define CRESCENT_SRC_ENGINE_CPU_BACKEND_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/huge_pages.h"
#include "src/common/thread_pool.h"
#include "src/engine/backend.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"

namespace crescent::engine {

class CpuBackend final : public Backend {
 public:
  // `config` and `weights` must outlive the backend (weights point into the mapped GGUF).
  // num_threads <= 0 picks ThreadPool::DefaultThreadCount(). With CRESCENT_HUGE_WEIGHTS=1 in
  // the environment (experimental), the matrices decode streams are copied once into memory
  // backed by transparent huge pages (fewer TLB misses per step; a second copy of them in RAM)
  // and read from there; results are bit-identical. Errors: Unimplemented when a weight's type
  // has no CPU matmul kernel (naming the tensor and type); ResourceExhausted when the huge-page
  // copy cannot be mapped.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const model::ModelConfig& config,
                                                            const model::ModelWeights& weights,
                                                            int num_threads);

  absl::Status Forward(std::span<const SequenceBatch> seqs, KvCache* cache, const LayerHook* hook,
                       std::vector<float>* logits) override;
  const char* name() const override { return "cpu"; }
  int num_threads() const { return pool_.num_threads(); }

 private:
  CpuBackend(const model::ModelConfig& config, const model::ModelWeights& weights, int num_threads);

  absl::Status Validate(std::span<const SequenceBatch> seqs, const KvCache& cache) const;

  // Copies the matrices decode streams (every layer's projections and the output matrix) into
  // one huge-page buffer and points weights_ at the copies. Errors: as HugePageBuffer::Create.
  absl::Status CopyWeightsToHugePages();

  const model::ModelConfig& config_;
  const model::ModelWeights* weights_;  // the caller's, or copied_weights_
  ThreadPool pool_;
  std::unique_ptr<kernels::HugePageBuffer> weight_copy_;
  model::ModelWeights copied_weights_;  // the caller's, matrices re-pointed into weight_copy_
  // RoPE: angle of pair j at position p is p * inv_freq_[j] (rope_dim / 2 entries, freq_scale
  // and the file's per-pair factors folded in), computed once in double.
  std::vector<double> inv_freq_;

  // Scratch, grown on demand and kept between calls.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, rope_cos_, rope_sin_, out_rows_;
  std::vector<int64_t> positions_;
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_CPU_BACKEND_H_
