#include "src/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "src/common/status.h"
#include "src/engine/block_hash.h"
#include "src/engine/json_constraint.h"
#include "src/engine/json_schema.h"
#include "src/engine/prefix_cache.h"
#include "src/engine/scheduler.h"

namespace crescent::engine {
namespace {

// What the engine thread keeps per request beside the scheduler's Sequence.
struct RequestState {
  TokenCallback on_token;
  FinishCallback on_finish;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<JsonConstraint> json;  // set for sampling.json_object
  RequestMode mode = RequestMode::kFull;
  int max_tokens = 0;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;  // sampling.stop_token_ids
  int min_tokens = 0;                   // sampling.min_tokens
  int prompt_logprobs = -1;             // request.prompt_logprobs
  std::function<void(int64_t, const SampleResult&)> on_prompt_logprob;
  int64_t prompt_logprobs_next = 1;  // the next prompt position to report
  std::function<void(int, std::span<const KvCache::BlockId>, int64_t, int64_t)> on_layer;
  int64_t submit_ns = 0;
  int64_t first_token_ns = -1;
};

struct Pending {
  std::unique_ptr<Sequence> seq;
  std::unique_ptr<RequestState> state;
};

struct Finished {
  std::unique_ptr<Sequence> seq;
  absl::Status status;
  FinishReason reason;
};

}  // namespace

class Engine::Impl {
 public:
  Impl(Engine* engine, Backend* backend, const Clock* clock, int64_t num_blocks)
      : engine_(engine),
        model_(engine->model_),
        options_(engine->options_),
        backend_(backend),
        clock_(clock),
        pool_(num_blocks, engine->options_.prefix_cache),
        scheduler_({engine->options_.block_tokens, engine->options_.max_step_tokens,
                    engine->options_.max_running, engine->options_.speculative_tokens,
                    engine->options_.speculative_ngram_min, engine->options_.speculative_ngram_max,
                    engine->options_.speculative_draft_cost},
                   &pool_) {}

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Validate(const EngineRequest& r) const;
  absl::StatusOr<RequestId> Submit(EngineRequest request, TokenCallback on_token,
                                   FinishCallback on_finish);
  void Cancel(RequestId id) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancels_.push_back(id);
    }
    cv_.notify_all();
  }
  absl::StatusOr<Reservation> Reserve(int64_t positions);
  absl::StatusOr<RequestId> SubmitPrefilled(RequestId reservation, EngineRequest request,
                                            int32_t first_token, TokenCallback on_token,
                                            FinishCallback on_finish);
  void Release(RequestId reservation);
  absl::Status CacheReserved(RequestId reservation, std::span<const uint64_t> hashes);
  EngineStats Stats() const;
  int64_t CachedPrefixBlocks(std::span<const uint64_t> hashes) const {
    std::lock_guard<std::mutex> lock(mu_);
    return pool_.MatchPrefix(hashes);
  }
  std::vector<int> BlockRefCounts() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int> out(pool_.num_blocks());
    for (int64_t i = 0; i < pool_.num_blocks(); ++i) {
      out[i] = pool_.RefCount(static_cast<KvCache::BlockId>(i));
    }
    return out;
  }

 private:
  absl::Status ValidateLocked(const EngineRequest& r) const;
  // The model's JSON-mode vocabulary, built on first use. Thread-safe.
  absl::StatusOr<const JsonVocabulary*> JsonVocab() const;
  // The constraint of a JSON-mode request (null otherwise): FailedPrecondition when the
  // vocabulary cannot be built, InvalidArgument for a schema outside the supported subset.
  absl::StatusOr<std::unique_ptr<JsonConstraint>> MakeJsonConstraint(
      const SamplingParams& sampling) const;
  std::unique_ptr<RequestState> MakeState(EngineRequest& request, TokenCallback on_token,
                                          FinishCallback on_finish);
  void Run();
  // Whether `token` ends `state`'s request: an end-of-generation token (unless ignore_eos) or
  // one of its stop_token_ids.
  bool Ends(const RequestState& state, int32_t token) const {
    if (!state.ignore_eos && model_->tokenizer->IsEndOfGeneration(token)) return true;
    return std::find(state.stop_token_ids.begin(), state.stop_token_ids.end(), token) !=
           state.stop_token_ids.end();
  }
  // Whether chunk `c` computes prompt positions whose logprobs `state` still has to report (its
  // logits are then taken for every position of the chunk).
  static bool WantsPromptLogprobs(const RequestState& state, const ScheduledChunk& c) {
    const int64_t next = state.prompt_logprobs_next;
    return state.prompt_logprobs >= 0 && next < c.seq->prompt_len && c.begin < next &&
           next <= c.end;
  }
  // Sets whether drafts are proposed for `seq` — speculative decoding is on, the request allows
  // it and is greedy and unconstrained (a sampled or JSON-constrained token depends on more than
  // the logits, so a draft could not be checked row by row) — and its bound on tokens.
  void SetUpSpeculation(const EngineRequest& request, const RequestState& state,
                        Sequence* seq) const {
    seq->speculate = options_.speculative_tokens > 0 && request.allow_speculation &&
                     state.mode == RequestMode::kFull && request.sampling.temperature == 0.0f &&
                     state.json == nullptr;
    seq->max_len = seq->prompt_len + state.max_tokens;
  }
  // Before min_tokens: sets the logits of every token that would end the request to -inf.
  void BanEnds(const RequestState& state, std::span<float> logits);
  // Engine thread: moves pending requests into the scheduler and applies cancellations.
  void AdmitPendingLocked(std::vector<Finished>* finished);
  // Engine thread, without the lock: runs finish callbacks, then releases the blocks.
  void FinishAll(std::vector<Finished>* finished);
  // Engine thread: one forward pass over `plan` and its sampling. Fills *finished.
  void RunStep(const StepPlan& plan, std::vector<Finished>* finished);

  Engine* const engine_;
  const LoadedModel* const model_;
  const EngineOptions options_;
  Backend* const backend_;
  const Clock* const clock_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;               // guarded by mu_
  RequestId next_id_ = 1;           // guarded by mu_
  std::vector<Pending> pending_;    // guarded by mu_
  std::vector<RequestId> cancels_;  // guarded by mu_
  bool kick_ = false;               // guarded by mu_: blocks were released outside a step
  absl::flat_hash_map<RequestId, std::vector<KvCache::BlockId>> reservations_;  // mu_
  BlockPool pool_;                                                              // guarded by mu_
  Scheduler scheduler_;  // mutated under mu_ (read by the engine thread freely)
  EngineStats stats_;    // cumulative fields, guarded by mu_

  // Engine thread only.
  absl::flat_hash_map<RequestId, std::unique_ptr<RequestState>> requests_;
  std::vector<float> logits_;
  std::thread thread_;

  std::once_flag eog_once_;       // engine thread only: BanEnds
  std::vector<int32_t> eog_ids_;  // the vocabulary's end-of-generation tokens
  mutable std::once_flag json_once_;
  mutable absl::StatusOr<std::unique_ptr<JsonVocabulary>> json_vocab_;
};

