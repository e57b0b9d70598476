// CostModel: how long a node takes to prefill, to run one decode step and to move KV, fitted
// from measured profile points. Pure arithmetic; immutable after construction, so one instance
// may be shared by any number of threads.
//
// Model (times in seconds):
//   prefill(n new, c cached) = p0 + p1 * n + p2 * n * (c + n / 2)       (0 when n == 0)
//     p1: per-token weights work (matmuls); p2: attention of each new token over its context.
//   decode_step(b batch, k context tokens) = d0 + d1 * b + d2 * k        (0 when b == 0)
//     d0: reading the weights once per step; d2: reading the batch's KV.
//   transfer(bytes) = latency + bytes / bandwidth
// Fit() solves non-negative least squares over the profile points (every subset of the three
// terms, keeping the best fit whose coefficients are all >= 0), so a noisy profile never yields
// a negative cost.
#ifndef CRESCENT_CONDUCTOR_POLICY_COST_MODEL_H_
#define CRESCENT_CONDUCTOR_POLICY_COST_MODEL_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace crescent::conductor::policy {

struct PrefillSample {
  int64_t new_tokens = 0;
  int64_t cached_tokens = 0;
  double seconds = 0.0;
};

struct DecodeSample {
  int batch = 0;
  int64_t context_tokens = 0;  // total over the batch
  double seconds = 0.0;
};

// A node's measured profile: what `crescent-bench profile` writes.
struct CostProfile {
  int block_tokens = 512;
  int64_t kv_bytes_per_token = 0;             // K and V, all layers
  double transfer_bandwidth_bytes_per_s = 0;  // pool <-> node and node -> node
  double transfer_latency_s = 0.0;            // per transfer
  std::vector<PrefillSample> prefill;
  std::vector<DecodeSample> decode;
};

class CostModel {
 public:
  // Fits the model to `profile`. Errors: InvalidArgument when block_tokens,
  // kv_bytes_per_token or bandwidth is not positive, when there are fewer than 2 prefill or 2
  // decode samples, or when a sample has negative values.
  static absl::StatusOr<CostModel> Fit(const CostProfile& profile);

  // Fits the halves of the model `profile` has samples for (at least 2 prefill, or 2 decode)
  // and takes the rest from `fallback`: the other half, and the bandwidth and latency when the
  // profile's are not positive. A prefill node measures only prefill, for example. Errors:
  // InvalidArgument when block_tokens or kv_bytes_per_token is not positive, when neither half
  // has 2 samples, or when a sample has negative values.
  static absl::StatusOr<CostModel> FitOver(const CostProfile& profile, const CostModel& fallback);

  // A model with the given coefficients (for tests and hand-built scenarios).
  // REQUIRES: all coefficients >= 0, block_tokens > 0, bandwidth > 0.
  static CostModel FromCoefficients(std::array<double, 3> prefill, std::array<double, 3> decode,
                                    int block_tokens, int64_t kv_bytes_per_token,
                                    double bandwidth_bytes_per_s, double latency_s);

  double PrefillSeconds(int64_t new_tokens, int64_t cached_tokens) const;
  double DecodeStepSeconds(int batch, int64_t context_tokens) const;
  double TransferSeconds(int64_t bytes) const;
  // Time to move `blocks` full blocks of KV; 0 for none.
  double BlockTransferSeconds(int64_t blocks) const;

  int block_tokens() const { return block_tokens_; }
  int64_t kv_bytes_per_token() const { return kv_bytes_per_token_; }
  int64_t block_bytes() const { return kv_bytes_per_token_ * block_tokens_; }
  double bandwidth_bytes_per_s() const { return bandwidth_; }
  const std::array<double, 3>& prefill_coefficients() const { return prefill_; }
  const std::array<double, 3>& decode_coefficients() const { return decode_; }

 private:
  CostModel() = default;

  std::array<double, 3> prefill_{};
  std::array<double, 3> decode_{};
  int block_tokens_ = 512;
  int64_t kv_bytes_per_token_ = 0;
  double bandwidth_ = 1.0;
  double latency_ = 0.0;
};

// Least squares with non-negative coefficients over rows of 3 features: returns the
// coefficients minimising sum (x . w - y)^2 subject to w >= 0 (exhaustive over the active set;
// exact for 3 features). Exposed for tests. REQUIRES: x.size() == y.size().
std::array<double, 3> NonNegativeLeastSquares3(const std::vector<std::array<double, 3>>& x,
                                               const std::vector<double>& y);

}  // namespace crescent::conductor::policy

#endif  // CRESCENT_CONDUCTOR_POLICY_COST_MODEL_H_
