#include "kvstore/transfer/rdma_transport.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvstore/transfer/internal/fan_in.h"
#include "kvstore/transfer/sys_check.h"
#include "src/common/logging.h"
#include "src/common/mutex.h"
#include "src/common/status.h"

namespace crescent::kvstore {
// One RC queue pair and the work waiting for room on it.
struct RdmaTransport::QueuePair {
  ibv_qp* qp = nullptr;
  uint32_t psn = 0;
  Mutex mu;
  rdma::QpState state ABSL_GUARDED_BY(mu) = rdma::QpState::kReset;
  int outstanding ABSL_GUARDED_BY(mu) = 0;
  std::deque<std::unique_ptr<WorkItem>> backlog ABSL_GUARDED_BY(mu);

  ~QueuePair() {
    if (qp != nullptr) ::ibv_destroy_qp(qp);
  }
};

// One work request: its wr_id is the WorkItem's address.
struct RdmaTransport::WorkItem {
  QueuePair* qp = nullptr;
  TransferOp op = TransferOp::kRead;
  rdma::Slice slice;
  uint32_t lkey = 0;
  uint32_t rkey = 0;
  std::shared_ptr<internal::FanIn> tracker;
};

struct RdmaTransport::Peer {
  std::vector<std::unique_ptr<QueuePair>> qps;  // fixed after ConnectPeer; cleared at Shutdown
  std::atomic<uint64_t> next{0};
};

namespace {

class RdmaRemoteSegment final : public RemoteSegment {
 public:
  RdmaRemoteSegment(SegmentDescriptor descriptor, rdma::SegmentInfo info,
                    std::shared_ptr<RdmaTransport::Peer> peer)
      : RemoteSegment(std::move(descriptor)), info_(info), peer_(std::move(peer)) {}
  const rdma::SegmentInfo& info() const { return info_; }
  RdmaTransport::Peer* peer() const { return peer_.get(); }

 private:
  const rdma::SegmentInfo info_;
  std::shared_ptr<RdmaTransport::Peer> peer_;
};

uint64_t RandomConnectionId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return rng();
}

// Posts `item` on `qp` now, or queues it behind the QP's outstanding limit; fails it when the QP
// is not ready to send.
void PostLocked(RdmaTransport::QueuePair& qp, int max_outstanding,
                std::unique_ptr<RdmaTransport::WorkItem> item)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(qp.mu) {
  if (qp.state != rdma::QpState::kRts) {
    item->tracker->Finish(absl::UnavailableError(
        absl::StrCat("rdma queue pair ", qp.qp->qp_num, " is in state ",
                     std::string(rdma::QpStateName(qp.state)), "; reopen the segment")));
    return;
  }
  if (qp.outstanding >= max_outstanding) {
    qp.backlog.push_back(std::move(item));
    return;
  }
  ibv_sge sge{};
  sge.addr = item->slice.local_addr;
  sge.length = item->slice.length;
  sge.lkey = item->lkey;
  ibv_send_wr wr{};
  ibv_send_wr* bad = nullptr;
  wr.wr_id = reinterpret_cast<uint64_t>(item.get());
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = item->op == TransferOp::kWrite ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.rdma.remote_addr = item->slice.remote_addr;
  wr.wr.rdma.rkey = item->rkey;
  absl::Status posted = CRESCENT_VERBS(::ibv_post_send(qp.qp, &wr, &bad));
  if (!posted.ok()) {
    item->tracker->Finish(posted);
    return;
  }
  ++qp.outstanding;
  item.release();  // owned by the work request until its completion is polled
}

}  // namespace

RdmaTransport::RdmaTransport(const RdmaTransportOptions& options, ControlChannel* control)
    : options_(options), control_(control) {}

absl::StatusOr<std::unique_ptr<RdmaTransport>> RdmaTransport::Create(
    const RdmaTransportOptions& options, ControlChannel* control) {
  if (control == nullptr) {
    return absl::InvalidArgumentError("rdma transport needs a control channel for the exchange");
  }
  if (options.max_slice_bytes == 0 || options.qps_per_peer < 1 ||
      options.max_outstanding_per_qp < 1 || options.cq_entries < 1) {
    return absl::InvalidArgumentError("rdma options: sizes and counts must be positive");
  }
  auto transport = std::unique_ptr<RdmaTransport>(new RdmaTransport(options, control));
  CRESCENT_RETURN_IF_ERROR(transport->Open());
  return transport;
}

