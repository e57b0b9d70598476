// Picks the forward-pass backend by name (the CLI's --backend).
#ifndef CRESCENT_SRC_ENGINE_BACKEND_FACTORY_H_
#define CRESCENT_SRC_ENGINE_BACKEND_FACTORY_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "src/engine/backend.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"

namespace crescent::engine {

// True when this build has the CUDA backend (nvcc was found at configure time).
bool CudaBackendBuilt();

// "cpu": CpuBackend with `threads` threads (<= 0: all CPUs). "cuda": CudaBackend on the current
// device (`threads` unused). `config` and `weights` must outlive the backend.
// Errors: InvalidArgument for another name; Unimplemented for "cuda" in a build without it;
// otherwise the chosen backend's Create errors (e.g. FailedPrecondition: no CUDA device).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                                       const model::ModelConfig& config,
                                                       const model::ModelWeights& weights,
                                                       int threads);

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_BACKEND_FACTORY_H_
