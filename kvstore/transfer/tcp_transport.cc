#include "kvstore/transfer/tcp_transport.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kvstore/transfer/internal/clone_status.h"
#include "kvstore/transfer/internal/fan_in.h"
#include "kvstore/transfer/sys_check.h"
#include "kvstore/transfer/tcp_protocol.h"
#include "src/common/hash.h"
#include "src/common/logging.h"
#include "src/common/mutex.h"
#include "src/common/status.h"

#if defined(__SANITIZE_THREAD__)
#define CRESCENT_TRANSFER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CRESCENT_TRANSFER_TSAN 1
#endif
#endif

namespace crescent::kvstore {
namespace {

using Clock = std::chrono::steady_clock;

// Ordering that really travels through the kernel (a reply is sent after the data it covers was
// written, and received before the waiter is woken) is invisible to ThreadSanitizer when both ends
// live in one process. Every frame therefore passes a read-modify-write on this counter after it
// is received and before it is sent, which gives the same order a happens-before edge TSan can
// see. Across processes it is a harmless per-slice atomic increment.
std::atomic<uint64_t> g_frame_order{0};
void FrameOrderPoint() { g_frame_order.fetch_add(1, std::memory_order_acq_rel); }

// Splits "host:port". InvalidArgument if malformed.
absl::Status SplitEndpoint(const std::string& endpoint, std::string* host, uint16_t* port) {
  const size_t colon = endpoint.rfind(':');
  uint32_t p = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(endpoint.substr(colon + 1), &p) || p == 0 || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad tcp endpoint '", endpoint, "'"));
  }
  *host = endpoint.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  *port = static_cast<uint16_t>(p);
  return absl::OkStatus();
}

absl::Status SetSocketOptions(int fd, const TcpTransportOptions& options) {
  int one = 1;
  CRESCENT_RETURN_IF_ERROR(
      CRESCENT_SYS(::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))).status());
  timeval tv{};
  const int64_t ms = std::max<int64_t>(1, options.io_timeout.count());
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  CRESCENT_RETURN_IF_ERROR(
      CRESCENT_SYS(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))).status());
  CRESCENT_RETURN_IF_ERROR(
      CRESCENT_SYS(::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))).status());
  if (options.socket_buffer_bytes > 0) {
    const int bytes = options.socket_buffer_bytes;
    CRESCENT_RETURN_IF_ERROR(
        CRESCENT_SYS(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes))).status());
    CRESCENT_RETURN_IF_ERROR(
        CRESCENT_SYS(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes))).status());
  }
  return absl::OkStatus();
}

// Sends every byte of iov[0..iovcnt). Modifies iov. A send timeout (SO_SNDTIMEO) becomes
// DeadlineExceeded.
absl::Status SendAll(int fd, iovec* iov, int iovcnt) {
  msghdr msg{};
  while (iovcnt > 0) {
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(iovcnt);
    const ssize_t sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (sent < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        return absl::DeadlineExceededError(
            "tcp send made no progress within the io timeout (the peer stopped reading)");
      }
      return SysError(err, "sendmsg(fd, &msg, MSG_NOSIGNAL)", __FILE__, __LINE__);
    }
    size_t n = static_cast<size_t>(sent);
    while (iovcnt > 0 && n >= iov->iov_len) {
      n -= iov->iov_len;
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<uint8_t*>(iov->iov_base) + n;
      iov->iov_len -= n;
    }
  }
  return absl::OkStatus();
}

// Receives exactly n bytes. When the receive timeout (SO_RCVTIMEO) fires before the first byte,
// keep_waiting() decides whether to go on waiting; after the first byte a timeout is
// DeadlineExceeded. The peer closing the connection is Unavailable.
absl::Status RecvExact(int fd, void* buf, size_t n, const std::function<bool()>& keep_waiting) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::recv(fd, p + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
      continue;
    }
    if (r == 0) {
      return absl::UnavailableError(
          absl::StrCat("tcp connection closed by the peer after ", got, " of ", n, " bytes"));
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      if (got == 0 && keep_waiting && keep_waiting()) continue;
      return absl::DeadlineExceededError(absl::StrCat(
          "tcp peer sent nothing within the io timeout (", got, " of ", n, " bytes received)"));
    }
    return SysError(err, "recv(fd, buf, n, 0)", __FILE__, __LINE__);
  }
  return absl::OkStatus();
}

