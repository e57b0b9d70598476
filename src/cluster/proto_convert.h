// Conversions between the cluster protocol's messages (proto/cluster.proto) and the engine's
// types, shared by the decode node, the prefill node and the Conductor so that the three agree
// on what a request's sampling parameters and sampled tokens mean on the wire.
//
// Zero values: proto3 cannot tell an unset float from 0, so SamplingFromProto reads top_p == 0
// and repetition_penalty == 0 (both outside their valid ranges) as "off" (1.0). temperature 0 is
// greedy, as in the engine. SamplingToProto always writes every field, so a round trip is exact
// (logit_bias entries of one token id are summed, as the engine adds them up anyway).
//
// All functions are pure and thread-safe.
#ifndef CRESCENT_SRC_CLUSTER_PROTO_CONVERT_H_
#define CRESCENT_SRC_CLUSTER_PROTO_CONVERT_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "proto/cluster.pb.h"
#include "src/engine/sampler.h"

namespace crescent::cluster {

// Proto -> engine. The result is not validated (Engine::Validate does that and names the field).
engine::SamplingParams SamplingFromProto(const v1::SamplingParams& proto);
// Engine -> proto; overwrites every field of *proto.
void SamplingToProto(const engine::SamplingParams& params, v1::SamplingParams* proto);

// A sampled token with its logprobs.
void SampledTokenToProto(const engine::SampleResult& result, v1::SampledToken* proto);
engine::SampleResult SampledTokenFromProto(const v1::SampledToken& proto);

// absl::Status <-> the protocol's Status message (codes are numerically equal). A code outside
// absl's range comes back as Unknown.
void StatusToProto(const absl::Status& status, v1::Status* proto);
absl::Status StatusFromProto(const v1::Status& proto);

// absl::Status <-> grpc::Status at the service edge (codes are numerically equal).
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace crescent::cluster

#endif  // CRESCENT_SRC_CLUSTER_PROTO_CONVERT_H_