absl::Status RdmaTransport::Open() {
  int count = 0;
  ibv_device** devices = ::ibv_get_device_list(&count);
  if (devices == nullptr) {
    const int err = errno;
    return absl::UnavailableError(
        absl::StrCat("rdma unavailable: ibv_get_device_list failed (", std::strerror(err),
                     err == ENOSYS ? "; the kernel has no RDMA support)" : ")"));
  }
  std::unique_ptr<ibv_device*, decltype(&::ibv_free_device_list)> guard(devices,
                                                                        &::ibv_free_device_list);
  if (count == 0) {
    return absl::UnavailableError(
        "rdma unavailable: no RDMA device found (ibv_get_device_list returned 0 devices)");
  }
  ibv_device* device = nullptr;
  for (int i = 0; i < count; ++i) {
    if (options_.device_name.empty() || options_.device_name == ::ibv_get_device_name(devices[i])) {
      device = devices[i];
      break;
    }
  }
  if (device == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("rdma device '", options_.device_name, "' not found among ", count));
  }
  CRESCENT_ASSIGN_OR_RETURN(context_, CRESCENT_VERBS_PTR(::ibv_open_device(device)));
  CRESCENT_RETURN_IF_ERROR(CRESCENT_VERBS(::ibv_query_port(context_, options_.port, &port_attr_)));
  if (port_attr_.state != IBV_PORT_ACTIVE) {
    return absl::UnavailableError(absl::StrCat("rdma unavailable: port ", options_.port, " of ",
                                               ::ibv_get_device_name(device), " is not active"));
  }
  gid_index_ = options_.gid_index;
  if (gid_index_ < 0 && port_attr_.link_layer == IBV_LINK_LAYER_ETHERNET) {
    for (int i = 0; i < port_attr_.gid_tbl_len; ++i) {
      ibv_gid gid{};
      if (::ibv_query_gid(context_, options_.port, i, &gid) != 0) continue;
      if (std::any_of(std::begin(gid.raw), std::end(gid.raw), [](uint8_t b) { return b != 0; })) {
        gid_index_ = i;
        break;
      }
    }
    if (gid_index_ < 0) {
      return absl::UnavailableError("rdma unavailable: RoCE port without a configured GID");
    }
  }
  if (gid_index_ >= 0) {
    ibv_gid gid{};
    CRESCENT_RETURN_IF_ERROR(
        CRESCENT_VERBS(::ibv_query_gid(context_, options_.port, gid_index_, &gid)));
    std::memcpy(gid_.data(), gid.raw, gid_.size());
  }
  CRESCENT_ASSIGN_OR_RETURN(pd_, CRESCENT_VERBS_PTR(::ibv_alloc_pd(context_)));
  CRESCENT_ASSIGN_OR_RETURN(
      cq_, CRESCENT_VERBS_PTR(::ibv_create_cq(context_, options_.cq_entries, nullptr, nullptr, 0)));
  poller_ = std::thread([this] { PollLoop(); });
  control_->SetControlHandler(kRdmaConnectChannel,
                              [this](std::string_view request) { return HandleConnect(request); });
  return absl::OkStatus();
}

RdmaTransport::~RdmaTransport() {
  Shutdown();
  if (cq_ != nullptr) ::ibv_destroy_cq(cq_);
  if (pd_ != nullptr) ::ibv_dealloc_pd(pd_);
  if (context_ != nullptr) ::ibv_close_device(context_);
}

