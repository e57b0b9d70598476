#include "src/engine/scheduler.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/engine/prefix_cache.h"

namespace crescent::engine {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;

constexpr int kBlock = 4;

std::unique_ptr<Sequence> MakeSeq(uint64_t id, int n, int32_t first = 0, int64_t now = 0) {
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->tokens.resize(n);
  std::iota(s->tokens.begin(), s->tokens.end(), first);
  s->prompt_len = n;
  s->hash_seed = 1234;
  s->arrival_ns = now;
  return s;
}

// A scheduler over its own pool, with a helper that plays the engine's part of a step.
class SchedulerTest : public ::testing::Test {
 protected:
  void Init(int64_t blocks, int budget, int max_running = 64, bool prefix_cache = true) {
    pool_ = std::make_unique<BlockPool>(blocks, prefix_cache);
    sched_ =
        std::make_unique<Scheduler>(SchedulerOptions{kBlock, budget, max_running}, pool_.get());
  }
  Sequence* Add(uint64_t id, int n, int32_t first = 0) {
    auto s = MakeSeq(id, n, first);
    Sequence* p = s.get();
    sched_->Add(std::move(s));
    return p;
  }
  // Schedules, "computes" and appends token 7 to every sampled sequence.
  StepPlan Step(int64_t now = 0) {
    StepPlan plan = sched_->Schedule(now);
    for (const ScheduledChunk& c : plan.chunks) {
      EXPECT_GE(static_cast<int64_t>(c.seq->blocks.size()) * kBlock, c.end) << c.seq->id;
      sched_->Commit(c);
      if (c.sample) sched_->AppendToken(c.seq, 7);
    }
    return plan;
  }
  static std::vector<uint64_t> Ids(const StepPlan& plan) {
    std::vector<uint64_t> ids;
    for (const ScheduledChunk& c : plan.chunks) ids.push_back(c.seq->id);
    return ids;
  }
  static std::vector<int64_t> Sizes(const StepPlan& plan) {
    std::vector<int64_t> n;
    for (const ScheduledChunk& c : plan.chunks) n.push_back(c.end - c.begin);
    return n;
  }
  void Finish(uint64_t id) {
    std::unique_ptr<Sequence> s = sched_->Detach(id);
    ASSERT_NE(s, nullptr);
    sched_->Free(s.get());
  }
  int64_t Referenced() const {
    int64_t n = 0;
    for (int64_t i = 0; i < pool_->num_blocks(); ++i) n += pool_->RefCount(i) > 0;
    return n;
  }