absl::StatusOr<const JsonVocabulary*> Engine::Impl::JsonVocab() const {
  std::call_once(json_once_,
                 [this] { json_vocab_ = JsonVocabulary::FromTokenizer(*model_->tokenizer); });
  if (!json_vocab_.ok()) return json_vocab_.status();
  return json_vocab_->get();
}

absl::StatusOr<std::unique_ptr<JsonConstraint>> Engine::Impl::MakeJsonConstraint(
    const SamplingParams& sampling) const {
  if (!sampling.json_object) return nullptr;
  CRESCENT_ASSIGN_OR_RETURN(const JsonVocabulary* vocabulary, JsonVocab());
  std::shared_ptr<const JsonSchema> schema;
  if (!sampling.json_schema.empty()) {
    CRESCENT_ASSIGN_OR_RETURN(schema, JsonSchema::Compile(sampling.json_schema));
  }
  return std::make_unique<JsonConstraint>(vocabulary, std::move(schema));
}

absl::Status Engine::Impl::Validate(const EngineRequest& r) const {
  std::lock_guard<std::mutex> lock(mu_);
  return ValidateLocked(r);
}

absl::Status ValidateRequestForModel(const EngineRequest& r, const LoadedModel& model) {
  if (r.prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  const int vocab = model.config.vocab_size;
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " has id ", r.prompt[i],
                                                     ", outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (r.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be at least 1, got ", r.max_tokens));
  }
  CRESCENT_RETURN_IF_ERROR(ValidateSamplingParams(r.sampling, vocab));
  if (r.prompt_logprobs < -1 || r.prompt_logprobs > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_logprobs must be in [0, 20] (or -1: off), got ", r.prompt_logprobs));
  }
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  const int64_t context = model.config.context_length;
  if (prompt + r.max_tokens > context) {
    return absl::OutOfRangeError(absl::StrCat("prompt of ", prompt, " tokens plus max_tokens ",
                                              r.max_tokens, " exceeds the context length of ",
                                              context, " tokens"));
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::ValidateLocked(const EngineRequest& r) const {
  CRESCENT_RETURN_IF_ERROR(ValidateRequestForModel(r, *model_));
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  const int64_t bt = options_.block_tokens;
  const int64_t need = (prompt + bt - 1) / bt;
  if (need > pool_.num_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("prompt of ", prompt, " tokens needs ", need, " KV blocks of ", bt,
                     " tokens; the cache has ", pool_.num_blocks()));
  }
  const int64_t queued = static_cast<int64_t>(pending_.size()) + scheduler_.num_waiting();
  if (queued >= options_.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request queue is full (", queued, " waiting, max_waiting ", options_.max_waiting, ")"));
  }
  return absl::OkStatus();
}

