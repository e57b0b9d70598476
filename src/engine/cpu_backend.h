// CpuBackend: the llama-family forward pass on the CPU kernels (kernels/cpu).
#ifndef CRESCENT_SRC_ENGINE_CPU_BACKEND_H_
#define CRESCENT_SRC_ENGINE_CPU_BACKEND_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/huge_pages.h"
#include "src/common/clock.h"
#include "src/common/thread_pool.h"
#include "src/engine/backend.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"

namespace crescent::engine {

// Wall time Forward spends in each part of the model, summed over calls (seconds). A layer's
// computation lands in exactly one of the five layer parts; the layer hook after it, in total
// only.
struct ForwardPhases {
  double qkv = 0;          // attention norm, Q/K/V projections (and their biases)
  double attention = 0;    // RoPE, the new K/V written to the cache pages, attention
  double attn_output = 0;  // attention output projection and residual
  double ffn_gate_up = 0;  // feed-forward norm, gate and up projections, SwiGLU
  double ffn_down = 0;     // down projection and residual
  double logits = 0;       // final norm and output projection
  double total = 0;        // the whole call: the above plus validation, embeddings, rotary
                           // angles and the layer hook
  int64_t calls = 0;       // Forward calls that ran the model
};

class CpuBackend final : public Backend {
 public:
  // `config` and `weights` must outlive the backend (weights point into the mapped GGUF).
  // num_threads <= 0 picks ThreadPool::DefaultThreadCount().
  //
  // Weight copy. When the active ISA reads MatrixLayout::kGroup8 natively (AVX-512 VNNI), the
  // matrices decode streams (every layer's projections and the output matrix) are copied once
  // into anonymous memory advised to use transparent huge pages and read from there: Q4_1 and
  // Q8_0 ones with rows a multiple of 16 repacked to kRows16 (rows as vector lanes: about half
  // the instructions per weight of kGroup8, so batch-1 decode keeps up with memory), the other
  // Q4_1 and Q8_0 ones to kGroup8. kGroup8 gives the same logits bit for bit; kRows16 rounds
  // its sums in another order (logits within float rounding of the GGUF layout's, and still
  // the same bits for any batch shape). Costs a second copy of those matrices in RAM (the
  // file's page-cache pages stay reclaimable). Environment: CRESCENT_REPACK_WEIGHTS=0 turns
  // the copy off, =group8 repacks to kGroup8 only; CRESCENT_HUGE_WEIGHTS=1 makes the copy
  // (without repacking) on any ISA.
  //
  // Errors: Unimplemented when a weight's type has no CPU matmul kernel (naming the tensor and
  // type); ResourceExhausted when the copy cannot be mapped.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const model::ModelConfig& config,
                                                            const model::ModelWeights& weights,
                                                            int num_threads);

  absl::Status Forward(std::span<const SequenceBatch> seqs, KvCache* cache, const LayerHook* hook,
                       std::vector<float>* logits) override;
  const char* name() const override { return "cpu"; }
  int num_threads() const { return pool_.num_threads(); }

  // From now on, every Forward that runs the model adds its phases' wall time, read from
  // `clock`, to *phases; nullptr (the default) stops it. The clock is read at each phase
  // boundary, six times a layer, only while on. `phases` and `clock` must outlive the
  // measuring; not thread-safe with Forward.
  void MeasurePhases(ForwardPhases* phases, const Clock* clock = RealClock::Get()) {
    phases_ = phases;
    phase_clock_ = clock;
  }

 private:
  CpuBackend(const model::ModelConfig& config, const model::ModelWeights& weights, int num_threads);

  // Copies the matrices decode streams (every layer's projections and the output matrix) into
  // one huge-page buffer, repacked where `repack` and the matrix has a kRows16 (when `rows16`)
  // or kGroup8 layout, and points weights_ at the copies. Errors: as HugePageBuffer::Create.
  absl::Status CopyWeights(bool repack, bool rows16);

  const model::ModelConfig& config_;
  const model::ModelWeights* weights_;  // the caller's, or copied_weights_
  ThreadPool pool_;
  std::unique_ptr<kernels::HugePageBuffer> weight_copy_;
  model::ModelWeights copied_weights_;  // the caller's, matrices re-pointed into weight_copy_
  // RoPE: angle of pair j at position p is p * inv_freq_[j] (rope_dim / 2 entries, freq_scale
  // and the file's per-pair factors folded in), computed once in double.
  std::vector<double> inv_freq_;
  ForwardPhases* phases_ = nullptr;  // see MeasurePhases
  const Clock* phase_clock_ = nullptr;

  // Scratch, grown on demand and kept between calls.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, rope_cos_, rope_sin_, out_rows_;
  std::vector<int64_t> positions_;
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_CPU_BACKEND_H_