  std::unique_ptr<BlockPool> pool_;
  std::unique_ptr<Scheduler> sched_;
};

TEST(ProposeNgramDraftTest, FollowsTheLatestEarlierOccurrenceOfTheLongestTail) {
  const std::vector<int32_t> t = {1, 2, 3, 4, 1, 2};
  EXPECT_THAT(ProposeNgramDraft(t, 2, 4, 3), ElementsAre(3, 4, 1));
  EXPECT_THAT(ProposeNgramDraft(t, 2, 4, 10), ElementsAre(3, 4, 1, 2));  // up to the end
  EXPECT_TRUE(ProposeNgramDraft(t, 2, 4, 0).empty());
  // The longest tail that occurs wins: [1 2 3] at 0 over [2 3] at 5.
  const std::vector<int32_t> longest = {1, 2, 3, 9, 7, 2, 3, 8, 1, 2, 3};
  EXPECT_THAT(ProposeNgramDraft(longest, 2, 4, 2), ElementsAre(9, 7));
  EXPECT_THAT(ProposeNgramDraft(longest, 2, 2, 2), ElementsAre(8, 1));  // n = 2 only: latest
  // The latest earlier occurrence.
  const std::vector<int32_t> latest = {1, 2, 5, 1, 2, 6, 1, 2};
  EXPECT_THAT(ProposeNgramDraft(latest, 2, 4, 3), ElementsAre(6, 1, 2));
  // None; too short; n-grams of one token.
  EXPECT_TRUE(ProposeNgramDraft(std::vector<int32_t>{1, 2, 3, 4}, 2, 4, 3).empty());
  EXPECT_TRUE(ProposeNgramDraft(std::vector<int32_t>{1}, 1, 4, 3).empty());
  EXPECT_THAT(ProposeNgramDraft(std::vector<int32_t>{4, 5, 4}, 1, 4, 3), ElementsAre(5, 4));
  EXPECT_TRUE(ProposeNgramDraft(std::vector<int32_t>{4, 5, 4}, 2, 4, 3).empty());
}

// The one-pass search against the definition, n by n, on random sequences over few tokens
// (many repeats, overlapping occurrences).
TEST(ProposeNgramDraftTest, MatchesTheSearchNByN) {
  auto reference = [](const std::vector<int32_t>& t, int min_n, int max_n, int max_draft) {
    const int64_t len = static_cast<int64_t>(t.size());
    for (int64_t n = std::min<int64_t>(max_n, len - 1); n >= min_n; --n) {
      for (int64_t i = len - n - 1; i >= 0; --i) {
        if (!std::equal(t.end() - n, t.end(), t.begin() + i)) continue;
        const int64_t count = std::min<int64_t>(max_draft, len - (i + n));
        return std::vector<int32_t>(t.begin() + i + n, t.begin() + i + n + count);
      }
    }
    return std::vector<int32_t>{};
  };
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<int32_t> t(1 + rng() % 40);
    const int32_t alphabet = 1 + static_cast<int32_t>(rng() % 4);
    for (int32_t& v : t) v = static_cast<int32_t>(rng() % static_cast<uint32_t>(alphabet));
    const int min_n = 1 + static_cast<int>(rng() % 3);
    const int max_n = min_n + static_cast<int>(rng() % 3);
    const int max_draft = static_cast<int>(rng() % 6);
    ASSERT_EQ(ProposeNgramDraft(t, min_n, max_n, max_draft), reference(t, min_n, max_n, max_draft))
        << "trial " << trial;
  }
}

// A decoding sequence gets its drafts appended to its decode chunk, within the budget, its
// max_len and the free blocks; TakeDraft and Settle put it back to a normal state.
TEST_F(SchedulerTest, DraftsRideOnTheDecodeChunk) {
  pool_ = std::make_unique<BlockPool>(8, true);
  SchedulerOptions options{kBlock, 64, 64, /*speculative_tokens=*/3, 2, 4};
  sched_ = std::make_unique<Scheduler>(options, pool_.get());
  auto seq = MakeSeq(1, 6);
  seq->tokens = {5, 6, 7, 8, 5, 6};
  seq->speculate = true;
  seq->max_len = 30;
  Sequence* s = seq.get();
  sched_->Add(std::move(seq));
  StepPlan prefill = sched_->Schedule(0);
  ASSERT_EQ(prefill.chunks.size(), 1u);
  EXPECT_EQ(prefill.chunks[0].draft, 0);  // a prompt chunk never drafts
  sched_->Commit(prefill.chunks[0]);
  sched_->AppendToken(s, 7);  // tokens ... 5 6 7: [6 7] occurred at 1, followed by 8 5 6

  StepPlan step = sched_->Schedule(0);
  ASSERT_EQ(step.chunks.size(), 1u);
  const ScheduledChunk c = step.chunks[0];
  EXPECT_EQ(c.begin, 6);
  EXPECT_EQ(c.draft, 3);
  EXPECT_EQ(c.end, 10);
  EXPECT_TRUE(c.sample);
  EXPECT_THAT(s->tokens, ElementsAre(5, 6, 7, 8, 5, 6, 7, 8, 5, 6));
  EXPECT_GE(static_cast<int64_t>(s->blocks.size()) * kBlock, c.end);
  EXPECT_EQ(sched_->queued_prefill_tokens(), 0);  // drafts are not prefill work

  EXPECT_THAT(sched_->TakeDraft(s), ElementsAre(8, 5, 6));
  EXPECT_EQ(s->draft, 0);
  ScheduledChunk real = c;
  real.end -= c.draft;
  sched_->Commit(real);
  EXPECT_EQ(s->num_computed, 7);
  // Rows confirmed 8 and 5; the sample after 5 was 9.
  for (int32_t t : {8, 5, 9}) sched_->AppendToken(s, t);
  sched_->Settle(s, 2);
  EXPECT_EQ(s->num_computed, 9);
  EXPECT_EQ(s->uncomputed(), 1);
  EXPECT_EQ(s->registered_blocks, 2);  // positions 0..7 are two full blocks

  // max_len bounds the drafts: at most max_len - tokens - 1.
  s->max_len = 12;
  StepPlan capped = sched_->Schedule(0);
  ASSERT_EQ(capped.chunks.size(), 1u);
  EXPECT_LE(capped.chunks[0].draft, 1);
  sched_->TakeDraft(s);
  // A sequence that does not speculate never drafts.
  s->speculate = false;
  ScheduledChunk back = capped.chunks[0];
  back.end -= back.draft;
  sched_->Commit(back);
  sched_->AppendToken(s, 5);
  StepPlan plain = sched_->Schedule(0);
  EXPECT_EQ(plain.chunks[0].draft, 0);
}