// Connects with a timeout and applies the socket options.
absl::StatusOr<int> ConnectTo(const std::string& host, uint16_t port,
                              const TcpTransportOptions& options) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const std::string port_text = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &result); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve tcp host '", host, "': ", ::gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(result, &::freeaddrinfo);
  absl::Status last = absl::UnavailableError(absl::StrCat("no address for '", host, "'"));
  for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    absl::StatusOr<int64_t> fd_or =
        CRESCENT_SYS(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_or.ok()) {
      last = fd_or.status();
      continue;
    }
    const int fd = static_cast<int>(*fd_or);
    auto fail = [&](absl::Status s) {
      ::close(fd);
      last = Annotate(s, absl::StrCat("connecting to ", host, ":", port));
    };
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        fail(SysError(errno, "connect(fd, addr, len)", __FILE__, __LINE__));
        continue;
      }
      pollfd pfd{fd, POLLOUT, 0};
      absl::StatusOr<int64_t> ready =
          CRESCENT_SYS(::poll(&pfd, 1, static_cast<int>(options.connect_timeout.count())));
      if (!ready.ok()) {
        fail(ready.status());
        continue;
      }
      if (*ready == 0) {
        fail(absl::DeadlineExceededError(
            absl::StrCat("no answer within ", options.connect_timeout.count(), " ms")));
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      if (absl::StatusOr<int64_t> r =
              CRESCENT_SYS(::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len));
          !r.ok()) {
        fail(r.status());
        continue;
      }
      if (err != 0) {
        fail(SysError(err, "connect(fd, addr, len)", __FILE__, __LINE__));
        continue;
      }
    }
    absl::StatusOr<int64_t> flags = CRESCENT_SYS(::fcntl(fd, F_GETFL));
    if (flags.ok()) {
      flags = CRESCENT_SYS(::fcntl(fd, F_SETFL, static_cast<int>(*flags) & ~O_NONBLOCK));
    }
    if (!flags.ok()) {
      fail(flags.status());
      continue;
    }
    if (absl::Status s = SetSocketOptions(fd, options); !s.ok()) {
      fail(s);
      continue;
    }
    return fd;
  }
  return last;
}