void Engine::Impl::BanEnds(const RequestState& state, std::span<float> logits) {
  std::call_once(eog_once_, [this] {
    for (int32_t id = 0; id < model_->config.vocab_size; ++id) {
      if (model_->tokenizer->IsEndOfGeneration(id)) eog_ids_.push_back(id);
    }
  });
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (!state.ignore_eos) {
    for (int32_t id : eog_ids_) logits[id] = kNegInf;
  }
  for (int32_t id : state.stop_token_ids) logits[id] = kNegInf;
}

std::unique_ptr<RequestState> Engine::Impl::MakeState(EngineRequest& request,
                                                      TokenCallback on_token,
                                                      FinishCallback on_finish) {
  auto state = std::make_unique<RequestState>();
  state->on_token = std::move(on_token);
  state->on_finish = std::move(on_finish);
  state->sampler = std::make_unique<Sampler>(request.sampling, model_->config.vocab_size);
  state->mode = request.mode;
  state->max_tokens = request.max_tokens;
  state->ignore_eos = request.ignore_eos;
  state->stop_token_ids = request.sampling.stop_token_ids;
  state->min_tokens = request.sampling.min_tokens;
  state->on_layer = std::move(request.on_layer);
  state->prompt_logprobs = request.prompt_logprobs;
  state->on_prompt_logprob = std::move(request.on_prompt_logprob);
  state->submit_ns = clock_->NowNanos();
  return state;
}

absl::StatusOr<Engine::RequestId> Engine::Impl::Submit(EngineRequest request,
                                                       TokenCallback on_token,
                                                       FinishCallback on_finish) {
  std::unique_ptr<RequestState> state;
  auto seq = std::make_unique<Sequence>();
  CRESCENT_ASSIGN_OR_RETURN(std::unique_ptr<JsonConstraint> json,
                            MakeJsonConstraint(request.sampling));
  {
    std::lock_guard<std::mutex> lock(mu_);
    CRESCENT_RETURN_IF_ERROR(ValidateLocked(request));
    seq->id = next_id_++;
  }
  state = MakeState(request, std::move(on_token), std::move(on_finish));
  state->json = std::move(json);
  seq->prompt_len = static_cast<int64_t>(request.prompt.size());
  seq->tokens = std::move(request.prompt);
  seq->hash_seed = BlockHashSeed(model_->fingerprint, request.cache_salt);
  seq->arrival_ns = state->submit_ns;
  seq->reuse_prefix = state->prompt_logprobs < 0;
  SetUpSpeculation(request, *state, seq.get());
  const RequestId id = seq->id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({std::move(seq), std::move(state)});
  }
  cv_.notify_all();
  return id;
}

absl::StatusOr<Engine::Reservation> Engine::Impl::Reserve(int64_t positions) {
  if (positions <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a reservation needs a positive number of positions, got ", positions));
  }
  const int64_t bt = options_.block_tokens;
  const int64_t need = (positions + bt - 1) / bt;
  std::lock_guard<std::mutex> lock(mu_);
  if (need > pool_.num_available()) {
    return absl::ResourceExhaustedError(absl::StrCat("reserving ", positions, " positions needs ",
                                                     need, " KV blocks; ", pool_.num_available(),
                                                     " of ", pool_.num_blocks(), " are available"));
  }
  Reservation r;
  r.id = next_id_++;
  r.blocks.reserve(need);
  for (int64_t i = 0; i < need; ++i) r.blocks.push_back(pool_.Allocate());
  reservations_[r.id] = r.blocks;
  return r;
}

