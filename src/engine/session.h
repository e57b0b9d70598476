// Session: one sequence's context in a KV cache, kept across calls so that a conversation's
// next turn computes only what is new (the longest common prefix of KV is reused).
// Used by the CLI's generate/chat and by tests; the serving scheduler drives the backend
// directly with many sequences per step.
#ifndef CRESCENT_SRC_ENGINE_SESSION_H_
#define CRESCENT_SRC_ENGINE_SESSION_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/engine/backend.h"
#include "src/engine/kv_cache.h"
#include "src/engine/loaded_model.h"
#include "src/engine/sampler.h"

namespace crescent::engine {

class Session {
 public:
  // `backend`, `cache` and `model` must outlive the session. Not thread-safe.
  Session(const LoadedModel* model, Backend* backend, KvCache* cache);
  ~Session();  // returns the session's blocks to the cache.

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Makes the context equal to `tokens`, reusing KV of the longest common prefix with the
  // current context, computing the rest in chunks of at most `chunk_tokens`, and leaves the
  // logits of the last token in *logits. Errors: InvalidArgument for an empty prompt or one
  // past the model's context; ResourceExhausted when the cache has too few free blocks (the
  // context is then empty).
  absl::Status Prefill(std::span<const int32_t> tokens, int chunk_tokens,
                       std::vector<float>* logits);

  // Appends one token and leaves the logits for the next one in *logits. Errors as Prefill.
  absl::Status Step(int32_t token, std::vector<float>* logits);

  // Positions whose KV is reused by the last Prefill.
  int64_t reused_tokens() const { return reused_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const LoadedModel& model() const { return *model_; }

  // Drops the context and its blocks.
  void Reset();

 private:
  absl::Status Compute(size_t begin, size_t end, std::vector<float>* logits);
  absl::Status EnsureBlocks(int64_t positions);

  const LoadedModel* model_;
  Backend* backend_;
  KvCache* cache_;
  std::vector<int32_t> tokens_;  // tokens whose KV is in the cache
  std::vector<KvCache::BlockId> blocks_;
  int64_t reused_ = 0;
};

struct GenerateOptions {
  int max_tokens = 256;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings; the text ends before the first match
  int prefill_chunk = 512;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, without the stop token
  std::string text;
  std::string finish_reason;  // "stop" (end-of-generation token or stop string) or "length"
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  double prefill_seconds = 0;  // prompt processing + first token
  double decode_seconds = 0;   // the remaining tokens
};

// Generates from `prompt` in `session`. on_text, when set, receives each piece of new text
// as soon as it is complete UTF-8 and before any stop string could begin in it; returning
// false stops generation (finish_reason "stop").
absl::StatusOr<GenerateResult> Generate(Session* session, std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<bool(std::string_view)>& on_text = {});

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_SESSION_H_
