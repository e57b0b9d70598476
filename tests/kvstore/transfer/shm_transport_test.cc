#include "kvstore/transfer/shm_transport.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/kvstore/transfer/test_util.h"

namespace crescent::kvstore {
namespace {

using testing::FillPattern;
using testing::FindPatternMismatch;

absl::Status RunOp(Transport& t, TransferOp op, void* local, RemoteSegment* target, uint64_t offset,
                   uint64_t length) {
  std::promise<absl::Status> promise;
  auto future = promise.get_future();
  t.Submit(TransportOp{op, local, target, offset, length},
           [&promise](absl::Status s) { promise.set_value(std::move(s)); });
  if (future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    return absl::DeadlineExceededError("test: no completion");
  }
  return future.get();
}

TEST(SharedMemoryTest, CreateZeroedMovable) {
  auto shm = SharedMemory::Create("test/shm", 10000);
  ASSERT_TRUE(shm.ok()) << shm.status();
  ASSERT_NE(shm->data(), nullptr);
  EXPECT_GE(shm->fd(), 0);
  EXPECT_EQ(shm->length(), 10000u);
  const auto* p = static_cast<const uint8_t*>(shm->data());
  EXPECT_TRUE(std::all_of(p, p + 10000, [](uint8_t b) { return b == 0; }));
  SharedMemory moved = *std::move(shm);
  EXPECT_EQ(moved.data(), p);
  EXPECT_EQ(shm->data(), nullptr);  // NOLINT(bugprone-use-after-move): checking the moved-from
  EXPECT_EQ(SharedMemory::Create("x", 0).status().code(), absl::StatusCode::kInvalidArgument);
}

class ShmTransportTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 8 << 20;

  void SetUp() override {
    ShmTransportOptions options;
    options.copy_threads = 2;
    options.inline_copy_bytes = 4096;
    options.chunk_bytes = 64 << 10;
    auto t = ShmTransport::Create(options);
    ASSERT_TRUE(t.ok()) << t.status();
    transport_ = *std::move(t);
    auto shm = SharedMemory::Create("owner/seg", kSize);
    ASSERT_TRUE(shm.ok()) << shm.status();
    shm_ = *std::move(shm);
    descriptor_.name = "owner/seg";
    descriptor_.length = kSize;
    descriptor_.host_id = LocalHostId();
    ASSERT_TRUE(transport_
                    ->RegisterLocalSegment(LocalSegment{"owner/seg", shm_.data(), kSize, shm_.fd()},
                                           &descriptor_)
                    .ok());
  }