void Engine::Impl::Release(RequestId reservation) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = reservations_.find(reservation);
    if (it == reservations_.end()) return;
    for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) pool_.Unref(*b);
    reservations_.erase(it);
    kick_ = true;
  }
  cv_.notify_all();
}

absl::Status Engine::Impl::CacheReserved(RequestId reservation,
                                         std::span<const uint64_t> hashes) {
  absl::Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = reservations_.find(reservation);
    if (it == reservations_.end()) {
      return absl::NotFoundError(absl::StrCat("no reservation ", reservation));
    }
    const std::vector<KvCache::BlockId>& blocks = it->second;
    if (hashes.size() > blocks.size()) {
      status = absl::InvalidArgumentError(absl::StrCat(
          hashes.size(), " hashes for a reservation of ", blocks.size(), " blocks"));
    } else if (std::find(hashes.begin(), hashes.end(), uint64_t{0}) != hashes.end()) {
      status = absl::InvalidArgumentError("a block hash of 0 cannot name a cached block");
    } else {
      for (size_t i = 0; i < hashes.size(); ++i) pool_.Register(blocks[i], hashes[i]);
    }
    // Released in reverse, as Release does: the prefix's head is evicted last of these.
    for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) pool_.Unref(*b);
    reservations_.erase(it);
    kick_ = true;
  }
  cv_.notify_all();
  return status;
}

absl::StatusOr<Engine::RequestId> Engine::Impl::SubmitPrefilled(RequestId reservation,
                                                                EngineRequest request,
                                                                int32_t first_token,
                                                                TokenCallback on_token,
                                                                FinishCallback on_finish) {
  const int vocab = model_->config.vocab_size;
  if (request.prompt_logprobs >= 0) {
    return absl::InvalidArgumentError(
        "prompt_logprobs needs the prompt computed by this engine, not a prefilled request");
  }
  if (first_token < 0 || first_token >= vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("first_token ", first_token, " is outside the vocabulary [0, ", vocab, ")"));
  }
  // In JSON mode the first token must continue the object (the prefill side sampled it under
  // the same constraint); checked before the reservation is taken.
  CRESCENT_ASSIGN_OR_RETURN(std::unique_ptr<JsonConstraint> json,
                            MakeJsonConstraint(request.sampling));
  if (json != nullptr) CRESCENT_RETURN_IF_ERROR(json->Accept(first_token));
  auto seq = std::make_unique<Sequence>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = reservations_.find(reservation);
    if (it == reservations_.end()) {
      return absl::NotFoundError(absl::StrCat("no reservation ", reservation));
    }
    CRESCENT_RETURN_IF_ERROR(ValidateLocked(request));
    const int64_t covered = static_cast<int64_t>(it->second.size()) * options_.block_tokens;
    const int64_t needed = static_cast<int64_t>(request.prompt.size()) + 1;
    if (covered < needed) {
      return absl::InvalidArgumentError(
          absl::StrCat("reservation ", reservation, " covers ", covered, " positions; prompt of ",
                       request.prompt.size(), " tokens plus the first token needs ", needed));
    }
    seq->id = next_id_++;
    seq->blocks = std::move(it->second);
    reservations_.erase(it);
  }
  std::unique_ptr<RequestState> state =
      MakeState(request, std::move(on_token), std::move(on_finish));
  state->first_token_ns = state->submit_ns;
  state->sampler->SkipSample();  // the first token's draw was made by the prefill side
  state->json = std::move(json);
  seq->prompt_len = static_cast<int64_t>(request.prompt.size());
  seq->tokens = std::move(request.prompt);
  seq->tokens.push_back(first_token);
  seq->num_computed = seq->prompt_len;
  seq->hash_seed = BlockHashSeed(model_->fingerprint, request.cache_salt);
  seq->arrival_ns = state->submit_ns;
  seq->admitted_once = true;  // its prompt was looked up (and counted) by the prefill side
  SetUpSpeculation(request, *state, seq.get());
  const RequestId id = seq->id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({std::move(seq), std::move(state)});
  }
  cv_.notify_all();
  return id;
}

