// TransferEngine against a segment owned by another process (transfer_test_peer): shm and tcp
// round trips across the process boundary, and what happens when that process dies or hangs.
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/transfer_engine.h"
#include "src/common/hash.h"
#include "tests/kvstore/transfer/test_util.h"

namespace crescent::kvstore {
namespace {

using testing::FillPattern;
using testing::FindPatternMismatch;
using ::testing::HasSubstr;
using testing::PeerProcess;

constexpr auto kWait = std::chrono::seconds(20);
constexpr uint64_t kPeerSeed = 4242;

class ProcessTest : public ::testing::Test {
 protected:
  // Starts a peer owning `size` bytes (filled with kPeerSeed's pattern) and opens its segment over
  // `transport`.
  void StartPeer(uint64_t size, const std::string& transport, TransferEngineOptions options = {}) {
    PeerProcess::Options peer_options;
    peer_options.segment = "peer/kv";
    peer_options.size = size;
    peer_options.pattern_seed = kPeerSeed;
    auto peer = PeerProcess::Start(peer_options);
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = *std::move(peer);
    ASSERT_TRUE(directory_.Publish(peer_->descriptor()).ok());
    auto engine = TransferEngine::Create(options, &directory_);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    auto handle = engine_->OpenSegment("peer/kv", {transport});
    ASSERT_TRUE(handle.ok()) << handle.status();
    handle_ = *handle;
    ASSERT_EQ(*engine_->SegmentTransport(handle_), transport);
  }

  TransferRequest Req(TransferOp op, void* local, uint64_t offset, uint64_t length) {
    return TransferRequest{op, local, handle_, offset, length};
  }

  absl::Status Run(std::vector<TransferRequest> requests, std::optional<Notify> notify = {}) {
    BatchId batch = engine_->AllocateBatch(requests.size());
    absl::Status s = engine_->SubmitTransfer(batch, requests, std::move(notify));
    if (s.ok()) s = engine_->Wait(batch, kWait);
    engine_->FreeBatch(batch).IgnoreError();
    return s;
  }

  void RoundTrips() {
    // Reads of the peer's initial contents.
    for (uint64_t length : std::initializer_list<uint64_t>{1, 4096 + 3, 1 << 20, 16 << 20}) {
      const uint64_t offset = 11;
      std::vector<uint8_t> in(length);
      ASSERT_TRUE(Run({Req(TransferOp::kRead, in.data(), offset, length)}).ok()) << length;
      ASSERT_EQ(FindPatternMismatch(in.data(), length, kPeerSeed, offset), -1) << length;
    }
    // Writes, each checked by the peer itself (it hashes what it holds) once the notification
    // that follows the data has reached it.
    int notifications = 0;
    for (uint64_t length : std::initializer_list<uint64_t>{1, 7, 65536 + 1, 4 << 20, 64 << 20}) {
      const uint64_t offset = 3 + length % 1000;
      std::vector<uint8_t> out(length);
      FillPattern(out.data(), length, length + 1);
      ASSERT_TRUE(Run({Req(TransferOp::kWrite, out.data(), offset, length)},
                      Notify{absl::StrCat("len=", length)})
                      .ok())
          << length;
      ++notifications;
      auto seen = peer_->Notifications();
      ASSERT_TRUE(seen.ok()) << seen.status();
      ASSERT_EQ(seen->size(), static_cast<size_t>(notifications));
      EXPECT_EQ(seen->back(), absl::StrCat("peer/kv len=", length));
      auto hash = peer_->HashRange(offset, length);
      ASSERT_TRUE(hash.ok()) << hash.status();
      EXPECT_EQ(*hash, Hash64(out.data(), length)) << length;
      // And read back through the engine (64 MiB reads are covered in-process; here they would
      // only slow the sanitizer builds).
      if (length <= (4 << 20)) {
        std::vector<uint8_t> in(length);
        ASSERT_TRUE(Run({Req(TransferOp::kRead, in.data(), offset, length)}).ok());
        EXPECT_EQ(in, out) << length;
      }
    }
  }