uint64_t RandomNonZero64() {
  static Mutex mu;
  static std::mt19937_64 rng(std::random_device{}() ^
                             static_cast<uint64_t>(Clock::now().time_since_epoch().count()));
  MutexLock lock(&mu);
  uint64_t v = 0;
  while (v == 0) v = rng();
  return v;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Client side.

// The shared state of one Submit / Notify / control call, completed when its last slice is.
struct TcpTransport::Tracker : internal::FanIn {
  using FanIn::FanIn;

  // Written by the receiver before Finish; read by the caller after done.
  std::string reply;
  uint64_t value = 0;
};

struct TcpTransport::Slice {
  tcp::Opcode opcode = tcp::Opcode::kWrite;
  uint8_t flags = 0;
  uint64_t segment_id = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint8_t* local = nullptr;  // kWrite source / kRead destination
  std::string payload;       // kNotify / kControl request
  std::shared_ptr<Tracker> tracker;
  uint64_t request_id = 0;
  Clock::time_point sent_at;
};

class TcpTransport::Connection {
 public:
  static absl::StatusOr<std::shared_ptr<Connection>> Open(const std::string& host, uint16_t port,
                                                          const TcpTransportOptions& options) {
    CRESCENT_ASSIGN_OR_RETURN(int fd, ConnectTo(host, port, options));
    auto conn =
        std::shared_ptr<Connection>(new Connection(fd, absl::StrCat(host, ":", port), options));
    conn->sender_ = std::thread([c = conn.get()] { c->SendLoop(); });
    conn->receiver_ = std::thread([c = conn.get()] { c->ReceiveLoop(); });
    return conn;
  }

  ~Connection() { Close(absl::CancelledError("tcp connection closed")); }

  // Queues `slice`, moving from it, and returns true; returns false (leaving it untouched) when
  // the connection is broken.
  bool Enqueue(Slice& slice) {
    {
      MutexLock lock(&mu_);
      if (broken_) return false;
      slice.request_id = next_request_id_++;
      queue_.push_back(std::move(slice));
    }
    cv_.SignalAll();
    return true;
  }

  bool broken() {
    MutexLock lock(&mu_);
    return broken_;
  }

  // Breaks the connection with `why` (failing what it holds) and joins its threads.
  // REQUIRES: not called on this connection's own threads.
  void Close(absl::Status why) {
    MarkBroken(std::move(why));
    if (sender_.joinable()) sender_.join();
    if (receiver_.joinable()) receiver_.join();
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  Connection(int fd, std::string endpoint, const TcpTransportOptions& options)
      : fd_(fd), endpoint_(std::move(endpoint)), options_(options) {}

  void MarkBroken(absl::Status why) {
    {
      MutexLock lock(&mu_);
      if (broken_) return;
      broken_ = true;
      error_ = Annotate(why, absl::StrCat("tcp connection to ", endpoint_));
    }
    // Wakes both threads out of blocking socket calls; the fd stays open until Close.
    ::shutdown(fd_, SHUT_RDWR);
    cv_.SignalAll();
  }

  void SendLoop() {
    for (;;) {
      Slice* s = nullptr;
      {
        MutexLock lock(&mu_);
        while (!broken_ && !CanSendLocked()) cv_.Wait(&mu_);
        if (broken_) break;
        inflight_bytes_ += queue_.front().length;
        inflight_.push_back(std::move(queue_.front()));
        queue_.pop_front();
        // std::deque keeps references to other elements valid across push_back / pop_front, and
        // the receiver leaves this slice alone while in_send_ points at it.
        s = &inflight_.back();
        s->sent_at = Clock::now();
        in_send_ = s;
      }
      tcp::RequestHeader h;
      h.opcode = s->opcode;
      h.flags = s->flags;
      h.request_id = s->request_id;
      h.segment_id = s->segment_id;
      h.offset = s->offset;
      h.length = s->length;
      if (s->opcode == tcp::Opcode::kWrite && (s->flags & tcp::kFlagChecksum) != 0) {
        h.checksum = Hash64(s->local, s->length);
      }
      uint8_t header[tcp::kRequestHeaderSize];
      tcp::EncodeRequest(h, header);
      iovec iov[2] = {{header, sizeof(header)}, {nullptr, 0}};
      int iovcnt = 1;
      if (s->opcode == tcp::Opcode::kWrite) {
        iov[1] = {s->local, s->length};
        iovcnt = 2;
      } else if (s->opcode == tcp::Opcode::kNotify || s->opcode == tcp::Opcode::kControl) {
        iov[1] = {s->payload.data(), s->payload.size()};
        iovcnt = 2;
      }
      FrameOrderPoint();
      absl::Status status = SendAll(fd_, iov, iovcnt);
      {
        MutexLock lock(&mu_);
        in_send_ = nullptr;
      }
      cv_.SignalAll();
      if (!status.ok()) {
        MarkBroken(status);
        break;
      }
    }
    {
      MutexLock lock(&mu_);
      sender_done_ = true;
    }
    cv_.SignalAll();
  }

  // Whether the next queued slice may be sent now (the in-flight bounds).
  bool CanSendLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty()) return false;
    if (inflight_.empty()) return true;
    return static_cast<int>(inflight_.size()) < options_.max_inflight_slices &&
           inflight_bytes_ + queue_.front().length <= options_.max_inflight_bytes;
  }

  // Whether to keep waiting for a reply header after a quiet io_timeout: yes while nothing owed
  // has been outstanding for a whole io_timeout.
  bool KeepWaiting() {
    MutexLock lock(&mu_);
    if (broken_) return false;
    if (inflight_.empty()) return true;
    return Clock::now() - inflight_.front().sent_at < options_.io_timeout;
  }

  // Receives one reply for `s` (the oldest slice in flight). Returns the operation's own status
  // in *op_status; a non-OK return means the stream is broken.
  absl::Status ReceiveReply(const tcp::ReplyHeader& reply, Slice& s, absl::Status* op_status) {
    if (reply.request_id != s.request_id || reply.opcode != s.opcode) {
      return absl::InternalError(
          absl::StrCat("tcp reply out of order: got request ", reply.request_id, " opcode ",
                       static_cast<int>(reply.opcode), ", expected ", s.request_id, " opcode ",
                       static_cast<int>(s.opcode)));
    }
    if (reply.code != absl::StatusCode::kOk) {
      std::string message(reply.length, '\0');
      CRESCENT_RETURN_IF_ERROR(RecvExact(fd_, message.data(), message.size(), nullptr));
      *op_status = absl::Status(reply.code, absl::StrCat("tcp peer ", endpoint_, ": ", message));
      return absl::OkStatus();
    }
    switch (s.opcode) {
      case tcp::Opcode::kRead:
        if (reply.length != s.length) {
          return absl::InternalError(absl::StrCat("tcp read reply carries ", reply.length,
                                                  " bytes, asked for ", s.length));
        }
        CRESCENT_RETURN_IF_ERROR(RecvExact(fd_, s.local, s.length, nullptr));
        if ((s.flags & tcp::kFlagChecksum) != 0 && Hash64(s.local, s.length) != reply.checksum) {
          *op_status = absl::DataLossError(absl::StrCat("tcp read of ", s.length,
                                                        " bytes at offset ", s.offset, " from ",
                                                        endpoint_, " arrived with a bad checksum"));
        }
        return absl::OkStatus();
      case tcp::Opcode::kControl:
        s.tracker->reply.resize(reply.length);
        return RecvExact(fd_, s.tracker->reply.data(), reply.length, nullptr);
      case tcp::Opcode::kQuery:
        s.tracker->value = reply.value;
        [[fallthrough]];
      case tcp::Opcode::kWrite:
      case tcp::Opcode::kNotify:
        if (reply.length != 0) {
          return absl::InternalError(absl::StrCat("tcp reply to opcode ",
                                                  static_cast<int>(s.opcode), " carries ",
                                                  reply.length, " unexpected bytes"));
        }
        return absl::OkStatus();
    }
    return absl::InternalError("unknown opcode");
  }

  void ReceiveLoop() {
    const std::function<bool()> keep_waiting = [this] { return KeepWaiting(); };
    absl::Status failure;
    for (;;) {
      uint8_t header[tcp::kReplyHeaderSize];
      failure = RecvExact(fd_, header, sizeof(header), keep_waiting);
      if (!failure.ok()) break;
      FrameOrderPoint();
      absl::StatusOr<tcp::ReplyHeader> reply = tcp::DecodeReply(header);
      if (!reply.ok()) {
        failure = reply.status();
        break;
      }
      Slice* s = nullptr;
      {
        MutexLock lock(&mu_);
        if (!inflight_.empty()) s = &inflight_.front();
      }
      if (s == nullptr) {
        failure = absl::InternalError(
            absl::StrCat("tcp reply to request ", reply->request_id, " that was never sent"));
        break;
      }
      absl::Status op_status;
      failure = ReceiveReply(*reply, *s, &op_status);
      if (!failure.ok()) break;
      FrameOrderPoint();
      Slice done;
      {
        MutexLock lock(&mu_);
        // The sender may still be returning from the call that sent this slice.
        while (in_send_ == s) cv_.Wait(&mu_);
        done = std::move(inflight_.front());
        inflight_.pop_front();
        inflight_bytes_ -= done.length;
      }
      cv_.SignalAll();
      done.tracker->Finish(std::move(op_status));
    }
    MarkBroken(failure);
    std::deque<Slice> failed;
    absl::Status error;
    {
      MutexLock lock(&mu_);
      while (!sender_done_) cv_.Wait(&mu_);
      failed.swap(inflight_);
      for (Slice& s : queue_) failed.push_back(std::move(s));
      queue_.clear();
      error = internal::CloneStatus(error_);
    }
    for (Slice& s : failed) s.tracker->Finish(internal::CloneStatus(error));
  }

  int fd_;
  const std::string endpoint_;
  const TcpTransportOptions& options_;
  std::thread sender_;
  std::thread receiver_;

  Mutex mu_;
  CondVar cv_;
  std::deque<Slice> queue_ ABSL_GUARDED_BY(mu_);     // not yet sent
  std::deque<Slice> inflight_ ABSL_GUARDED_BY(mu_);  // sent, answer owed, in send order
  uint64_t inflight_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  const Slice* in_send_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool sender_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

class TcpTransport::Peer {
 public:
  Peer(std::string host, uint16_t port, const TcpTransportOptions& options)
      : host_(std::move(host)),
        port_(port),
        options_(options),
        pool_size_(static_cast<size_t>(std::max(1, options.connections_per_peer))),
        connections_(pool_size_) {}

  // Queues `slice` on connection `index` (mod the pool size), reconnecting a broken connection
  // once; fails the slice when that does not work.
  void Dispatch(uint64_t index, Slice slice) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      absl::StatusOr<std::shared_ptr<Connection>> conn = Get(index % pool_size_);
      if (!conn.ok()) {
        slice.tracker->Finish(conn.status());
        return;
      }
      if ((*conn)->Enqueue(slice)) return;
    }
    slice.tracker->Finish(absl::UnavailableError(
        absl::StrCat("tcp connection to ", host_, ":", port_, " broke twice in a row")));
  }

  uint64_t NextIndex(uint64_t slices) { return next_.fetch_add(slices, std::memory_order_relaxed); }

  void Close(const absl::Status& why) {
    std::vector<std::shared_ptr<Connection>> all;
    {
      MutexLock lock(&mu_);
      closed_ = true;
      for (auto& c : connections_) {
        if (c) all.push_back(std::move(c));
      }
      for (auto& c : retired_) all.push_back(std::move(c));
      retired_.clear();
    }
    for (auto& c : all) c->Close(why);
  }

 private:
  absl::StatusOr<std::shared_ptr<Connection>> Get(size_t i) {
    MutexLock lock(&mu_);
    if (closed_) return absl::CancelledError("tcp transport is shut down");
    std::shared_ptr<Connection>& slot = connections_[i];
    if (slot && !slot->broken()) return slot;
    // A broken connection's threads may be running this very call (a completion callback that
    // submits more work), so it is retired here and joined at Close.
    if (slot) retired_.push_back(std::move(slot));
    CRESCENT_ASSIGN_OR_RETURN(slot, Connection::Open(host_, port_, options_));
    return slot;
  }

  const std::string host_;
  const uint16_t port_;
  const TcpTransportOptions options_;  // a copy: remote segments may outlive the transport
  const size_t pool_size_;
  std::atomic<uint64_t> next_{0};
  Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Connection>> retired_ ABSL_GUARDED_BY(mu_);
};