EngineStats Engine::Impl::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.running = scheduler_.num_running();
  s.waiting = scheduler_.num_waiting() + static_cast<int64_t>(pending_.size());
  s.total_blocks = pool_.num_blocks();
  s.free_blocks = pool_.num_available();
  s.cached_blocks = pool_.num_cached();
  s.prefix_queries = scheduler_.prefix_queries();
  s.prefix_hits = scheduler_.prefix_hits();
  s.preemptions = scheduler_.preemptions();
  int64_t queued = scheduler_.queued_prefill_tokens();
  for (const Pending& p : pending_) {
    queued += p.seq->uncomputed() - (p.seq->num_computed >= p.seq->prompt_len ? 1 : 0);
  }
  s.queued_prefill_tokens = queued;
  return s;
}

void Engine::Impl::AdmitPendingLocked(std::vector<Finished>* finished) {
  for (Pending& p : pending_) {
    Sequence* seq = p.seq.get();
    RequestState* state = p.state.get();
    const RequestId id = seq->id;
    stats_.prompt_tokens += seq->prompt_len;
    const int64_t generated = static_cast<int64_t>(seq->tokens.size()) - seq->prompt_len;
    requests_.emplace(id, std::move(p.state));
    scheduler_.Add(std::move(p.seq));
    // A prefilled request whose first token already ends it.
    if (generated > 0) {
      const int32_t last = seq->tokens.back();
      if (Ends(*state, last)) {
        finished->push_back({scheduler_.Detach(id), absl::OkStatus(), FinishReason::kStop});
      } else if (generated >= state->max_tokens) {
        finished->push_back({scheduler_.Detach(id), absl::OkStatus(), FinishReason::kLength});
      }
    }
  }
  pending_.clear();
  for (RequestId id : cancels_) {
    std::unique_ptr<Sequence> seq = scheduler_.Detach(id);
    if (seq != nullptr) {
      finished->push_back({std::move(seq), absl::OkStatus(), FinishReason::kCancelled});
    }
  }
  cancels_.clear();
}

void Engine::Impl::FinishAll(std::vector<Finished>* finished) {
  if (finished->empty()) return;
  const int64_t now = clock_->NowNanos();
  for (Finished& f : *finished) {
    Sequence* seq = f.seq.get();
    auto it = requests_.find(seq->id);
    if (it == requests_.end()) continue;
    RequestState* state = it->second.get();
    if (state->on_finish) {
      RequestStats rs;
      rs.prompt_tokens = seq->prompt_len;
      rs.cached_tokens = seq->cached_tokens;
      rs.generated_tokens = static_cast<int64_t>(seq->tokens.size()) - seq->prompt_len;
      rs.preemptions = seq->preemptions;
      const int64_t scheduled = seq->first_scheduled_ns >= 0 ? seq->first_scheduled_ns : now;
      rs.queue_seconds = static_cast<double>(scheduled - state->submit_ns) * 1e-9;
      if (state->first_token_ns >= 0) {
        rs.first_token_seconds =
            static_cast<double>(state->first_token_ns - state->submit_ns) * 1e-9;
      }
      state->on_finish(f.status, f.reason, rs, seq->blocks);
    }
    requests_.erase(it);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Finished& f : *finished) scheduler_.Free(f.seq.get());
  }
  finished->clear();
}

