// TcpTransport: one-sided reads and writes over TCP, for peers on other hosts without RDMA.
//
// Each node runs a data server (one thread per connection, blocking I/O). A write frame's payload
// is received straight into the registered segment and a read reply is sent straight from it: no
// per-byte copies or allocations on either side. Every frame is checked against the segment it
// names before any byte moves; a request outside the segment gets an OutOfRange reply, never a
// memory access.
//
// The client keeps `connections_per_peer` connections to each peer node. A transfer is cut into
// slices of `slice_bytes`, spread round-robin over the connections, and pipelined: each connection
// has a sender thread and a receiver thread, and at most `max_inflight_slices` slices and
// `max_inflight_bytes` bytes sent but not answered (back-pressure; small slices can have more in
// flight than large ones). A broken connection fails its slices with the socket's status and is
// replaced on the next use; a silent peer fails them with DeadlineExceeded after `io_timeout`.
//
// The data server also carries notifications and control calls (ControlChannel), in order with
// the data on the same connection.
#ifndef CRESCENT_KVSTORE_TRANSFER_TCP_TRANSPORT_H_
#define CRESCENT_KVSTORE_TRANSFER_TCP_TRANSPORT_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/transfer/transport.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

struct TcpTransportOptions {
  // Where the data server listens; port 0 picks a free port.
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;
  // The host peers dial; empty means listen_host, or this host's name when listening on 0.0.0.0.
  std::string advertise_host;
  // Run a data server (needed for peers to reach this node's segments and notifications).
  bool serve = true;

  int connections_per_peer = 4;
  uint64_t slice_bytes = 1ull << 20;         // 4 KiB .. 64 MiB
  int max_inflight_slices = 32;              // per connection
  uint64_t max_inflight_bytes = 4ull << 20;  // per connection; one slice may always be in flight
  // Hash each slice's data (XXH3) and check it at the other end: DataLoss on mismatch.
  bool checksum = false;
  // A peer that sends nothing for this long while an answer is owed is declared dead.
  std::chrono::milliseconds io_timeout{10000};
  std::chrono::milliseconds connect_timeout{3000};
  // SO_SNDBUF / SO_RCVBUF; 0 keeps the kernel's autotuning.
  int socket_buffer_bytes = 0;
};

class TcpTransport final : public Transport, public ControlChannel {
 public:
  // Starts the data server (when options.serve). Errors: InvalidArgument for bad options, or the
  // failed socket call's status (e.g. the port is taken).
  static absl::StatusOr<std::unique_ptr<TcpTransport>> Create(const TcpTransportOptions& options);

  // Shutdown() and release everything.
  ~TcpTransport() override;

  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  std::string_view name() const override { return "tcp"; }

  // The advertised "host:port" of the data server; empty when not serving.
  const std::string& endpoint() const { return endpoint_; }

  // Handler for notifications that arrive for this node's segments. Thread-safe.
  void SetNotificationHandler(NotificationHandler handler);

  absl::Status RegisterLocalSegment(const LocalSegment& segment,
                                    SegmentDescriptor* descriptor) override;
  absl::Status UnregisterLocalSegment(std::string_view name) override;
  // Connects to the owner's data server (if not yet connected) and checks that it serves the
  // segment with the descriptor's length: FailedPrecondition on a mismatch, NotFound when it does
  // not serve it, Unavailable when unreachable or the descriptor has no tcp endpoint.
  absl::StatusOr<std::shared_ptr<RemoteSegment>> OpenSegment(
      const SegmentDescriptor& descriptor) override;
  void Submit(const TransportOp& op, TransferCallback done) override;
  void Notify(RemoteSegment* target, std::string payload, TransferCallback done) override;
  void Shutdown() override;

  void SetControlHandler(uint32_t channel, Handler handler) override;
  absl::StatusOr<std::string> CallControl(const SegmentDescriptor& peer, uint32_t channel,
                                          std::string_view request,
                                          std::chrono::milliseconds timeout) override;

  // Implementation parts, defined in tcp_transport.cc.
  class Server;
  class Connection;
  class Peer;
  struct Slice;
  struct Tracker;

 private:
  explicit TcpTransport(const TcpTransportOptions& options);
  absl::StatusOr<std::shared_ptr<Peer>> GetPeer(const std::string& endpoint);
  // Runs a one-slice request and waits up to `timeout` for its answer; returns its tracker
  // (holding the reply) when it succeeded.
  absl::StatusOr<std::shared_ptr<Tracker>> RunSync(const std::shared_ptr<Peer>& peer, Slice slice,
                                                   std::chrono::milliseconds timeout);

  const TcpTransportOptions options_;
  std::unique_ptr<Server> server_;
  std::string endpoint_;
  std::atomic<bool> shut_down_{false};

  Mutex mu_;
  std::map<std::string, std::shared_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_TCP_TRANSPORT_H_