void RdmaTransport::Shutdown() {
  if (shut_down_.exchange(true)) return;
  if (context_ == nullptr) return;  // never opened
  control_->SetControlHandler(kRdmaConnectChannel, nullptr);
  std::vector<std::unique_ptr<QueuePair>> qps;
  {
    MutexLock lock(&mu_);
    for (auto& [endpoint, peer] : peers_) {
      for (auto& qp : peer->qps) qps.push_back(std::move(qp));
      peer->qps.clear();
    }
    peers_.clear();
    for (auto& qp : passive_) qps.push_back(std::move(qp));
    passive_.clear();
  }
  // Moving every QP to ERROR flushes its posted work requests; the poller reaps them (as
  // IBV_WC_WR_FLUSH_ERR) before the QPs are destroyed.
  for (auto& qp : qps) {
    MutexLock lock(&qp->mu);
    if (qp->state != rdma::QpState::kError && qp->state != rdma::QpState::kReset) {
      ibv_qp_attr attr{};
      attr.qp_state = IBV_QPS_ERR;
      ::ibv_modify_qp(qp->qp, &attr, IBV_QP_STATE);
      qp->state = rdma::QpState::kError;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (auto& qp : qps) {
    for (;;) {
      {
        MutexLock lock(&qp->mu);
        if (qp->outstanding == 0) break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        CRESCENT_LOG(warn, "rdma shutdown: work requests still outstanding after 2 s");
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  stop_.store(true);
  if (poller_.joinable()) poller_.join();
  for (auto& qp : qps) {
    std::deque<std::unique_ptr<WorkItem>> backlog;
    {
      MutexLock lock(&qp->mu);
      backlog.swap(qp->backlog);
    }
    for (auto& item : backlog)
      item->tracker->Finish(absl::CancelledError("rdma transport shut down"));
  }
  qps.clear();
  MutexLock lock(&mu_);
  for (auto& [name, mr] : mrs_) ::ibv_dereg_mr(mr);
  mrs_.clear();
}

absl::Status RdmaTransport::RegisterLocalSegment(const LocalSegment& segment,
                                                 SegmentDescriptor* descriptor) {
  MutexLock lock(&mu_);
  if (mrs_.count(segment.name) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("segment '", segment.name, "' is already registered with rdma"));
  }
  CRESCENT_ASSIGN_OR_RETURN(
      ibv_mr * mr,
      CRESCENT_VERBS_PTR(::ibv_reg_mr(pd_, segment.addr, segment.length, rdma::kRemoteAccess)));
  absl::Status added = regions_.Add(segment.name, reinterpret_cast<uint64_t>(segment.addr),
                                    segment.length, mr->lkey);
  if (!added.ok()) {
    ::ibv_dereg_mr(mr);
    return added;
  }
  mrs_[segment.name] = mr;
  rdma::SegmentInfo info;
  info.gid = gid_;
  info.lid = port_attr_.lid;
  info.port = options_.port;
  info.mtu = static_cast<uint8_t>(port_attr_.active_mtu);
  info.addr = reinterpret_cast<uint64_t>(segment.addr);
  info.length = segment.length;
  info.rkey = mr->rkey;
  descriptor->rdma_info = rdma::SerializeSegmentInfo(info);
  return absl::OkStatus();
}

absl::Status RdmaTransport::UnregisterLocalSegment(std::string_view name) {
  MutexLock lock(&mu_);
  auto it = mrs_.find(name);
  if (it == mrs_.end()) {
    return absl::NotFoundError(
        absl::StrCat("segment '", std::string(name), "' is not registered with rdma"));
  }
  CRESCENT_RETURN_IF_ERROR(regions_.Remove(name));
  absl::Status status = CRESCENT_VERBS(::ibv_dereg_mr(it->second));
  mrs_.erase(it);
  return status;
}

absl::StatusOr<std::unique_ptr<RdmaTransport::QueuePair>> RdmaTransport::CreateQueuePair() {
  ibv_qp_init_attr init{};
  init.send_cq = cq_;
  init.recv_cq = cq_;
  init.cap.max_send_wr = static_cast<uint32_t>(options_.max_outstanding_per_qp);
  init.cap.max_recv_wr = 1;
  init.cap.max_send_sge = 1;
  init.cap.max_recv_sge = 1;
  init.qp_type = IBV_QPT_RC;
  init.sq_sig_all = 0;
  auto qp = std::make_unique<QueuePair>();
  CRESCENT_ASSIGN_OR_RETURN(qp->qp, CRESCENT_VERBS_PTR(::ibv_create_qp(pd_, &init)));
  qp->psn = rdma::RandomPsn();
  CRESCENT_RETURN_IF_ERROR(
      Transition(*qp, rdma::QpEvent::kInit, rdma::InitTransition(options_.port)));
  return qp;
}

absl::Status RdmaTransport::Transition(QueuePair& qp, rdma::QpEvent event,
                                       const rdma::QpTransition& t) {
  MutexLock lock(&qp.mu);
  CRESCENT_ASSIGN_OR_RETURN(rdma::QpState next, rdma::NextQpState(qp.state, event));
  rdma::QpTransition copy = t;
  CRESCENT_RETURN_IF_ERROR(Annotate(
      CRESCENT_VERBS(::ibv_modify_qp(qp.qp, &copy.attr, copy.mask)),
      absl::StrCat("moving qp ", qp.qp->qp_num, " from ", std::string(rdma::QpStateName(qp.state)),
                   " to ", std::string(rdma::QpStateName(next)))));
  qp.state = next;
  return absl::OkStatus();
}

rdma::ConnInfo RdmaTransport::LocalConnInfo(const QueuePair& qp, uint64_t connection_id) const {
  rdma::ConnInfo info;
  info.connection_id = connection_id;
  info.gid = gid_;
  info.lid = port_attr_.lid;
  info.port = options_.port;
  info.mtu = static_cast<uint8_t>(port_attr_.active_mtu);
  info.qp_num = qp.qp->qp_num;
  info.psn = qp.psn;
  return info;
}

// Target side of the exchange: a QP for the initiator, brought to RTS, and its coordinates back.
absl::StatusOr<std::string> RdmaTransport::HandleConnect(std::string_view request) {
  if (shut_down_.load()) return absl::UnavailableError("rdma transport is shut down");
  CRESCENT_ASSIGN_OR_RETURN(rdma::ConnInfo remote, rdma::ParseConnInfo(request));
  CRESCENT_ASSIGN_OR_RETURN(std::unique_ptr<QueuePair> qp, CreateQueuePair());
  CRESCENT_RETURN_IF_ERROR(
      Transition(*qp, rdma::QpEvent::kPeerInfo,
                 rdma::RtrTransition(remote, options_.port,
                                     static_cast<uint8_t>(port_attr_.active_mtu), gid_index_)));
  CRESCENT_RETURN_IF_ERROR(Transition(*qp, rdma::QpEvent::kReady, rdma::RtsTransition(qp->psn)));
  std::string reply = rdma::SerializeConnInfo(LocalConnInfo(*qp, remote.connection_id));
  MutexLock lock(&mu_);
  passive_.push_back(std::move(qp));
  return reply;
}

absl::StatusOr<std::shared_ptr<RdmaTransport::Peer>> RdmaTransport::ConnectPeer(
    const SegmentDescriptor& descriptor) {
  {
    MutexLock lock(&mu_);
    auto it = peers_.find(descriptor.tcp_endpoint);
    if (it != peers_.end()) return it->second;
  }
  auto peer = std::make_shared<Peer>();
  for (int i = 0; i < options_.qps_per_peer; ++i) {
    CRESCENT_ASSIGN_OR_RETURN(std::unique_ptr<QueuePair> qp, CreateQueuePair());
    const uint64_t connection_id = RandomConnectionId();
    CRESCENT_ASSIGN_OR_RETURN(
        std::string reply,
        control_->CallControl(descriptor, kRdmaConnectChannel,
                              rdma::SerializeConnInfo(LocalConnInfo(*qp, connection_id)),
                              options_.handshake_timeout));
    CRESCENT_ASSIGN_OR_RETURN(rdma::ConnInfo remote, rdma::ParseConnInfo(reply));
    if (remote.connection_id != connection_id) {
      return absl::InternalError(absl::StrCat("rdma exchange with ", descriptor.tcp_endpoint,
                                              " answered connection ", remote.connection_id,
                                              ", expected ", connection_id));
    }
    CRESCENT_RETURN_IF_ERROR(
        Transition(*qp, rdma::QpEvent::kPeerInfo,
                   rdma::RtrTransition(remote, options_.port,
                                       static_cast<uint8_t>(port_attr_.active_mtu), gid_index_)));
    CRESCENT_RETURN_IF_ERROR(Transition(*qp, rdma::QpEvent::kReady, rdma::RtsTransition(qp->psn)));
    peer->qps.push_back(std::move(qp));
  }
  MutexLock lock(&mu_);
  if (shut_down_.load()) return absl::CancelledError("rdma transport is shut down");
  auto [it, inserted] = peers_.emplace(descriptor.tcp_endpoint, peer);
  return it->second;  // a concurrent open may have won; its QPs are used and ours are dropped
}

absl::StatusOr<std::shared_ptr<RemoteSegment>> RdmaTransport::OpenSegment(
    const SegmentDescriptor& descriptor) {
  if (descriptor.rdma_info.empty()) {
    return absl::UnavailableError(
        absl::StrCat("segment '", descriptor.name, "' is not registered for rdma"));
  }
  if (descriptor.tcp_endpoint.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "segment '", descriptor.name, "' has no tcp endpoint for the rdma connection exchange"));
  }
  CRESCENT_ASSIGN_OR_RETURN(rdma::SegmentInfo info, rdma::ParseSegmentInfo(descriptor.rdma_info));
  if (info.length != descriptor.length) {
    return absl::FailedPreconditionError(
        absl::StrCat("segment '", descriptor.name, "': rdma info says ", info.length,
                     " bytes, the descriptor ", descriptor.length));
  }
  CRESCENT_ASSIGN_OR_RETURN(std::shared_ptr<Peer> peer, ConnectPeer(descriptor));
  return std::make_shared<RdmaRemoteSegment>(descriptor, info, std::move(peer));
}

void RdmaTransport::Submit(const TransportOp& op, TransferCallback done) {
  if (shut_down_.load()) {
    std::move(done)(absl::CancelledError("rdma transport is shut down"));
    return;
  }
  if (op.length == 0) {
    std::move(done)(absl::OkStatus());
    return;
  }
  auto* remote = static_cast<RdmaRemoteSegment*>(op.target);
  absl::StatusOr<rdma::RemoteAddress> address =
      rdma::TranslateRemote(remote->info(), op.target_offset, op.length);
  if (!address.ok()) {
    std::move(done)(address.status());
    return;
  }
  absl::StatusOr<uint32_t> lkey;
  {
    MutexLock lock(&mu_);
    lkey = regions_.FindLkey(reinterpret_cast<uint64_t>(op.local_addr), op.length);
  }
  if (!lkey.ok()) {
    std::move(done)(lkey.status());
    return;
  }
  Peer* peer = remote->peer();
  if (peer->qps.empty()) {
    std::move(done)(absl::UnavailableError("rdma peer has no queue pairs"));
    return;
  }
  const uint64_t max_slice = std::min<uint64_t>(options_.max_slice_bytes, port_attr_.max_msg_sz);
  std::vector<rdma::Slice> slices = rdma::PlanSlices(reinterpret_cast<uint64_t>(op.local_addr),
                                                     address->addr, op.length, max_slice);
  auto tracker =
      std::make_shared<internal::FanIn>(static_cast<int>(slices.size()), std::move(done));
  const uint64_t first = peer->next.fetch_add(slices.size(), std::memory_order_relaxed);
  for (size_t i = 0; i < slices.size(); ++i) {
    QueuePair& qp = *peer->qps[(first + i) % peer->qps.size()];
    auto item = std::make_unique<WorkItem>();
    item->qp = &qp;
    item->op = op.op;
    item->slice = slices[i];
    item->lkey = *lkey;
    item->rkey = address->rkey;
    item->tracker = tracker;
    MutexLock lock(&qp.mu);
    PostLocked(qp, options_.max_outstanding_per_qp, std::move(item));
  }
}

void RdmaTransport::PollLoop() {
  ibv_wc completions[32];
  rdma::PollBackoff backoff;
  while (!stop_.load(std::memory_order_acquire)) {
    const int n = ::ibv_poll_cq(cq_, 32, completions);
    if (n < 0) {
      CRESCENT_LOG(error, "rdma: ibv_poll_cq failed ({})", n);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    for (int i = 0; i < n; ++i) {
      const ibv_wc& wc = completions[i];
      std::unique_ptr<WorkItem> item(reinterpret_cast<WorkItem*>(wc.wr_id));
      QueuePair& qp = *item->qp;
      absl::Status status = rdma::CompletionStatus(
          wc.status, wc.vendor_err,
          absl::StrCat("rdma ", std::string(TransferOpName(item->op)), " of ", item->slice.length,
                       " bytes to 0x", absl::Hex(item->slice.remote_addr)));
      std::deque<std::unique_ptr<WorkItem>> failed;
      {
        MutexLock lock(&qp.mu);
        --qp.outstanding;
        if (!status.ok()) qp.state = rdma::QpState::kError;  // verbs already moved it there
        if (qp.state == rdma::QpState::kError) {
          failed.swap(qp.backlog);
        } else {
          while (!qp.backlog.empty() && qp.outstanding < options_.max_outstanding_per_qp) {
            std::unique_ptr<WorkItem> next = std::move(qp.backlog.front());
            qp.backlog.pop_front();
            PostLocked(qp, options_.max_outstanding_per_qp, std::move(next));
          }
        }
      }
      item->tracker->Finish(status);
      for (auto& f : failed) {
        f->tracker->Finish(
            absl::AbortedError(absl::StrCat("rdma queue pair failed earlier: ", status.message())));
      }
    }
    const auto pause = backoff.Next(n);
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }
}

}  // namespace crescent::kvstore
