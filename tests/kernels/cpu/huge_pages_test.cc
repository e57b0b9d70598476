#include "kernels/cpu/huge_pages.h"

#include <cstdint>
#include <cstring>

#include "gtest/gtest.h"

namespace crescent::kernels {
namespace {

TEST(HugePageBufferTest, GivesAlignedZeroedWritableMemory) {
  const size_t bytes = (size_t{3} << 20) + 123;  // not a multiple of the huge page size
  auto buf = HugePageBuffer::Create(bytes);
  ASSERT_TRUE(buf.ok()) << buf.status();
  EXPECT_EQ((*buf)->size(), bytes);
  auto* p = static_cast<uint8_t*>((*buf)->data());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % (size_t{2} << 20), 0u);
  for (size_t i = 0; i < bytes; i += 4096) ASSERT_EQ(p[i], 0) << i;
  EXPECT_EQ(p[bytes - 1], 0);
  std::memset(p, 0x5A, bytes);
  EXPECT_EQ(p[0], 0x5A);
  EXPECT_EQ(p[bytes - 1], 0x5A);
}

TEST(HugePageBufferTest, RejectsZeroBytes) {
  auto buf = HugePageBuffer::Create(0);
  EXPECT_EQ(buf.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::kernels
