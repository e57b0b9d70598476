// Transport: one way of moving bytes between this node's memory and a peer's segment.
//
// Implementations: ShmTransport (same host, memcpy through a shared mapping), TcpTransport (a
// data server per node), RdmaTransport (one-sided verbs), and FaultTransport (a wrapper that
// injects faults, for tests). The TransferEngine owns one of each it can create and picks one per
// peer segment; it validates requests (bounds, handles) before they reach a transport, and a
// transport re-checks what it cannot trust (the tcp server checks every frame).
#ifndef CRESCENT_KVSTORE_TRANSFER_TRANSPORT_H_
#define CRESCENT_KVSTORE_TRANSFER_TRANSPORT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/transfer/segment.h"

namespace crescent::kvstore {

// Direction of a one-sided transfer, seen from the initiator: kRead copies target -> local,
// kWrite copies local -> target.
enum class TransferOp : uint8_t { kRead = 0, kWrite = 1 };

std::string_view TransferOpName(TransferOp op);

// Local memory being made reachable by peers.
struct LocalSegment {
  std::string name;
  void* addr = nullptr;
  uint64_t length = 0;
  // A memfd holding exactly this memory (mapped MAP_SHARED at addr), or -1. Only memfd-backed
  // segments can be reached through shared memory. Not owned by the transport.
  int memfd = -1;
};

// A transport's handle on a peer's segment (a mapping, a connection pool, a queue pair).
// Created by Transport::OpenSegment and only ever used with the transport that created it.
// Thread-safe; shared by every request that targets the segment.
class RemoteSegment {
 public:
  virtual ~RemoteSegment() = default;
  const SegmentDescriptor& descriptor() const { return descriptor_; }

 protected:
  explicit RemoteSegment(SegmentDescriptor descriptor) : descriptor_(std::move(descriptor)) {}

 private:
  const SegmentDescriptor descriptor_;
};

// One transfer handed to a transport. REQUIRES (checked by the engine): target_offset + length <=
// target->descriptor().length, local_addr valid for length bytes until completion.
struct TransportOp {
  TransferOp op = TransferOp::kRead;
  void* local_addr = nullptr;
  RemoteSegment* target = nullptr;
  uint64_t target_offset = 0;
  uint64_t length = 0;
};

// Called exactly once per operation, from any thread (possibly before Submit returns), with OK
// once the bytes are in place: for kWrite visible to the target, for kRead in local memory.
// Must not block for long: it may run on a transport's I/O thread.
using TransferCallback = absl::AnyInvocable<void(absl::Status) &&>;

// Called on the target node for each notification, on a transport thread; must be thread-safe
// and quick. `segment` is the name of the target's segment the sender addressed. The returned
// status goes back to the sender (a non-OK one fails the sender's requests).
using NotificationHandler =
    std::function<absl::Status(std::string_view segment, std::string_view payload)>;

class Transport {
 public:
  virtual ~Transport() = default;

  // "shm", "tcp", "rdma", or a wrapper's name.
  virtual std::string_view name() const = 0;

  // Makes `segment` reachable by peers through this transport and fills in this transport's
  // fields of `*descriptor` (leaving them empty when it cannot serve this segment, e.g. shm for
  // memory that is not in a memfd). The memory stays owned by the caller and must stay valid until
  // UnregisterLocalSegment returns. Errors: AlreadyExists for a registered name, or the failed
  // system call's status. Thread-safe.
  virtual absl::Status RegisterLocalSegment(const LocalSegment& segment,
                                            SegmentDescriptor* descriptor) = 0;

  // Stops serving `name`; returns once no peer operation on it is in progress. NotFound if
  // unknown. Thread-safe.
  virtual absl::Status UnregisterLocalSegment(std::string_view name) = 0;

  // Opens a peer's segment. Unavailable when this transport cannot reach it (other host, no
  // endpoint, no device); other errors from the connection attempt. Thread-safe.
  virtual absl::StatusOr<std::shared_ptr<RemoteSegment>> OpenSegment(
      const SegmentDescriptor& descriptor) = 0;

  // Starts `op` and returns at once; `done` reports the outcome. A transport slices large
  // operations as suits it. After Shutdown, done(Cancelled). Thread-safe.
  // REQUIRES: op.target came from this transport's OpenSegment and is kept alive until done runs.
  virtual void Submit(const TransportOp& op, TransferCallback done) = 0;

  // Delivers `payload` to the target node's NotificationHandler after every operation this
  // transport completed earlier is visible there; done(OK) once the handler has returned.
  // Default: done(Unimplemented). Thread-safe.
  virtual void Notify(RemoteSegment* target, std::string payload, TransferCallback done);

  // Fails every operation in flight (their callbacks run before this returns), stops threads and
  // servers. Idempotent. After it, Submit fails at once with Cancelled.
  virtual void Shutdown() = 0;
};

// A request/response side channel between nodes, used where a transport needs a handshake (the
// rdma connection exchange). TcpTransport implements it on its data server. Thread-safe.
class ControlChannel {
 public:
  using Handler = std::function<absl::StatusOr<std::string>(std::string_view request)>;

  virtual ~ControlChannel() = default;

  // Serves requests on `channel` with `handler` (called on a server thread; thread-safe).
  // Replaces an earlier handler for the same channel.
  virtual void SetControlHandler(uint32_t channel, Handler handler) = 0;

  // Sends `request` to `channel` on the node that owns `peer` and returns the reply, or the
  // handler's error, Unavailable when unreachable, DeadlineExceeded after `timeout`.
  virtual absl::StatusOr<std::string> CallControl(const SegmentDescriptor& peer, uint32_t channel,
                                                  std::string_view request,
                                                  std::chrono::milliseconds timeout) = 0;
};

// Control channels in use; one per consumer.
inline constexpr uint32_t kRdmaConnectChannel = 1;

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_TRANSPORT_H_
