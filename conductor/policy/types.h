// Plain data shared by the Conductor's scheduling policy: requests, node states, SLOs and the
// decisions the policy returns. Pure values; no I/O, no clocks (times are passed in, in seconds
// on whatever monotonic time base the caller uses).
#ifndef CRESCENT_CONDUCTOR_POLICY_TYPES_H_
#define CRESCENT_CONDUCTOR_POLICY_TYPES_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace crescent::conductor::policy {

class CostModel;

// Names one full block of prompt tokens (DESIGN.md "Block hash chain"): equal hashes mean equal
// content and equal prefix, so a node holding block i of a prompt can reuse blocks 0..i.
using BlockHash = uint64_t;

enum class NodeRole {
  kPrefill,    // computes prompts, hands the KV to a decode node
  kDecode,     // runs the continuous decode batch
  kColocated,  // does both (the `crescent serve` shape); decode stays on the prefill node
};
std::string_view NodeRoleName(NodeRole role);

// Service-level objectives. A request meets them when its time to first token is at most
// ttft_s and its time between tokens at most tbt_s.
struct Slo {
  double ttft_s = 10.0;
  double tbt_s = 0.1;
};

// One request as the policy sees it, after tokenization and block hashing.
struct Request {
  uint64_t id = 0;
  int64_t prompt_tokens = 0;
  // Hashes of the prompt's full blocks, in order (at most prompt_tokens / block_tokens).
  std::vector<BlockHash> block_hashes;
  int64_t max_output_tokens = 0;
  double arrival_s = 0.0;
};

// A decode node's load: requests in its batch and the sum of their contexts in tokens.
struct DecodeLoad {
  int batch = 0;
  int64_t context_tokens = 0;
};

// What the policy knows about one node when it decides. Built by the node registry from
// heartbeats (service) or from the simulated instance (simulator).
struct NodeState {
  std::string id;
  NodeRole role = NodeRole::kPrefill;

  // Prefill side: tokens still to compute in the node's queue (running job included), and the
  // node's own estimate of how long that takes. queued_prefill_s < 0 means "unknown": the policy
  // then estimates it from queued_prefill_tokens with the cost model (no cache credit).
  int64_t queued_prefill_tokens = 0;
  double queued_prefill_s = -1.0;

  // Decode side: the running batch, the total context of its requests, free KV blocks.
  int running_decode_batch = 0;
  int64_t decode_context_tokens = 0;
  int64_t free_kv_blocks = 0;

  // Whether the node holds a block in its local prefix cache. Unset = holds nothing.
  std::function<bool(BlockHash)> holds_block;
  // Forecast of the decode load at absolute time t (requests that will have finished or joined
  // by then). Unset = the current load (running_decode_batch, decode_context_tokens).
  std::function<DecodeLoad(double t_s)> decode_load_at;

  // The node's cost profile. Not owned; REQUIRES non-null and outliving the decision.
  const CostModel* cost = nullptr;
};

// The global KV pool as the policy sees it. Unset holds_block = empty pool.
struct PoolView {
  std::function<bool(BlockHash)> holds_block;
};

// Where and how to prefill a request. Block counts refer to the request's block_hashes:
// [0, local_blocks) are reused from the node's own cache, [local_blocks, local_blocks +
// fetch_blocks) are fetched from the pool, the rest of the prompt is computed.
struct PrefillPlan {
  int node = -1;  // index into the node list the policy was given
  int64_t local_blocks = 0;
  int64_t fetch_blocks = 0;
  int64_t cached_tokens = 0;   // tokens not computed (local + fetched)
  int64_t compute_tokens = 0;  // tokens computed = prompt_tokens - cached_tokens
  double queue_s = 0.0;        // predicted wait before this request's prefill starts
  double fetch_s = 0.0;        // predicted pool transfer time
  double prefill_s = 0.0;      // predicted compute time
  // Predicted time to first token, counted from the decision: queue + fetch + prefill.
  double ttft_s = 0.0;
};

// Where to decode a request.
struct DecodePlan {
  int node = -1;  // index into the node list
  // Predicted time between tokens on that node once the request has joined its batch.
  double predicted_tbt_s = 0.0;
  int64_t kv_blocks_needed = 0;  // blocks reserved for prompt + max output
};

enum class RejectReason {
  kNone,
  kNoPrefillNode,     // no node can prefill
  kNoDecodeCapacity,  // no decode node has free KV for prompt + max output
  kTtftSlo,           // predicted TTFT misses the SLO
  kTbtSlo,            // predicted decode load when prefill ends misses the TBT SLO
};
std::string_view RejectReasonName(RejectReason reason);

// The policy's answer for one request: a placement, or a rejection with a reason and a hint of
// when to retry (HTTP 429 + Retry-After at the edge).
struct Decision {
  bool accepted = false;
  PrefillPlan prefill;
  DecodePlan decode;
  RejectReason reason = RejectReason::kNone;
  std::string detail;          // human-readable why, for logs and error bodies
  double retry_after_s = 0.0;  // > 0 when rejected
};

// Number of blocks covering `tokens` tokens (the last one possibly partial).
inline int64_t BlocksFor(int64_t tokens, int block_tokens) {
  return (tokens + block_tokens - 1) / block_tokens;
}

}  // namespace crescent::conductor::policy

#endif  // CRESCENT_CONDUCTOR_POLICY_TYPES_H_