namespace {

class TcpRemoteSegment final : public RemoteSegment {
 public:
  TcpRemoteSegment(SegmentDescriptor descriptor, std::shared_ptr<TcpTransport::Peer> peer)
      : RemoteSegment(std::move(descriptor)), peer_(std::move(peer)) {}
  TcpTransport::Peer* peer() const { return peer_.get(); }

 private:
  std::shared_ptr<TcpTransport::Peer> peer_;
};

}  // namespace

// ------------------------------------------------------------------------------------------------
// Server side.

class TcpTransport::Server {
 public:
  Server(const TcpTransportOptions& options) : options_(options) {}
  ~Server() { Stop(); }

  absl::Status Start() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* result = nullptr;
    const std::string port_text = std::to_string(options_.listen_port);
    const char* host = options_.listen_host.empty() ? nullptr : options_.listen_host.c_str();
    if (int rc = ::getaddrinfo(host, port_text.c_str(), &hints, &result); rc != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot resolve tcp listen host '", options_.listen_host, "': ", ::gai_strerror(rc)));
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(result, &::freeaddrinfo);
    CRESCENT_ASSIGN_OR_RETURN(
        int64_t fd, CRESCENT_SYS(::socket(result->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)));
    listen_fd_ = static_cast<int>(fd);
    int one = 1;
    CRESCENT_RETURN_IF_ERROR(
        CRESCENT_SYS(::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
            .status());
    CRESCENT_RETURN_IF_ERROR(
        Annotate(CRESCENT_SYS(::bind(listen_fd_, result->ai_addr, result->ai_addrlen)).status(),
                 absl::StrCat("binding the tcp data server to ", options_.listen_host, ":",
                              options_.listen_port)));
    CRESCENT_RETURN_IF_ERROR(CRESCENT_SYS(::listen(listen_fd_, 128)).status());
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    CRESCENT_RETURN_IF_ERROR(
        CRESCENT_SYS(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len)).status());
    port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                             : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    return absl::OkStatus();
  }

  uint16_t port() const { return port_; }

