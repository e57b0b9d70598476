// Synthetic trace generator: arrivals (Poisson or bursty), input/output length distributions,
// shared-prefix groups and multi-turn sessions, producing the same Trace the JSONL reader does.
#ifndef CRESCENT_BENCH_REPLAY_SYNTHETIC_H_
#define CRESCENT_BENCH_REPLAY_SYNTHETIC_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "bench/replay/trace.h"

namespace crescent::bench {

enum class ArrivalProcess {
  kPoisson,  // Exponential gaps at `rate`.
  kBursty,   // Bursts of `burst_size` requests arriving together, Poisson bursts at rate/size.
};

struct SyntheticOptions {
  int64_t num_requests = 100;
  double rate = 1.0;  // Mean requests per second.
  ArrivalProcess arrival = ArrivalProcess::kPoisson;
  int burst_size = 8;
  int block_tokens = 512;
  // Input lengths (tokens) are log-normal with this mean and coefficient of variation, clamped
  // to [min_input, max_input]; output lengths likewise.
  double mean_input = 4096;
  double cv_input = 1.0;
  int64_t min_input = 1;
  int64_t max_input = 131072;
  double mean_output = 128;
  double cv_output = 0.5;
  int64_t min_output = 1;
  int64_t max_output = 4096;
  // Shared-prefix groups (e.g. system prompts, documents): each request belongs to one of
  // `num_groups` groups chosen uniformly and starts with that group's `shared_prefix_blocks`
  // blocks. 0 groups: no shared prefixes.
  int num_groups = 0;
  int shared_prefix_blocks = 0;
  // Multi-turn sessions: with probability `followup_probability` a request continues an earlier
  // session (chosen uniformly among the last `active_sessions`): its prompt is that session's
  // previous prompt plus the previous output plus its own new input.
  double followup_probability = 0.0;
  int active_sessions = 16;
  uint64_t seed = 1;
};

// Generates a trace. Errors: InvalidArgument naming the first option out of range.
absl::StatusOr<Trace> GenerateSyntheticTrace(const SyntheticOptions& options);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_SYNTHETIC_H_
