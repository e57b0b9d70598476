// EngineService: the OpenAI text layer between the HTTP front (src/server) and a Generator
// (src/serve/generator.h) — one colocated engine::Engine in `crescent serve`, the cluster in the
// Conductor. It turns requests into token ids (chat template, tokenizer), checks them against
// the context before any work, submits one generator request per choice, and turns the tokens
// that come back into text: streaming detokenization that never splits a UTF-8 character, stop
// strings (text ends before the first match; text that could begin one is held back until it
// cannot), logprobs, finish reasons and usage. It also publishes the generator's gauges and
// counters into ServerMetrics.
//
// Threading: every method is thread-safe. Chunks and on_done run on the generator's threads (or
// on the calling thread when Start fails before anything was submitted).
#ifndef CRESCENT_SRC_SERVE_ENGINE_SERVICE_H_
#define CRESCENT_SRC_SERVE_ENGINE_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "src/engine/engine.h"
#include "src/engine/sampler.h"
#include "src/serve/generator.h"
#include "src/server/completion_service.h"
#include "src/server/metrics.h"

namespace crescent::serve {

struct EngineServiceOptions {
  // The model id clients name (and /v1/models lists); empty = the model's id (file name).
  std::string served_model_name;
  // How often the engine's stats are copied into the metrics (<= 0: only on RefreshMetrics()).
  double metrics_interval_seconds = 0.1;
};

// A request turned into what the engine takes: the prompt's token ids, the tokens to generate
// and the sampling parameters (choice 0's seed).
struct PreparedRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 0;
  engine::SamplingParams sampling;
};

// server::SamplingParams (OpenAI's ranges, checked by the front) -> engine::SamplingParams, with
// logprobs / top_logprobs from the request. Pure.
engine::SamplingParams ToEngineSampling(const server::CompletionRequest& request);

// Finds where generation must stop, for stop strings: holds the text of one choice that is not
// yet sent. Not thread-safe.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `text`. Returns the text that may be sent now: all of it when no stop string can
  // begin in it, else up to where one might begin. When a stop string is complete, stopped()
  // becomes true and the text returned ends before its first occurrence.
  std::string Push(std::string_view text);
  // Appends `text` without looking for stop strings (before min_tokens): returns the text held
  // back and `text`. Stop strings are then looked for in later text only.
  std::string PushUnchecked(std::string_view text);
  // At the end of a choice: the text held back (none after a stop).
  std::string Flush();

  bool stopped() const { return stopped_; }
  // Bytes returned so far by Push and Flush.
  size_t emitted() const { return emitted_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  size_t emitted_ = 0;
  bool stopped_ = false;
};

class EngineService final : public server::CompletionService {
 public:
  // `generator` (and its model) must outlive the service; `metrics` may be null (no metrics),
  // else it must outlive the service too. Errors: InvalidArgument when the generator is null.
  static absl::StatusOr<std::unique_ptr<EngineService>> Create(Generator* generator,
                                                               server::ServerMetrics* metrics,
                                                               const EngineServiceOptions& options);
  // Over one colocated engine (an EngineGenerator the service owns).
  static absl::StatusOr<std::unique_ptr<EngineService>> Create(engine::Engine* engine,
                                                               server::ServerMetrics* metrics,
                                                               const EngineServiceOptions& options);
  // Stops the metrics thread. REQUIRES: no request in flight (stop the HTTP server first).
  ~EngineService() override;
  EngineService(const EngineService&) = delete;
  EngineService& operator=(const EngineService&) = delete;

  // NotFound for a model other than the served one; InvalidArgument for a conversation the
  // chat template cannot render, an empty prompt, a token id outside the vocabulary, a prompt
  // larger than the whole KV cache or bad sampling parameters; OutOfRange when prompt +
  // max_tokens exceed the context (both numbers in the message); ResourceExhausted when the
  // engine's queue is full.
  absl::Status Validate(const server::CompletionRequest& request) override;

  // Submits request.n generator requests per prompt (choice j of a prompt with seed + j when a
  // seed is given, so that a prompt of a batch gives what it gives alone). Errors (as Validate,
  // for any prompt of a batch; ResourceExhausted when the queue fills up meanwhile) go to
  // on_done after every choice already submitted has been cancelled and has finished.
  std::unique_ptr<server::CompletionHandle> Start(server::CompletionRequest request,
                                                  server::ChunkCallback on_chunk,
                                                  server::DoneCallback on_done) override;

  std::vector<server::ModelInfo> Models() override;
  bool Ready() override { return generator_->Ready(); }
  // kLlama31Json for a model whose chat template is Llama 3.1's, else kHermes.
  server::ToolPromptStyle tool_prompt_style() override;
  absl::StatusOr<std::vector<int32_t>> Tokenize(const server::CompletionRequest& request) override;
  absl::StatusOr<std::string> Detokenize(const std::vector<int32_t>& tokens) override;

  // What Validate and Start submit for `request` (choice 0 of prompt `prompt_index` of a
  // completion request; a chat request has no prompts and takes 0). Errors: as Validate, except
  // the queue check. REQUIRES: prompt_index < max(1, request.prompts.size()).
  absl::StatusOr<PreparedRequest> Prepare(const server::CompletionRequest& request,
                                          size_t prompt_index = 0) const;

  // Copies Generator::Stats() into the metrics now (the metrics thread does it periodically).
  void RefreshMetrics();

  const std::string& served_model_name() const { return served_model_name_; }

 private:
  EngineService(Generator* generator, std::unique_ptr<Generator> owned,
                server::ServerMetrics* metrics, const EngineServiceOptions& options);
  void MetricsLoop();
  // The prompt's token ids (the model checked, the chat template rendered), and in *param the
  // field errors about it name. Errors: NotFound (model), InvalidArgument.
  absl::StatusOr<std::vector<int32_t>> PromptTokens(const server::CompletionRequest& request,
                                                    size_t prompt_index, std::string* param) const;

  const std::unique_ptr<Generator> owned_generator_;
  Generator* const generator_;
  server::ServerMetrics* const metrics_;
  const EngineServiceOptions options_;
  const std::string served_model_name_;
  const int64_t created_unix_seconds_;

  // The cumulative engine counters already added to the metrics' counters.
  absl::Mutex metrics_mu_;
  engine::EngineStats published_ ABSL_GUARDED_BY(metrics_mu_);

  absl::Notification stop_;
  std::thread metrics_thread_;
};

}  // namespace crescent::serve

#endif  // CRESCENT_SRC_SERVE_ENGINE_SERVICE_H_
