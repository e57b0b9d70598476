#include "conductor/policy/scheduler.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "conductor/policy/decode_selector.h"
#include "conductor/policy/early_rejection.h"

namespace crescent::conductor::policy {
namespace {

Decision Reject(RejectReason reason, std::string detail, double retry_after_s) {
  Decision d;
  d.accepted = false;
  d.reason = reason;
  d.detail = std::move(detail);
  d.retry_after_s = retry_after_s;
  return d;
}

}  // namespace

Scheduler::Scheduler(std::unique_ptr<PrefillSelector> selector, SchedulerOptions options)
    : selector_(std::move(selector)), options_(options) {}

Decision Scheduler::Schedule(const Request& request, std::span<const NodeState> nodes,
                             const PoolView& pool, double now_s) {
  absl::StatusOr<PrefillPlan> prefill = selector_->Select(request, nodes, pool, now_s);
  if (!prefill.ok()) {
    const bool colocated = !nodes.empty() && nodes[0].role == NodeRole::kColocated;
    return Reject(colocated ? RejectReason::kNoDecodeCapacity : RejectReason::kNoPrefillNode,
                  std::string(prefill.status().message()), 1.0);
  }
  const double join_s = now_s + prefill->ttft_s;
  DecodePlan decode;
  const NodeState& chosen = nodes[prefill->node];
  if (chosen.role == NodeRole::kColocated) {
    decode = PlanDecodeOn(request, chosen, prefill->node, join_s);
    if (chosen.free_kv_blocks < decode.kv_blocks_needed) {
      return Reject(
          RejectReason::kNoDecodeCapacity,
          absl::StrCat("node ", chosen.id, " has ", chosen.free_kv_blocks,
                       " free KV blocks, request ", request.id, " needs ", decode.kv_blocks_needed),
          1.0);
    }
  } else {
    absl::StatusOr<DecodePlan> selected = SelectDecodeNode(request, nodes, join_s);
    if (!selected.ok()) {
      return Reject(RejectReason::kNoDecodeCapacity, std::string(selected.status().message()), 1.0);
    }
    decode = *selected;
  }
  if (options_.early_rejection) {
    if (auto rejection = CheckEarlyRejection(*prefill, decode, options_.slo)) {
      Decision d =
          Reject(rejection->reason, std::move(rejection->detail), rejection->retry_after_s);
      d.prefill = *prefill;
      d.decode = decode;
      return d;
    }
  }
  Decision d;
  d.accepted = true;
  d.prefill = *prefill;
  d.decode = decode;
  return d;
}

}  // namespace crescent::conductor::policy
