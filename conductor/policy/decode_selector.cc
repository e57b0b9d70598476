#include "conductor/policy/decode_selector.h"

#include "absl/strings/str_cat.h"
#include "conductor/policy/cost_model.h"

namespace crescent::conductor::policy {

bool CanDecode(const NodeState& node) {
  return node.role == NodeRole::kDecode || node.role == NodeRole::kColocated;
}

DecodePlan PlanDecodeOn(const Request& request, const NodeState& node, int index, double join_s) {
  DecodeLoad load{node.running_decode_batch, node.decode_context_tokens};
  if (node.decode_load_at) load = node.decode_load_at(join_s);
  DecodePlan plan;
  plan.node = index;
  plan.predicted_tbt_s =
      node.cost->DecodeStepSeconds(load.batch + 1, load.context_tokens + request.prompt_tokens);
  plan.kv_blocks_needed =
      BlocksFor(request.prompt_tokens + request.max_output_tokens, node.cost->block_tokens());
  return plan;
}

absl::StatusOr<DecodePlan> SelectDecodeNode(const Request& request,
                                            std::span<const NodeState> nodes, double join_s) {
  DecodePlan best;
  int64_t best_free = -1;
  int64_t needed = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeState& node = nodes[i];
    if (node.role != NodeRole::kDecode) continue;
    DecodePlan plan = PlanDecodeOn(request, node, static_cast<int>(i), join_s);
    needed = plan.kv_blocks_needed;
    if (node.free_kv_blocks < plan.kv_blocks_needed) continue;
    const bool better =
        best.node < 0 || plan.predicted_tbt_s < best.predicted_tbt_s ||
        (plan.predicted_tbt_s == best.predicted_tbt_s && node.free_kv_blocks > best_free);
    if (better) {
      best = plan;
      best_free = node.free_kv_blocks;
    }
  }
  if (best.node < 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no decode node has ", needed, " free KV blocks for request ", request.id));
  }
  return best;
}

}  // namespace crescent::conductor::policy
