// Scheduler: the Conductor's whole placement decision for one request — prefill node (by the
// configured PrefillSelector), decode node (by predicted TBT and free KV, forecast at the time
// the prefill would finish) and early rejection. Pure: state and time come in, a Decision goes
// out. Not thread-safe (the selector keeps state); the service serialises calls.
#ifndef CRESCENT_CONDUCTOR_POLICY_SCHEDULER_H_
#define CRESCENT_CONDUCTOR_POLICY_SCHEDULER_H_

#include <memory>
#include <span>

#include "conductor/policy/prefill_selector.h"
#include "conductor/policy/types.h"

namespace crescent::conductor::policy {

struct SchedulerOptions {
  Slo slo;
  // Reject before prefill when a prediction misses the SLO. Without it, only a request for
  // which no decode node has free KV is rejected.
  bool early_rejection = true;
};

class Scheduler {
 public:
  // REQUIRES: selector non-null.
  Scheduler(std::unique_ptr<PrefillSelector> selector, SchedulerOptions options);

  // Decides for `request` at now_s. Prefill-capable nodes are kPrefill or kColocated; a request
  // placed on a kColocated node decodes on that same node (KV stays put), otherwise on a kDecode
  // node chosen for the moment its prefill is predicted to finish (now_s + plan.ttft_s).
  Decision Schedule(const Request& request, std::span<const NodeState> nodes, const PoolView& pool,
                    double now_s);

  const SchedulerOptions& options() const { return options_; }
  PrefillPolicy policy() const { return selector_->policy(); }

 private:
  std::unique_ptr<PrefillSelector> selector_;
  SchedulerOptions options_;
};

}  // namespace crescent::conductor::policy

#endif  // CRESCENT_CONDUCTOR_POLICY_SCHEDULER_H_
