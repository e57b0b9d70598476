// Engine: the serving loop over one Backend and one KvCache — continuous batching of many
// sequences, chunked prefill mixed with decode under a per-step token budget, automatic prefix
// caching by block hash, preemption by recompute when blocks run out, cancellation.
//
// Used by `crescent serve` (both roles in one process), and by the prefill and decode nodes
// (PrefillOnly requests; Reserve + SubmitPrefilled). Text (detokenization, stop strings, chat
// templates) is not its business: it takes token ids and gives token ids.
//
// Threading: one engine thread runs every step (Forward + sampling) and calls every callback.
// Submit/Cancel/Reserve/Release/Stats are thread-safe and never wait for a step.
#ifndef CRESCENT_SRC_ENGINE_ENGINE_H_
#define CRESCENT_SRC_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/common/clock.h"
#include "src/engine/backend.h"
#include "src/engine/kv_cache.h"
#include "src/engine/loaded_model.h"
#include "src/engine/sampler.h"

namespace crescent::engine {

struct EngineOptions {
  int block_tokens = 16;               // Positions per KV block (paging, hashing, pool unit).
  int64_t kv_cache_bytes = 256 << 20;  // KV memory; num_blocks = kv_cache_bytes / BlockBytes.
  int64_t num_blocks = 0;              // When > 0, overrides kv_cache_bytes.
  int max_step_tokens = 512;           // Token budget of one step: decode tokens + prefill chunks.
  int max_running = 64;                // Sequences in the running batch at once.
  int max_waiting = 4096;              // Submit beyond this many queued -> ResourceExhausted.
  bool prefix_cache = true;            // Reuse KV of equal full blocks (by block hash).
  // Speculative decoding by prompt lookup (n-gram): greedy, unconstrained decoding sequences
  // get up to this many draft tokens a step, taken from what followed the latest earlier
  // occurrence of their last speculative_ngram_min..max tokens; one forward pass checks them
  // all, and the engine keeps those its own greedy samples confirm. The output is what
  // decoding token by token gives (it samples every position the same way); only the number
  // of steps changes. 0: off.
  int speculative_tokens = 0;
  int speculative_ngram_min = 2;
  int speculative_ngram_max = 4;
  // The arithmetic of one position as a fraction of a one-token decode step, in [0, 1): a
  // step costs max(1, speculative_draft_cost * positions) one-token steps (memory-bound, then
  // compute-bound), and each sequence is given only as many of its proposed drafts as raise
  // the step's expected tokens per unit of that cost, at the rate its earlier drafts were
  // confirmed (DraftLength in scheduler.h). So a lone sequence drafts a few tokens and a batch
  // whose step is already compute-bound drafts none. 0.2 fits the CPU backend on the
  // reference model (a one-token step with 4 drafts took 1.2-1.3 one-token steps; a batch of
  // 8 is compute-bound; docs/benchmarks.md, serve_bench part 3); 0 computes every proposed
  // draft.
  double speculative_draft_cost = 0.2;
  // Optional: where the KV cache lives. Called once by Create with the cache's size in bytes;
  // returns 64-byte-aligned memory the caller owns, zeroed or not, that outlives the engine
  // (the decode and prefill nodes put it in a transfer-engine segment so peers can write and
  // read it). Unset: the engine allocates the cache itself.
  std::function<absl::StatusOr<void*>(size_t bytes)> kv_memory;
};

// Why a request ended.
enum class FinishReason {
  kStop,         // end-of-generation token (not reported as a token), or on_token returned false
  kLength,       // max_tokens generated
  kPrefillDone,  // a PrefillOnly request: the prompt's KV is computed and the first token sampled
  kCancelled,    // Cancel() or engine shutdown
};

enum class RequestMode {
  kFull,         // prefill then decode (colocated serving)
  kPrefillOnly,  // prefill, sample the first token, finish with kPrefillDone (prefill node)
};

struct EngineRequest {
  std::vector<int32_t> prompt;  // Non-empty.
  SamplingParams sampling;
  // Tokens to generate at most (>= 1). prompt.size() + max_tokens must fit the context.
  int max_tokens = 16;
  bool ignore_eos = false;  // Keep going past end-of-generation tokens.
  uint64_t cache_salt = 0;  // Tenant salt of the block hash chain (0 = shared cache).
  RequestMode mode = RequestMode::kFull;
  // Prompt logprobs (vLLM's `prompt_logprobs`; OpenAI's `echo` with `logprobs`): when >= 0
  // (at most 20), the engine computes the logits of every prompt position — this request takes
  // nothing from the prefix cache — and calls on_prompt_logprob on the engine thread for each
  // position p in [1, prompt.size()), in order, exactly once (also across preemptions), all
  // before the first on_token: the logprob of prompt[p] given prompt[0, p), and the
  // `prompt_logprobs` most likely tokens there, under the model's raw distribution (no bias,
  // penalties or temperature). -1: off. Not for SubmitPrefilled.
  int prompt_logprobs = -1;
  // false: never drafted, even with EngineOptions::speculative_tokens (the decode node's cost
  // profile times plain steps).
  bool allow_speculation = true;
  std::function<void(int64_t position, const SampleResult& result)> on_prompt_logprob;
  // Optional, PrefillOnly: after each layer of each step that computed positions of this
  // request, called on the engine thread with this request's whole block table and the
  // positions [begin, end) whose KV for `layer` is now in the cache (the prefill node sends
  // them to the decode node from here; it must not keep the span).
  std::function<void(int layer, std::span<const KvCache::BlockId> blocks, int64_t begin,
                     int64_t end)>
      on_layer;
};

struct RequestStats {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // Prompt positions whose KV came from the prefix cache.
  int64_t generated_tokens = 0;
  int preemptions = 0;
  double queue_seconds = 0;        // Submit -> first scheduled.
  double first_token_seconds = 0;  // Submit -> first token sampled.
};

// A sampled token; `result.logprob`/`top_logprobs` filled when sampling.logprobs.
// Return false to stop the request (it finishes with kStop after this token).
using TokenCallback = std::function<bool(const SampleResult& result)>;
// Called exactly once per accepted request, last, on the engine thread. `blocks` is the
// request's block table, still referenced while the callback runs (a prefill node publishes
// the full blocks to the pool from here); not valid afterwards. Status is OK for every
// FinishReason except failures inside the engine (e.g. an error from the backend, or
// ResourceExhausted for a sequence that outgrows the whole KV cache), which come with kCancelled.
using FinishCallback =
    std::function<void(absl::Status status, FinishReason reason, const RequestStats& stats,
                       std::span<const KvCache::BlockId> blocks)>;

struct EngineStats {
  int64_t running = 0;  // sequences in the running batch
  int64_t waiting = 0;  // submitted, not yet running (incl. preempted)
  int64_t total_blocks = 0;
  int64_t free_blocks = 0;            // free + cached-but-unreferenced (reusable)
  int64_t cached_blocks = 0;          // unreferenced blocks kept for prefix hits (LRU)
  int64_t prefix_queries = 0;         // prompt tokens looked up in the prefix cache (cumulative)
  int64_t prefix_hits = 0;            // of which found (cumulative)
  int64_t preemptions = 0;            // cumulative
  int64_t prompt_tokens = 0;          // cumulative, computed or cached
  int64_t generated_tokens = 0;       // cumulative
  int64_t draft_tokens = 0;           // cumulative: speculative drafts checked
  int64_t accepted_draft_tokens = 0;  // cumulative: of which confirmed
  int64_t steps = 0;                  // cumulative forward passes
  double last_step_seconds = 0;       // duration of the last step
  int64_t queued_prefill_tokens = 0;  // uncomputed prompt tokens of waiting + running requests
};

// What any generator must refuse before work, from the request and the model alone:
// InvalidArgument (empty prompt, token id outside the vocabulary, max_tokens < 1, bad sampling
// params), OutOfRange (prompt + max_tokens beyond the context; the message gives both numbers).
// Engine::Validate adds the KV-capacity and queue checks; the Conductor adds its own. Pure.
absl::Status ValidateRequestForModel(const EngineRequest& request, const LoadedModel& model);

class Engine {
 public:
  using RequestId = uint64_t;