TEST(DraftLengthTest, TakesDraftsWhileTheStepStaysMemoryBound) {
  EXPECT_DOUBLE_EQ(ExpectedDraftYield(0.5, 0), 1.0);
  EXPECT_DOUBLE_EQ(ExpectedDraftYield(0.5, 2), 1.75);
  EXPECT_DOUBLE_EQ(ExpectedDraftYield(1.0, 3), 4.0);
  EXPECT_EQ(DraftLength(0.1, 6, 1, 1, 0.0), 6);  // cost 0: every proposed draft
  EXPECT_EQ(DraftLength(0.9, 0, 1, 1, 0.3), 0);
  // Alone, at 0.3 a position, a step of up to 3 positions costs one of 1: two drafts are free
  // to compute and taken whenever they might be right; never when they cannot be.
  EXPECT_EQ(DraftLength(0.0, 8, 1, 1, 0.3), 0);
  EXPECT_EQ(DraftLength(0.05, 8, 1, 1, 0.3), 2);
  // Past the knee a draft costs 0.3: 0.8 pays for a third (2.95 tokens for 1.2) but not a
  // fourth (3.36 for 1.5); even drafts always right only tie past it (4 for 1.2, 5 for 1.5).
  EXPECT_EQ(DraftLength(0.8, 8, 1, 1, 0.3), 3);
  EXPECT_EQ(DraftLength(1.0, 8, 1, 1, 0.3), 3);
  // A step of 8 sequences is compute-bound already: no draft pays.
  EXPECT_EQ(DraftLength(0.98, 8, 8, 8, 0.3), 0);
  EXPECT_EQ(DraftLength(0.98, 8, 32, 32, 0.3), 0);
  // Two sequences: room for one free draft.
  EXPECT_EQ(DraftLength(0.5, 8, 2, 2, 0.3), 1);
  EXPECT_EQ(DraftLength(0.5, 8, 3, 2.5, 0.3), 0);   // taken: 4 positions cost 1.2
  EXPECT_EQ(DraftLength(0.75, 8, 3, 2.5, 0.3), 1);  // 3.25 for 1.2 beats 2.5 for 1
}

