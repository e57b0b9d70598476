// TransferEngine: one-sided reads and writes between this node's memory and named segments on any
// node, in batches, over the best transport each peer shares with us.
//
//   auto engine = TransferEngine::Create(options, &directory);        // one per node
//   void* kv = engine->AllocateSharedSegment("decode-0/kv", 1 << 30);  // on the target
//   ...
//   SegmentHandle seg = engine->OpenSegment("decode-0/kv");            // on the initiator
//   BatchId batch = engine->AllocateBatch(64);
//   TransferRequest req{TransferOp::kWrite, layer_kv, seg, offset, bytes};
//   engine->SubmitTransfer(batch, {&req, 1}, Notify{"req 17 layer 3"});
//   engine->Wait(batch, std::chrono::seconds(5));
//   engine->FreeBatch(batch);
//
// Transport choice per segment (OpenSegment), in the order of options.transports (default shm,
// rdma, tcp), taking the first that opens: shm when the owner is on this host and the segment is
// in shared memory; rdma when a device exists here and the segment is registered for it; tcp
// otherwise. The engine knows nothing of KV blocks: segments are plain byte ranges.
//
// Notifications: a submission may carry a Notify payload. Once all of that submission's requests
// have completed successfully the engine delivers the payload, over the tcp control path, to the
// notification callback of each distinct target segment's node; the callback runs after the
// requests' writes are visible there. The submission's requests are reported done only after
// delivery, so a successful Wait means "the data landed and the target knows".
#ifndef CRESCENT_KVSTORE_TRANSFER_TRANSFER_ENGINE_H_
#define CRESCENT_KVSTORE_TRANSFER_TRANSFER_ENGINE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/transfer/rdma_options.h"
#include "kvstore/transfer/segment.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/shm_transport.h"
#include "kvstore/transfer/tcp_transport.h"
#include "kvstore/transfer/transport.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

// An open peer segment. Valid until CloseSegment or the engine's destruction.
enum class SegmentHandle : uint64_t {};
// A batch of requests. Valid from AllocateBatch to FreeBatch.
enum class BatchId : uint64_t {};

struct TransferRequest {
  using Op = TransferOp;
  Op op = Op::kRead;
  // kWrite: the source, kRead: the destination; valid for `length` bytes until the request
  // completes. With rdma it must lie inside a segment registered on this engine.
  void* local_addr = nullptr;
  SegmentHandle target{};
  uint64_t target_offset = 0;
  uint64_t length = 0;
};

// Delivered to the target node once the submission's requests have landed.
struct Notify {
  std::string payload;  // at most 1 MiB
};

// What the target's callback receives.
struct Notification {
  std::string segment;  // the target segment's name
  std::string payload;
};

enum class TransferState { kPending, kDone, kFailed };

struct RequestStatus {
  TransferState state = TransferState::kPending;
  absl::Status status;  // OK unless kFailed
};

struct TransferEngineOptions {
  // Transports to use, in order of preference; "shm", "rdma", "tcp". Without "tcp" this node can
  // neither be reached over tcp nor receive notifications.
  std::vector<std::string> transports = {"shm", "rdma", "tcp"};
  TcpTransportOptions tcp;
  ShmTransportOptions shm;
  RdmaTransportOptions rdma;
  // Applied to every transport the engine creates (e.g. to wrap it in a FaultTransport).
  std::function<std::unique_ptr<Transport>(std::unique_ptr<Transport>)> wrap_transport;
};

class TransferEngine {
 public:
  // Creates the transports named in options (rdma is skipped, with a log line, when no device
  // exists) and starts the tcp data server. `directory` is not owned and must outlive the engine.
  // Errors: InvalidArgument for an unknown transport name or bad options; a transport's error.
  static absl::StatusOr<std::unique_ptr<TransferEngine>> Create(
      const TransferEngineOptions& options, SegmentDirectory* directory);

  // Unpublishes this engine's segments, fails whatever is in flight, stops the transports.
  ~TransferEngine();

  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  // Registers [addr, addr + length) under `name` with every transport and publishes it. The
  // memory stays the caller's and must stay valid until UnregisterLocalSegment. Plain memory is
  // reachable over tcp and rdma; only AllocateSharedSegment memory is reachable over shm.
  // Errors: InvalidArgument (name, null addr, length 0), AlreadyExists, a transport's or the
  // directory's error (nothing stays registered then). Thread-safe.
  absl::Status RegisterLocalSegment(std::string_view name, void* addr, uint64_t length);

  // Allocates `length` zeroed bytes of memfd-backed shared memory, owned by the engine, and
  // registers them as RegisterLocalSegment does (reachable over shm too). Returns the address,
  // valid until UnregisterLocalSegment(name) or the engine's destruction. Thread-safe.
  absl::StatusOr<void*> AllocateSharedSegment(std::string_view name, uint64_t length);