  // Creates the KV cache and starts the engine thread. `model`, `backend` and `clock` are not
  // owned and must outlive the engine. Errors: InvalidArgument for bad options (naming the
  // field), ResourceExhausted when the KV memory cannot be had.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const LoadedModel* model, Backend* backend,
                                                        const EngineOptions& options,
                                                        const Clock* clock);

  // Stops the thread; requests still in flight finish with kCancelled.
  ~Engine();

  // What Submit would reject, without submitting: InvalidArgument (empty prompt, token id out
  // of the vocabulary, max_tokens < 1, bad sampling params), OutOfRange (prompt + max_tokens
  // beyond the context length; the message gives both numbers), ResourceExhausted (the prompt
  // needs more blocks than the whole cache has, or the queue is full).
  absl::Status Validate(const EngineRequest& request) const;

  // Queues a request. On error nothing is queued and no callback runs; otherwise on_finish
  // runs exactly once. Errors: as Validate, and FailedPrecondition for sampling.json_object
  // when the vocabulary has no end-of-generation token. In JSON mode each sampled token is
  // restricted to those that continue one JSON object (src/engine/json_constraint.h); a
  // request no token can continue finishes with FailedPrecondition.
  absl::StatusOr<RequestId> Submit(EngineRequest request, TokenCallback on_token,
                                   FinishCallback on_finish);