// With a draft cost, a sequence's drafts follow its record and the step: Settle counts the
// drafts checked and confirmed (older steps weighing less); a proposal declined is checked
// against the next sample for free; a batch whose step is compute-bound drafts nothing.
TEST_F(SchedulerTest, DraftsFollowEachSequencesRecord) {
  pool_ = std::make_unique<BlockPool>(256, true);
  SchedulerOptions options{kBlock, 512, 64, /*speculative_tokens=*/4, 2, 4};
  options.draft_cost = 0.3;
  sched_ = std::make_unique<Scheduler>(options, pool_.get());
  // Tokens that repeat 1 2 3, so that prompt lookup always proposes what comes next (three
  // tokens: the latest earlier occurrence of a tail is three tokens back).
  auto add = [&](uint64_t id) {
    auto seq = MakeSeq(id, 8);
    seq->tokens = {1, 2, 3, 1, 2, 3, 1, 2};
    seq->speculate = true;
    seq->max_len = 1000;
    Sequence* s = seq.get();
    sched_->Add(std::move(seq));
    return s;
  };
  auto next_in_cycle = [](const Sequence* s) { return s->tokens.back() % 3 + 1; };
  // Plays the engine for every chunk of a step: takes the drafts back, commits, appends the
  // samples `sample(seq, draft)` gives (confirming drafts while they match) and settles.
  // Returns the drafts of each chunk.
  auto step = [&](auto sample) {
    StepPlan plan = sched_->Schedule(0);
    std::vector<int64_t> drafted;
    for (ScheduledChunk c : plan.chunks) {
      drafted.push_back(c.draft);
      const std::vector<int32_t> draft = sched_->TakeDraft(c.seq);
      c.end -= c.draft;
      sched_->Commit(c);
      if (!c.sample) continue;
      const std::vector<int32_t> samples = sample(c.seq, draft);
      int64_t accepted = 0;
      while (accepted < static_cast<int64_t>(draft.size()) &&
             accepted + 1 < static_cast<int64_t>(samples.size()) &&
             samples[static_cast<size_t>(accepted)] == draft[static_cast<size_t>(accepted)]) {
        ++accepted;
      }
      for (int64_t j = 0; j <= accepted; ++j) {
        sched_->AppendToken(c.seq, samples[static_cast<size_t>(j)]);
      }
      sched_->Settle(c.seq, accepted);
    }
    return drafted;
  };
  // The cycle's continuation: every draft right.
  auto right = [&](Sequence* seq, const std::vector<int32_t>&) {
    std::vector<int32_t> out;
    int32_t t = next_in_cycle(seq);
    for (int j = 0; j < 8; ++j, t = t % 3 + 1) out.push_back(t);
    return out;
  };
  Sequence* s = add(1);
  EXPECT_THAT(step(right), ElementsAre(0));  // the prompt
  EXPECT_EQ(s->draft_checked, 0);            // no draft yet: nothing learned
  EXPECT_DOUBLE_EQ(s->draft_acceptance(), 0.5);
  // An even record takes the two free drafts; both confirmed.
  EXPECT_THAT(step(right), ElementsAre(2));
  EXPECT_DOUBLE_EQ(s->draft_checked, 2);
  EXPECT_DOUBLE_EQ(s->draft_confirmed, 2);
  // Every draft confirmed: a third pays too.
  for (int i = 0; i < 4; ++i) step(right);
  EXPECT_THAT(step(right), ElementsAre(3));
  EXPECT_GT(s->draft_acceptance(), 0.9);
  // A wrong first draft: one position checked, none confirmed.
  const double checked = s->draft_checked, confirmed = s->draft_confirmed;
  EXPECT_THAT(step([&](Sequence* seq, const std::vector<int32_t>&) {
                return std::vector<int32_t>{static_cast<int32_t>(next_in_cycle(seq) % 3 + 1)};
              }),
              ElementsAre(3));
  EXPECT_DOUBLE_EQ(s->draft_checked, 0.9 * checked + 1);
  EXPECT_DOUBLE_EQ(s->draft_confirmed, 0.9 * confirmed);
  Finish(1);

  // Three sequences with a poor record (acceptance 1/12): the step has no free position
  // left worth a draft, so none is computed ...
  std::vector<Sequence*> three = {add(2), add(3), add(4)};
  step(right);
  for (Sequence* q : three) {
    q->draft_checked = 10;
    q->draft_confirmed = 0;
  }
  StepPlan plan = sched_->Schedule(0);
  ASSERT_EQ(plan.chunks.size(), 3u);
  for (const ScheduledChunk& c : plan.chunks) {
    EXPECT_EQ(c.draft, 0);
    // ... yet each declined proposal is checked against the next sample: a right one counts.
    ASSERT_EQ(c.seq->unchecked_pos, static_cast<int64_t>(c.seq->tokens.size()));
    EXPECT_EQ(c.seq->unchecked_token, next_in_cycle(c.seq));
    sched_->Commit(c);
    sched_->AppendToken(c.seq, c.seq->unchecked_token);
    sched_->Settle(c.seq, 0);
    EXPECT_DOUBLE_EQ(c.seq->draft_checked, 10);  // 0.9 * 10 + 1
    EXPECT_DOUBLE_EQ(c.seq->draft_confirmed, 1);
    EXPECT_EQ(c.seq->unchecked_pos, -1);
  }
  // A good record (acceptance 10/12): the first sequence's draft pays (3.83 tokens for 1.2),
  // a second one's would not (4.67 for 1.5).
  for (Sequence* q : three) {
    q->draft_checked = 10;
    q->draft_confirmed = 9;
  }
  EXPECT_THAT(step(right), ElementsAre(1, 0, 0));
  for (Sequence* q : three) Finish(q->id);

  // The same record in a batch of 16 drafts nothing: the step is compute-bound.
  std::vector<Sequence*> batch;
  for (uint64_t id = 10; id < 26; ++id) batch.push_back(add(id));
  step(right);
  for (Sequence* q : batch) {
    q->draft_checked = 10;
    q->draft_confirmed = 9;
  }
  EXPECT_THAT(step(right), Each(0));
}

