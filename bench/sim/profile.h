// Cost profiles for the simulator: the JSON file `crescent-bench profile` writes and
// `crescent-bench sim --profile` reads, and the built-in default used when none is given.
//
// {"description": "...", "block_tokens": 512, "kv_bytes_per_token": 131072,
//  "transfer_bandwidth_bytes_per_s": 2.5e10, "transfer_latency_s": 0.0001,
//  "prefill": [{"new_tokens": 512, "cached_tokens": 0, "seconds": 0.07}, ...],
//  "decode":  [{"batch": 1, "context_tokens": 1024, "seconds": 0.012}, ...]}
#ifndef CRESCENT_BENCH_SIM_PROFILE_H_
#define CRESCENT_BENCH_SIM_PROFILE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "conductor/policy/cost_model.h"

namespace crescent::bench::sim {

namespace policy = ::crescent::conductor::policy;

// The built-in profile: NOT a measurement. Points generated from an illustrative GPU-class node
// serving an 8B-parameter GQA model (32 layers, 8 KV heads of 128, f16 KV = 128 KiB per token):
// prefill 0.005 s + 125 us per new token + 4e-9 s per (new token x attended token), decode step
// 12 ms + 0.2 ms per request + 30 ns per context token, 50 GB/s (400 Gb/s) transfers with 100 us
// latency.
policy::CostProfile DefaultCostProfile();
std::string_view DefaultCostProfileDescription();

// Errors: InvalidArgument naming the field that is missing or has the wrong type.
absl::StatusOr<policy::CostProfile> ParseCostProfileJson(std::string_view text);
// Errors: as ParseCostProfileJson, plus NotFound/PermissionDenied for the file.
absl::StatusOr<policy::CostProfile> LoadCostProfile(const std::string& path);
std::string CostProfileToJson(const policy::CostProfile& profile, std::string_view description);

}  // namespace crescent::bench::sim

#endif  // CRESCENT_BENCH_SIM_PROFILE_H_
