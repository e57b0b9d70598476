// Scheduler: the engine's pure scheduling policy — which sequences compute which positions in
// the next forward pass, which blocks they use, who is preempted. State in, decisions out, time
// passed in; no threads, no model, no I/O (the Engine is the threaded loop around it).
//
// Each step, under a budget of max_step_tokens tokens:
//   1. decode: every running sequence with exactly one uncomputed token gets it (oldest
//      first);
//   2. chunked prefill of running sequences that are still prefilling (oldest first), as much
//      of each as the remaining budget allows;
//   3. admission, strictly FCFS from the waiting queue while budget, max_running and blocks
//      allow: the longest cached prefix of the sequence's block hash chain is taken without
//      compute (never the block holding the last token: at least one token is computed so
//      that there are logits), then a first chunk.
// When a running sequence needs a block and none is available (free or evictable cached), the
// newest running sequence not yet scheduled this step is preempted by recompute: its blocks are
// released (their full blocks stay in the prefix cache) and it goes to the FRONT of the waiting
// queue keeping its generated tokens, so it is readmitted before anything newer. A sequence
// that cannot fit even alone fails (ResourceExhausted) instead of looping.
//
// A sequence's tokens are prompt + generated; positions [0, num_computed) have KV in the cache.
// A chunk that reaches the end of the tokens produces logits (the engine samples the next
// token and appends it with AppendToken); a shorter chunk produces none. Thread-compatible.
#ifndef CRESCENT_SRC_ENGINE_SCHEDULER_H_
#define CRESCENT_SRC_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "src/engine/prefix_cache.h"

namespace crescent::engine {

struct SchedulerOptions {
  int block_tokens = 16;
  int max_step_tokens = 512;
  int max_running = 64;
  // Speculative decoding by prompt lookup: a decoding sequence that allows it (Sequence::
  // speculate) gets up to this many draft tokens appended to its decode chunk, proposed by
  // ProposeNgramDraft over its own tokens with n-grams of ngram_min..ngram_max tokens; the
  // engine keeps the drafts its own samples confirm (Scheduler::Settle). 0: off.
  int speculative_tokens = 0;
  int ngram_min = 2;
  int ngram_max = 4;
  // The arithmetic of one position as a fraction of a one-token decode step (in [0, 1)):
  // above 0, each sequence gets only as many of its proposed drafts as DraftLength finds
  // worth their cost, from its own record of confirmed drafts and the decode step planned so
  // far; 0 takes every proposed draft.
  double draft_cost = 0.0;
};

// Prompt-lookup drafting: the longest n-gram (n from max_ngram down to min_ngram) that ends
// `tokens` and also occurs earlier in them, at its latest earlier occurrence; returns up to
// `max_draft` tokens that followed that occurrence. Empty when no such n-gram occurs or
// max_draft < 1. Pure. REQUIRES: 1 <= min_ngram <= max_ngram.
std::vector<int32_t> ProposeNgramDraft(std::span<const int32_t> tokens, int min_ngram,
                                       int max_ngram, int max_draft);

// Tokens a run of `k` drafts yields with the sample after it, when each draft is right with
// probability `acceptance` and the first wrong one ends the run: 1 + a + a^2 + ... + a^k.
double ExpectedDraftYield(double acceptance, int k);

// How many of `max_draft` proposed tokens to compute for one sequence, given the decode step
// planned so far: `step_tokens` positions that yield `step_yield` tokens in expectation. A
// step's cost is modeled as a roofline in units of a one-token step: max(1, draft_cost * T)
// for T positions, i.e. it streams the weights once (memory-bound) until its arithmetic,
// draft_cost of a one-token step per position, takes longer (compute-bound). Returns the k
// in [0, max_draft] that maximizes the step's expected tokens per unit of cost,
// (step_yield + ExpectedDraftYield(acceptance, k) - 1) / max(1, draft_cost * (step_tokens + k));
// ties go to the shorter draft. So drafts are taken while the step is memory-bound, and a
// batch whose step is already compute-bound takes none. draft_cost 0: max_draft. Pure.
// REQUIRES: 0 <= acceptance <= 1, draft_cost >= 0, step_tokens >= 1, step_yield > 0.
int DraftLength(double acceptance, int max_draft, int64_t step_tokens, double step_yield,
                double draft_cost);

struct Sequence {
  uint64_t id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int64_t prompt_len = 0;
  int64_t num_computed = 0;  // positions whose KV is in `blocks`
  std::vector<KvCache::BlockId> blocks;
  uint64_t hash_seed = 0;         // BlockHashSeed(model, salt)
  std::vector<uint64_t> hashes;   // chain hashes of the first hashes.size() full blocks
  int64_t registered_blocks = 0;  // blocks [0, registered_blocks) offered to the prefix cache
  int64_t cached_tokens = 0;      // prompt positions taken from the prefix cache (first admission)
  int preemptions = 0;
  int64_t arrival_ns = 0;
  int64_t first_scheduled_ns = -1;
  bool admitted_once = false;
  bool reuse_prefix = true;  // false: never takes blocks from the prefix cache (prompt logprobs)
  // Speculative decoding: whether drafts may be proposed for it (the engine decides: greedy,
  // unconstrained requests), and the most tokens it may hold (prompt + max_tokens).
  bool speculate = false;
  int64_t max_len = 0;
  // Draft tokens appended to `tokens` for the step being planned or run (the last `draft`
  // tokens are a guess, not output); 0 between steps.
  int64_t draft = 0;
  // Its record of draft tokens checked and confirmed, decayed at each update (Settle): the
  // acceptance DraftLength is given. A proposal DraftLength declines is still checked, for
  // free, against the next sample: its first token and position are kept until Settle.
  double draft_checked = 0;
  double draft_confirmed = 0;
  int64_t last_draft = 0;  // drafts of the last step (TakeDraft to Settle)
  int64_t unchecked_pos = -1;
  int32_t unchecked_token = -1;
  double draft_acceptance() const;

