#include "kvstore/transfer/fault_transport.h"

#include <atomic>
#include <cstring>
#include <future>
#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/kvstore/transfer/test_util.h"

namespace crescent::kvstore {
namespace {

using testing::FillPattern;

// An in-process transport: segments are buffers in a map, a transfer is a memcpy done at once.
class FakeTransport final : public Transport {
 public:
  class Remote final : public RemoteSegment {
   public:
    Remote(SegmentDescriptor d, uint8_t* base) : RemoteSegment(std::move(d)), base(base) {}
    uint8_t* const base;
  };

  std::string_view name() const override { return "fake"; }
  absl::Status RegisterLocalSegment(const LocalSegment& s, SegmentDescriptor* d) override {
    segments_[s.name] = static_cast<uint8_t*>(s.addr);
    return absl::OkStatus();
  }
  absl::Status UnregisterLocalSegment(std::string_view name) override {
    return segments_.erase(std::string(name)) ? absl::OkStatus() : absl::NotFoundError("no");
  }
  absl::StatusOr<std::shared_ptr<RemoteSegment>> OpenSegment(const SegmentDescriptor& d) override {
    auto it = segments_.find(d.name);
    if (it == segments_.end()) return absl::UnavailableError("unknown");
    return std::make_shared<Remote>(d, it->second);
  }
  void Submit(const TransportOp& op, TransferCallback done) override {
    ++submitted;
    if (shut_down) {
      std::move(done)(absl::CancelledError("shut down"));
      return;
    }
    uint8_t* remote = static_cast<Remote*>(op.target)->base + op.target_offset;
    if (op.op == TransferOp::kWrite) {
      std::memcpy(remote, op.local_addr, op.length);
    } else {
      std::memcpy(op.local_addr, remote, op.length);
    }
    std::move(done)(absl::OkStatus());
  }
  void Shutdown() override { shut_down = true; }

  std::atomic<int> submitted{0};
  std::atomic<bool> shut_down{false};

 private:
  std::map<std::string, uint8_t*> segments_;
};

class FaultTransportTest : public ::testing::Test {
 protected:
  void Make(const FaultOptions& options) {
    auto fake = std::make_unique<FakeTransport>();
    fake_ = fake.get();
    fault_ = std::make_unique<FaultTransport>(std::move(fake), options);
    target_.assign(4096, 0);
    SegmentDescriptor d;
    d.name = "t/seg";
    d.length = target_.size();
    ASSERT_TRUE(
        fault_->RegisterLocalSegment(LocalSegment{"t/seg", target_.data(), 4096, -1}, &d).ok());
    auto remote = fault_->OpenSegment(d);
    ASSERT_TRUE(remote.ok());
    remote_ = *std::move(remote);
  }

  absl::Status Run(TransferOp op, void* local, uint64_t offset, uint64_t length) {
    std::promise<absl::Status> promise;
    auto future = promise.get_future();
    fault_->Submit(TransportOp{op, local, remote_.get(), offset, length},
                   [&promise](absl::Status s) { promise.set_value(std::move(s)); });
    if (future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      return absl::DeadlineExceededError("test: no completion");
    }
    return future.get();
  }

