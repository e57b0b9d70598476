#include "conductor/policy/early_rejection.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace crescent::conductor::policy {
namespace {

double RetryAfter(double seconds) { return std::max(1.0, std::ceil(seconds)); }

}  // namespace

std::optional<Rejection> CheckEarlyRejection(const PrefillPlan& prefill, const DecodePlan& decode,
                                             const Slo& slo) {
  if (prefill.ttft_s > slo.ttft_s) {
    return Rejection{RejectReason::kTtftSlo,
                     absl::StrFormat("predicted TTFT %.3f s (queue %.3f s) exceeds the %.3f s SLO",
                                     prefill.ttft_s, prefill.queue_s, slo.ttft_s),
                     RetryAfter(prefill.ttft_s - slo.ttft_s)};
  }
  if (decode.node >= 0 && decode.predicted_tbt_s > slo.tbt_s) {
    return Rejection{RejectReason::kTbtSlo,
                     absl::StrFormat("predicted TBT %.4f s on the decode node when prefill ends "
                                     "exceeds the %.4f s SLO",
                                     decode.predicted_tbt_s, slo.tbt_s),
                     RetryAfter(prefill.ttft_s)};
  }
  return std::nullopt;
}

}  // namespace crescent::conductor::policy
