// SamplingParams of the cluster protocol (proto/cluster.proto) as the engine's.
#ifndef CRESCENT_PREFILL_NODE_SAMPLING_H_
#define CRESCENT_PREFILL_NODE_SAMPLING_H_

#include "absl/status/statusor.h"
#include "proto/cluster.pb.h"
#include "src/engine/sampler.h"

namespace crescent::prefill_node {

// proto3 cannot tell an unset field from 0, so the fields whose 0 is invalid or means
// something else take the engine's defaults when 0: top_p 0 -> 1, repetition_penalty 0 -> 1.
// temperature 0 is greedy (the sender sets 1 for the default). Does not validate ranges
// (Engine::Validate does). Errors: InvalidArgument for top_logprobs < 0.
absl::StatusOr<engine::SamplingParams> SamplingFromProto(const cluster::v1::SamplingParams& p);

}  // namespace crescent::prefill_node

#endif  // CRESCENT_PREFILL_NODE_SAMPLING_H_
