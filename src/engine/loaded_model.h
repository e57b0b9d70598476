// LoadedModel: everything one GGUF file provides — config, weight views, tokenizer, chat
// template — loaded and validated together, plus the model id that seeds block hashes.
#ifndef CRESCENT_SRC_ENGINE_LOADED_MODEL_H_
#define CRESCENT_SRC_ENGINE_LOADED_MODEL_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "src/model/chat_template.h"
#include "src/model/gguf.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"
#include "src/model/tokenizer.h"

namespace crescent::engine {

struct LoadOptions {
  // Overrides the GGUF's chat template by family name ("chatml", "llama3", ...); empty = use
  // the file's template.
  std::string chat_template;
  // Called with the fraction of weight bytes paged in so far (0..1) while loading.
  std::function<void(double fraction)> progress;
  // Page every weight in at load time (so that the first request does not pay for it).
  bool prefault = true;
};

struct LoadedModel {
  std::unique_ptr<model::GgufFile> file;
  model::ModelConfig config;
  model::ModelWeights weights;
  std::unique_ptr<model::Tokenizer> tokenizer;
  // Absent when the file has no template and none was named; chat requests then fail with a
  // clear error while plain completions still work.
  std::optional<model::ChatTemplate> chat_template;
  std::string id;          // name clients use (file name without .gguf)
  uint64_t fingerprint;    // hash of the tensor table: distinguishes models in block hashes
};

// The model a command uses when none is named: $CRESCENT_MODEL, else the reference model where
// scripts/setup.sh puts it (~/.cache/crescent/models/SmolLM2-135M-Instruct.Q4_1.gguf).
std::string DefaultModelPath();

// Opens, validates and (optionally) pages in the model at `path`. Errors name the file and
// what was wrong with it.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& path,
                                                       const LoadOptions& options = {});

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_LOADED_MODEL_H_