  void Stop() {
    std::list<ServerConnection> conns;
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
      for (auto& c : conns_) ::shutdown(c.fd, SHUT_RDWR);
    }
    if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      MutexLock lock(&mu_);
      conns.swap(conns_);
    }
    for (auto& c : conns) {
      c.thread.join();
      ::close(c.fd);
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }

  absl::StatusOr<uint64_t> Register(const LocalSegment& segment) {
    MutexLock lock(&mu_);
    if (ids_.count(segment.name) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("segment '", segment.name, "' is already served over tcp"));
    }
    uint64_t id = RandomNonZero64();
    while (segments_.count(id) != 0) id = RandomNonZero64();
    auto served = std::make_shared<Served>();
    served->name = segment.name;
    served->base = static_cast<uint8_t*>(segment.addr);
    served->length = segment.length;
    segments_[id] = std::move(served);
    ids_[segment.name] = id;
    return id;
  }

  absl::Status Unregister(std::string_view name) {
    MutexLock lock(&mu_);
    auto it = ids_.find(name);
    if (it == ids_.end()) {
      return absl::NotFoundError(
          absl::StrCat("segment '", std::string(name), "' is not served over tcp"));
    }
    std::shared_ptr<Served> served = segments_[it->second];
    segments_.erase(it->second);
    ids_.erase(it);
    // Frames already working on the segment hold a use; they end within the io timeout.
    while (served->users > 0) cv_.Wait(&mu_);
    return absl::OkStatus();
  }

  void SetNotificationHandler(NotificationHandler handler) {
    MutexLock lock(&mu_);
    notification_handler_ = std::move(handler);
  }

  void SetControlHandler(uint32_t channel, ControlChannel::Handler handler) {
    MutexLock lock(&mu_);
    control_handlers_[channel] = std::move(handler);
  }

 private:
  struct Served {
    std::string name;
    uint8_t* base = nullptr;
    uint64_t length = 0;
    int users = 0;  // guarded by Server::mu_
  };

  struct ServerConnection {
    int fd = -1;
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> finished;
  };

  // A segment in use by one frame; released on destruction.
  class Use {
   public:
    Use(Server* server, std::shared_ptr<Served> served)
        : server_(server), served_(std::move(served)) {}
    ~Use() {
      if (!served_) return;
      {
        MutexLock lock(&server_->mu_);
        --served_->users;
      }
      server_->cv_.SignalAll();
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    const Served* get() const { return served_.get(); }

   private:
    Server* server_;
    std::shared_ptr<Served> served_;
  };

  Use Acquire(uint64_t id) {
    MutexLock lock(&mu_);
    auto it = segments_.find(id);
    if (it == segments_.end()) return Use(this, nullptr);
    ++it->second->users;
    return Use(this, it->second);
  }

  void AcceptLoop() {
    for (;;) {
      absl::StatusOr<int64_t> fd =
          CRESCENT_SYS(::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
      MutexLock lock(&mu_);
      ReapFinished();
      if (stopping_) {
        if (fd.ok()) ::close(static_cast<int>(*fd));
        return;
      }
      if (!fd.ok()) {
        if (absl::IsResourceExhausted(fd.status())) {
          CRESCENT_LOG(warn, "tcp data server: {}", std::string(fd.status().message()));
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;
        }
        CRESCENT_LOG(warn, "tcp data server stops accepting: {}",
                     std::string(fd.status().message()));
        return;
      }
      const int cfd = static_cast<int>(*fd);
      if (absl::Status s = SetSocketOptions(cfd, options_); !s.ok()) {
        CRESCENT_LOG(warn, "tcp data server: {}", std::string(s.message()));
        ::close(cfd);
        continue;
      }
      auto finished = std::make_shared<std::atomic<bool>>(false);
      conns_.push_back(ServerConnection{cfd, std::thread(), finished});
      conns_.back().thread = std::thread([this, cfd, finished] {
        ServeConnection(cfd);
        // The peer sees the close now; the fd itself is closed when the thread is reaped, so
        // that Stop never shuts down a recycled descriptor number.
        ::shutdown(cfd, SHUT_RDWR);
        finished->store(true, std::memory_order_release);
      });
    }
  }

  void ReapFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (it->finished->load(std::memory_order_acquire)) {
        it->thread.join();
        ::close(it->fd);
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }

  absl::Status Reply(int fd, const tcp::RequestHeader& request, const absl::Status& status,
                     uint64_t value = 0, std::string_view payload = {}) {
    tcp::ReplyHeader reply;
    reply.opcode = request.opcode;
    reply.code = status.code();
    reply.request_id = request.request_id;
    reply.value = value;
    std::string message;
    if (!status.ok()) {
      message = std::string(status.message()).substr(0, tcp::kMaxControlBytes);
      payload = message;
    }
    reply.length = payload.size();
    uint8_t header[tcp::kReplyHeaderSize];
    tcp::EncodeReply(reply, header);
    iovec iov[2] = {{header, sizeof(header)}, {const_cast<char*>(payload.data()), payload.size()}};
    FrameOrderPoint();
    return SendAll(fd, iov, payload.empty() ? 1 : 2);
  }

  // Discards `length` payload bytes of a rejected frame so that the stream stays in step.
  absl::Status Drain(int fd, uint64_t length, std::vector<uint8_t>& scratch) {
    if (scratch.size() < (64 << 10)) scratch.resize(64 << 10);
    while (length > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(length, scratch.size()));
      CRESCENT_RETURN_IF_ERROR(RecvExact(fd, scratch.data(), n, nullptr));
      length -= n;
    }
    return absl::OkStatus();
  }

  static absl::Status NotServed(uint64_t id) {
    return absl::NotFoundError(absl::StrCat("segment id ", id, " is not served here"));
  }

  // Serves one frame; a non-OK return closes the connection.
  absl::Status ServeFrame(int fd, const tcp::RequestHeader& h, std::vector<uint8_t>& scratch,
                          std::string& payload) {
    switch (h.opcode) {
      case tcp::Opcode::kWrite: {
        Use use = Acquire(h.segment_id);
        absl::Status status = use.get() == nullptr
                                  ? NotServed(h.segment_id)
                                  : tcp::CheckBounds(h.offset, h.length, use.get()->length);
        if (!status.ok()) {
          CRESCENT_RETURN_IF_ERROR(Drain(fd, h.length, scratch));
          return Reply(fd, h, Annotate(status, "write rejected"));
        }
        uint8_t* dst = use.get()->base + h.offset;
        CRESCENT_RETURN_IF_ERROR(RecvExact(fd, dst, h.length, nullptr));
        if ((h.flags & tcp::kFlagChecksum) != 0 && Hash64(dst, h.length) != h.checksum) {
          status = absl::DataLossError(absl::StrCat("write of ", h.length, " bytes at offset ",
                                                    h.offset, " of '", use.get()->name,
                                                    "' arrived with a bad checksum"));
        }
        return Reply(fd, h, status);
      }
      case tcp::Opcode::kRead: {
        Use use = Acquire(h.segment_id);
        absl::Status status = use.get() == nullptr
                                  ? NotServed(h.segment_id)
                                  : tcp::CheckBounds(h.offset, h.length, use.get()->length);
        if (!status.ok()) return Reply(fd, h, Annotate(status, "read rejected"));
        const uint8_t* src = use.get()->base + h.offset;
#ifdef CRESCENT_TRANSFER_TSAN
        // ThreadSanitizer records what a send read only after the call returns, by which time
        // the requester may have the data and have moved on to overwrite it; sending a private
        // copy keeps that late record off the segment. TSan builds only.
        scratch.assign(src, src + h.length);
        src = scratch.data();
#endif
        tcp::ReplyHeader reply;
        reply.opcode = h.opcode;
        reply.request_id = h.request_id;
        reply.length = h.length;
        if ((h.flags & tcp::kFlagChecksum) != 0) reply.checksum = Hash64(src, h.length);
        uint8_t header[tcp::kReplyHeaderSize];
        tcp::EncodeReply(reply, header);
        iovec iov[2] = {{header, sizeof(header)}, {const_cast<uint8_t*>(src), h.length}};
        FrameOrderPoint();
        return SendAll(fd, iov, 2);
      }
      case tcp::Opcode::kNotify: {
        payload.resize(h.length);
        CRESCENT_RETURN_IF_ERROR(RecvExact(fd, payload.data(), h.length, nullptr));
        Use use = Acquire(h.segment_id);
        if (use.get() == nullptr) return Reply(fd, h, NotServed(h.segment_id));
        NotificationHandler handler;
        {
          MutexLock lock(&mu_);
          handler = notification_handler_;
        }
        if (!handler) {
          return Reply(
              fd, h,
              absl::FailedPreconditionError("no notification handler is set on the target node"));
        }
        return Reply(fd, h, handler(use.get()->name, payload));
      }
      case tcp::Opcode::kQuery: {
        Use use = Acquire(h.segment_id);
        if (use.get() == nullptr) return Reply(fd, h, NotServed(h.segment_id));
        return Reply(fd, h, absl::OkStatus(), use.get()->length);
      }
      case tcp::Opcode::kControl: {
        payload.resize(h.length);
        CRESCENT_RETURN_IF_ERROR(RecvExact(fd, payload.data(), h.length, nullptr));
        ControlChannel::Handler handler;
        {
          MutexLock lock(&mu_);
          auto it = control_handlers_.find(h.segment_id);
          if (it != control_handlers_.end()) handler = it->second;
        }
        if (!handler) {
          return Reply(fd, h,
                       absl::UnimplementedError(
                           absl::StrCat("no handler for control channel ", h.segment_id)));
        }
        absl::StatusOr<std::string> answer = handler(payload);
        if (!answer.ok()) return Reply(fd, h, answer.status());
        if (answer->size() > tcp::kMaxControlBytes) {
          return Reply(fd, h, absl::InternalError("control reply exceeds the frame limit"));
        }
        return Reply(fd, h, absl::OkStatus(), 0, *answer);
      }
    }
    return absl::InternalError("unknown opcode");
  }

  void ServeConnection(int fd) {
    std::vector<uint8_t> scratch(64 << 10);
    std::string payload;
    const std::function<bool()> keep_waiting = [this] {
      MutexLock lock(&mu_);
      return !stopping_;
    };
    for (;;) {
      uint8_t header[tcp::kRequestHeaderSize];
      absl::Status status = RecvExact(fd, header, sizeof(header), keep_waiting);
      if (!status.ok()) {
        if (!absl::IsUnavailable(status)) {
          CRESCENT_LOG(debug, "tcp data server: closing a connection: {}",
                       std::string(status.message()));
        }
        return;
      }
      FrameOrderPoint();
      absl::StatusOr<tcp::RequestHeader> request = tcp::DecodeRequest(header);
      if (!request.ok()) {
        // The stream cannot be trusted after a bad header: close it.
        CRESCENT_LOG(warn, "tcp data server: closing a connection after a bad frame: {}",
                     std::string(request.status().message()));
        return;
      }
      status = ServeFrame(fd, *request, scratch, payload);
      if (!status.ok()) {
        CRESCENT_LOG(debug, "tcp data server: closing a connection: {}",
                     std::string(status.message()));
        return;
      }
    }
  }

  const TcpTransportOptions& options_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread accept_thread_;

  Mutex mu_;
  CondVar cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::unordered_map<uint64_t, std::shared_ptr<Served>> segments_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t, std::less<>> ids_ ABSL_GUARDED_BY(mu_);
  std::list<ServerConnection> conns_ ABSL_GUARDED_BY(mu_);
  NotificationHandler notification_handler_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, ControlChannel::Handler> control_handlers_ ABSL_GUARDED_BY(mu_);
};

