#include "conductor/policy/types.h"

namespace crescent::conductor::policy {

std::string_view NodeRoleName(NodeRole role) {
  switch (role) {
    case NodeRole::kPrefill:
      return "prefill";
    case NodeRole::kDecode:
      return "decode";
    case NodeRole::kColocated:
      return "colocated";
  }
  return "unknown";
}

std::string_view RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kNone:
      return "none";
    case RejectReason::kNoPrefillNode:
      return "no_prefill_node";
    case RejectReason::kNoDecodeCapacity:
      return "no_decode_capacity";
    case RejectReason::kTtftSlo:
      return "ttft_slo";
    case RejectReason::kTbtSlo:
      return "tbt_slo";
  }
  return "unknown";
}

}  // namespace crescent::conductor::policy