  FakeTransport* fake_ = nullptr;
  std::unique_ptr<FaultTransport> fault_;
  std::vector<uint8_t> target_;
  std::shared_ptr<RemoteSegment> remote_;
};

TEST_F(FaultTransportTest, PassesThroughWithoutFaults) {
  Make(FaultOptions());
  EXPECT_EQ(fault_->name(), "fake");
  std::vector<uint8_t> out(100), in(100);
  FillPattern(out.data(), 100, 1);
  ASSERT_TRUE(Run(TransferOp::kWrite, out.data(), 10, 100).ok());
  ASSERT_TRUE(Run(TransferOp::kRead, in.data(), 10, 100).ok());
  EXPECT_EQ(in, out);
  EXPECT_EQ(fault_->counters().operations, 2u);
  EXPECT_EQ(fault_->counters().failed, 0u);
}

TEST_F(FaultTransportTest, FailAfterN) {
  FaultOptions options;
  options.fail_after = 3;
  Make(options);
  uint8_t b = 7;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(Run(TransferOp::kWrite, &b, i, 1).ok()) << i;
  for (int i = 3; i < 10; ++i) {
    absl::Status s = Run(TransferOp::kWrite, &b, i, 1);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << i;
    EXPECT_EQ(target_[i], 0) << "a failed write must not touch memory";
  }
  EXPECT_EQ(fake_->submitted.load(), 3);
  EXPECT_EQ(fault_->counters().failed, 7u);
}

TEST_F(FaultTransportTest, ProbabilitiesAreSeededAndReproducible) {
  FaultOptions options;
  options.seed = 1234;
  options.fail_probability = 0.3;
  auto pattern = [&] {
    Make(options);
    std::vector<bool> failed;
    uint8_t b = 0;
    for (int i = 0; i < 1000; ++i) failed.push_back(!Run(TransferOp::kRead, &b, 0, 1).ok());
    return failed;
  };
  std::vector<bool> first = pattern();
  std::vector<bool> second = pattern();
  EXPECT_EQ(first, second);
  const auto failures = std::count(first.begin(), first.end(), true);
  EXPECT_GT(failures, 200);  // binomial(1000, 0.3): 300 +- 14.5; these bounds are ~7 sigma
  EXPECT_LT(failures, 400);
  options.seed = 99;
  EXPECT_NE(pattern(), first);
}

TEST_F(FaultTransportTest, DropNeverPerformsAndTimesOut) {
  FaultOptions options;
  options.drop_probability = 1.0;
  options.drop_timeout = std::chrono::milliseconds(5);
  Make(options);
  uint8_t b = 9;
  absl::Status s = Run(TransferOp::kWrite, &b, 0, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(target_[0], 0);
  EXPECT_EQ(fake_->submitted.load(), 0);
  EXPECT_EQ(fault_->counters().dropped, 1u);
}

TEST_F(FaultTransportTest, CorruptWriteChangesTheTargetNotTheSource) {
  FaultOptions options;
  options.corrupt_probability = 1.0;
  options.corrupt_bytes = 3;
  Make(options);
  std::vector<uint8_t> out(1000);
  FillPattern(out.data(), out.size(), 4);
  const std::vector<uint8_t> original = out;
  ASSERT_TRUE(Run(TransferOp::kWrite, out.data(), 0, out.size()).ok());  // silent corruption
  EXPECT_EQ(out, original);
  int differ = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (target_[i] != out[i]) {
      ++differ;
      EXPECT_EQ(target_[i], static_cast<uint8_t>(out[i] ^ 0xff));
    }
  }
  EXPECT_EQ(differ, 3);
}

TEST_F(FaultTransportTest, CorruptReadChangesTheDestination) {
  FaultOptions options;
  options.corrupt_probability = 1.0;
  options.corrupt_bytes = 2;
  Make(options);
  FillPattern(target_.data(), target_.size(), 8);
  std::vector<uint8_t> in(500);
  ASSERT_TRUE(Run(TransferOp::kRead, in.data(), 100, in.size()).ok());
  int differ = 0;
  for (size_t i = 0; i < in.size(); ++i) differ += in[i] != target_[100 + i];
  EXPECT_EQ(differ, 2);
  // One byte can be corrupted at most once.
  options.corrupt_bytes = 50;
  fault_->SetOptions(options);
  uint8_t one[1] = {};
  ASSERT_TRUE(Run(TransferOp::kRead, one, 0, 1).ok());
  EXPECT_EQ(one[0], static_cast<uint8_t>(target_[0] ^ 0xff));
}

TEST_F(FaultTransportTest, DelayPerformsLater) {
  FaultOptions options;
  options.delay_probability = 1.0;
  options.delay = std::chrono::milliseconds(20);
  Make(options);
  uint8_t b = 5;
  ASSERT_TRUE(Run(TransferOp::kWrite, &b, 1, 1).ok());
  EXPECT_EQ(target_[1], 5);
  EXPECT_EQ(fault_->counters().delayed, 1u);
}

TEST_F(FaultTransportTest, ShutdownCancelsDelayedAndFlushesDropped) {
  FaultOptions options;
  options.delay_probability = 1.0;
  options.delay = std::chrono::hours(1);
  Make(options);
  uint8_t b = 5;
  std::promise<absl::Status> delayed;
  fault_->Submit(TransportOp{TransferOp::kWrite, &b, remote_.get(), 0, 1},
                 [&](absl::Status s) { delayed.set_value(std::move(s)); });
  options.delay_probability = 0;
  options.drop_probability = 1.0;
  options.drop_timeout = std::chrono::hours(1);
  fault_->SetOptions(options);
  std::promise<absl::Status> dropped;
  fault_->Submit(TransportOp{TransferOp::kWrite, &b, remote_.get(), 0, 1},
                 [&](absl::Status s) { dropped.set_value(std::move(s)); });
  auto delayed_future = delayed.get_future();
  auto dropped_future = dropped.get_future();
  EXPECT_EQ(delayed_future.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  fault_->Shutdown();
  EXPECT_EQ(delayed_future.get().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(dropped_future.get().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(target_[0], 0);
  EXPECT_TRUE(fake_->shut_down.load());
}

TEST_F(FaultTransportTest, ConcurrentSubmitters) {
  FaultOptions options;
  options.fail_probability = 0.5;
  options.delay_probability = 0.5;
  options.delay = std::chrono::milliseconds(1);
  Make(options);
  std::atomic<int> completions{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      uint8_t b = static_cast<uint8_t>(t);
      for (int i = 0; i < 100; ++i) {
        Run(TransferOp::kRead, &b, 0, 1).IgnoreError();
        completions.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(completions.load(), 400);
  const FaultCounters c = fault_->counters();
  EXPECT_EQ(c.operations, 400u);
  EXPECT_EQ(static_cast<uint64_t>(fake_->submitted.load()), 400u - c.failed);
}

}  // namespace
}  // namespace crescent::kvstore