// ------------------------------------------------------------------------------------------------
// TcpTransport.

TcpTransport::TcpTransport(const TcpTransportOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<TcpTransport>> TcpTransport::Create(
    const TcpTransportOptions& options) {
  if (options.connections_per_peer < 1 || options.connections_per_peer > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tcp connections_per_peer ", options.connections_per_peer, " is outside [1, 64]"));
  }
  if (options.slice_bytes < 4096 || options.slice_bytes > tcp::kMaxDataFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tcp slice_bytes ", options.slice_bytes,
                                                   " is outside [4096, ", tcp::kMaxDataFrameBytes,
                                                   "]"));
  }
  if (options.max_inflight_slices < 1 || options.max_inflight_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tcp max_inflight_slices ", options.max_inflight_slices,
                     " and max_inflight_bytes ", options.max_inflight_bytes, " must be positive"));
  }
  if (options.io_timeout.count() <= 0 || options.connect_timeout.count() <= 0) {
    return absl::InvalidArgumentError("tcp timeouts must be positive");
  }
  auto transport = std::unique_ptr<TcpTransport>(new TcpTransport(options));
  if (options.serve) {
    transport->server_ = std::make_unique<Server>(transport->options_);
    CRESCENT_RETURN_IF_ERROR(transport->server_->Start());
    std::string host = options.advertise_host;
    if (host.empty()) {
      host = options.listen_host;
      if (host.empty() || host == "0.0.0.0" || host == "::") {
        char name[256] = {};
        ::gethostname(name, sizeof(name) - 1);
        host = name;
      }
    }
    if (host.find(':') != std::string::npos) host = absl::StrCat("[", host, "]");
    transport->endpoint_ = absl::StrCat(host, ":", transport->server_->port());
  }
  return transport;
}

