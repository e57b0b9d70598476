// RdmaTransport: one-sided RDMA WRITE / READ over reliable-connection queue pairs (libibverbs).
//
// Local segments are registered with ibv_reg_mr (local write, remote read and write) and their
// GID, LID, port, MTU, address and rkey go into the descriptor's rdma blob. Opening a peer's
// segment connects `qps_per_peer` RC queue pairs to the peer node: each side creates a QP and
// moves it RESET -> INIT, the initiator sends its QP number, PSN, LID and GID over the control
// channel (the peer's tcp data server), the peer answers with its own, and both move
// INIT -> RTR -> RTS. A transfer is cut into work requests of at most `max_slice_bytes` (and the
// port's max_msg_sz), spread over the QPs with at most `max_outstanding_per_qp` posted per QP;
// one poller thread reaps the shared completion queue. The target's CPU takes no part in a
// transfer. An error completion fails its request with CompletionStatus's code and puts the QP in
// ERROR; work queued behind it fails with Aborted; a dead peer surfaces as IBV_WC_RETRY_EXC_ERR
// (Unavailable) after the RC retry budget (about 0.5 s with the transition attributes used).
//
// What cannot run on a machine without an RDMA NIC (everything past Create): memory
// registration, QP creation and transitions, posting and completions. Create then returns
// Unavailable and the engine uses shm / tcp. The NIC-free logic lives in rdma_common.h and is
// unit-tested; the verbs calls here are exercised only where a device (or soft-RoCE, rxe) exists.
//
// Local buffers passed to Submit must lie inside a segment registered with this transport
// (FailedPrecondition otherwise).
#ifndef CRESCENT_KVSTORE_TRANSFER_RDMA_TRANSPORT_H_
#define CRESCENT_KVSTORE_TRANSFER_RDMA_TRANSPORT_H_

#include <infiniband/verbs.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/transfer/rdma_common.h"
#include "kvstore/transfer/rdma_options.h"
#include "kvstore/transfer/transport.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

class RdmaTransport final : public Transport {
 public:
  // Opens the device, its port, a protection domain and a completion queue, and serves the
  // connection exchange on `control` (not owned; must outlive the transport). Errors:
  // Unavailable when there is no RDMA device or its port is not active (the message says which);
  // InvalidArgument for bad options or an unknown device name; otherwise the failed verbs call.
  static absl::StatusOr<std::unique_ptr<RdmaTransport>> Create(const RdmaTransportOptions& options,
                                                               ControlChannel* control);
  ~RdmaTransport() override;

  RdmaTransport(const RdmaTransport&) = delete;
  RdmaTransport& operator=(const RdmaTransport&) = delete;

  std::string_view name() const override { return "rdma"; }

  absl::Status RegisterLocalSegment(const LocalSegment& segment,
                                    SegmentDescriptor* descriptor) override;
  absl::Status UnregisterLocalSegment(std::string_view name) override;
  // Unavailable without an rdma blob or a tcp endpoint (for the exchange); errors of the exchange
  // and QP transitions otherwise.
  absl::StatusOr<std::shared_ptr<RemoteSegment>> OpenSegment(
      const SegmentDescriptor& descriptor) override;
  void Submit(const TransportOp& op, TransferCallback done) override;
  void Shutdown() override;

  // Implementation parts, defined in rdma_transport.cc.
  struct QueuePair;
  struct WorkItem;
  struct Peer;

 private:
  RdmaTransport(const RdmaTransportOptions& options, ControlChannel* control);
  absl::Status Open();
  absl::StatusOr<std::unique_ptr<QueuePair>> CreateQueuePair();
  absl::Status Transition(QueuePair& qp, rdma::QpEvent event, const rdma::QpTransition& t);
  rdma::ConnInfo LocalConnInfo(const QueuePair& qp, uint64_t connection_id) const;
  absl::StatusOr<std::string> HandleConnect(std::string_view request);
  absl::StatusOr<std::shared_ptr<Peer>> ConnectPeer(const SegmentDescriptor& descriptor);
  void PollLoop();

  const RdmaTransportOptions options_;
  ControlChannel* const control_;

  ibv_context* context_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_cq* cq_ = nullptr;
  ibv_port_attr port_attr_{};
  rdma::Gid gid_{};
  int gid_index_ = -1;

  std::thread poller_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> shut_down_{false};

  Mutex mu_;
  rdma::LocalRegionTable regions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ibv_mr*, std::less<>> mrs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<QueuePair>> passive_ ABSL_GUARDED_BY(mu_);  // accepted connections
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_RDMA_TRANSPORT_H_