  InMemorySegmentDirectory directory_;
  std::unique_ptr<PeerProcess> peer_;
  std::unique_ptr<TransferEngine> engine_;
  SegmentHandle handle_{};
};

TEST_F(ProcessTest, ShmRoundTrips) {
  StartPeer((64ull << 20) + 4096, "shm");
  RoundTrips();
}

TEST_F(ProcessTest, TcpRoundTrips) {
  StartPeer((64ull << 20) + 4096, "tcp");
  RoundTrips();
}

TEST_F(ProcessTest, OutOfBoundsNeverReachesThePeer) {
  StartPeer(1 << 20, "tcp");
  std::vector<uint8_t> buf(4096, 0xaa);
  BatchId batch = engine_->AllocateBatch(1);
  EXPECT_EQ(engine_
                ->SubmitTransfer(batch, std::vector<TransferRequest>{Req(
                                            TransferOp::kWrite, buf.data(), (1 << 20) - 100, 4096)})
                .code(),
            absl::StatusCode::kOutOfRange);
  auto hash = peer_->HashRange(0, 1 << 20);
  ASSERT_TRUE(hash.ok());
  std::vector<uint8_t> expected(1 << 20);
  FillPattern(expected.data(), expected.size(), kPeerSeed);
  EXPECT_EQ(*hash, Hash64(expected.data(), expected.size()));
}

TEST_F(ProcessTest, PeerKilledMidTransferFailsTheBatch) {
  StartPeer(64ull << 20, "tcp");
  // Stopped first, so that the transfer is certainly in flight when the peer dies: 2 x 64 MiB
  // cannot fit in the sockets' buffers.
  peer_->Kill(SIGSTOP);
  std::vector<uint8_t> out(64ull << 20, 0x5a);
  BatchId batch = engine_->AllocateBatch(2);
  ASSERT_TRUE(engine_
                  ->SubmitTransfer(batch,
                                   std::vector<TransferRequest>{
                                       Req(TransferOp::kWrite, out.data(), 0, out.size()),
                                       Req(TransferOp::kWrite, out.data(), 0, out.size())})
                  .ok());
  EXPECT_EQ(engine_->Wait(batch, std::chrono::milliseconds(200)).code(),
            absl::StatusCode::kDeadlineExceeded);
  peer_->Kill(SIGKILL);
  peer_->Reap();
  absl::Status s = engine_->Wait(batch, kWait);
  ASSERT_FALSE(s.ok());
  // The requests failed (the connection died): Wait did not merely run out of time.
  EXPECT_NE(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  auto statuses = engine_->GetBatchStatus(batch);
  ASSERT_TRUE(statuses.ok());
  for (const RequestStatus& r : *statuses) {
    EXPECT_EQ(r.state, TransferState::kFailed);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  }
  EXPECT_TRUE(engine_->FreeBatch(batch).ok());
  // Later transfers fail fast too (reconnecting is refused).
  uint8_t b = 0;
  EXPECT_EQ(Run({Req(TransferOp::kRead, &b, 0, 1)}).code(), absl::StatusCode::kUnavailable);
}

TEST_F(ProcessTest, PeerKilledAtARandomMomentNeverHangs) {
  StartPeer(64ull << 20, "tcp");
  std::vector<uint8_t> out(64ull << 20, 0x11);
  BatchId batch = engine_->AllocateBatch(8);
  std::vector<TransferRequest> requests(8, Req(TransferOp::kWrite, out.data(), 0, out.size()));
  ASSERT_TRUE(engine_->SubmitTransfer(batch, requests).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  peer_->Kill(SIGKILL);
  peer_->Reap();
  // Done or failed, but settled well before the deadline.
  absl::Status s = engine_->Wait(batch, kWait);
  EXPECT_NE(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(engine_->FreeBatch(batch).ok());
}

TEST_F(ProcessTest, HungPeerTimesOut) {
  TransferEngineOptions options;
  options.tcp.io_timeout = std::chrono::milliseconds(500);
  StartPeer(64ull << 20, "tcp", options);
  peer_->Kill(SIGSTOP);
  std::vector<uint8_t> out(64ull << 20, 0x77);
  BatchId batch = engine_->AllocateBatch(2);
  ASSERT_TRUE(engine_
                  ->SubmitTransfer(batch,
                                   std::vector<TransferRequest>{
                                       Req(TransferOp::kWrite, out.data(), 0, out.size()),
                                       Req(TransferOp::kWrite, out.data(), 0, out.size())})
                  .ok());
  absl::Status s = engine_->Wait(batch, kWait);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("io timeout"));  // the transport's, not Wait's
  auto statuses = engine_->GetBatchStatus(batch);
  ASSERT_TRUE(statuses.ok());
  for (const RequestStatus& r : *statuses) EXPECT_EQ(r.state, TransferState::kFailed);
  EXPECT_TRUE(engine_->FreeBatch(batch).ok());
  peer_->Kill(SIGKILL);
  peer_->Reap();
}

TEST_F(ProcessTest, ShmMappingOutlivesThePeer) {
  StartPeer(1 << 20, "shm");
  peer_->Kill(SIGKILL);
  peer_->Reap();
  // The pages stay mapped here: one-sided transfers still complete (nobody will read them).
  std::vector<uint8_t> in(4096);
  ASSERT_TRUE(Run({Req(TransferOp::kRead, in.data(), 0, in.size())}).ok());
  EXPECT_EQ(FindPatternMismatch(in.data(), in.size(), kPeerSeed), -1);
  // But the segment can no longer be opened: its memfd went with the process.
  auto reopened = engine_->OpenSegment("peer/kv", {"shm"});
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace crescent::kvstore