void Engine::Impl::RunStep(const StepPlan& plan, std::vector<Finished>* finished) {
  std::vector<SequenceBatch> batch;
  batch.reserve(plan.chunks.size());
  bool any_layer_hook = false;
  for (const ScheduledChunk& c : plan.chunks) {
    SequenceBatch b;
    b.tokens = std::span<const int32_t>(c.seq->tokens).subspan(c.begin, c.end - c.begin);
    b.pos0 = c.begin;
    b.block_table = c.seq->blocks;
    RequestState* state = requests_.at(c.seq->id).get();
    b.logits = c.draft > 0 || WantsPromptLogprobs(*state, c)
                   ? LogitsMode::kAll
                   : (c.sample ? LogitsMode::kLast : LogitsMode::kNone);
    batch.push_back(b);
    if (state->mode == RequestMode::kPrefillOnly && state->on_layer) any_layer_hook = true;
  }
  LayerHook hook = [&](int layer) {
    for (const ScheduledChunk& c : plan.chunks) {
      RequestState* state = requests_.at(c.seq->id).get();
      if (state->mode == RequestMode::kPrefillOnly && state->on_layer) {
        state->on_layer(layer, c.seq->blocks, c.begin, c.end);
      }
    }
  };
  const int64_t t0 = clock_->NowNanos();
  absl::Status status =
      backend_->Forward(batch, engine_->cache(), any_layer_hook ? &hook : nullptr, &logits_);
  const int64_t t1 = clock_->NowNanos();
  std::vector<std::vector<int32_t>> drafts(plan.chunks.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
    stats_.last_step_seconds = static_cast<double>(t1 - t0) * 1e-9;
    // The drafts leave the sequences whatever happened: they are guesses, not tokens.
    for (size_t i = 0; i < plan.chunks.size(); ++i) {
      if (plan.chunks[i].draft > 0) drafts[i] = scheduler_.TakeDraft(plan.chunks[i].seq);
    }
    if (!status.ok()) {
      for (const ScheduledChunk& c : plan.chunks) {
        finished->push_back({scheduler_.Detach(c.seq->id), Annotate(status, "engine forward pass"),
                             FinishReason::kCancelled});
      }
      return;
    }
    for (ScheduledChunk c : plan.chunks) {
      c.end -= c.draft;  // committed alone; confirmed drafts are settled below
      scheduler_.Commit(c);
    }
  }

  // Sample, then report tokens without the lock. A speculative chunk samples each of its rows
  // in turn while the samples confirm its drafts: row j's sample is checked against draft j.
  struct Outcome {
    Sequence* seq;
    std::vector<int32_t> tokens;  // join the sequence
    int64_t accepted = 0;         // drafts confirmed (their KV is kept)
    bool finish = false;
    FinishReason reason = FinishReason::kStop;
    absl::Status status;
  };
  std::vector<Outcome> outcomes;
  const int vocab = model_->config.vocab_size;
  size_t row = 0;
  int64_t generated_now = 0;
  int64_t drafted_now = 0, accepted_now = 0;
  for (size_t ci = 0; ci < plan.chunks.size(); ++ci) {
    const ScheduledChunk& c = plan.chunks[ci];
    Sequence* seq = c.seq;
    RequestState* state = requests_.at(seq->id).get();
    if (WantsPromptLogprobs(*state, c)) {
      // Row j holds the logits after position c.begin + j: those of the token at c.begin + j + 1.
      for (int64_t p = c.begin; p < c.end; ++p, ++row) {
        const int64_t next = p + 1;
        if (next != state->prompt_logprobs_next || next >= seq->prompt_len) continue;
        std::span<const float> row_logits(logits_.data() + row * vocab, vocab);
        SampleResult r = TokenLogprobs(row_logits, seq->tokens[static_cast<size_t>(next)],
                                       state->prompt_logprobs);
        ++state->prompt_logprobs_next;
        if (state->on_prompt_logprob) state->on_prompt_logprob(next, r);
      }
      if (c.sample) --row;  // the last row is also the one sampled from
    }
    if (!c.sample) continue;
    const std::vector<int32_t>& draft = drafts[ci];
    const size_t first_row = row;
    row += draft.size() + 1;
    drafted_now += static_cast<int64_t>(draft.size());
    Outcome o{seq, {}, 0, false, FinishReason::kStop, absl::OkStatus()};
    std::span<const int32_t> all(seq->tokens);
    std::span<const int32_t> prompt = all.first(seq->prompt_len);
    // The generated tokens so far, for the penalties: the sequence's own, or with drafts a copy
    // that grows with this step's samples.
    std::vector<int32_t> spec_generated;
    if (!draft.empty()) spec_generated.assign(all.begin() + seq->prompt_len, all.end());
    int64_t n_generated = static_cast<int64_t>(all.size()) - seq->prompt_len;
    for (size_t j = 0; j <= draft.size(); ++j) {
      std::span<float> logits(logits_.data() + (first_row + j) * vocab, vocab);
      if (n_generated < state->min_tokens && (state->json == nullptr || !state->json->complete())) {
        BanEnds(*state, logits);
      }
      if (state->json != nullptr) {
        if (absl::Status s = state->json->Restrict(logits); !s.ok()) {
          o.finish = true;
          o.reason = FinishReason::kCancelled;
          o.status = std::move(s);
          break;
        }
      }
      SampleResult sr = state->sampler->Sample(
          logits, prompt,
          draft.empty() ? all.subspan(seq->prompt_len) : std::span<const int32_t>(spec_generated));
      if (state->json != nullptr) {
        // Cannot fail: Restrict left only tokens Accept takes.
        if (absl::Status s = state->json->Accept(sr.token); !s.ok()) {
          o.finish = true;
          o.reason = FinishReason::kCancelled;
          o.status = std::move(s);
          break;
        }
      }
      if (state->first_token_ns < 0) state->first_token_ns = clock_->NowNanos();
      if (Ends(*state, sr.token)) {
        o.finish = true;
        o.reason = FinishReason::kStop;
        break;
      }
      ++generated_now;
      const bool go_on = state->on_token ? state->on_token(sr) : true;
      o.tokens.push_back(sr.token);
      ++n_generated;
      if (!draft.empty()) spec_generated.push_back(sr.token);
      if (!go_on) {
        o.finish = true;
        o.reason = FinishReason::kStop;
      } else if (state->mode == RequestMode::kPrefillOnly) {
        o.finish = true;
        o.reason = FinishReason::kPrefillDone;
      } else if (n_generated >= state->max_tokens) {
        o.finish = true;
        o.reason = FinishReason::kLength;
      }
      if (o.finish || j == draft.size() || sr.token != draft[j]) break;
      ++o.accepted;  // the input at the next position was right: its row stands
    }
    accepted_now += o.accepted;
    outcomes.push_back(std::move(o));
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.generated_tokens += generated_now;
  stats_.draft_tokens += drafted_now;
  stats_.accepted_draft_tokens += accepted_now;
  for (const Outcome& o : outcomes) {
    for (int32_t token : o.tokens) scheduler_.AppendToken(o.seq, token);
    scheduler_.Settle(o.seq, o.accepted);
    if (o.finish) {
      finished->push_back({scheduler_.Detach(o.seq->id), o.status, o.reason});
    }
  }
}

void Engine::Impl::Run() {
  std::vector<Finished> finished;
  bool idle_step = false;  // the last plan was empty although work was queued
  while (true) {
    StepPlan plan;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto has_news = [&] { return stop_ || !pending_.empty() || !cancels_.empty() || kick_; };
      if (idle_step) {
        // Work is queued but cannot run (blocks held by reservations): poll until news.
        cv_.wait_for(lock, std::chrono::milliseconds(10), has_news);
      } else {
        cv_.wait(lock, [&] { return has_news() || !scheduler_.idle(); });
      }
      if (stop_) break;
      kick_ = false;
      AdmitPendingLocked(&finished);
      plan = scheduler_.Schedule(clock_->NowNanos());
      for (auto& f : plan.failed) {
        const int64_t positions = f->num_computed + 1;
        finished.push_back(
            {std::move(f),
             absl::ResourceExhaustedError(absl::StrCat(
                 "the KV cache of ", pool_.num_blocks(), " blocks of ", options_.block_tokens,
                 " tokens cannot hold a sequence of ", positions, " positions")),
             FinishReason::kCancelled});
      }
    }
    FinishAll(&finished);
    idle_step = plan.chunks.empty();
    if (idle_step) continue;
    RunStep(plan, &finished);
    FinishAll(&finished);
  }
  // Shutdown: everything still in flight is cancelled.
  {
    std::lock_guard<std::mutex> lock(mu_);
    AdmitPendingLocked(&finished);
    std::vector<RequestId> ids;
    for (const Sequence* s : scheduler_.running()) ids.push_back(s->id);
    for (const Sequence* s : scheduler_.waiting()) ids.push_back(s->id);
    for (RequestId id : ids) {
      finished.push_back({scheduler_.Detach(id), absl::OkStatus(), FinishReason::kCancelled});
    }
  }
  FinishAll(&finished);
}

