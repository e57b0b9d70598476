#include "conductor/policy/cost_model.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::conductor::policy {
namespace {

CostProfile ExactProfile() {
  // prefill = 0.01 + 2e-4 n + 1e-8 n (c + n/2); decode = 0.02 + 1e-3 b + 5e-8 k.
  CostProfile p;
  p.block_tokens = 512;
  p.kv_bytes_per_token = 100;
  p.transfer_bandwidth_bytes_per_s = 1e9;
  p.transfer_latency_s = 1e-4;
  for (int64_t n : {128, 512, 2048, 8192}) {
    for (int64_t c : {0, 4096, 16384}) {
      const double nn = n, cc = c;
      p.prefill.push_back({n, c, 0.01 + 2e-4 * nn + 1e-8 * nn * (cc + nn / 2)});
    }
  }
  for (int b : {1, 8, 32}) {
    for (int64_t k : {1000, 100000}) {
      p.decode.push_back({b, k, 0.02 + 1e-3 * b + 5e-8 * static_cast<double>(k)});
    }
  }
  return p;
}

TEST(CostModel, FitRecoversExactCoefficients) {
  auto model = CostModel::Fit(ExactProfile());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_NEAR(model->prefill_coefficients()[0], 0.01, 1e-9);
  EXPECT_NEAR(model->prefill_coefficients()[1], 2e-4, 1e-12);
  EXPECT_NEAR(model->prefill_coefficients()[2], 1e-8, 1e-15);
  EXPECT_NEAR(model->decode_coefficients()[0], 0.02, 1e-9);
  EXPECT_NEAR(model->decode_coefficients()[1], 1e-3, 1e-12);
  EXPECT_NEAR(model->decode_coefficients()[2], 5e-8, 1e-15);
  EXPECT_NEAR(model->PrefillSeconds(1000, 0), 0.01 + 0.2 + 1e-8 * 1000 * 500, 1e-9);
  EXPECT_NEAR(model->DecodeStepSeconds(4, 2000), 0.02 + 0.004 + 1e-4, 1e-9);
}

TEST(CostModel, CachedTokensMakePrefillCheaperThanRecomputingThem) {
  auto model = CostModel::Fit(ExactProfile());
  ASSERT_TRUE(model.ok());
  EXPECT_LT(model->PrefillSeconds(1000, 7000), model->PrefillSeconds(8000, 0));
  EXPECT_GT(model->PrefillSeconds(1000, 7000), model->PrefillSeconds(1000, 0));
}

TEST(CostModel, ZeroWorkCostsNothing) {
  auto model = CostModel::Fit(ExactProfile());
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(model->PrefillSeconds(0, 5000), 0.0);
  EXPECT_EQ(model->DecodeStepSeconds(0, 0), 0.0);
  EXPECT_EQ(model->BlockTransferSeconds(0), 0.0);
}

TEST(CostModel, TransferIsLatencyPlusBytesOverBandwidth) {
  auto model = CostModel::Fit(ExactProfile());
  ASSERT_TRUE(model.ok());
  EXPECT_NEAR(model->TransferSeconds(1'000'000), 1e-4 + 1e-3, 1e-12);
  EXPECT_NEAR(model->BlockTransferSeconds(2), 1e-4 + 2 * 512 * 100 / 1e9, 1e-12);
}

TEST(CostModel, NeverFitsNegativeCoefficients) {
  // Decode time that falls with context (noise) must not give a negative context term.
  CostProfile p = ExactProfile();
  p.decode = {{1, 0, 0.03}, {1, 100000, 0.029}, {8, 0, 0.04}, {8, 100000, 0.039}};
  auto model = CostModel::Fit(p);
  ASSERT_TRUE(model.ok());
  for (double c : model->decode_coefficients()) EXPECT_GE(c, 0.0);
  EXPECT_GT(model->DecodeStepSeconds(8, 100000), model->DecodeStepSeconds(1, 0));
}

TEST(CostModel, RejectsBadProfiles) {
  CostProfile p = ExactProfile();
  p.prefill.resize(1);
  EXPECT_THAT(std::string(CostModel::Fit(p).status().message()),
              ::testing::HasSubstr("at least 2 prefill"));
  p = ExactProfile();
  p.transfer_bandwidth_bytes_per_s = 0;
  EXPECT_EQ(CostModel::Fit(p).status().code(), absl::StatusCode::kInvalidArgument);
  p = ExactProfile();
  p.decode[1].batch = 0;
  EXPECT_THAT(std::string(CostModel::Fit(p).status().message()),
              ::testing::HasSubstr("decode sample 1"));
}

// A prefill node measures only prefill (and transfer): that half is fitted, the decode half and
// what the profile lacks come from the fallback.
TEST(CostModel, FitOverFillsTheUnmeasuredHalfFromTheFallback) {
  const CostModel fallback = CostModel::FromCoefficients({1, 1, 1}, {0.01, 5e-4, 1e-7}, 16, 7,
                                                         /*bandwidth=*/2e9, /*latency=*/3e-4);
  CostProfile p = ExactProfile();
  p.decode.clear();
  auto model = CostModel::FitOver(p, fallback);
  ASSERT_TRUE(model.ok()) << model.status();
  auto exact = CostModel::Fit(ExactProfile());
  ASSERT_TRUE(exact.ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(model->prefill_coefficients()[i], exact->prefill_coefficients()[i], 1e-12);
    EXPECT_EQ(model->decode_coefficients()[i], fallback.decode_coefficients()[i]);
  }
  EXPECT_EQ(model->block_tokens(), p.block_tokens);
  EXPECT_EQ(model->kv_bytes_per_token(), p.kv_bytes_per_token);
  EXPECT_EQ(model->bandwidth_bytes_per_s(), p.transfer_bandwidth_bytes_per_s);
  p.transfer_bandwidth_bytes_per_s = 0;  // not measured: the fallback's
  model = CostModel::FitOver(p, fallback);
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(model->bandwidth_bytes_per_s(), 2e9);
  p.prefill.resize(1);
  EXPECT_THAT(std::string(CostModel::FitOver(p, fallback).status().message()),
              ::testing::HasSubstr("at least 2 prefill or 2 decode"));
}

TEST(NonNegativeLeastSquares3, DropsATermThatWouldGoNegative) {
  // y = 2 + 3 x1 - 0.5 x2 fits exactly, but x2 may not have a negative weight.
  std::vector<std::array<double, 3>> x;
  std::vector<double> y;
  for (double a : {0.0, 1.0, 2.0, 3.0}) {
    for (double b : {0.0, 1.0, 2.0}) {
      x.push_back({1.0, a, b});
      y.push_back(2 + 3 * a - 0.5 * b);
    }
  }
  const auto w = NonNegativeLeastSquares3(x, y);
  EXPECT_EQ(w[2], 0.0);
  EXPECT_NEAR(w[1], 3.0, 1e-9);
  EXPECT_NEAR(w[0], 1.5, 1e-9);
}

}  // namespace
}  // namespace crescent::conductor::policy
