// Generator: what turns token ids into token ids for EngineService, the OpenAI front's text
// layer. EngineService renders chat templates, tokenizes, applies stop strings, detokenizes,
// splits n choices into n generator requests and builds usage; a Generator only generates.
//
//   EngineGenerator      — one colocated engine::Engine in this process (`crescent serve`).
//   ConductorGenerator   — a prefill node then a decode node of the cluster (conductor/).
//
// Both run the same text layer over the same tokens, so `crescent serve` and `crescent up`
// answer a greedy request with the same text.
#ifndef CRESCENT_SRC_SERVE_GENERATOR_H_
#define CRESCENT_SRC_SERVE_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"

namespace crescent::serve {

// Why a generator request ended, and what it cost. kPrefillDone never reaches the text layer.
struct GenerationResult {
  engine::FinishReason reason = engine::FinishReason::kCancelled;
  engine::RequestStats stats;
  // Seconds the request should wait before retrying, when the status is ResourceExhausted or
  // Unavailable and the generator knows (the Conductor's early rejection); sent as Retry-After.
  std::optional<double> retry_after_seconds;
};

// Called exactly once per accepted request, last. A non-OK status ends the request with an
// error (the tokens already delivered stay delivered).
using GenerationDoneCallback =
    std::function<void(absl::Status status, const GenerationResult& result)>;

// Implementations are thread-safe. For one request, on_token and on_done are called in order and
// never concurrently; different requests' callbacks may run concurrently on different threads.
class Generator {
 public:
  virtual ~Generator() = default;

  // The model whose tokenizer, chat template and context length the text layer uses.
  virtual const engine::LoadedModel& model() const = 0;

  // Positions one sequence may hold at most (prompt + generated), beyond the context limit:
  // the KV capacity of the node that would hold it. The text layer rejects larger requests.
  virtual int64_t max_sequence_tokens() const = 0;

  // As engine::Engine::Validate. May also return ResourceExhausted / Unavailable (e.g. no node
  // of the cluster can take it now).
  virtual absl::Status Validate(const engine::EngineRequest& request) = 0;

  // Starts a request (`request.mode` is kFull, `on_layer` unset). On error nothing runs and no
  // callback is called; otherwise on_done runs exactly once. on_token is called once per
  // generated token (return false to stop: the request ends with kStop).
  virtual absl::StatusOr<uint64_t> Submit(engine::EngineRequest request,
                                          engine::TokenCallback on_token,
                                          GenerationDoneCallback on_done) = 0;

  // Cancels a request: it ends soon with kCancelled. Unknown or finished ids are ignored.
  virtual void Cancel(uint64_t id) = 0;

  // Whether requests can be taken now (GET /ready): the cluster needs a live prefill and decode
  // node.
  virtual bool Ready() const { return true; }

  // Gauges and cumulative counters for /metrics (running, waiting, KV usage, prefix hits...);
  // a cluster reports the sum over its nodes.
  virtual engine::EngineStats Stats() const = 0;
};

// A Generator over one engine in this process. The engine must outlive it.
class EngineGenerator final : public Generator {
 public:
  explicit EngineGenerator(engine::Engine* engine) : engine_(engine) {}

  const engine::LoadedModel& model() const override { return engine_->model(); }
  int64_t max_sequence_tokens() const override;
  absl::Status Validate(const engine::EngineRequest& request) override {
    return engine_->Validate(request);
  }
  absl::StatusOr<uint64_t> Submit(engine::EngineRequest request, engine::TokenCallback on_token,
                                  GenerationDoneCallback on_done) override;
  void Cancel(uint64_t id) override { engine_->Cancel(id); }
  engine::EngineStats Stats() const override { return engine_->Stats(); }

  engine::Engine* engine() const { return engine_; }

 private:
  engine::Engine* const engine_;
};

}  // namespace crescent::serve

#endif  // CRESCENT_SRC_SERVE_GENERATOR_H_