// ----- Engine -----

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const LoadedModel* model, Backend* backend,
                                                       const EngineOptions& options,
                                                       const Clock* clock) {
  if (model == nullptr || backend == nullptr || clock == nullptr) {
    return absl::InvalidArgumentError("Engine::Create needs a model, a backend and a clock");
  }
  if (options.block_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_tokens must be positive, got ", options.block_tokens));
  }
  if (options.max_step_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_step_tokens must be positive, got ", options.max_step_tokens));
  }
  if (options.max_running <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_running must be positive, got ", options.max_running));
  }
  if (options.max_waiting <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_waiting must be positive, got ", options.max_waiting));
  }
  if (options.speculative_tokens < 0 || options.speculative_tokens > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("speculative_tokens must be in [0, 64], got ", options.speculative_tokens));
  }
  if (options.speculative_ngram_min < 1 ||
      options.speculative_ngram_max < options.speculative_ngram_min) {
    return absl::InvalidArgumentError(absl::StrCat("speculative n-grams need 1 <= min <= max, got ",
                                                   options.speculative_ngram_min, "..",
                                                   options.speculative_ngram_max));
  }
  if (!(options.speculative_draft_cost >= 0 && options.speculative_draft_cost < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("speculative_draft_cost must be in [0, 1), got ",
                                                   options.speculative_draft_cost));
  }
  KvCacheConfig kc;
  kc.n_layers = model->config.n_layers;
  kc.n_kv_heads = model->config.n_kv_heads;
  kc.head_dim = model->config.head_dim;
  kc.block_tokens = options.block_tokens;
  int64_t num_blocks = options.num_blocks;
  if (num_blocks <= 0) {
    if (options.kv_cache_bytes <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kv_cache_bytes must be positive when num_blocks is 0, got ", options.kv_cache_bytes));
    }
    num_blocks = options.kv_cache_bytes / static_cast<int64_t>(kc.BlockBytes());
    if (num_blocks <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("kv_cache_bytes ", options.kv_cache_bytes,
                                                     " is less than one KV block of ",
                                                     kc.BlockBytes(), " bytes"));
    }
  }
  kc.num_blocks = num_blocks;
  std::unique_ptr<KvCache> cache;
  if (options.kv_memory) {
    CRESCENT_ASSIGN_OR_RETURN(void* memory, options.kv_memory(KvCache::MemoryBytes(kc)));
    CRESCENT_ASSIGN_OR_RETURN(cache, KvCache::CreateInMemory(kc, memory));
  } else {
    CRESCENT_ASSIGN_OR_RETURN(cache, KvCache::Create(kc));
  }
  // The engine's BlockPool does the per-sequence accounting; the KvCache's own allocator just
  // sees every block taken once, by the engine (so that backends accept any block id, and a
  // stray cache()->Allocate() gets -1 instead of a block the engine may hand out).
  for (int64_t i = 0; i < num_blocks; ++i) {
    if (cache->Allocate() < 0) return absl::InternalError("fresh KV cache ran out of blocks");
  }
  std::unique_ptr<Engine> engine(new Engine(model, options, std::move(cache)));
  engine->impl_ = std::make_unique<Impl>(engine.get(), backend, clock, num_blocks);
  engine->impl_->Start();
  return engine;
}