TEST_F(SchedulerTest, LongPromptIsChunkedUnderTheBudget) {
  Init(64, 32);
  Sequence* s = Add(1, 100);
  std::vector<int64_t> chunks;
  std::vector<bool> samples;
  for (int i = 0; i < 4; ++i) {
    StepPlan plan = Step();
    ASSERT_EQ(plan.chunks.size(), 1u);
    chunks.push_back(plan.chunks[0].end - plan.chunks[0].begin);
    samples.push_back(plan.chunks[0].sample);
    EXPECT_LE(plan.num_tokens, 32);
  }
  EXPECT_THAT(chunks, ElementsAre(32, 32, 32, 4));
  EXPECT_THAT(samples, ElementsAre(false, false, false, true));
  EXPECT_EQ(s->num_computed, 100);
  EXPECT_EQ(s->tokens.size(), 101u);
  EXPECT_EQ(s->blocks.size(), 25u);
  // Then one decode token per step.
  StepPlan plan = Step();
  EXPECT_THAT(Sizes(plan), ElementsAre(1));
  EXPECT_TRUE(plan.chunks[0].sample);
}

TEST_F(SchedulerTest, DecodeGoesFirstThenPrefillWithWhatIsLeft) {
  Init(128, 16);
  Add(1, 5);
  Add(2, 6);
  Step();                      // both prefilled at once (11 tokens)
  Add(3, 40, /*first=*/1000);  // shares no block with 1 (no prefix hit)
  StepPlan plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1, 2, 3));
  EXPECT_THAT(Sizes(plan), ElementsAre(1, 1, 14));
  EXPECT_EQ(plan.num_tokens, 16);
  EXPECT_FALSE(plan.chunks[2].sample);
  // A running prefill continues before anything new is admitted.
  Add(4, 3);
  plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1, 2, 3));
  EXPECT_THAT(Sizes(plan), ElementsAre(1, 1, 14));
  plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(Sizes(plan), ElementsAre(1, 1, 12, 2));
}

TEST_F(SchedulerTest, BudgetBoundsEveryStep) {
  Init(512, 24);
  for (uint64_t id = 1; id <= 10; ++id) Add(id, 3 + 7 * static_cast<int>(id));
  for (int i = 0; i < 40; ++i) {
    StepPlan plan = Step();
    int64_t sum = 0;
    for (const ScheduledChunk& c : plan.chunks) sum += c.end - c.begin;
    EXPECT_EQ(sum, plan.num_tokens);
    EXPECT_LE(plan.num_tokens, 24);
    EXPECT_GT(plan.num_tokens, 0);
  }
}

TEST_F(SchedulerTest, MaxRunningLimitsAdmission) {
  Init(128, 100, /*max_running=*/2);
  Add(1, 4);
  Add(2, 4);
  Add(3, 4);
  StepPlan plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1, 2));
  EXPECT_EQ(sched_->num_waiting(), 1);
  Finish(1);
  plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(2, 3));
}

TEST_F(SchedulerTest, AdmissionIsFcfsEvenWhenSmallerOnesWouldFit) {
  Init(6, 100);  // 24 positions
  Add(1, 12);    // 3 blocks
  Add(2, 20);    // 5 blocks: does not fit beside 1
  Add(3, 2);     // would fit, but must not overtake 2
  StepPlan plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1, 2));  // 2 gets a first chunk of what is left
  EXPECT_THAT(Sizes(plan), ElementsAre(12, 12));
  EXPECT_EQ(sched_->waiting().front()->id, 3u);
  EXPECT_EQ(pool_->num_available(), 0);
}