  std::unique_ptr<ShmTransport> transport_;
  SharedMemory shm_;
  SegmentDescriptor descriptor_;
};

TEST_F(ShmTransportTest, RegisterDescribesTheMemfd) {
  EXPECT_EQ(descriptor_.shm_path, absl::StrCat("/proc/", ::getpid(), "/fd/", shm_.fd()));
  EXPECT_NE(descriptor_.shm_inode, 0u);
  SegmentDescriptor plain;
  std::vector<uint8_t> memory(100);
  ASSERT_TRUE(
      transport_->RegisterLocalSegment(LocalSegment{"plain", memory.data(), 100, -1}, &plain).ok());
  EXPECT_TRUE(plain.shm_path.empty());  // ordinary memory cannot be shared
  EXPECT_EQ(transport_->RegisterLocalSegment(LocalSegment{"plain", memory.data(), 100, -1}, &plain)
                .code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(transport_->UnregisterLocalSegment("plain").ok());
  EXPECT_EQ(transport_->UnregisterLocalSegment("plain").code(), absl::StatusCode::kNotFound);
}

TEST_F(ShmTransportTest, OpenRefusesWhatItCannotMap) {
  SegmentDescriptor other_host = descriptor_;
  other_host.host_id = "elsewhere/boot";
  EXPECT_EQ(transport_->OpenSegment(other_host).status().code(), absl::StatusCode::kUnavailable);
  SegmentDescriptor no_path = descriptor_;
  no_path.shm_path.clear();
  EXPECT_EQ(transport_->OpenSegment(no_path).status().code(), absl::StatusCode::kUnavailable);
  SegmentDescriptor wrong_inode = descriptor_;
  wrong_inode.shm_inode += 1;
  EXPECT_EQ(transport_->OpenSegment(wrong_inode).status().code(),
            absl::StatusCode::kFailedPrecondition);
  SegmentDescriptor too_long = descriptor_;
  too_long.length += 1;
  EXPECT_EQ(transport_->OpenSegment(too_long).status().code(),
            absl::StatusCode::kFailedPrecondition);
  SegmentDescriptor gone = descriptor_;
  gone.shm_path = "/proc/self/fd/987654";
  EXPECT_EQ(transport_->OpenSegment(gone).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ShmTransportTest, RoundTripsInlineAndChunked) {
  auto remote = transport_->OpenSegment(descriptor_);
  ASSERT_TRUE(remote.ok()) << remote.status();
  for (uint64_t length :
       std::initializer_list<uint64_t>{1ull, 4096ull, 4097ull, (1ull << 20) + 5, kSize - 9}) {
    const uint64_t offset = 9 % (kSize - length + 1);
    std::vector<uint8_t> out(length), in(length);
    FillPattern(out.data(), length, length);
    ASSERT_TRUE(
        RunOp(*transport_, TransferOp::kWrite, out.data(), remote->get(), offset, length).ok());
    // Written through the peer's mapping, visible through the owner's.
    EXPECT_EQ(std::memcmp(static_cast<uint8_t*>(shm_.data()) + offset, out.data(), length), 0)
        << length;
    ASSERT_TRUE(
        RunOp(*transport_, TransferOp::kRead, in.data(), remote->get(), offset, length).ok());
    EXPECT_EQ(in, out) << length;
  }
}

TEST_F(ShmTransportTest, OutOfBoundsIsRejected) {
  auto remote = transport_->OpenSegment(descriptor_);
  ASSERT_TRUE(remote.ok());
  uint8_t b[16] = {};
  EXPECT_EQ(RunOp(*transport_, TransferOp::kWrite, b, remote->get(), kSize - 8, 16).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(RunOp(*transport_, TransferOp::kRead, b, remote->get(), UINT64_MAX, 16).code(),
            absl::StatusCode::kOutOfRange);
}

TEST_F(ShmTransportTest, ConcurrentSubmitsFromThreads) {
  auto remote = transport_->OpenSegment(descriptor_);
  ASSERT_TRUE(remote.ok());
  constexpr int kThreads = 4;
  constexpr uint64_t kChunk = kSize / kThreads;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> out(kChunk), in(kChunk);
      for (int round = 0; round < 4; ++round) {
        FillPattern(out.data(), kChunk, 500 + t * 10 + round);
        if (!RunOp(*transport_, TransferOp::kWrite, out.data(), remote->get(), t * kChunk, kChunk)
                 .ok() ||
            !RunOp(*transport_, TransferOp::kRead, in.data(), remote->get(), t * kChunk, kChunk)
                 .ok() ||
            in != out) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(ShmTransportTest, ShutdownCancelsNewWork) {
  auto remote = transport_->OpenSegment(descriptor_);
  ASSERT_TRUE(remote.ok());
  transport_->Shutdown();
  std::vector<uint8_t> buf(1 << 20);
  EXPECT_EQ(RunOp(*transport_, TransferOp::kWrite, buf.data(), remote->get(), 0, buf.size()).code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(RunOp(*transport_, TransferOp::kWrite, buf.data(), remote->get(), 0, 10).code(),
            absl::StatusCode::kCancelled);
}

TEST(ShmTransportOptionsTest, RejectsBadOptions) {
  ShmTransportOptions o;
  o.copy_threads = -1;
  EXPECT_FALSE(ShmTransport::Create(o).ok());
  o = ShmTransportOptions();
  o.chunk_bytes = 10;
  EXPECT_FALSE(ShmTransport::Create(o).ok());
}

}  // namespace
}  // namespace crescent::kvstore
