// TransferEngine with two engines in one process: "node-a" initiates, "node-b" owns segments.
#include "kvstore/transfer/transfer_engine.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/transfer/fault_transport.h"
#include "kvstore/transfer/segment_directory.h"
#include "src/common/hash.h"
#include "tests/kvstore/transfer/test_util.h"

namespace crescent::kvstore {
namespace {

using testing::FillPattern;
using testing::FindPatternMismatch;
using ::testing::HasSubstr;

constexpr auto kWait = std::chrono::seconds(20);
constexpr uint64_t kSegmentSize = (64ull << 20) + (1 << 20);

std::unique_ptr<TransferEngine> MakeEngine(SegmentDirectory* directory,
                                           TransferEngineOptions options = {}) {
  auto engine = TransferEngine::Create(options, directory);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// Submits one batch of `requests` and waits for it; returns Wait's status.
absl::Status RunBatch(TransferEngine& engine, std::vector<TransferRequest> requests,
                      std::optional<Notify> notify = std::nullopt) {
  BatchId batch = engine.AllocateBatch(requests.size());
  absl::Status status = engine.SubmitTransfer(batch, requests, std::move(notify));
  if (status.ok()) status = engine.Wait(batch, kWait);
  absl::Status freed = engine.FreeBatch(batch);
  EXPECT_TRUE(freed.ok() || !status.ok()) << freed;
  return status;
}

class TransferEngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    a_ = MakeEngine(&directory_);
    b_ = MakeEngine(&directory_);
    ASSERT_TRUE(a_ && b_);
    auto base = b_->AllocateSharedSegment("node-b/kv", kSegmentSize);
    ASSERT_TRUE(base.ok()) << base.status();
    target_ = static_cast<uint8_t*>(*base);
    auto handle = a_->OpenSegment("node-b/kv", {GetParam()});
    ASSERT_TRUE(handle.ok()) << handle.status();
    handle_ = *handle;
    ASSERT_EQ(*a_->SegmentTransport(handle_), GetParam());
  }

  TransferRequest Req(TransferOp op, void* local, uint64_t offset, uint64_t length) {
    return TransferRequest{op, local, handle_, offset, length};
  }

  InMemorySegmentDirectory directory_;
  std::unique_ptr<TransferEngine> a_;
  std::unique_ptr<TransferEngine> b_;
  uint8_t* target_ = nullptr;
  SegmentHandle handle_{};
};

INSTANTIATE_TEST_SUITE_P(Transports, TransferEngineTest, ::testing::Values("shm", "tcp"),
                         [](const auto& info) { return info.param; });

TEST_P(TransferEngineTest, RoundTripsFromOneByteTo64MiB) {
  uint64_t offset = 1;  // unaligned throughout
  for (uint64_t length : std::initializer_list<uint64_t>{
           1ull, 3ull, 4096ull, 65537ull, (1ull << 20) + 13, 16ull << 20, 64ull << 20}) {
    std::vector<uint8_t> out(length), in(length);
    FillPattern(out.data(), length, length);
    ASSERT_TRUE(RunBatch(*a_, {Req(TransferOp::kWrite, out.data(), offset, length)}).ok())
        << length;
    ASSERT_TRUE(RunBatch(*a_, {Req(TransferOp::kRead, in.data(), offset, length)}).ok()) << length;
    ASSERT_EQ(FindPatternMismatch(in.data(), length, length), -1) << length;
    offset = (offset * 7 + 5) % 4093;
  }
}

TEST_P(TransferEngineTest, WritesLandInTheTargetsMemory) {
  // Checked on the owner's side by a notification callback that hashes the range: it runs after
  // the writes it covers are visible.
  std::mutex mu;
  std::vector<uint64_t> hashes;
  b_->SetNotificationCallback([&](const Notification& n) {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(n.segment, "node-b/kv");
    hashes.push_back(Hash64(target_ + 777, 1 << 20));
  });
  std::vector<uint8_t> out(1 << 20);
  FillPattern(out.data(), out.size(), 31);
  ASSERT_TRUE(
      RunBatch(*a_, {Req(TransferOp::kWrite, out.data(), 777, out.size())}, Notify{"done"}).ok());
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(hashes.size(), 1u);
  EXPECT_EQ(hashes[0], Hash64(out.data(), out.size()));
}

TEST_P(TransferEngineTest, ManyRequestsInOneBatch) {
  constexpr int kRequests = 64;
  constexpr uint64_t kLength = 10000;
  std::vector<std::vector<uint8_t>> outs(kRequests, std::vector<uint8_t>(kLength));
  std::vector<TransferRequest> writes;
  for (int i = 0; i < kRequests; ++i) {
    FillPattern(outs[i].data(), kLength, 100 + i);
    writes.push_back(Req(TransferOp::kWrite, outs[i].data(), 3 + i * kLength, kLength));
  }
  ASSERT_TRUE(RunBatch(*a_, writes).ok());
  std::vector<uint8_t> all(kRequests * kLength);
  ASSERT_TRUE(RunBatch(*a_, {Req(TransferOp::kRead, all.data(), 3, all.size())}).ok());
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(FindPatternMismatch(all.data() + i * kLength, kLength, 100 + i), -1) << i;
  }
}