TcpTransport::~TcpTransport() { Shutdown(); }

void TcpTransport::Shutdown() {
  if (shut_down_.exchange(true)) return;
  std::map<std::string, std::shared_ptr<Peer>> peers;
  {
    MutexLock lock(&mu_);
    peers.swap(peers_);
  }
  for (auto& [endpoint, peer] : peers) peer->Close(absl::CancelledError("tcp transport shut down"));
  if (server_) server_->Stop();
}

void TcpTransport::SetNotificationHandler(NotificationHandler handler) {
  if (server_) server_->SetNotificationHandler(std::move(handler));
}

void TcpTransport::SetControlHandler(uint32_t channel, Handler handler) {
  if (server_) server_->SetControlHandler(channel, std::move(handler));
}

absl::Status TcpTransport::RegisterLocalSegment(const LocalSegment& segment,
                                                SegmentDescriptor* descriptor) {
  if (!server_) return absl::OkStatus();  // not serving: unreachable over tcp
  CRESCENT_ASSIGN_OR_RETURN(uint64_t id, server_->Register(segment));
  descriptor->tcp_endpoint = endpoint_;
  descriptor->tcp_segment_id = id;
  return absl::OkStatus();
}

absl::Status TcpTransport::UnregisterLocalSegment(std::string_view name) {
  if (!server_) return absl::OkStatus();
  return server_->Unregister(name);
}

absl::StatusOr<std::shared_ptr<TcpTransport::Peer>> TcpTransport::GetPeer(
    const std::string& endpoint) {
  MutexLock lock(&mu_);
  if (shut_down_.load()) return absl::CancelledError("tcp transport is shut down");
  auto it = peers_.find(endpoint);
  if (it != peers_.end()) return it->second;
  std::string host;
  uint16_t port = 0;
  CRESCENT_RETURN_IF_ERROR(SplitEndpoint(endpoint, &host, &port));
  auto peer = std::make_shared<Peer>(host, port, options_);
  peers_[endpoint] = peer;
  return peer;
}

absl::StatusOr<std::shared_ptr<TcpTransport::Tracker>> TcpTransport::RunSync(
    const std::shared_ptr<Peer>& peer, Slice slice, std::chrono::milliseconds timeout) {
  struct Waiter {
    Mutex mu;
    CondVar cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::Status status ABSL_GUARDED_BY(mu);
  };
  auto waiter = std::make_shared<Waiter>();
  slice.tracker = std::make_shared<Tracker>(1, [waiter](absl::Status s) {
    {
      MutexLock lock(&waiter->mu);
      waiter->done = true;
      waiter->status = std::move(s);
    }
    waiter->cv.SignalAll();
  });
  std::shared_ptr<Tracker> tracker = slice.tracker;
  peer->Dispatch(peer->NextIndex(1), std::move(slice));
  const auto deadline = Clock::now() + timeout;
  MutexLock lock(&waiter->mu);
  while (!waiter->done && waiter->cv.WaitUntil(&waiter->mu, deadline)) {
  }
  if (!waiter->done) {
    return absl::DeadlineExceededError(
        absl::StrCat("no tcp answer within ", timeout.count(), " ms"));
  }
  CRESCENT_RETURN_IF_ERROR(std::move(waiter->status));
  return tracker;
}

