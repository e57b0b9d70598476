// Prediction-based early rejection (Mooncake §6): before any prefill work is done, reject a
// request whose predicted TTFT misses the SLO, or whose decode node, at the moment the prefill
// would finish, is predicted to be too loaded to meet the TBT SLO. Rejecting then costs
// nothing; rejecting after the prefill wastes it.
#ifndef CRESCENT_CONDUCTOR_POLICY_EARLY_REJECTION_H_
#define CRESCENT_CONDUCTOR_POLICY_EARLY_REJECTION_H_

#include <optional>
#include <string>

#include "conductor/policy/types.h"

namespace crescent::conductor::policy {

struct Rejection {
  RejectReason reason = RejectReason::kNone;
  std::string detail;
  double retry_after_s = 0.0;  // >= 1: when the predicted overload should have drained
};

// Checks a planned placement against `slo`. Returns the rejection, or nullopt when both
// predictions fit. Retry-After for a TTFT miss is the predicted excess (the queue must drain by
// that much), for a TBT miss the time until the prefill would have finished; at least 1 s,
// rounded up to whole seconds.
std::optional<Rejection> CheckEarlyRejection(const PrefillPlan& prefill, const DecodePlan& decode,
                                             const Slo& slo);

}  // namespace crescent::conductor::policy

#endif  // CRESCENT_CONDUCTOR_POLICY_EARLY_REJECTION_H_
