#include "src/cluster/proto_convert.h"

#include <map>
#include <string>

namespace crescent::cluster {

engine::SamplingParams SamplingFromProto(const v1::SamplingParams& proto) {
  engine::SamplingParams p;
  p.temperature = proto.temperature();
  p.top_p = proto.top_p() == 0.0f ? 1.0f : proto.top_p();
  p.top_k = proto.top_k();
  p.min_p = proto.min_p();
  p.repetition_penalty = proto.repetition_penalty() == 0.0f ? 1.0f : proto.repetition_penalty();
  p.frequency_penalty = proto.frequency_penalty();
  p.presence_penalty = proto.presence_penalty();
  p.has_seed = proto.has_seed();
  p.seed = proto.has_seed() ? proto.seed() : 0;
  // A proto map iterates in no defined order; sort by token id so that equal messages give equal
  // params.
  std::map<int32_t, float> bias(proto.logit_bias().begin(), proto.logit_bias().end());
  p.logit_bias.assign(bias.begin(), bias.end());
  p.logprobs = proto.logprobs();
  p.top_logprobs = proto.top_logprobs();
  p.json_object = proto.json_object();
  p.json_schema = proto.json_schema();
  p.stop_token_ids.assign(proto.stop_token_ids().begin(), proto.stop_token_ids().end());
  p.min_tokens = proto.min_tokens();
  return p;
}

void SamplingToProto(const engine::SamplingParams& params, v1::SamplingParams* proto) {
  proto->Clear();
  proto->set_temperature(params.temperature);
  proto->set_top_p(params.top_p);
  proto->set_top_k(params.top_k);
  proto->set_min_p(params.min_p);
  proto->set_repetition_penalty(params.repetition_penalty);
  proto->set_frequency_penalty(params.frequency_penalty);
  proto->set_presence_penalty(params.presence_penalty);
  if (params.has_seed) proto->set_seed(params.seed);
  auto* bias = proto->mutable_logit_bias();
  for (const auto& [token, value] : params.logit_bias) (*bias)[token] += value;
  proto->set_logprobs(params.logprobs);
  proto->set_top_logprobs(params.top_logprobs);
  proto->set_json_object(params.json_object);
  proto->set_json_schema(params.json_schema);
  proto->mutable_stop_token_ids()->Assign(params.stop_token_ids.begin(),
                                          params.stop_token_ids.end());
  proto->set_min_tokens(params.min_tokens);
}

void SampledTokenToProto(const engine::SampleResult& result, v1::SampledToken* proto) {
  proto->Clear();
  proto->set_token(result.token);
  proto->set_logprob(result.logprob);
  for (const engine::TokenLogprob& t : result.top_logprobs) {
    v1::TokenLogprob* out = proto->add_top_logprobs();
    out->set_token(t.token);
    out->set_logprob(t.logprob);
  }
}

engine::SampleResult SampledTokenFromProto(const v1::SampledToken& proto) {
  engine::SampleResult r{proto.token()};
  r.logprob = proto.logprob();
  r.top_logprobs.reserve(proto.top_logprobs_size());
  for (const v1::TokenLogprob& t : proto.top_logprobs()) {
    r.top_logprobs.push_back({t.token(), t.logprob()});
  }
  return r;
}

namespace {

absl::StatusCode CodeFromInt(int code) {
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

}  // namespace

void StatusToProto(const absl::Status& status, v1::Status* proto) {
  proto->set_code(static_cast<int32_t>(status.code()));
  proto->set_message(std::string(status.message()));
}

absl::Status StatusFromProto(const v1::Status& proto) {
  return absl::Status(CodeFromInt(proto.code()), proto.message());
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(CodeFromInt(static_cast<int>(status.error_code())), status.error_message());
}

}  // namespace crescent::cluster
