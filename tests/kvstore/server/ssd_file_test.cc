#include "kvstore/server/ssd_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "src/common/hash.h"

namespace crescent::kvstore::server {
namespace {

std::string TempPath() {
  return ::testing::TempDir() + "/ssd_file_test_" + std::to_string(::getpid());
}

TEST(SsdFileTest, WriteThenReadVerified) {
  const std::string path = TempPath();
  auto file = SsdFile::Open(path, 1 << 20);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::byte> data(10000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i * 7);
  ASSERT_TRUE((*file)->Write(4096, data).ok());
  std::vector<std::byte> out(data.size());
  ASSERT_TRUE((*file)->ReadVerified(4096, out, Hash64(data.data(), data.size())).ok());
  EXPECT_EQ(out, data);
  // A wrong expected checksum is DataLoss.
  EXPECT_EQ((*file)->ReadVerified(4096, out, 1234).code(), absl::StatusCode::kDataLoss);
  ::unlink(path.c_str());
}

TEST(SsdFileTest, FlippedByteOnDiskIsDataLoss) {
  const std::string path = TempPath();
  auto file = SsdFile::Open(path, 1 << 20);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::byte> data(4096, std::byte{0x11});
  ASSERT_TRUE((*file)->Write(0, data).ok());
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const char flipped = 0x12;
  ASSERT_EQ(::pwrite(fd, &flipped, 1, 2000), 1);
  ::close(fd);
  std::vector<std::byte> out(data.size());
  EXPECT_EQ((*file)->ReadVerified(0, out, Hash64(data.data(), data.size())).code(),
            absl::StatusCode::kDataLoss);
  ::unlink(path.c_str());
}

// The master aligns ranges to 64 bytes, the tier to 4 KiB: neighbours sharing a page must not
// clobber each other, from any thread.
TEST(SsdFileTest, UnalignedNeighboursKeepTheirBytes) {
  const std::string path = TempPath();
  auto file = SsdFile::Open(path, 1 << 20);
  ASSERT_TRUE(file.ok()) << file.status();
  constexpr size_t kLen = 1000;  // Not a multiple of 4096: blocks share pages.
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (int i = t; i < 200; i += 4) {
        std::vector<std::byte> data(kLen, std::byte(i + 1));
        EXPECT_TRUE((*file)->Write(64 + i * 1024, data).ok());
      }
    });
  }
  for (std::thread& w : writers) w.join();
  for (int i = 0; i < 200; ++i) {
    std::vector<std::byte> want(kLen, std::byte(i + 1)), out(kLen);
    EXPECT_TRUE((*file)->ReadVerified(64 + i * 1024, out, Hash64(want.data(), kLen)).ok())
        << "block " << i;
  }
  ::unlink(path.c_str());
}

TEST(SsdFileTest, RangesAreChecked) {
  const std::string path = TempPath();
  EXPECT_EQ(SsdFile::Open(path, 0).status().code(), absl::StatusCode::kInvalidArgument);
  auto file = SsdFile::Open(path, 8192);
  ASSERT_TRUE(file.ok());
  std::vector<std::byte> data(4096);
  EXPECT_EQ((*file)->Write(8000, data).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*file)->Write(~0ull, data).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*file)->ReadVerified(4097, data, 0).code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(SsdFile::Open("/nonexistent-dir/x.ssd", 4096).ok());
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace crescent::kvstore::server