absl::StatusOr<std::shared_ptr<RemoteSegment>> TcpTransport::OpenSegment(
    const SegmentDescriptor& descriptor) {
  if (descriptor.tcp_endpoint.empty()) {
    return absl::UnavailableError(
        absl::StrCat("segment '", descriptor.name, "' has no tcp endpoint"));
  }
  CRESCENT_ASSIGN_OR_RETURN(std::shared_ptr<Peer> peer, GetPeer(descriptor.tcp_endpoint));
  Slice query;
  query.opcode = tcp::Opcode::kQuery;
  query.segment_id = descriptor.tcp_segment_id;
  absl::StatusOr<std::shared_ptr<Tracker>> answer =
      RunSync(peer, std::move(query), options_.connect_timeout + options_.io_timeout);
  if (!answer.ok()) {
    return Annotate(answer.status(), absl::StrCat("opening segment '", descriptor.name, "' at ",
                                                  descriptor.tcp_endpoint));
  }
  const std::shared_ptr<Tracker>& tracker = *answer;
  if (tracker->value != descriptor.length) {
    return absl::FailedPreconditionError(
        absl::StrCat("segment '", descriptor.name, "': the directory says ", descriptor.length,
                     " bytes, its tcp server serves ", tracker->value));
  }
  return std::make_shared<TcpRemoteSegment>(descriptor, std::move(peer));
}

void TcpTransport::Submit(const TransportOp& op, TransferCallback done) {
  if (shut_down_.load()) {
    std::move(done)(absl::CancelledError("tcp transport is shut down"));
    return;
  }
  if (op.length == 0) {
    std::move(done)(absl::OkStatus());
    return;
  }
  auto* remote = static_cast<TcpRemoteSegment*>(op.target);
  const uint64_t slice_bytes = options_.slice_bytes;
  const uint64_t slices = (op.length + slice_bytes - 1) / slice_bytes;
  auto tracker = std::make_shared<Tracker>(static_cast<int>(slices), std::move(done));
  Peer* peer = remote->peer();
  const uint64_t first = peer->NextIndex(slices);
  for (uint64_t i = 0; i < slices; ++i) {
    Slice s;
    s.opcode = op.op == TransferOp::kWrite ? tcp::Opcode::kWrite : tcp::Opcode::kRead;
    s.flags = options_.checksum ? tcp::kFlagChecksum : 0;
    s.segment_id = remote->descriptor().tcp_segment_id;
    s.offset = op.target_offset + i * slice_bytes;
    s.length = std::min(slice_bytes, op.length - i * slice_bytes);
    s.local = static_cast<uint8_t*>(op.local_addr) + i * slice_bytes;
    s.tracker = tracker;
    peer->Dispatch(first + i, std::move(s));
  }
}

void TcpTransport::Notify(RemoteSegment* target, std::string payload, TransferCallback done) {
  if (shut_down_.load()) {
    std::move(done)(absl::CancelledError("tcp transport is shut down"));
    return;
  }
  if (payload.size() > tcp::kMaxControlBytes) {
    std::move(done)(absl::InvalidArgumentError(absl::StrCat(
        "notification of ", payload.size(), " bytes exceeds ", tcp::kMaxControlBytes)));
    return;
  }
  auto* remote = static_cast<TcpRemoteSegment*>(target);
  Slice s;
  s.opcode = tcp::Opcode::kNotify;
  s.segment_id = remote->descriptor().tcp_segment_id;
  s.length = payload.size();
  s.payload = std::move(payload);
  s.tracker = std::make_shared<Tracker>(1, std::move(done));
  Peer* peer = remote->peer();
  peer->Dispatch(peer->NextIndex(1), std::move(s));
}

absl::StatusOr<std::string> TcpTransport::CallControl(const SegmentDescriptor& peer_segment,
                                                      uint32_t channel, std::string_view request,
                                                      std::chrono::milliseconds timeout) {
  if (peer_segment.tcp_endpoint.empty()) {
    return absl::UnavailableError(
        absl::StrCat("segment '", peer_segment.name, "' has no tcp endpoint for control calls"));
  }
  if (request.size() > tcp::kMaxControlBytes) {
    return absl::InvalidArgumentError("control request exceeds the frame limit");
  }
  CRESCENT_ASSIGN_OR_RETURN(std::shared_ptr<Peer> peer, GetPeer(peer_segment.tcp_endpoint));
  Slice s;
  s.opcode = tcp::Opcode::kControl;
  s.segment_id = channel;
  s.length = request.size();
  s.payload = std::string(request);
  CRESCENT_ASSIGN_OR_RETURN(std::shared_ptr<Tracker> tracker, RunSync(peer, std::move(s), timeout));
  return std::move(tracker->reply);
}

}  // namespace crescent::kvstore
