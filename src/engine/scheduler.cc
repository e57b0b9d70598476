#include "src/engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "src/engine/block_hash.h"

namespace crescent::engine {

Scheduler::Scheduler(const SchedulerOptions& options, BlockPool* pool)
    : options_(options), pool_(pool) {}

Scheduler::~Scheduler() {
  for (auto& [id, seq] : seqs_) ReleaseBlocks(seq.get());
}

void Scheduler::Add(std::unique_ptr<Sequence> seq) {
  Sequence* s = seq.get();
  seqs_.emplace(s->id, std::move(seq));
  waiting_.push_back(s);
}

Sequence* Scheduler::Find(uint64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : it->second.get();
}

std::vector<int32_t> ProposeNgramDraft(std::span<const int32_t> tokens, int min_ngram,
                                       int max_ngram, int max_draft) {
  const int64_t len = static_cast<int64_t>(tokens.size());
  if (max_draft < 1 || len < 2) return {};
  const int64_t longest = std::min<int64_t>(max_ngram, len - 1);
  // One pass over the earlier end positions e (latest first): how many of the tail's last
  // tokens also end at e. The first e reaching the longest match found wins (latest among
  // the longest).
  int64_t best_n = 0, best_end = -1;
  for (int64_t e = len - 2; e >= 0; --e) {
    int64_t n = 0;
    while (n < longest && n <= e && tokens[e - n] == tokens[len - 1 - n]) ++n;
    if (n > best_n) {
      best_n = n;
      best_end = e;
      if (n == longest) break;
    }
  }
  if (best_n < min_ngram) return {};
  const int64_t from = best_end + 1;
  const int64_t count = std::min<int64_t>(max_draft, len - from);
  return std::vector<int32_t>(tokens.begin() + from, tokens.begin() + from + count);
}

double ExpectedDraftYield(double acceptance, int k) {
  double yield = 1.0, term = 1.0;
  for (int j = 0; j < k; ++j) {
    term *= acceptance;
    yield += term;
  }
  return yield;
}

int DraftLength(double acceptance, int max_draft, int64_t step_tokens, double step_yield,
                double draft_cost) {
  if (max_draft <= 0) return 0;
  if (draft_cost <= 0) return max_draft;
  auto cost = [&](int64_t tokens) {
    return std::max(1.0, draft_cost * static_cast<double>(tokens));
  };
  int best = 0;
  double best_value = step_yield / cost(step_tokens);
  double yield = step_yield, term = 1.0;
  for (int k = 1; k <= max_draft; ++k) {
    term *= acceptance;
    yield += term;
    const double value = yield / cost(step_tokens + k);
    if (value > best_value) {
      best_value = value;
      best = k;
    }
  }
  return best;
}

// Laplace's rule over the decayed record: 1/2 before any draft is checked.
double Sequence::draft_acceptance() const {
  return (draft_confirmed + 1.0) / (draft_checked + 2.0);
}

int64_t Scheduler::queued_prefill_tokens() const {
  int64_t total = 0;
  auto add = [&](const Sequence* s) {
    // A decoding sequence's one uncomputed token (its last sample) is decode work, not prefill,
    // and so are the drafts of a step in flight.
    int64_t n = s->uncomputed() - s->draft - (s->num_computed >= s->prompt_len ? 1 : 0);
    total += std::max<int64_t>(0, n);
  };
  for (const Sequence* s : running_) add(s);
  for (const Sequence* s : waiting_) add(s);
  return total;
}

bool Scheduler::Grow(Sequence* seq, int64_t positions) {
  const int64_t bt = options_.block_tokens;
  const int64_t need = (positions + bt - 1) / bt;
  while (static_cast<int64_t>(seq->blocks.size()) < need) {
    KvCache::BlockId b = pool_->Allocate();
    if (b < 0) return false;
    seq->blocks.push_back(b);
  }
  return true;
}

void Scheduler::ReleaseBlocks(Sequence* seq) {
  for (auto it = seq->blocks.rbegin(); it != seq->blocks.rend(); ++it) pool_->Unref(*it);
  seq->blocks.clear();
  seq->num_computed = 0;
  seq->registered_blocks = 0;
}

void Scheduler::Preempt(Sequence* seq) {
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  ReleaseBlocks(seq);
  waiting_.push_front(seq);
  ++seq->preemptions;
  ++preemptions_;
}

void Scheduler::EnsureHashes(Sequence* seq, int64_t blocks) {
  const int bt = options_.block_tokens;
  while (static_cast<int64_t>(seq->hashes.size()) < blocks) {
    const size_t i = seq->hashes.size();
    const uint64_t previous = i == 0 ? 0 : seq->hashes.back();
    seq->hashes.push_back(ChainBlockHash(
        seq->hash_seed, previous, std::span<const int32_t>(seq->tokens).subspan(i * bt, bt)));
  }
}

void Scheduler::TakeCachedPrefix(Sequence* seq) {
  if (!pool_->prefix_cache() || !seq->reuse_prefix) return;
  const int bt = options_.block_tokens;
  // Never the block holding the last token: it must be computed to give logits.
  const int64_t max_blocks = (static_cast<int64_t>(seq->tokens.size()) - 1) / bt;
  EnsureHashes(seq, max_blocks);
  for (int64_t i = 0; i < max_blocks; ++i) {
    KvCache::BlockId b = pool_->Lookup(seq->hashes[i]);
    if (b < 0) break;
    pool_->Ref(b);
    seq->blocks.push_back(b);
  }
  seq->num_computed = static_cast<int64_t>(seq->blocks.size()) * bt;
  seq->registered_blocks = static_cast<int64_t>(seq->blocks.size());
}

StepPlan Scheduler::Schedule(int64_t now_ns) {
  StepPlan plan;
  int64_t budget = options_.max_step_tokens;
  const int64_t bt = options_.block_tokens;
  absl::flat_hash_set<Sequence*> planned;

  auto add_chunk = [&](Sequence* s, int64_t end) {
    ScheduledChunk c;
    c.seq = s;
    c.begin = s->num_computed;
    c.end = end;
    c.sample = end == static_cast<int64_t>(s->tokens.size());
    plan.chunks.push_back(c);
    plan.num_tokens += c.end - c.begin;
    budget -= c.end - c.begin;
    planned.insert(s);
    if (s->first_scheduled_ns < 0) s->first_scheduled_ns = now_ns;
  };
  // Grows s's blocks to `positions`, preempting the newest unplanned running sequences newer
  // than s as needed. False when even that is not enough.
  auto make_room = [&](Sequence* s, int64_t positions) {
    while (!Grow(s, positions)) {
      Sequence* victim = nullptr;
      for (auto it = running_.rbegin(); it != running_.rend() && *it != s; ++it) {
        if (!planned.contains(*it)) {
          victim = *it;
          break;
        }
      }
      if (victim == nullptr) return false;
      Preempt(victim);
      plan.preempted.push_back(victim->id);
    }
    return true;
  };
  // s (running) cannot get the blocks for its next position. Alone in the running set and too
  // big for the whole cache, it fails; otherwise it yields its blocks and waits.
  auto give_up = [&](Sequence* s) {
    const int64_t need = (s->num_computed + 1 + bt - 1) / bt;
    if (running_.size() == 1 && need > pool_->num_blocks()) {
      running_.erase(std::find(running_.begin(), running_.end(), s));
      auto it = seqs_.find(s->id);
      plan.failed.push_back(std::move(it->second));
      seqs_.erase(it);
    } else {
      Preempt(s);
      plan.preempted.push_back(s->id);
    }
  };

  // 1. Decode: one token for each running sequence that has exactly one uncomputed token.
  std::vector<Sequence*> snapshot = running_;
  // The decode step as planned so far, for DraftLength: its positions and expected tokens.
  const int64_t decoding = std::count_if(running_.begin(), running_.end(),
                                         [](const Sequence* s) { return s->uncomputed() == 1; });
  int64_t step_tokens = std::max<int64_t>(decoding, 1);
  double step_yield = static_cast<double>(step_tokens);
  for (Sequence* s : snapshot) {
    if (budget <= 0) break;
    if (std::find(running_.begin(), running_.end(), s) == running_.end()) continue;
    if (s->uncomputed() != 1) continue;
    if (!make_room(s, s->num_computed + 1)) {
      give_up(s);
      continue;
    }
    std::vector<int32_t> draft;
    if (s->speculate && options_.speculative_tokens > 0) {
      // At most max_len - tokens - 1 drafts: all confirmed, one more token is sampled.
      const int64_t room =
          std::min<int64_t>({options_.speculative_tokens, budget - 1,
                             s->max_len - static_cast<int64_t>(s->tokens.size()) - 1});
      if (room > 0) {
        draft = ProposeNgramDraft(s->tokens, options_.ngram_min, options_.ngram_max,
                                  static_cast<int>(room));
      }
      if (!draft.empty()) {
        const double acceptance = s->draft_acceptance();
        const int k = DraftLength(acceptance, static_cast<int>(draft.size()), step_tokens,
                                  step_yield, options_.draft_cost);
        step_tokens += k;
        step_yield += ExpectedDraftYield(acceptance, k) - 1.0;
        if (k == 0) {
          // Not computed, but checked against the next sample all the same.
          s->unchecked_pos = static_cast<int64_t>(s->tokens.size());
          s->unchecked_token = draft[0];
        }
        draft.resize(static_cast<size_t>(k));
      }
      // Drafts take only blocks the pool has (free or evictable): never a preemption for a guess.
      if (!draft.empty() && !Grow(s, s->num_computed + 1 + static_cast<int64_t>(draft.size()))) {
        draft.clear();
      }
    }
    s->draft = static_cast<int64_t>(draft.size());
    s->tokens.insert(s->tokens.end(), draft.begin(), draft.end());
    add_chunk(s, static_cast<int64_t>(s->tokens.size()));
    plan.chunks.back().draft = s->draft;
  }

  // 2. Chunked prefill of running sequences still prefilling (or recomputing).
  snapshot = running_;
  for (Sequence* s : snapshot) {
    if (budget <= 0) break;
    if (planned.contains(s) || s->uncomputed() <= 1) continue;
    if (std::find(running_.begin(), running_.end(), s) == running_.end()) continue;
    int64_t target = s->num_computed + std::min(s->uncomputed(), budget);
    if (!make_room(s, target)) {
      target = std::min(target, static_cast<int64_t>(s->blocks.size()) * bt);
      if (target <= s->num_computed) {
        if (running_.size() == 1) give_up(s);
        continue;  // waits for the planned sequences to release blocks
      }
    }
    add_chunk(s, target);
  }

  // 3. Admission, FCFS. Not in a step that had to preempt: blocks are short.
  while (plan.preempted.empty() && budget > 0 && !waiting_.empty() &&
         static_cast<int64_t>(running_.size()) < options_.max_running) {
    Sequence* s = waiting_.front();
    const bool fresh = s->blocks.empty();
    if (fresh) TakeCachedPrefix(s);
    int64_t target = s->num_computed + std::min(s->uncomputed(), budget);
    if (!Grow(s, target)) {
      target = std::min(target, static_cast<int64_t>(s->blocks.size()) * bt);
    }
    if (target <= s->num_computed) {
      if (fresh) ReleaseBlocks(s);
      const int64_t need = (s->num_computed + 1 + bt - 1) / bt;
      if (running_.empty() && plan.chunks.empty() && need > pool_->num_blocks()) {
        waiting_.pop_front();
        auto it = seqs_.find(s->id);
        plan.failed.push_back(std::move(it->second));
        seqs_.erase(it);
        continue;
      }
      break;  // FCFS: nothing behind it goes first
    }
    waiting_.pop_front();
    running_.push_back(s);
    if (!s->admitted_once) {
      s->admitted_once = true;
      if (pool_->prefix_cache()) {
        prefix_queries_ += s->prompt_len;
        s->cached_tokens = std::min(s->num_computed, s->prompt_len);
        prefix_hits_ += s->cached_tokens;
      }
    }
    add_chunk(s, target);
  }
  return plan;
}

void Scheduler::Commit(const ScheduledChunk& chunk) {
  Sequence* s = chunk.seq;
  s->num_computed = chunk.end;
  if (!pool_->prefix_cache()) return;
  const int64_t full = s->num_computed / options_.block_tokens;
  if (full <= s->registered_blocks) return;
  EnsureHashes(s, full);
  for (int64_t b = s->registered_blocks; b < full; ++b) pool_->Register(s->blocks[b], s->hashes[b]);
  s->registered_blocks = full;
}

void Scheduler::AppendToken(Sequence* seq, int32_t token) { seq->tokens.push_back(token); }

std::vector<int32_t> Scheduler::TakeDraft(Sequence* seq) {
  const auto n = static_cast<std::ptrdiff_t>(seq->draft);
  std::vector<int32_t> draft(seq->tokens.end() - n, seq->tokens.end());
  seq->tokens.resize(seq->tokens.size() - static_cast<size_t>(n));
  seq->draft = 0;
  seq->last_draft = n;
  return draft;
}

void Scheduler::Settle(Sequence* seq, int64_t accepted) {
  // The record of confirmed drafts: positions checked (a run of confirmed drafts ends at the
  // first wrong one) and confirmed, older checks weighing less.
  double checked = 0, confirmed = 0;
  if (seq->last_draft > 0) {
    checked = static_cast<double>(std::min(accepted + 1, seq->last_draft));
    confirmed = static_cast<double>(accepted);
  } else if (seq->unchecked_pos >= 0 &&
             seq->unchecked_pos < static_cast<int64_t>(seq->tokens.size())) {
    checked = 1;
    confirmed = seq->tokens[static_cast<size_t>(seq->unchecked_pos)] == seq->unchecked_token;
  }
  if (checked > 0) {
    constexpr double kDecay = 0.9;
    seq->draft_checked = kDecay * seq->draft_checked + checked;
    seq->draft_confirmed = kDecay * seq->draft_confirmed + confirmed;
  }
  seq->last_draft = 0;
  seq->unchecked_pos = -1;
  if (accepted <= 0) return;
  ScheduledChunk c;
  c.seq = seq;
  c.begin = seq->num_computed;
  c.end = seq->num_computed + accepted;
  Commit(c);
}

std::unique_ptr<Sequence> Scheduler::Detach(uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return nullptr;
  Sequence* s = it->second.get();
  auto r = std::find(running_.begin(), running_.end(), s);
  if (r != running_.end()) {
    running_.erase(r);
  } else {
    auto w = std::find(waiting_.begin(), waiting_.end(), s);
    if (w != waiting_.end()) waiting_.erase(w);
  }
  std::unique_ptr<Sequence> out = std::move(it->second);
  seqs_.erase(it);
  return out;
}

void Scheduler::Free(Sequence* seq) { ReleaseBlocks(seq); }

}  // namespace crescent::engine
