#include "kvstore/transfer/tcp_transport.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/transfer/tcp_protocol.h"
#include "tests/kvstore/transfer/test_util.h"

namespace crescent::kvstore {
namespace {

using testing::FillPattern;
using testing::FindPatternMismatch;
using ::testing::HasSubstr;

constexpr auto kWait = std::chrono::seconds(20);

// Runs one transport operation and waits for its callback.
absl::Status RunOp(Transport& t, TransferOp op, void* local, RemoteSegment* target, uint64_t offset,
                   uint64_t length) {
  std::promise<absl::Status> promise;
  std::future<absl::Status> future = promise.get_future();
  t.Submit(TransportOp{op, local, target, offset, length},
           [&promise](absl::Status s) { promise.set_value(std::move(s)); });
  if (future.wait_for(kWait) != std::future_status::ready) {
    return absl::DeadlineExceededError("test: no completion");
  }
  return future.get();
}

absl::Status RunNotify(Transport& t, RemoteSegment* target, std::string payload) {
  std::promise<absl::Status> promise;
  std::future<absl::Status> future = promise.get_future();
  t.Notify(target, std::move(payload),
           [&promise](absl::Status s) { promise.set_value(std::move(s)); });
  if (future.wait_for(kWait) != std::future_status::ready) {
    return absl::DeadlineExceededError("test: no completion");
  }
  return future.get();
}

class TcpTransportTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kGuard = 4096;
  static constexpr uint64_t kSize = 1 << 20;

  void SetUp() override {
    TcpTransportOptions server_options;
    auto server = TcpTransport::Create(server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);

    TcpTransportOptions client_options;
    client_options.serve = false;
    client_options.slice_bytes = 4096;  // many slices: pipelining and several connections
    client_options.connections_per_peer = 3;
    client_options.max_inflight_slices = 2;
    client_options_ = client_options;
    auto client = TcpTransport::Create(client_options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);

    // The segment sits between two guard zones that must never change.
    memory_.assign(kSize + 2 * kGuard, 0);
    FillPattern(memory_.data(), memory_.size(), /*seed=*/5);
    descriptor_.name = "server/seg";
    descriptor_.length = kSize;
    ASSERT_TRUE(server_
                    ->RegisterLocalSegment(LocalSegment{descriptor_.name, segment(), kSize, -1},
                                           &descriptor_)
                    .ok());
    ASSERT_FALSE(descriptor_.tcp_endpoint.empty());
    ASSERT_NE(descriptor_.tcp_segment_id, 0u);
    auto remote = client_->OpenSegment(descriptor_);
    ASSERT_TRUE(remote.ok()) << remote.status();
    remote_ = *std::move(remote);
  }

  uint8_t* segment() { return memory_.data() + kGuard; }

  void ExpectGuardsIntact() {
    EXPECT_EQ(FindPatternMismatch(memory_.data(), kGuard, 5, 0), -1);
    EXPECT_EQ(FindPatternMismatch(memory_.data() + kGuard + kSize, kGuard, 5, kGuard + kSize), -1);
  }

  // A raw connection to the server, for frames the client would never send.
  int RawConnect() {
    const std::string& ep = descriptor_.tcp_endpoint;
    uint32_t port = 0;
    EXPECT_TRUE(absl::SimpleAtoi(ep.substr(ep.rfind(':') + 1), &port));
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
  }

  static void SendRequest(int fd, const tcp::RequestHeader& h, const void* payload, size_t n) {
    uint8_t buf[tcp::kRequestHeaderSize];
    tcp::EncodeRequest(h, buf);
    ASSERT_EQ(::send(fd, buf, sizeof(buf), MSG_NOSIGNAL), static_cast<ssize_t>(sizeof(buf)));
    if (n > 0) {
      ASSERT_EQ(::send(fd, payload, n, MSG_NOSIGNAL), static_cast<ssize_t>(n));
    }
  }

