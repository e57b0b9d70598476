#include "conductor/policy/cost_model.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace crescent::conductor::policy {
namespace {

std::array<double, 3> PrefillFeatures(double n, double c) { return {1.0, n, n * (c + n / 2.0)}; }
std::array<double, 3> DecodeFeatures(double b, double k) { return {1.0, b, k}; }

// Solves the least-squares problem restricted to the features in `mask` (bit i = feature i) by
// the normal equations with Gaussian elimination on column-scaled features. Returns false when
// the system is singular.
bool SolveSubset(const std::vector<std::array<double, 3>>& x, const std::vector<double>& y,
                 unsigned mask, std::array<double, 3>* w) {
  int idx[3];
  int m = 0;
  for (int i = 0; i < 3; ++i) {
    if (mask & (1u << i)) idx[m++] = i;
  }
  double scale[3] = {1.0, 1.0, 1.0};
  for (int a = 0; a < m; ++a) {
    double mx = 0.0;
    for (const auto& row : x) mx = std::max(mx, std::fabs(row[idx[a]]));
    scale[a] = mx > 0.0 ? mx : 1.0;
  }
  double ata[3][4] = {};
  for (size_t r = 0; r < x.size(); ++r) {
    for (int a = 0; a < m; ++a) {
      const double fa = x[r][idx[a]] / scale[a];
      for (int b = 0; b < m; ++b) ata[a][b] += fa * x[r][idx[b]] / scale[b];
      ata[a][3] += fa * y[r];
    }
  }
  for (int col = 0; col < m; ++col) {
    int pivot = col;
    for (int r = col + 1; r < m; ++r) {
      if (std::fabs(ata[r][col]) > std::fabs(ata[pivot][col])) pivot = r;
    }
    if (std::fabs(ata[pivot][col]) < 1e-12) return false;
    for (int k = 0; k < 4; ++k) std::swap(ata[col][k], ata[pivot][k]);
    for (int r = 0; r < m; ++r) {
      if (r == col) continue;
      const double f = ata[r][col] / ata[col][col];
      for (int k = col; k < 4; ++k) ata[r][k] -= f * ata[col][k];
    }
  }
  *w = {0.0, 0.0, 0.0};
  for (int a = 0; a < m; ++a) (*w)[idx[a]] = ata[a][3] / ata[a][a] / scale[a];
  return true;
}

}  // namespace

std::array<double, 3> NonNegativeLeastSquares3(const std::vector<std::array<double, 3>>& x,
                                               const std::vector<double>& y) {
  std::array<double, 3> best = {0.0, 0.0, 0.0};
  double best_err = std::numeric_limits<double>::infinity();
  for (unsigned mask = 0; mask < 8; ++mask) {
    std::array<double, 3> w = {0.0, 0.0, 0.0};
    if (mask != 0 && !SolveSubset(x, y, mask, &w)) continue;
    bool nonneg = true;
    for (double v : w) nonneg = nonneg && v >= 0.0;
    if (!nonneg) continue;
    double err = 0.0;
    for (size_t r = 0; r < x.size(); ++r) {
      const double d = x[r][0] * w[0] + x[r][1] * w[1] + x[r][2] * w[2] - y[r];
      err += d * d;
    }
    // Prefer the larger model only when it fits strictly better (ties keep the simpler one).
    if (err < best_err * (1.0 - 1e-12)) {
      best_err = err;
      best = w;
    }
  }
  return best;
}

absl::StatusOr<CostModel> CostModel::Fit(const CostProfile& profile) {
  if (!(profile.transfer_bandwidth_bytes_per_s > 0.0)) {
    return absl::InvalidArgumentError("transfer_bandwidth_bytes_per_s must be > 0");
  }
  if (profile.transfer_latency_s < 0.0) {
    return absl::InvalidArgumentError("transfer_latency_s must be >= 0");
  }
  if (profile.prefill.size() < 2 || profile.decode.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a cost profile needs at least 2 prefill and 2 decode samples, got ",
                     profile.prefill.size(), " and ", profile.decode.size()));
  }
  return FitOver(profile, CostModel());
}

