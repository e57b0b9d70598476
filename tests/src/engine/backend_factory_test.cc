#include "src/engine/backend_factory.h"

#include "gtest/gtest.h"
#include "src/model/gguf.h"
#include "src/model/model_config.h"
#include "src/model/model_weights.h"
#include "tests/testing/tiny_model.h"

#ifdef CRESCENT_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace crescent::engine {
namespace {

struct Tiny {
  std::unique_ptr<model::GgufFile> file =
      *model::GgufFile::FromBuffer(testing::MakeTinyModelGguf());
  model::ModelConfig config = *model::ModelConfigFromGguf(*file);
  model::ModelWeights weights = *model::LoadModelWeights(*file, config);
};

TEST(BackendFactoryTest, CpuByName) {
  Tiny t;
  auto b = CreateBackend("cpu", t.config, t.weights, 1);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_STREQ((*b)->name(), "cpu");
}

TEST(BackendFactoryTest, UnknownNameIsInvalidArgument) {
  Tiny t;
  auto b = CreateBackend("tpu", t.config, t.weights, 1);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("tpu"), std::string::npos);
}

// Without nvcc: Unimplemented, saying so. With it but no device: FailedPrecondition. With a
// device: the CUDA backend.
TEST(BackendFactoryTest, CudaIsBuiltAndPresentOrAClearError) {
  Tiny t;
  auto b = CreateBackend("cuda", t.config, t.weights, 1);
  if (!CudaBackendBuilt()) {
    EXPECT_EQ(b.status().code(), absl::StatusCode::kUnimplemented) << b.status();
    return;
  }
#ifdef CRESCENT_HAVE_CUDA
  if (kernels::cuda::DeviceCount() == 0) {
    EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition) << b.status();
    return;
  }
#endif
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_STREQ((*b)->name(), "cuda");
}

}  // namespace
}  // namespace crescent::engine