TEST_P(TransferEngineTest, InvalidRequestsStartNothing) {
  std::vector<uint8_t> buf(100, 0xee);
  BatchId batch = a_->AllocateBatch(8);
  absl::Status s = a_->SubmitTransfer(
      batch,
      std::vector<TransferRequest>{Req(TransferOp::kWrite, buf.data(), 0, 100),
                                   Req(TransferOp::kWrite, buf.data(), kSegmentSize - 50, 100)});
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("request 1"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("node-b/kv"));
  EXPECT_TRUE(a_->GetBatchStatus(batch)->empty());
  s = a_->SubmitTransfer(batch, std::vector<TransferRequest>{
                                    Req(TransferOp::kRead, buf.data(), UINT64_MAX - 10, 100)});
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  s = a_->SubmitTransfer(batch,
                         std::vector<TransferRequest>{Req(TransferOp::kRead, nullptr, 0, 1)});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  TransferRequest bad_handle = Req(TransferOp::kRead, buf.data(), 0, 1);
  bad_handle.target = SegmentHandle{9999};
  EXPECT_EQ(a_->SubmitTransfer(batch, {&bad_handle, 1}).code(), absl::StatusCode::kNotFound);
  TransferRequest bad_op = Req(TransferOp::kRead, buf.data(), 0, 1);
  bad_op.op = static_cast<TransferOp>(7);
  EXPECT_EQ(a_->SubmitTransfer(batch, {&bad_op, 1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(a_->GetBatchStatus(batch)->empty());
  ASSERT_TRUE(a_->FreeBatch(batch).ok());
  // Nothing reached the target (read back through the engine for ordering).
  std::vector<uint8_t> back(100);
  ASSERT_TRUE(RunBatch(*a_, {Req(TransferOp::kRead, back.data(), 0, 100)}).ok());
  EXPECT_EQ(back, std::vector<uint8_t>(100, 0));
}

TEST_P(TransferEngineTest, BatchBookkeeping) {
  uint8_t b = 1;
  BatchId batch = a_->AllocateBatch(2);
  ASSERT_TRUE(
      a_->SubmitTransfer(batch, std::vector<TransferRequest>{Req(TransferOp::kWrite, &b, 0, 1),
                                                             Req(TransferOp::kWrite, &b, 1, 0)})
          .ok());  // a zero-length request is done at once
  EXPECT_EQ(
      a_->SubmitTransfer(batch, std::vector<TransferRequest>{Req(TransferOp::kWrite, &b, 0, 1)})
          .code(),
      absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(a_->Wait(batch, kWait).ok());
  auto statuses = a_->GetBatchStatus(batch);
  ASSERT_TRUE(statuses.ok());
  ASSERT_EQ(statuses->size(), 2u);
  for (const RequestStatus& r : *statuses) EXPECT_EQ(r.state, TransferState::kDone);
  ASSERT_TRUE(a_->FreeBatch(batch).ok());
  EXPECT_EQ(a_->FreeBatch(batch).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a_->Wait(batch, kWait).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a_->GetBatchStatus(batch).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a_->SubmitTransfer(batch, std::vector<TransferRequest>{}).code(),
            absl::StatusCode::kNotFound);
}

TEST_P(TransferEngineTest, ConcurrentBatchesFromThreads) {
  constexpr int kThreads = 4;
  constexpr uint64_t kRegion = 4 << 20;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> out(kRegion), in(kRegion);
      for (int round = 0; round < 4; ++round) {
        const uint64_t seed = 7000 + t * 10 + round;
        FillPattern(out.data(), kRegion, seed);
        const uint64_t offset = 5 + t * kRegion;
        // Two requests per batch, split unevenly.
        const uint64_t split = 12345 + round;
        absl::Status s = RunBatch(
            *a_, {Req(TransferOp::kWrite, out.data(), offset, split),
                  Req(TransferOp::kWrite, out.data() + split, offset + split, kRegion - split)});
        if (s.ok()) s = RunBatch(*a_, {Req(TransferOp::kRead, in.data(), offset, kRegion)});
        if (!s.ok() || FindPatternMismatch(in.data(), kRegion, seed) != -1) failures.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_P(TransferEngineTest, NotificationArrivesAfterTheData) {
  struct Seen {
    std::string payload;
    bool data_in_place;
  };
  std::mutex mu;
  std::vector<Seen> seen;
  constexpr uint64_t kLength = 3 << 20;
  b_->SetNotificationCallback([&](const Notification& n) {
    // Runs on node-b when the data must already be there.
    const bool in_place =
        FindPatternMismatch(target_ + 4096, kLength, std::atoi(n.payload.c_str()), 0) == -1;
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(Seen{n.payload, in_place});
  });
  std::vector<uint8_t> out(kLength);
  for (int layer = 1; layer <= 3; ++layer) {
    FillPattern(out.data(), kLength, layer);
    // Two requests: the notification waits for both.
    ASSERT_TRUE(RunBatch(*a_,
                         {Req(TransferOp::kWrite, out.data(), 4096, kLength / 2),
                          Req(TransferOp::kWrite, out.data() + kLength / 2, 4096 + kLength / 2,
                              kLength / 2)},
                         Notify{absl::StrCat(layer)})
                    .ok());
  }
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(seen.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(seen[i].payload, absl::StrCat(i + 1));
    EXPECT_TRUE(seen[i].data_in_place) << "layer " << i + 1;
  }
}

TEST_P(TransferEngineTest, NotificationGoesOncePerTargetSegment) {
  auto other = b_->AllocateSharedSegment("node-b/kv2", 4096);
  ASSERT_TRUE(other.ok());
  auto other_handle = a_->OpenSegment("node-b/kv2", {GetParam()});
  ASSERT_TRUE(other_handle.ok());
  std::mutex mu;
  std::vector<std::string> seen;
  b_->SetNotificationCallback([&](const Notification& n) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(n.segment + ":" + n.payload);
  });
  uint8_t b = 3;
  ASSERT_TRUE(RunBatch(*a_,
                       {Req(TransferOp::kWrite, &b, 0, 1), Req(TransferOp::kWrite, &b, 1, 1),
                        TransferRequest{TransferOp::kWrite, &b, *other_handle, 0, 1}},
                       Notify{"p"})
                  .ok());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(seen, ::testing::UnorderedElementsAre("node-b/kv:p", "node-b/kv2:p"));
}

TEST_P(TransferEngineTest, NotificationWithoutCallbackFailsTheRequests) {
  uint8_t b = 3;
  absl::Status s = RunBatch(*a_, {Req(TransferOp::kWrite, &b, 0, 1)}, Notify{"x"});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("no callback"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("notifying segment 'node-b/kv'"));
}

TEST_P(TransferEngineTest, PayloadLimit) {
  uint8_t b = 3;
  BatchId batch = a_->AllocateBatch(1);
  EXPECT_EQ(
      a_->SubmitTransfer(batch, std::vector<TransferRequest>{Req(TransferOp::kWrite, &b, 0, 1)},
                         Notify{std::string((1 << 20) + 1, 'x')})
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(TransferEngineChoiceTest, TransportFollowsWhereMemoryLives) {
  InMemorySegmentDirectory directory;
  auto a = MakeEngine(&directory);
  auto b = MakeEngine(&directory);
  ASSERT_TRUE(a && b);
  std::vector<uint8_t> plain(1 << 16);
  ASSERT_TRUE(b->RegisterLocalSegment("node-b/plain", plain.data(), plain.size()).ok());
  ASSERT_TRUE(b->AllocateSharedSegment("node-b/shared", 1 << 16).ok());
  auto shared = a->OpenSegment("node-b/shared");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(*a->SegmentTransport(*shared), "shm");
  auto plain_handle = a->OpenSegment("node-b/plain");
  ASSERT_TRUE(plain_handle.ok()) << plain_handle.status();
  EXPECT_EQ(*a->SegmentTransport(*plain_handle), "tcp");  // malloc'd memory cannot be mapped
  auto only_shm = a->OpenSegment("node-b/plain", {"shm"});
  EXPECT_EQ(only_shm.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(only_shm.status().message()), HasSubstr("shm: "));
  EXPECT_EQ(a->OpenSegment("node-b/nothing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a->OpenSegmentDescriptor(*shared)->length, 1u << 16);
  ASSERT_TRUE(a->CloseSegment(*shared).ok());
  EXPECT_EQ(a->CloseSegment(*shared).code(), absl::StatusCode::kNotFound);
}

TEST(TransferEngineChoiceTest, RegistrationErrors) {
  InMemorySegmentDirectory directory;
  auto a = MakeEngine(&directory);
  auto b = MakeEngine(&directory);
  ASSERT_TRUE(a && b);
  std::vector<uint8_t> mem(100);
  EXPECT_EQ(a->RegisterLocalSegment("bad name", mem.data(), 100).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->RegisterLocalSegment("a/x", nullptr, 100).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->RegisterLocalSegment("a/x", mem.data(), 0).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(a->RegisterLocalSegment("a/x", mem.data(), 100).ok());
  EXPECT_EQ(a->RegisterLocalSegment("a/x", mem.data(), 100).code(),
            absl::StatusCode::kAlreadyExists);
  // Another engine cannot publish a name already taken in the directory; nothing stays behind.
  EXPECT_EQ(b->RegisterLocalSegment("a/x", mem.data(), 100).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(b->LocalSegmentDescriptor("a/x").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(a->UnregisterLocalSegment("a/x").ok());
  EXPECT_EQ(directory.Lookup("a/x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a->UnregisterLocalSegment("a/x").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(b->RegisterLocalSegment("a/x", mem.data(), 100).ok());  // the name is free again
}

TEST(TransferEngineChoiceTest, CreateRejectsBadOptions) {
  InMemorySegmentDirectory directory;
  TransferEngineOptions options;
  options.transports = {"tcp", "carrier-pigeon"};
  EXPECT_EQ(TransferEngine::Create(options, &directory).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.transports = {"tcp", "tcp"};
  EXPECT_EQ(TransferEngine::Create(options, &directory).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TransferEngine::Create(TransferEngineOptions(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TransferEngineChoiceTest, EngineDestructionUnpublishes) {
  InMemorySegmentDirectory directory;
  {
    auto b = MakeEngine(&directory);
    ASSERT_TRUE(b->AllocateSharedSegment("node-b/kv", 4096).ok());
    EXPECT_TRUE(directory.Lookup("node-b/kv").ok());
  }
  EXPECT_EQ(directory.Lookup("node-b/kv").status().code(), absl::StatusCode::kNotFound);
}

// Faults injected under the engine through wrap_transport.
class TransferEngineFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TransferEngineOptions options;
    options.wrap_transport = [this](std::unique_ptr<Transport> inner) {
      auto wrapped = std::make_unique<FaultTransport>(std::move(inner), FaultOptions());
      faults_.push_back(wrapped.get());
      return wrapped;
    };
    a_ = MakeEngine(&directory_, options);
    b_ = MakeEngine(&directory_);
    ASSERT_TRUE(a_ && b_);
    ASSERT_TRUE(b_->AllocateSharedSegment("node-b/kv", 1 << 20).ok());
    b_->SetNotificationCallback([this](const Notification& n) { notified_.fetch_add(1); });
  }

  void SetFaults(const FaultOptions& options) {
    for (FaultTransport* f : faults_) f->SetOptions(options);
  }

  InMemorySegmentDirectory directory_;
  std::vector<FaultTransport*> faults_;
  std::unique_ptr<TransferEngine> a_;
  std::unique_ptr<TransferEngine> b_;
  std::atomic<int> notified_{0};
};

TEST_F(TransferEngineFaultTest, FailuresAreReportedPerRequest) {
  for (const char* transport : {"shm", "tcp"}) {
    auto handle = a_->OpenSegment("node-b/kv", {transport});
    ASSERT_TRUE(handle.ok());
    FaultOptions options;
    options.fail_after = 2;
    SetFaults(options);
    std::vector<uint8_t> buf(4096, 1);
    std::vector<TransferRequest> requests;
    for (int i = 0; i < 5; ++i) {
      requests.push_back(TransferRequest{TransferOp::kWrite, buf.data(), *handle,
                                         static_cast<uint64_t>(i) * 4096, 4096});
    }
    BatchId batch = a_->AllocateBatch(5);
    ASSERT_TRUE(a_->SubmitTransfer(batch, requests).ok());
    absl::Status s = a_->Wait(batch, kWait);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("request 2"));
    auto statuses = a_->GetBatchStatus(batch);
    ASSERT_TRUE(statuses.ok());
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ((*statuses)[i].state, i < 2 ? TransferState::kDone : TransferState::kFailed)
          << transport << " request " << i;
    }
    ASSERT_TRUE(a_->FreeBatch(batch).ok());
  }
}

TEST_F(TransferEngineFaultTest, NoNotificationWhenARequestFails) {
  auto handle = a_->OpenSegment("node-b/kv", {"tcp"});
  ASSERT_TRUE(handle.ok());
  FaultOptions options;
  options.fail_after = 1;
  SetFaults(options);
  uint8_t b = 1;
  std::vector<TransferRequest> requests = {TransferRequest{TransferOp::kWrite, &b, *handle, 0, 1},
                                           TransferRequest{TransferOp::kWrite, &b, *handle, 1, 1}};
  BatchId batch = a_->AllocateBatch(2);
  ASSERT_TRUE(a_->SubmitTransfer(batch, requests, Notify{"never"}).ok());
  absl::Status s = a_->Wait(batch, kWait);
  EXPECT_FALSE(s.ok());
  auto statuses = *a_->GetBatchStatus(batch);
  // Request 0 landed but its submission's notification was not sent: it fails too, naming why.
  EXPECT_EQ(statuses[0].status.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(statuses[0].status.message()), HasSubstr("request 1 failed"));
  EXPECT_EQ(statuses[1].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(notified_.load(), 0);
}

TEST_F(TransferEngineFaultTest, PendingBatchesTimeOutAndDieWithTheEngine) {
  auto handle = a_->OpenSegment("node-b/kv", {"tcp"});
  ASSERT_TRUE(handle.ok());
  FaultOptions options;
  options.delay_probability = 1.0;
  options.delay = std::chrono::hours(1);
  SetFaults(options);
  uint8_t b = 1;
  BatchId batch = a_->AllocateBatch(1);
  ASSERT_TRUE(a_->SubmitTransfer(batch, std::vector<TransferRequest>{TransferRequest{
                                            TransferOp::kWrite, &b, *handle, 0, 1}})
                  .ok());
  absl::Status s = a_->Wait(batch, std::chrono::milliseconds(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("1 of 1 requests"));
  EXPECT_EQ(a_->FreeBatch(batch).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*a_->GetBatchStatus(batch))[0].state, TransferState::kPending);
  a_.reset();  // must not wait for the hour-long delay
  SUCCEED();
}

}  // namespace
}  // namespace crescent::kvstore
