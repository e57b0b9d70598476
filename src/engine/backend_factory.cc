#include "src/engine/backend_factory.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "src/engine/cpu_backend.h"
#ifdef CRESCENT_HAVE_CUDA
#include "src/engine/cuda_backend.h"
#endif

namespace crescent::engine {

bool CudaBackendBuilt() {
#ifdef CRESCENT_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                                       const model::ModelConfig& config,
                                                       const model::ModelWeights& weights,
                                                       int threads) {
  if (name == "cpu") {
    auto b = CpuBackend::Create(config, weights, threads);
    if (!b.ok()) return b.status();
    return std::unique_ptr<Backend>(std::move(*b));
  }
  if (name == "cuda") {
#ifdef CRESCENT_HAVE_CUDA
    auto b = CudaBackend::Create(config, weights);
    if (!b.ok()) return b.status();
    return std::unique_ptr<Backend>(std::move(*b));
#else
    return absl::UnimplementedError(
        "this build has no CUDA backend (nvcc was not found when it was configured)");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend \"", std::string(name), "\" (expected cpu or cuda)"));
}

}  // namespace crescent::engine