  static bool RecvAll(int fd, void* buf, size_t n) {
    auto* p = static_cast<uint8_t*>(buf);
    while (n > 0) {
      ssize_t r = ::recv(fd, p, n, 0);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }

  // Reads one reply; returns its header and puts any payload in *payload.
  static tcp::ReplyHeader ReadReply(int fd, std::string* payload) {
    uint8_t buf[tcp::kReplyHeaderSize];
    EXPECT_TRUE(RecvAll(fd, buf, sizeof(buf)));
    absl::StatusOr<tcp::ReplyHeader> reply = tcp::DecodeReply(buf);
    EXPECT_TRUE(reply.ok()) << reply.status();
    payload->resize(reply->length);
    EXPECT_TRUE(RecvAll(fd, payload->data(), payload->size()));
    return *reply;
  }

  // Declared first, destroyed last: a registered segment's memory must outlive the server
  // (Transport::RegisterLocalSegment). A server thread may still be returning from the sendmsg
  // of a reply the client has already received (ASan checks the buffer after the call).
  std::vector<uint8_t> memory_;
  TcpTransportOptions client_options_;
  std::unique_ptr<TcpTransport> server_;
  std::unique_ptr<TcpTransport> client_;
  SegmentDescriptor descriptor_;
  std::shared_ptr<RemoteSegment> remote_;
};

TEST_F(TcpTransportTest, WriteThenReadBack) {
  for (uint64_t length :
       std::initializer_list<uint64_t>{1ull, 4095ull, 4096ull, 4097ull, 65536ull + 17, kSize - 3}) {
    for (uint64_t offset : std::initializer_list<uint64_t>{0ull, 3ull}) {
      if (offset + length > kSize) continue;
      const uint64_t seed = length * 31 + offset;
      std::vector<uint8_t> out(length), in(length, 0);
      FillPattern(out.data(), length, seed);
      ASSERT_TRUE(
          RunOp(*client_, TransferOp::kWrite, out.data(), remote_.get(), offset, length).ok());
      EXPECT_EQ(std::memcmp(segment() + offset, out.data(), length), 0)
          << "length " << length << " offset " << offset;
      ASSERT_TRUE(
          RunOp(*client_, TransferOp::kRead, in.data(), remote_.get(), offset, length).ok());
      EXPECT_EQ(in, out) << "length " << length << " offset " << offset;
    }
  }
  ExpectGuardsIntact();
}

TEST_F(TcpTransportTest, ChecksummedTransfers) {
  TcpTransportOptions options = client_options_;
  options.checksum = true;
  auto client = TcpTransport::Create(options);
  ASSERT_TRUE(client.ok());
  auto remote = (*client)->OpenSegment(descriptor_);
  ASSERT_TRUE(remote.ok());
  std::vector<uint8_t> out(100000), in(100000);
  FillPattern(out.data(), out.size(), 77);
  ASSERT_TRUE(RunOp(**client, TransferOp::kWrite, out.data(), remote->get(), 11, out.size()).ok());
  ASSERT_TRUE(RunOp(**client, TransferOp::kRead, in.data(), remote->get(), 11, in.size()).ok());
  EXPECT_EQ(in, out);
}

TEST_F(TcpTransportTest, ServerRejectsOutOfBoundsFromTheClient) {
  // The client transport trusts the engine's checks; the server must not.
  std::vector<uint8_t> out(8192, 0xab);
  absl::Status s =
      RunOp(*client_, TransferOp::kWrite, out.data(), remote_.get(), kSize - 100, out.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("outside the segment"));
  s = RunOp(*client_, TransferOp::kRead, out.data(), remote_.get(), kSize, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_EQ(FindPatternMismatch(memory_.data(), memory_.size(), 5), -1);  // nothing written
  // The connections stay usable.
  EXPECT_TRUE(RunOp(*client_, TransferOp::kWrite, out.data(), remote_.get(), 0, 10).ok());
}

TEST_F(TcpTransportTest, RawOutOfBoundsWriteIsRejectedAndStreamStaysInStep) {
  int fd = RawConnect();
  std::vector<uint8_t> payload(64, 0xcd);
  tcp::RequestHeader h;
  h.opcode = tcp::Opcode::kWrite;
  h.request_id = 1;
  h.segment_id = descriptor_.tcp_segment_id;
  h.offset = kSize - 16;
  h.length = payload.size();
  SendRequest(fd, h, payload.data(), payload.size());
  std::string message;
  tcp::ReplyHeader reply = ReadReply(fd, &message);
  EXPECT_EQ(reply.code, absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reply.request_id, 1u);
  EXPECT_THAT(message, HasSubstr("write rejected"));

  h.request_id = 2;
  h.offset = UINT64_MAX - 8;  // overflows offset + length
  SendRequest(fd, h, payload.data(), payload.size());
  EXPECT_EQ(ReadReply(fd, &message).code, absl::StatusCode::kOutOfRange);

  h.request_id = 3;
  h.segment_id = descriptor_.tcp_segment_id + 1;  // not served
  h.offset = 0;
  SendRequest(fd, h, payload.data(), payload.size());
  EXPECT_EQ(ReadReply(fd, &message).code, absl::StatusCode::kNotFound);
  EXPECT_EQ(FindPatternMismatch(memory_.data(), memory_.size(), 5), -1);

  h.request_id = 4;
  h.segment_id = descriptor_.tcp_segment_id;
  h.offset = 8;
  SendRequest(fd, h, payload.data(), payload.size());
  EXPECT_EQ(ReadReply(fd, &message).code, absl::StatusCode::kOk);
  // Checked through the transport: this thread has no ordering with the server's write that a
  // race detector could see.
  std::vector<uint8_t> back(payload.size());
  ASSERT_TRUE(RunOp(*client_, TransferOp::kRead, back.data(), remote_.get(), 8, back.size()).ok());
  EXPECT_EQ(back, payload);
  ExpectGuardsIntact();
  ::close(fd);
}

TEST_F(TcpTransportTest, RawBadChecksumIsDataLoss) {
  int fd = RawConnect();
  std::vector<uint8_t> payload(100, 1);
  tcp::RequestHeader h;
  h.opcode = tcp::Opcode::kWrite;
  h.flags = tcp::kFlagChecksum;
  h.request_id = 1;
  h.segment_id = descriptor_.tcp_segment_id;
  h.length = payload.size();
  h.checksum = 12345;
  SendRequest(fd, h, payload.data(), payload.size());
  std::string message;
  EXPECT_EQ(ReadReply(fd, &message).code, absl::StatusCode::kDataLoss);
  EXPECT_THAT(message, HasSubstr("bad checksum"));
  ::close(fd);
}

TEST_F(TcpTransportTest, RawGarbageClosesTheConnection) {
  for (int variant = 0; variant < 2; ++variant) {
    int fd = RawConnect();
    uint8_t buf[tcp::kRequestHeaderSize];
    tcp::RequestHeader h;
    h.opcode = tcp::Opcode::kWrite;
    h.segment_id = descriptor_.tcp_segment_id;
    h.length = tcp::kMaxDataFrameBytes + 1;  // variant 0: too large to even drain
    tcp::EncodeRequest(h, buf);
    if (variant == 1) buf[0] ^= 0xff;  // variant 1: bad magic
    ASSERT_EQ(::send(fd, buf, sizeof(buf), MSG_NOSIGNAL), static_cast<ssize_t>(sizeof(buf)));
    char c;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0) << "variant " << variant;  // closed, no reply
    ::close(fd);
  }
  EXPECT_EQ(FindPatternMismatch(memory_.data(), memory_.size(), 5), -1);
  // The server still serves others.
  uint8_t b = 0;
  EXPECT_TRUE(RunOp(*client_, TransferOp::kRead, &b, remote_.get(), 0, 1).ok());
}

TEST_F(TcpTransportTest, OpenChecksWhatTheServerServes) {
  SegmentDescriptor wrong_length = descriptor_;
  wrong_length.length += 1;
  EXPECT_EQ(client_->OpenSegment(wrong_length).status().code(),
            absl::StatusCode::kFailedPrecondition);
  SegmentDescriptor wrong_id = descriptor_;
  wrong_id.tcp_segment_id ^= 1;
  EXPECT_EQ(client_->OpenSegment(wrong_id).status().code(), absl::StatusCode::kNotFound);
  SegmentDescriptor no_endpoint = descriptor_;
  no_endpoint.tcp_endpoint.clear();
  EXPECT_EQ(client_->OpenSegment(no_endpoint).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(TcpTransportTest, NotificationsReachTheHandler) {
  std::vector<std::string> seen;
  std::mutex mu;
  server_->SetNotificationHandler([&](std::string_view segment, std::string_view payload) {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(absl::StrCat(std::string(segment), "=", std::string(payload)));
    return payload == "refuse" ? absl::FailedPreconditionError("refused by handler")
                               : absl::OkStatus();
  });
  ASSERT_TRUE(RunNotify(*client_, remote_.get(), "layer 3 of req 9").ok());
  absl::Status refused = RunNotify(*client_, remote_.get(), "refuse");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("refused by handler"));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(seen, ::testing::ElementsAre("server/seg=layer 3 of req 9", "server/seg=refuse"));
}

TEST_F(TcpTransportTest, NotificationWithoutHandlerFails) {
  EXPECT_EQ(RunNotify(*client_, remote_.get(), "x").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TcpTransportTest, ControlCalls) {
  server_->SetControlHandler(7, [](std::string_view request) -> absl::StatusOr<std::string> {
    if (request == "fail") return absl::InvalidArgumentError("bad request");
    return absl::StrCat("echo:", std::string(request));
  });
  auto reply = client_->CallControl(descriptor_, 7, "hello", std::chrono::seconds(10));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "echo:hello");
  EXPECT_EQ(client_->CallControl(descriptor_, 7, "fail", std::chrono::seconds(10)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->CallControl(descriptor_, 8, "x", std::chrono::seconds(10)).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(TcpTransportTest, UnregisteredSegmentIsNotServed) {
  ASSERT_TRUE(server_->UnregisterLocalSegment("server/seg").ok());
  uint8_t b = 0;
  EXPECT_EQ(RunOp(*client_, TransferOp::kRead, &b, remote_.get(), 0, 1).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(server_->UnregisterLocalSegment("server/seg").code(), absl::StatusCode::kNotFound);
}

TEST_F(TcpTransportTest, ServerGoneFailsTransfersPromptly) {
  server_->Shutdown();
  std::vector<uint8_t> buf(65536);
  absl::Status s = RunOp(*client_, TransferOp::kWrite, buf.data(), remote_.get(), 0, buf.size());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  // Later operations try to reconnect and fail the same way.
  s = RunOp(*client_, TransferOp::kRead, buf.data(), remote_.get(), 0, 10);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST_F(TcpTransportTest, ShutdownFailsSubmits) {
  client_->Shutdown();
  uint8_t b = 0;
  EXPECT_EQ(RunOp(*client_, TransferOp::kRead, &b, remote_.get(), 0, 1).code(),
            absl::StatusCode::kCancelled);
}

TEST(TcpTransportTimeoutTest, SilentPeerTimesOut) {
  // A listener that accepts connections (the kernel does) but never answers.
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 8), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  TcpTransportOptions options;
  options.serve = false;
  options.io_timeout = std::chrono::milliseconds(300);
  options.connect_timeout = std::chrono::milliseconds(300);
  auto client = TcpTransport::Create(options);
  ASSERT_TRUE(client.ok());
  SegmentDescriptor d;
  d.name = "silent/seg";
  d.length = 100;
  d.tcp_endpoint = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  d.tcp_segment_id = 1;
  absl::Status s = (*client)->OpenSegment(d).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  ::close(listener);
}

TEST(TcpTransportOptionsTest, RejectsBadOptions) {
  TcpTransportOptions o;
  o.connections_per_peer = 0;
  EXPECT_EQ(TcpTransport::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = TcpTransportOptions();
  o.slice_bytes = 100;
  EXPECT_EQ(TcpTransport::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = TcpTransportOptions();
  o.listen_host = "no-such-host.invalid";
  EXPECT_FALSE(TcpTransport::Create(o).ok());
}

TEST_F(TcpTransportTest, ConcurrentSubmitsFromThreads) {
  constexpr int kThreads = 4;
  constexpr uint64_t kChunk = kSize / kThreads;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> out(kChunk), in(kChunk);
      for (int round = 0; round < 8; ++round) {
        const uint64_t seed = 1000 + t * 100 + round;
        FillPattern(out.data(), kChunk, seed);
        const uint64_t offset = t * kChunk;
        if (!RunOp(*client_, TransferOp::kWrite, out.data(), remote_.get(), offset, kChunk).ok() ||
            !RunOp(*client_, TransferOp::kRead, in.data(), remote_.get(), offset, kChunk).ok() ||
            in != out) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  ExpectGuardsIntact();
}

}  // namespace
}  // namespace crescent::kvstore