  int64_t uncomputed() const { return static_cast<int64_t>(tokens.size()) - num_computed; }
};

struct ScheduledChunk {
  Sequence* seq = nullptr;
  int64_t begin = 0;  // positions [begin, end) of seq->tokens computed this step
  int64_t end = 0;
  bool sample = false;  // end == tokens.size(): logits of the last position are wanted
  // Draft tokens at the end of the chunk (a speculative decode chunk: logits of every position
  // are wanted; row j checks draft j).
  int64_t draft = 0;
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;  // one per sequence, in batch order
  std::vector<uint64_t> preempted;     // ids preempted while planning this step
  // Sequences that cannot fit in the cache even alone; already out of the running set but
  // still holding their blocks: finish them, then call Free.
  std::vector<std::unique_ptr<Sequence>> failed;
  int64_t num_tokens = 0;
};

class Scheduler {
 public:
  // `pool` is not owned and must outlive the scheduler.
  Scheduler(const SchedulerOptions& options, BlockPool* pool);
  ~Scheduler();

  // Queues a sequence at the back of the waiting queue. It may already hold blocks covering
  // positions [0, num_computed) (a decode node's prefilled request). REQUIRES: new id,
  // tokens non-empty, num_computed < tokens.size().
  void Add(std::unique_ptr<Sequence> seq);

  // Plans the next step at time `now_ns` (allocating the blocks it needs). The plan's
  // pointers stay valid until the sequence is detached.
  StepPlan Schedule(int64_t now_ns);

  // Records that a planned chunk was computed: advances num_computed and registers the newly
  // complete full blocks in the prefix cache.
  void Commit(const ScheduledChunk& chunk);
  // Appends a sampled token (to be computed by a later step).
  void AppendToken(Sequence* seq, int32_t token);
  // After a speculative chunk's forward pass: takes its draft tokens back out of the sequence
  // and returns them (the engine then commits the chunk without them). Settle(seq, accepted),
  // once the samples are appended: the first `accepted` drafts were confirmed, so the KV the
  // chunk computed at their positions is kept (num_computed advances past them). Settle also
  // updates the sequence's record of confirmed drafts (call it after every sampled chunk).
  std::vector<int32_t> TakeDraft(Sequence* seq);
  void Settle(Sequence* seq, int64_t accepted);

  // Takes a sequence out of the running set or waiting queue; its blocks stay referenced (so
  // that a finish callback can still read them) until Free. Returns null for unknown ids.
  std::unique_ptr<Sequence> Detach(uint64_t id);
  // Releases a detached sequence's blocks (last block first, so that a sequence's tail is
  // evicted before its prefix).
  void Free(Sequence* seq);

  Sequence* Find(uint64_t id) const;
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  bool idle() const { return running_.empty() && waiting_.empty(); }
  // Uncomputed tokens of every sequence beyond the one being decoded (prefill work queued).
  int64_t queued_prefill_tokens() const;

  // Cumulative counters.
  int64_t preemptions() const { return preemptions_; }
  int64_t prefix_queries() const { return prefix_queries_; }  // prompt tokens looked up
  int64_t prefix_hits() const { return prefix_hits_; }        // of which found
  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }

 private:
  // Grows seq->blocks to cover `positions`, evicting cached blocks as needed. False when the
  // pool runs out (blocks appended before that stay).
  bool Grow(Sequence* seq, int64_t positions);
  void ReleaseBlocks(Sequence* seq);
  void Preempt(Sequence* seq);
  void EnsureHashes(Sequence* seq, int64_t blocks);
  // Takes the cached prefix for a sequence being admitted with no blocks.
  void TakeCachedPrefix(Sequence* seq);

  const SchedulerOptions options_;
  BlockPool* pool_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> seqs_;
  std::vector<Sequence*> running_;  // admission order: oldest first
  std::deque<Sequence*> waiting_;
  int64_t preemptions_ = 0;
  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
};

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_SCHEDULER_H_
