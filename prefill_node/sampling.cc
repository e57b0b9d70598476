#include "prefill_node/sampling.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace crescent::prefill_node {

absl::StatusOr<engine::SamplingParams> SamplingFromProto(const cluster::v1::SamplingParams& p) {
  engine::SamplingParams s;
  s.temperature = p.temperature();
  s.top_p = p.top_p() == 0.0f ? 1.0f : p.top_p();
  s.top_k = p.top_k();
  s.min_p = p.min_p();
  s.repetition_penalty = p.repetition_penalty() == 0.0f ? 1.0f : p.repetition_penalty();
  s.frequency_penalty = p.frequency_penalty();
  s.presence_penalty = p.presence_penalty();
  if (p.has_seed()) {
    s.seed = p.seed();
    s.has_seed = true;
  }
  for (const auto& [token, bias] : p.logit_bias()) s.logit_bias.emplace_back(token, bias);
  // The map's order is unspecified: sort so the same request always samples the same way.
  std::sort(s.logit_bias.begin(), s.logit_bias.end());
  s.logprobs = p.logprobs();
  if (p.top_logprobs() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be >= 0, got ", p.top_logprobs()));
  }
  s.top_logprobs = p.top_logprobs();
  return s;
}

}  // namespace crescent::prefill_node