  // Cancels a request: it leaves the batch before the next step and finishes with kCancelled,
  // freeing its blocks. Unknown or finished ids are ignored.
  void Cancel(RequestId id);

  // Decode node side of disaggregation. Reserve takes blocks for `positions` positions, whose
  // KV someone else writes (the transfer engine, into cache()'s memory), and returns the block
  // table. SubmitPrefilled then admits a request whose prompt KV, positions [0, prompt.size()),
  // is in the reservation's blocks and whose first token was sampled elsewhere: on_token is
  // not called for `first_token` (it counts toward max_tokens and the penalties), the engine
  // computes its KV at position prompt.size() and decodes on. The reservation's blocks become
  // the request's. Release frees a reservation that will not be used (timeout, failure).
  // Errors: ResourceExhausted when there are not enough free blocks (after evicting cached
  // ones), NotFound for an unknown reservation, InvalidArgument when the reservation does not
  // cover prompt.size() + 1 positions, or in JSON mode when `first_token` does not begin the
  // JSON object, or as Submit.
  struct Reservation {
    RequestId id = 0;
    std::vector<KvCache::BlockId> blocks;
  };
  absl::StatusOr<Reservation> Reserve(int64_t positions);
  absl::StatusOr<RequestId> SubmitPrefilled(RequestId reservation, EngineRequest request,
                                            int32_t first_token, TokenCallback on_token,
                                            FinishCallback on_finish);
  void Release(RequestId reservation);

  // Prefill node side of pool reuse: the caller reserved blocks (Reserve), wrote the KV of
  // whole prompt blocks fetched from the pool into the first hashes.size() of them, and now
  // hands them to the prefix cache: block i is registered under hashes[i] (the prompt's block
  // hash chain, as BlockHashChain computes it with hash_seed(salt) — a request with that salt
  // and prompt then finds them), and the whole reservation is released, so the blocks become
  // cached (reusable by a later Submit, evictable). A hash already cached keeps its first
  // block. Errors: NotFound (unknown reservation), InvalidArgument (more hashes than blocks, or
  // a zero hash); on error the reservation is released all the same.
  absl::Status CacheReserved(RequestId reservation, std::span<const uint64_t> hashes);

  // The cache (its memory is registered with the transfer engine by the nodes). Its block
  // allocation is the engine thread's: use Reserve/Release, never Allocate directly. (The
  // engine holds one KvCache reference on every block for its whole life and accounts for
  // sequences' references itself; see BlockRefCountsForTesting.)
  KvCache* cache() { return cache_.get(); }
  const KvCache* cache() const { return cache_.get(); }
  const LoadedModel& model() const { return *model_; }
  const EngineOptions& options() const { return options_; }
  uint64_t hash_seed(uint64_t salt) const;

  EngineStats Stats() const;

  // Longest prefix of `hashes` (a prompt's block hash chain) whose blocks are in this engine's
  // prefix cache, in blocks. Thread-safe; a hint (the answer can change right after).
  int64_t CachedPrefixBlocks(std::span<const uint64_t> hashes) const;

  // The engine's reference count of every block (index = BlockId): the running sequences',
  // reservations' and finish callbacks' references; cached and free blocks count 0. (The
  // engine keeps its own counts: KvCache's Allocate/Ref/Unref are not used on its cache.)
  // Thread-safe snapshot, for tests checking that nothing leaks.
  std::vector<int> BlockRefCountsForTesting() const;

 private:
  class Impl;
  Engine(const LoadedModel* model, const EngineOptions& options, std::unique_ptr<KvCache> cache);

  const LoadedModel* model_;
  EngineOptions options_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_ENGINE_H_