Engine::Engine(const LoadedModel* model, const EngineOptions& options,
               std::unique_ptr<KvCache> cache)
    : model_(model), options_(options), cache_(std::move(cache)) {}

Engine::~Engine() {
  if (impl_ != nullptr) impl_->Stop();
}

absl::Status Engine::Validate(const EngineRequest& request) const {
  return impl_->Validate(request);
}

absl::StatusOr<Engine::RequestId> Engine::Submit(EngineRequest request, TokenCallback on_token,
                                                 FinishCallback on_finish) {
  return impl_->Submit(std::move(request), std::move(on_token), std::move(on_finish));
}

void Engine::Cancel(RequestId id) { impl_->Cancel(id); }

absl::StatusOr<Engine::Reservation> Engine::Reserve(int64_t positions) {
  return impl_->Reserve(positions);
}

absl::StatusOr<Engine::RequestId> Engine::SubmitPrefilled(RequestId reservation,
                                                          EngineRequest request,
                                                          int32_t first_token,
                                                          TokenCallback on_token,
                                                          FinishCallback on_finish) {
  return impl_->SubmitPrefilled(reservation, std::move(request), first_token, std::move(on_token),
                                std::move(on_finish));
}

void Engine::Release(RequestId reservation) { impl_->Release(reservation); }

absl::Status Engine::CacheReserved(RequestId reservation, std::span<const uint64_t> hashes) {
  return impl_->CacheReserved(reservation, hashes);
}

uint64_t Engine::hash_seed(uint64_t salt) const { return BlockHashSeed(model_->fingerprint, salt); }

EngineStats Engine::Stats() const { return impl_->Stats(); }

int64_t Engine::CachedPrefixBlocks(std::span<const uint64_t> hashes) const {
  return impl_->CachedPrefixBlocks(hashes);
}

std::vector<int> Engine::BlockRefCountsForTesting() const { return impl_->BlockRefCounts(); }

}  // namespace crescent::engine