TEST_F(SchedulerTest, NewestRunningIsPreemptedAndReadmittedFirst) {
  Init(6, 100);  // 24 positions
  Add(1, 7);     // 2 blocks each, 1 position of room left in each
  Add(2, 7);
  Add(3, 7);
  StepPlan plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1, 2, 3));
  EXPECT_EQ(pool_->num_available(), 0);
  // Each now has 8 tokens of which 7 computed: the decode fits in the second block.
  plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1, 2, 3));
  Add(4, 2);  // newer than everything; must wait behind the preempted one
  // Now 9 tokens each, 8 computed: everyone needs a third block; none is free.
  plan = Step();
  // 1 takes 3's blocks (3 is newest), 2 then has nobody newer left to preempt but
  // 3's second block; and so on. What matters: 3 went first, and nothing was admitted.
  ASSERT_FALSE(plan.preempted.empty());
  EXPECT_EQ(plan.preempted[0], 3u);
  EXPECT_EQ(sched_->waiting().front()->id, plan.preempted.back());
  for (const ScheduledChunk& c : plan.chunks) EXPECT_NE(c.seq->id, 4u);
  Sequence* three = sched_->Find(3);
  EXPECT_EQ(three->preemptions, 1);
  EXPECT_EQ(three->num_computed, 0);
  EXPECT_TRUE(three->blocks.empty());
  EXPECT_EQ(three->tokens.size(), 9u);  // keeps its generated tokens
  EXPECT_EQ(sched_->preemptions(), static_cast<int64_t>(plan.preempted.size()));
  // Waiting order: preempted ones (older first), then 4.
  std::vector<uint64_t> waiting;
  for (const Sequence* s : sched_->waiting()) waiting.push_back(s->id);
  EXPECT_EQ(waiting.back(), 4u);
  // Finish the survivors; the preempted are readmitted before 4 and recompute their tokens
  // (their full blocks come back from the prefix cache).
  std::vector<uint64_t> running;
  for (const Sequence* s : sched_->running()) running.push_back(s->id);
  for (uint64_t id : running) Finish(id);
  plan = Step();
  ASSERT_FALSE(plan.chunks.empty());
  EXPECT_EQ(plan.chunks[0].seq->id, waiting.front());
  EXPECT_TRUE(plan.chunks[0].sample);
  EXPECT_GT(plan.chunks[0].begin, 0);  // prefix cache hit on its own released blocks
}

TEST_F(SchedulerTest, PreemptionWithoutPrefixCacheRecomputesEverything) {
  Init(4, 100, 64, /*prefix_cache=*/false);
  Add(1, 7);
  Add(2, 7);
  Step();
  Step();
  StepPlan plan = Step();  // both need a third block; 2 yields
  EXPECT_THAT(plan.preempted, ElementsAre(2));
  EXPECT_THAT(Ids(plan), ElementsAre(1));
  Finish(1);
  plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(2));
  EXPECT_EQ(plan.chunks[0].begin, 0);
  EXPECT_EQ(plan.chunks[0].end, 9);
  EXPECT_TRUE(plan.chunks[0].sample);
}

TEST_F(SchedulerTest, PrefixHitSkipsComputeButNeverTheLastToken) {
  Init(32, 100);
  Add(1, 12, 100);
  Step();
  EXPECT_EQ(pool_->MatchPrefix(sched_->Find(1)->hashes), 3);
  Finish(1);
  EXPECT_EQ(pool_->num_cached(), 3);  // three full blocks; the partial fourth is free
  // Same 12 tokens: only blocks 0..1 are reused; block 2 holds the last token.
  Sequence* s2 = Add(2, 12, 100);
  StepPlan plan = Step();
  EXPECT_EQ(plan.chunks[0].begin, 8);
  EXPECT_EQ(s2->cached_tokens, 8);
  // A longer prompt sharing them reuses all three.
  Sequence* s3 = Add(3, 15, 100);
  plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(2, 3));
  EXPECT_EQ(plan.chunks[1].begin, 12);
  EXPECT_EQ(s3->cached_tokens, 12);
  // Shared blocks are referenced by both.
  EXPECT_EQ(pool_->RefCount(s3->blocks[0]), 2);
  EXPECT_EQ(s2->blocks[0], s3->blocks[0]);
  EXPECT_EQ(sched_->prefix_queries(), 12 + 12 + 15);
  EXPECT_EQ(sched_->prefix_hits(), 8 + 12);
  // A different seed (salt) shares nothing.
  auto other = MakeSeq(4, 15, 100);
  other->hash_seed = 99;
  Sequence* s4 = other.get();
  sched_->Add(std::move(other));
  Step();
  EXPECT_EQ(s4->cached_tokens, 0);
}

