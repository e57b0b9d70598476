#include "kernels/cuda/device.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace crescent::kernels::cuda {
namespace {

// Runs everywhere: without a device every call is a clear FailedPrecondition, never a crash.
TEST(CudaDeviceTest, NoDeviceIsAClearError) {
  if (DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present: " << DeviceDescription();
  absl::Status s = CheckDevice();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("no CUDA device"), std::string::npos) << s;
  EXPECT_EQ(DeviceDescription(), "");
  auto buf = DeviceBuffer::Create(4096);
  EXPECT_EQ(buf.status().code(), absl::StatusCode::kFailedPrecondition);
  std::vector<char> host(4096);
  auto map = HostMapping::Create(host.data(), host.size());
  EXPECT_EQ(map.status().code(), absl::StatusCode::kFailedPrecondition);
  // An empty buffer needs no device.
  auto empty = DeviceBuffer::Create(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->data(), nullptr);
}

TEST(CudaDeviceTest, InvalidHostRangeIsRejected) {
  auto map = HostMapping::Create(nullptr, 64);
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaDeviceTest, CopiesRoundTrip) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  EXPECT_NE(DeviceDescription(), "");
  std::vector<float> v = testing::RandomFloats(1000, 1);
  DeviceBuffer a = testing::Upload(v);
  auto b = DeviceBuffer::Create(v.size() * sizeof(float));
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(CopyOnDevice(b->data(), a.data(), v.size() * sizeof(float)).ok());
  EXPECT_EQ(testing::Download<float>(*b, v.size()), v);
}

TEST(CudaDeviceTest, MappedHostMemoryIsTheHostBytes) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  std::vector<float> host = testing::RandomFloats(256, 2);
  auto map = HostMapping::Create(host.data(), host.size() * sizeof(float));
  ASSERT_TRUE(map.ok()) << map.status();
  std::vector<float> back(host.size());
  ASSERT_TRUE(CopyToHost(back.data(), map->device(), back.size() * sizeof(float)).ok());
  EXPECT_EQ(back, host);
}

TEST(CudaDeviceTest, HugeAllocationIsResourceExhausted) {
  CRESCENT_REQUIRE_CUDA_DEVICE();
  auto b = DeviceBuffer::Create(size_t{1} << 50);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted) << b.status();
  // The device keeps working after the failure.
  auto ok = DeviceBuffer::Create(1 << 20);
  EXPECT_TRUE(ok.ok()) << ok.status();
}

}  // namespace
}  // namespace crescent::kernels::cuda
