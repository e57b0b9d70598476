// Helpers for the CUDA kernel tests: skipping without a device, moving vectors to and from it.
#ifndef CRESCENT_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_
#define CRESCENT_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/device.h"

// Skips the test when no CUDA device is usable (this machine, CI): the kernels are compiled
// everywhere and run where a GPU is.
#define CRESCENT_REQUIRE_CUDA_DEVICE()                                                   \
  do {                                                                                   \
    if (::crescent::kernels::cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace crescent::kernels::cuda::testing {

template <typename T>
DeviceBuffer Upload(const std::vector<T>& v) {
  auto b = DeviceBuffer::Create(v.size() * sizeof(T));
  EXPECT_TRUE(b.ok()) << b.status();
  if (!b.ok()) return DeviceBuffer();
  EXPECT_TRUE(CopyToDevice(b->data(), v.data(), v.size() * sizeof(T)).ok());
  return std::move(*b);
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  EXPECT_TRUE(Synchronize().ok());
  EXPECT_TRUE(CopyToHost(v.data(), b.data(), n * sizeof(T)).ok());
  return v;
}

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

inline float* F(const DeviceBuffer& b) { return static_cast<float*>(b.data()); }

}  // namespace crescent::kernels::cuda::testing

#endif  // CRESCENT_TESTS_KERNELS_CUDA_CUDA_TEST_UTIL_H_