TEST_F(SchedulerTest, CancelReleasesBlocksFromAnywhere) {
  Init(16, 8);
  Add(1, 20);  // running, mid-prefill after one step
  Add(2, 4);   // waiting
  Step();
  EXPECT_EQ(sched_->num_running(), 1);
  EXPECT_EQ(sched_->num_waiting(), 1);
  EXPECT_GT(Referenced(), 0);
  Finish(1);
  Finish(2);
  EXPECT_EQ(sched_->Detach(1), nullptr);  // already gone
  EXPECT_TRUE(sched_->idle());
  EXPECT_EQ(Referenced(), 0);
  EXPECT_EQ(pool_->num_available(), 16);
}

TEST_F(SchedulerTest, SequenceThatCannotFitAloneFails) {
  Init(3, 100);  // 12 positions
  Add(1, 11);
  StepPlan plan = Step();
  EXPECT_THAT(Ids(plan), ElementsAre(1));
  plan = Step();  // decode of position 11 fits (12 positions)
  EXPECT_THAT(Ids(plan), ElementsAre(1));
  plan = Step();  // position 12 needs a fourth block that does not exist
  ASSERT_EQ(plan.failed.size(), 1u);
  EXPECT_EQ(plan.failed[0]->id, 1u);
  EXPECT_TRUE(sched_->idle());
  sched_->Free(plan.failed[0].get());
  EXPECT_EQ(pool_->num_available(), 3);
}

TEST_F(SchedulerTest, PrefilledSequenceDecodesFromItsReservedBlocks) {
  Init(8, 100);
  auto s = MakeSeq(1, 9);
  s->tokens.push_back(5);  // the first token, sampled elsewhere
  s->num_computed = 9;
  for (int i = 0; i < 3; ++i) s->blocks.push_back(pool_->Allocate());
  s->admitted_once = true;
  Sequence* p = s.get();
  sched_->Add(std::move(s));
  StepPlan plan = Step();
  EXPECT_THAT(Sizes(plan), ElementsAre(1));
  EXPECT_EQ(plan.chunks[0].begin, 9);
  EXPECT_TRUE(plan.chunks[0].sample);
  EXPECT_EQ(p->blocks.size(), 3u);
  EXPECT_EQ(pool_->num_cached(), 0);
  Finish(1);
  EXPECT_EQ(pool_->num_cached(), 2);  // its two full blocks were registered after the step
}

TEST_F(SchedulerTest, QueuedPrefillTokensCountsPromptWorkOnly) {
  Init(64, 8);
  Add(1, 20);
  Add(2, 5);
  EXPECT_EQ(sched_->queued_prefill_tokens(), 25);
  Step();  // 8 of 1's
  EXPECT_EQ(sched_->queued_prefill_tokens(), 17);
  Step();
  Step();  // 1 done (sampled), 2 admitted with the leftover budget
  EXPECT_LE(sched_->queued_prefill_tokens(), 5);
}

TEST_F(SchedulerTest, FirstScheduledTimeIsRecorded) {
  Init(64, 8);
  Sequence* s = Add(1, 4);
  EXPECT_EQ(s->first_scheduled_ns, -1);
  Step(/*now=*/12345);
  EXPECT_EQ(s->first_scheduled_ns, 12345);
  Step(/*now=*/99999);
  EXPECT_EQ(s->first_scheduled_ns, 12345);
}

}  // namespace
}  // namespace crescent::engine
