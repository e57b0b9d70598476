#include "src/cluster/proto_convert.h"

#include "gtest/gtest.h"

namespace crescent::cluster {
namespace {

TEST(SamplingConvertTest, RoundTripKeepsEveryField) {
  engine::SamplingParams p;
  p.temperature = 0.7f;
  p.top_p = 0.9f;
  p.top_k = 40;
  p.min_p = 0.05f;
  p.repetition_penalty = 1.1f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = -0.25f;
  p.seed = 1234;
  p.has_seed = true;
  p.logit_bias = {{7, 1.5f}, {3, -100.0f}};
  p.logprobs = true;
  p.top_logprobs = 5;
  p.json_object = true;
  p.json_schema = R"({"type":"object"})";
  p.stop_token_ids = {5, 9};
  p.min_tokens = 3;
  cluster::v1::SamplingParams proto;
  SamplingToProto(p, &proto);
  engine::SamplingParams back = SamplingFromProto(proto);
  EXPECT_EQ(back.temperature, p.temperature);
  EXPECT_EQ(back.top_p, p.top_p);
  EXPECT_EQ(back.top_k, p.top_k);
  EXPECT_EQ(back.min_p, p.min_p);
  EXPECT_EQ(back.repetition_penalty, p.repetition_penalty);
  EXPECT_EQ(back.frequency_penalty, p.frequency_penalty);
  EXPECT_EQ(back.presence_penalty, p.presence_penalty);
  EXPECT_TRUE(back.has_seed);
  EXPECT_EQ(back.seed, 1234u);
  // Sorted by token id.
  ASSERT_EQ(back.logit_bias.size(), 2u);
  EXPECT_EQ(back.logit_bias[0], std::make_pair(3, -100.0f));
  EXPECT_EQ(back.logit_bias[1], std::make_pair(7, 1.5f));
  EXPECT_TRUE(back.logprobs);
  EXPECT_EQ(back.top_logprobs, 5);
  EXPECT_TRUE(back.json_object);
  EXPECT_EQ(back.json_schema, p.json_schema);
  EXPECT_EQ(back.stop_token_ids, p.stop_token_ids);
  EXPECT_EQ(back.min_tokens, 3);
}

TEST(SamplingConvertTest, ZeroValuesMeanOff) {
  cluster::v1::SamplingParams proto;  // all unset
  engine::SamplingParams p = SamplingFromProto(proto);
  EXPECT_EQ(p.temperature, 0.0f);  // greedy
  EXPECT_EQ(p.top_p, 1.0f);
  EXPECT_EQ(p.repetition_penalty, 1.0f);
  EXPECT_FALSE(p.has_seed);
  EXPECT_TRUE(engine::ValidateSamplingParams(p, 100).ok());
  // A seed of 0 is still a seed.
  proto.set_seed(0);
  EXPECT_TRUE(SamplingFromProto(proto).has_seed);
}

TEST(SamplingConvertTest, RepeatedBiasIdsAddUp) {
  engine::SamplingParams p;
  p.logit_bias = {{5, 1.0f}, {5, 2.0f}};
  cluster::v1::SamplingParams proto;
  SamplingToProto(p, &proto);
  ASSERT_EQ(proto.logit_bias_size(), 1);
  EXPECT_EQ(proto.logit_bias().at(5), 3.0f);
}

TEST(SamplingConvertTest, SampledTokenRoundTrip) {
  engine::SampleResult r{42};
  r.logprob = -0.5f;
  r.top_logprobs = {{42, -0.5f}, {7, -1.25f}};
  cluster::v1::SampledToken proto;
  SampledTokenToProto(r, &proto);
  engine::SampleResult back = SampledTokenFromProto(proto);
  EXPECT_EQ(back.token, 42);
  EXPECT_EQ(back.logprob, -0.5f);
  ASSERT_EQ(back.top_logprobs.size(), 2u);
  EXPECT_EQ(back.top_logprobs[1].token, 7);
  EXPECT_EQ(back.top_logprobs[1].logprob, -1.25f);
}

TEST(SamplingConvertTest, StatusConversions) {
  cluster::v1::Status proto;
  StatusToProto(absl::NotFoundError("no reservation 7"), &proto);
  EXPECT_EQ(proto.code(), 5);
  EXPECT_EQ(proto.message(), "no reservation 7");
  EXPECT_EQ(StatusFromProto(proto), absl::NotFoundError("no reservation 7"));
  proto.set_code(999);
  EXPECT_EQ(StatusFromProto(proto).code(), absl::StatusCode::kUnknown);
  StatusToProto(absl::OkStatus(), &proto);
  EXPECT_TRUE(StatusFromProto(proto).ok());

  grpc::Status g = ToGrpcStatus(absl::ResourceExhaustedError("full"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(g.error_message(), "full");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(FromGrpcStatus(g), absl::ResourceExhaustedError("full"));
}

}  // namespace
}  // namespace crescent::cluster