absl::StatusOr<CostModel> CostModel::FitOver(const CostProfile& profile,
                                             const CostModel& fallback) {
  if (profile.block_tokens <= 0) return absl::InvalidArgumentError("block_tokens must be > 0");
  if (profile.kv_bytes_per_token <= 0) {
    return absl::InvalidArgumentError("kv_bytes_per_token must be > 0");
  }
  if (profile.prefill.size() < 2 && profile.decode.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a cost profile needs at least 2 prefill or 2 decode samples, got ",
                     profile.prefill.size(), " and ", profile.decode.size()));
  }
  CostModel model = fallback;
  model.block_tokens_ = profile.block_tokens;
  model.kv_bytes_per_token_ = profile.kv_bytes_per_token;
  if (profile.transfer_bandwidth_bytes_per_s > 0.0) {
    model.bandwidth_ = profile.transfer_bandwidth_bytes_per_s;
  }
  if (profile.transfer_latency_s > 0.0) model.latency_ = profile.transfer_latency_s;
  std::vector<std::array<double, 3>> x;
  std::vector<double> y;
  if (profile.prefill.size() >= 2) {
    for (size_t i = 0; i < profile.prefill.size(); ++i) {
      const PrefillSample& s = profile.prefill[i];
      if (s.new_tokens <= 0 || s.cached_tokens < 0 || s.seconds < 0.0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "prefill sample ", i, " needs new_tokens > 0, cached_tokens >= 0 and seconds >= 0"));
      }
      x.push_back(
          PrefillFeatures(static_cast<double>(s.new_tokens), static_cast<double>(s.cached_tokens)));
      y.push_back(s.seconds);
    }
    model.prefill_ = NonNegativeLeastSquares3(x, y);
  }
  if (profile.decode.size() >= 2) {
    x.clear();
    y.clear();
    for (size_t i = 0; i < profile.decode.size(); ++i) {
      const DecodeSample& s = profile.decode[i];
      if (s.batch <= 0 || s.context_tokens < 0 || s.seconds < 0.0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "decode sample ", i, " needs batch > 0, context_tokens >= 0 and seconds >= 0"));
      }
      x.push_back(DecodeFeatures(s.batch, static_cast<double>(s.context_tokens)));
      y.push_back(s.seconds);
    }
    model.decode_ = NonNegativeLeastSquares3(x, y);
  }
  return model;
}

CostModel CostModel::FromCoefficients(std::array<double, 3> prefill, std::array<double, 3> decode,
                                      int block_tokens, int64_t kv_bytes_per_token,
                                      double bandwidth_bytes_per_s, double latency_s) {
  CostModel model;
  model.prefill_ = prefill;
  model.decode_ = decode;
  model.block_tokens_ = block_tokens;
  model.kv_bytes_per_token_ = kv_bytes_per_token;
  model.bandwidth_ = bandwidth_bytes_per_s;
  model.latency_ = latency_s;
  return model;
}

double CostModel::PrefillSeconds(int64_t new_tokens, int64_t cached_tokens) const {
  if (new_tokens <= 0) return 0.0;
  const auto f = PrefillFeatures(static_cast<double>(new_tokens),
                                 static_cast<double>(std::max<int64_t>(cached_tokens, 0)));
  return prefill_[0] * f[0] + prefill_[1] * f[1] + prefill_[2] * f[2];
}

double CostModel::DecodeStepSeconds(int batch, int64_t context_tokens) const {
  if (batch <= 0) return 0.0;
  const auto f = DecodeFeatures(batch, static_cast<double>(context_tokens));
  return decode_[0] * f[0] + decode_[1] * f[1] + decode_[2] * f[2];
}

double CostModel::TransferSeconds(int64_t bytes) const {
  if (bytes <= 0) return 0.0;
  return latency_ + static_cast<double>(bytes) / bandwidth_;
}

double CostModel::BlockTransferSeconds(int64_t blocks) const {
  return TransferSeconds(blocks * block_bytes());
}

}  // namespace crescent::conductor::policy
