#include "kernels/cpu/cpu_features.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/kernels/cpu/test_util.h"

namespace crescent::kernels {
namespace {

TEST(CpuFeaturesTest, NamesAndParsingRoundTrip) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni}) {
    Isa parsed = Isa::kScalar;
    ASSERT_TRUE(ParseIsa(IsaName(isa), &parsed)) << IsaName(isa);
    EXPECT_EQ(parsed, isa);
  }
  Isa isa = Isa::kAvx2;
  EXPECT_TRUE(ParseIsa("avx512", &isa));
  EXPECT_EQ(isa, Isa::kAvx512Vnni);
  EXPECT_FALSE(ParseIsa("sse2", &isa));
  EXPECT_FALSE(ParseIsa("", &isa));
  EXPECT_EQ(isa, Isa::kAvx512Vnni);  // untouched on failure
}

TEST(CpuFeaturesTest, ActiveNeverExceedsDetected) {
  EXPECT_LE(ActiveIsa(), DetectIsa());
  EXPECT_EQ(DetectIsa(), DetectIsa());
}

TEST(CpuFeaturesTest, SetForTestingForcesAndCaps) {
  for (Isa isa : testing::AvailableIsas()) {
    EXPECT_EQ(SetIsaForTesting(isa), isa);
    EXPECT_EQ(ActiveIsa(), isa);
  }
  // Asking for more than the machine has gives what it has.
  EXPECT_EQ(SetIsaForTesting(Isa::kAvx512Vnni), DetectIsa());
  EXPECT_EQ(ActiveIsa(), DetectIsa());
  ClearIsaForTesting();
  EXPECT_LE(ActiveIsa(), DetectIsa());
}

#if defined(__x86_64__)
TEST(CpuFeaturesTest, DetectionAgreesWithTheCompilerRuntime) {
  // __builtin_cpu_supports checks OS support too; F16C is implied by every AVX2 CPU we target.
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
  EXPECT_EQ(DetectIsa(), avx512 ? Isa::kAvx512Vnni : avx2 ? Isa::kAvx2 : Isa::kScalar);
}
#endif

}  // namespace
}  // namespace crescent::kernels
