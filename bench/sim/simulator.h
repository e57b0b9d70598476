// Discrete-event simulator of a Crescent cluster: P prefill + D decode instances (or P + D
// colocated ones) replaying a Mooncake trace at its timestamps, with the Conductor's real policy
// code (conductor/policy Scheduler) deciding every placement against a CostModel.
//
// Events: arrival (the policy decides: reject, or queue on a prefill instance and reserve KV on
// a decode instance), prefill completion (first token; the prompt's blocks enter the instance's
// LRU cache and the global pool), KV arrival on the decode instance (streamed layer by layer
// during the prefill, so only the part that did not overlap remains), and decode step ends
// (continuous batching: requests join at step boundaries, leave after their last token).
// Colocated instances run iterations of one decode step plus one prefill chunk, so prefill
// stretches the time between tokens of the running batch — the interference that
// disaggregation removes.
#ifndef CRESCENT_BENCH_SIM_SIMULATOR_H_
#define CRESCENT_BENCH_SIM_SIMULATOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/sim/report.h"
#include "bench/sim/trace.h"
#include "conductor/policy/cost_model.h"
#include "conductor/policy/prefill_selector.h"
#include "conductor/policy/types.h"

namespace crescent::bench::sim {

struct SimConfig {
  int prefill_instances = 16;
  int decode_instances = 16;
  // Colocated: prefill_instances + decode_instances instances that each do both.
  bool colocated = false;
  policy::PrefillPolicy policy = policy::PrefillPolicy::kGlobalCacheAware;
  bool early_rejection = false;
  policy::Slo slo{30.0, 0.1};
  uint64_t seed = 1;                     // for the random policy
  int64_t local_cache_blocks = 1000;     // per prefill (or colocated) instance
  int64_t pool_blocks = 16000;           // global KV pool; 0 = none
  int64_t kv_blocks_per_instance = 500;  // decode (or colocated) KV capacity
  int64_t chunk_tokens = 512;            // colocated: prefill tokens per iteration
  int layers = 32;                       // KV streams to the decode instance layer by layer
  double time_scale = 1.0;               // arrival = timestamp * time_scale (< 1: faster)
  int trace_block_tokens = 512;          // tokens per trace hash id
};

struct SimResult {
  SimReport report;
  std::vector<RequestOutcome> outcomes;  // in trace order
  uint64_t events = 0;
};

// Runs one simulation. Deterministic: the same inputs give the same result. Errors:
// InvalidArgument when the config is inconsistent (no instances, cost model block size differs
// from trace_block_tokens, non-positive time scale or chunk) or the trace is empty.
absl::StatusOr<SimResult> Simulate(const std::vector<TraceRequest>& trace,
                                   const policy::CostModel& cost, const SimConfig& config);

}  // namespace crescent::bench::sim

#endif  // CRESCENT_BENCH_SIM_SIMULATOR_H_