  // As AllocateSharedSegment, for memory the caller created (and perhaps filled) first; the
  // engine takes ownership. Returns memory.data().
  absl::StatusOr<void*> RegisterSharedSegment(std::string_view name, SharedMemory memory);

  // Unpublishes and unregisters `name` (releasing AllocateSharedSegment memory); waits for tcp
  // operations on it to end. Peers that mapped it over shm keep their mapping. NotFound if
  // unknown. Thread-safe.
  absl::Status UnregisterLocalSegment(std::string_view name);

  // The descriptor published for a local segment. NotFound if unknown.
  absl::StatusOr<SegmentDescriptor> LocalSegmentDescriptor(std::string_view name) const;

  // Looks `name` up and opens it with the first transport in `transport_order` that can
  // (empty: options.transports). Opening the same name again returns a new handle. Errors:
  // NotFound (not published), Unavailable listing why each transport could not open it.
  // Thread-safe.
  absl::StatusOr<SegmentHandle> OpenSegment(std::string_view name,
                                            std::vector<std::string> transport_order = {});

  // Forgets a handle; requests in flight on it still complete. NotFound if unknown.
  absl::Status CloseSegment(SegmentHandle handle);

  // The transport an open segment uses ("shm", "tcp", "rdma"), and its descriptor. NotFound for
  // an unknown handle.
  absl::StatusOr<std::string> SegmentTransport(SegmentHandle handle) const;
  absl::StatusOr<SegmentDescriptor> OpenSegmentDescriptor(SegmentHandle handle) const;

  // A batch holding up to `max_requests` requests over its lifetime. Thread-safe.
  BatchId AllocateBatch(size_t max_requests);

  // Validates every request, then starts them all (or none when one is invalid) and returns.
  // With `notify`, the payload reaches each distinct target segment's node after all of these
  // requests succeeded, and they are done only after that. Errors, with nothing started:
  // NotFound (batch or handle), InvalidArgument (null local_addr with length > 0, payload too
  // large, notify to a node without a tcp endpoint), OutOfRange (beyond the segment; names the
  // request, offset, length and segment length), ResourceExhausted (batch full). Transport
  // failures are reported per request by GetBatchStatus / Wait. Thread-safe.
  absl::Status SubmitTransfer(BatchId batch, std::span<const TransferRequest> requests,
                              std::optional<Notify> notify = std::nullopt);

  // Every request submitted to `batch` so far, in submission order. NotFound for an unknown batch.
  absl::StatusOr<std::vector<RequestStatus>> GetBatchStatus(BatchId batch) const;

  // Waits until no request of `batch` is pending or `timeout` passes. Returns OK when all
  // succeeded, the first failed request's status (annotated with its index) otherwise,
  // DeadlineExceeded naming how many are still pending, NotFound for an unknown batch.
  absl::Status Wait(BatchId batch, std::chrono::nanoseconds timeout);

  // Releases a batch. FailedPrecondition while requests are pending (Wait first); NotFound.
  absl::Status FreeBatch(BatchId batch);

  // Called on a transport thread for each notification addressed to this node's segments. Must
  // be quick and thread-safe. Replaces an earlier callback. Thread-safe.
  void SetNotificationCallback(std::function<void(const Notification&)> callback);

  // The tcp data server's "host:port", empty without tcp.
  std::string tcp_endpoint() const;

  // The transports this engine runs, in preference order (rdma missing without a device).
  std::vector<std::string> transport_names() const;

 private:
  struct Batch;
  struct LocalSegmentRecord;
  struct OpenSegmentRecord;
  struct Group;

  TransferEngine(const TransferEngineOptions& options, SegmentDirectory* directory);
  Transport* FindTransport(std::string_view name) const;
  absl::Status OnNotification(std::string_view segment, std::string_view payload);
  static void CompleteRequest(const std::shared_ptr<Batch>& batch, size_t index,
                              absl::Status status);
  void FinishGroup(const std::shared_ptr<Group>& group);
  absl::Status RegisterInternal(std::string_view name, void* addr, uint64_t length, int memfd,
                                std::optional<SharedMemory> shared);

  const TransferEngineOptions options_;
  SegmentDirectory* const directory_;

  Mutex register_mu_;  // serializes Register / Unregister (held across transport calls)

  // In preference order; fixed after Create.
  std::vector<std::pair<std::string, std::unique_ptr<Transport>>> transports_;
  TcpTransport* tcp_ = nullptr;  // the concrete tcp transport (inside any wrapper), if any

  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<LocalSegmentRecord>, std::less<>> local_
      ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<OpenSegmentRecord>> open_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Batch>> batches_ ABSL_GUARDED_BY(mu_);
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_batch_ ABSL_GUARDED_BY(mu_) = 1;

  mutable Mutex callback_mu_;
  std::function<void(const Notification&)> notification_callback_ ABSL_GUARDED_BY(callback_mu_);
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_TRANSFER_ENGINE_H_
