// Decode node selection by predicted time between tokens and free KV.
#ifndef CRESCENT_CONDUCTOR_POLICY_DECODE_SELECTOR_H_
#define CRESCENT_CONDUCTOR_POLICY_DECODE_SELECTOR_H_

#include <span>

#include "absl/status/statusor.h"
#include "conductor/policy/types.h"

namespace crescent::conductor::policy {

// Whether `node` runs decode batches (kDecode or kColocated).
bool CanDecode(const NodeState& node);

// Plans `request` on nodes[index], joining its batch at absolute time join_s: the node's decode
// load forecast at join_s plus this request (its prompt joins the context), and the KV blocks
// to reserve for prompt + max output.
DecodePlan PlanDecodeOn(const Request& request, const NodeState& node, int index, double join_s);

// Picks, among the kDecode nodes with at least the request's KV blocks free, the one with the
// smallest predicted TBT at join_s (ties: more free KV, then lower index). Colocated nodes are
// not candidates: a colocated request decodes where it was prefilled (see Scheduler).
// Errors: ResourceExhausted when no decode node has room (or there are none).
// REQUIRES: every decode node has a non-null cost model.
absl::StatusOr<DecodePlan> SelectDecodeNode(const Request& request,
                                            std::span<const NodeState> nodes, double join_s);

}  // namespace crescent::conductor::policy

#endif  // CRESCENT_CONDUCTOR_POLICY_DECODE_SELECTOR_H_
