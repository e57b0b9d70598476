#include "kvstore/transfer/transfer_engine.h"

#include <algorithm>
#include <atomic>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kvstore/transfer/internal/clone_status.h"
#include "kvstore/transfer/internal/fan_in.h"
#include "kvstore/transfer/rdma_transport.h"
#include "kvstore/transfer/tcp_protocol.h"
#include "src/common/logging.h"
#include "src/common/mutex.h"
#include "src/common/status.h"

namespace crescent::kvstore {

struct TransferEngine::Batch {
  explicit Batch(size_t max_requests) : capacity(max_requests) {}
  const size_t capacity;
  Mutex mu;
  CondVar cv;
  std::vector<RequestStatus> requests ABSL_GUARDED_BY(mu);
  size_t pending ABSL_GUARDED_BY(mu) = 0;
};

struct TransferEngine::LocalSegmentRecord {
  SegmentDescriptor descriptor;
  std::optional<SharedMemory> shared;  // set for AllocateSharedSegment memory
};

struct TransferEngine::OpenSegmentRecord {
  SegmentDescriptor descriptor;
  std::string transport_name;
  Transport* transport = nullptr;
  std::shared_ptr<RemoteSegment> data;
  // The tcp handle notifications travel on (the data handle when data goes over tcp); null when
  // the owner has no tcp endpoint or this engine runs no tcp.
  std::shared_ptr<RemoteSegment> control;
};

// The requests of one submission that carries a notification.
struct TransferEngine::Group {
  std::shared_ptr<Batch> batch;
  size_t first_index = 0;
  std::string payload;
  std::vector<std::shared_ptr<OpenSegmentRecord>> targets;  // one per distinct segment
  std::atomic<size_t> remaining{0};
  Mutex mu;
  std::vector<absl::Status> statuses ABSL_GUARDED_BY(mu);
};

TransferEngine::TransferEngine(const TransferEngineOptions& options, SegmentDirectory* directory)
    : options_(options), directory_(directory) {}

absl::StatusOr<std::unique_ptr<TransferEngine>> TransferEngine::Create(
    const TransferEngineOptions& options, SegmentDirectory* directory) {
  if (directory == nullptr) return absl::InvalidArgumentError("transfer engine needs a directory");
  std::set<std::string> seen;
  for (const std::string& name : options.transports) {
    if (name != "shm" && name != "tcp" && name != "rdma") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown transport '", name, "' (known: shm, rdma, tcp)"));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("transport '", name, "' listed twice"));
    }
  }
  auto engine = std::unique_ptr<TransferEngine>(new TransferEngine(options, directory));
  std::map<std::string, std::unique_ptr<Transport>> created;
  if (seen.count("tcp") != 0) {
    CRESCENT_ASSIGN_OR_RETURN(std::unique_ptr<TcpTransport> tcp, TcpTransport::Create(options.tcp));
    TransferEngine* self = engine.get();
    tcp->SetNotificationHandler([self](std::string_view segment, std::string_view payload) {
      return self->OnNotification(segment, payload);
    });
    engine->tcp_ = tcp.get();
    created["tcp"] = std::move(tcp);
  }
  if (seen.count("shm") != 0) {
    CRESCENT_ASSIGN_OR_RETURN(created["shm"], ShmTransport::Create(options.shm));
  }
  if (seen.count("rdma") != 0) {
    if (engine->tcp_ == nullptr) {
      CRESCENT_LOG(info, "transfer engine: rdma needs tcp for its connection exchange; skipped");
    } else {
      absl::StatusOr<std::unique_ptr<RdmaTransport>> rdma =
          RdmaTransport::Create(options.rdma, engine->tcp_);
      if (rdma.ok()) {
        created["rdma"] = *std::move(rdma);
      } else if (absl::IsUnavailable(rdma.status())) {
        CRESCENT_LOG(debug, "transfer engine: {}", std::string(rdma.status().message()));
      } else {
        CRESCENT_LOG(warn, "transfer engine: rdma disabled: {}",
                     std::string(rdma.status().message()));
      }
    }
  }
  for (const std::string& name : options.transports) {
    auto it = created.find(name);
    if (it == created.end()) continue;
    std::unique_ptr<Transport> t = std::move(it->second);
    if (options.wrap_transport) t = options.wrap_transport(std::move(t));
    engine->transports_.emplace_back(name, std::move(t));
  }
  return engine;
}

TransferEngine::~TransferEngine() {
  {
    MutexLock lock(&mu_);
    for (const auto& [name, record] : local_) {
      absl::Status s = directory_->Unpublish(name);
      if (!s.ok() && !absl::IsNotFound(s)) {
        CRESCENT_LOG(warn, "transfer engine: unpublishing '{}': {}", name,
                     std::string(s.message()));
      }
    }
  }
  // Everything else first: rdma's exchange runs over the tcp server.
  for (auto& [name, t] : transports_) {
    if (name != "tcp") t->Shutdown();
  }
  for (auto& [name, t] : transports_) {
    if (name == "tcp") t->Shutdown();
  }
  {
    MutexLock lock(&mu_);
    open_.clear();  // remote handles go before the transports that made them
  }
  while (!transports_.empty()) transports_.pop_back();
}

Transport* TransferEngine::FindTransport(std::string_view name) const {
  for (const auto& [n, t] : transports_) {
    if (n == name) return t.get();
  }
  return nullptr;
}

std::string TransferEngine::tcp_endpoint() const {
  return tcp_ != nullptr ? tcp_->endpoint() : std::string();
}

std::vector<std::string> TransferEngine::transport_names() const {
  std::vector<std::string> names;
  for (const auto& [n, t] : transports_) names.push_back(n);
  return names;
}

// ------------------------------------------------------------------------------------------------
// Local segments.

absl::Status TransferEngine::RegisterInternal(std::string_view name, void* addr, uint64_t length,
                                              int memfd, std::optional<SharedMemory> shared) {
  CRESCENT_RETURN_IF_ERROR(ValidateSegmentName(name));
  if (addr == nullptr || length == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment '", std::string(name), "': null address or zero length"));
  }
  MutexLock registration(&register_mu_);
  {
    MutexLock lock(&mu_);
    if (local_.count(name) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("segment '", std::string(name), "' is already registered here"));
    }
  }
  auto record = std::make_unique<LocalSegmentRecord>();
  record->descriptor.name = std::string(name);
  record->descriptor.length = length;
  record->descriptor.host_id = LocalHostId();
  const LocalSegment segment{std::string(name), addr, length, memfd};
  std::vector<Transport*> done;
  absl::Status status;
  for (auto& [tname, t] : transports_) {
    status = t->RegisterLocalSegment(segment, &record->descriptor);
    if (!status.ok()) {
      status = Annotate(status,
                        absl::StrCat("registering segment '", std::string(name), "' with ", tname));
      break;
    }
    done.push_back(t.get());
  }
  if (status.ok()) status = directory_->Publish(record->descriptor);
  if (!status.ok()) {
    for (Transport* t : done) t->UnregisterLocalSegment(name).IgnoreError();
    return status;
  }
  record->shared = std::move(shared);
  MutexLock lock(&mu_);
  local_.emplace(std::string(name), std::move(record));
  return absl::OkStatus();
}

absl::Status TransferEngine::RegisterLocalSegment(std::string_view name, void* addr,
                                                  uint64_t length) {
  return RegisterInternal(name, addr, length, /*memfd=*/-1, std::nullopt);
}

absl::StatusOr<void*> TransferEngine::AllocateSharedSegment(std::string_view name,
                                                            uint64_t length) {
  CRESCENT_RETURN_IF_ERROR(ValidateSegmentName(name));
  CRESCENT_ASSIGN_OR_RETURN(SharedMemory shm, SharedMemory::Create(name, length));
  return RegisterSharedSegment(name, std::move(shm));
}

absl::StatusOr<void*> TransferEngine::RegisterSharedSegment(std::string_view name,
                                                            SharedMemory memory) {
  if (memory.data() == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment '", std::string(name), "': empty shared memory"));
  }
  void* addr = memory.data();
  const uint64_t length = memory.length();
  const int fd = memory.fd();
  CRESCENT_RETURN_IF_ERROR(RegisterInternal(name, addr, length, fd, std::move(memory)));
  return addr;
}

absl::Status TransferEngine::UnregisterLocalSegment(std::string_view name) {
  MutexLock registration(&register_mu_);
  std::unique_ptr<LocalSegmentRecord> record;
  {
    MutexLock lock(&mu_);
    auto it = local_.find(name);
    if (it == local_.end()) {
      return absl::NotFoundError(
          absl::StrCat("segment '", std::string(name), "' is not registered here"));
    }
    record = std::move(it->second);
    local_.erase(it);
  }
  absl::Status status = directory_->Unpublish(name);
  if (absl::IsNotFound(status)) status = absl::OkStatus();
  for (auto& [tname, t] : transports_) {
    absl::Status s = t->UnregisterLocalSegment(name);
    if (status.ok() && !s.ok()) status = s;
  }
  return status;  // record (and any shared memory) is released here
}

absl::StatusOr<SegmentDescriptor> TransferEngine::LocalSegmentDescriptor(
    std::string_view name) const {
  MutexLock lock(&mu_);
  auto it = local_.find(name);
  if (it == local_.end()) {
    return absl::NotFoundError(
        absl::StrCat("segment '", std::string(name), "' is not registered here"));
  }
  return it->second->descriptor;
}

// ------------------------------------------------------------------------------------------------
// Peer segments.

absl::StatusOr<SegmentHandle> TransferEngine::OpenSegment(std::string_view name,
                                                          std::vector<std::string> order) {
  CRESCENT_ASSIGN_OR_RETURN(SegmentDescriptor descriptor, directory_->Lookup(name));
  if (order.empty()) order = transport_names();
  auto record = std::make_shared<OpenSegmentRecord>();
  record->descriptor = descriptor;
  std::vector<std::string> reasons;
  for (const std::string& tname : order) {
    Transport* t = FindTransport(tname);
    if (t == nullptr) {
      reasons.push_back(absl::StrCat(tname, ": not running on this engine"));
      continue;
    }
    absl::StatusOr<std::shared_ptr<RemoteSegment>> remote = t->OpenSegment(descriptor);
    if (remote.ok()) {
      record->transport_name = tname;
      record->transport = t;
      record->data = *std::move(remote);
      break;
    }
    reasons.push_back(absl::StrCat(tname, ": ", remote.status().message()));
  }
  if (record->transport == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot open segment '", std::string(name),
                                               "': ", absl::StrJoin(reasons, "; ")));
  }
  if (record->transport_name == "tcp") {
    record->control = record->data;
  } else if (Transport* tcp = FindTransport("tcp");
             tcp != nullptr && !descriptor.tcp_endpoint.empty()) {
    absl::StatusOr<std::shared_ptr<RemoteSegment>> control = tcp->OpenSegment(descriptor);
    if (control.ok()) {
      record->control = *std::move(control);
    } else {
      CRESCENT_LOG(debug, "segment '{}': no notification path: {}", std::string(name),
                   std::string(control.status().message()));
    }
  }
  MutexLock lock(&mu_);
  const uint64_t id = next_handle_++;
  open_[id] = std::move(record);
  return SegmentHandle{id};
}

absl::Status TransferEngine::CloseSegment(SegmentHandle handle) {
  MutexLock lock(&mu_);
  if (open_.erase(static_cast<uint64_t>(handle)) == 0) {
    return absl::NotFoundError(
        absl::StrCat("segment handle ", static_cast<uint64_t>(handle), " is not open"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> TransferEngine::SegmentTransport(SegmentHandle handle) const {
  MutexLock lock(&mu_);
  auto it = open_.find(static_cast<uint64_t>(handle));
  if (it == open_.end()) {
    return absl::NotFoundError(
        absl::StrCat("segment handle ", static_cast<uint64_t>(handle), " is not open"));
  }
  return it->second->transport_name;
}

absl::StatusOr<SegmentDescriptor> TransferEngine::OpenSegmentDescriptor(
    SegmentHandle handle) const {
  MutexLock lock(&mu_);
  auto it = open_.find(static_cast<uint64_t>(handle));
  if (it == open_.end()) {
    return absl::NotFoundError(
        absl::StrCat("segment handle ", static_cast<uint64_t>(handle), " is not open"));
  }
  return it->second->descriptor;
}

// ------------------------------------------------------------------------------------------------
// Batches.

BatchId TransferEngine::AllocateBatch(size_t max_requests) {
  MutexLock lock(&mu_);
  const uint64_t id = next_batch_++;
  batches_[id] = std::make_shared<Batch>(max_requests);
  return BatchId{id};
}

void TransferEngine::CompleteRequest(const std::shared_ptr<Batch>& batch, size_t index,
                                     absl::Status status) {
  {
    MutexLock lock(&batch->mu);
    RequestStatus& r = batch->requests[index];
    r.state = status.ok() ? TransferState::kDone : TransferState::kFailed;
    r.status = std::move(status);
    --batch->pending;
  }
  batch->cv.SignalAll();
}

void TransferEngine::FinishGroup(const std::shared_ptr<Group>& group) {
  std::vector<absl::Status> statuses;
  {
    MutexLock lock(&group->mu);
    statuses = std::move(group->statuses);
  }
  const auto failed =
      std::find_if(statuses.begin(), statuses.end(), [](const absl::Status& s) { return !s.ok(); });
  if (failed != statuses.end()) {
    const absl::Status cause = Annotate(
        *failed, absl::StrCat("notification not sent: request ",
                              group->first_index + (failed - statuses.begin()), " failed"));
    for (size_t i = 0; i < statuses.size(); ++i) {
      CompleteRequest(
          group->batch, group->first_index + i,
          statuses[i].ok() ? absl::AbortedError(cause.message()) : std::move(statuses[i]));
    }
    return;
  }
  // Every request landed: tell each target, then report the requests done.
  Transport* tcp = FindTransport("tcp");
  auto notified = std::make_shared<internal::FanIn>(
      static_cast<int>(group->targets.size()),
      [group, count = statuses.size()](absl::Status final_status) {
        for (size_t i = 0; i < count; ++i) {
          CompleteRequest(group->batch, group->first_index + i,
                          internal::CloneStatus(final_status));
        }
      });
  for (const auto& target : group->targets) {
    tcp->Notify(target->control.get(), group->payload, [notified, target](absl::Status s) {
      if (!s.ok()) {
        s = Annotate(s, absl::StrCat("notifying segment '", target->descriptor.name, "'"));
      }
      notified->Finish(std::move(s));
    });
  }
}

absl::Status TransferEngine::SubmitTransfer(BatchId batch_id,
                                            std::span<const TransferRequest> requests,
                                            std::optional<Notify> notify) {
  if (notify.has_value() && notify->payload.size() > tcp::kMaxControlBytes) {
    return absl::InvalidArgumentError(absl::StrCat("notification payload of ",
                                                   notify->payload.size(), " bytes exceeds ",
                                                   tcp::kMaxControlBytes));
  }
  std::shared_ptr<Batch> batch;
  std::vector<std::shared_ptr<OpenSegmentRecord>> records(requests.size());
  {
    MutexLock lock(&mu_);
    auto it = batches_.find(static_cast<uint64_t>(batch_id));
    if (it == batches_.end()) {
      return absl::NotFoundError(
          absl::StrCat("batch ", static_cast<uint64_t>(batch_id), " is not allocated"));
    }
    batch = it->second;
    for (size_t i = 0; i < requests.size(); ++i) {
      auto seg = open_.find(static_cast<uint64_t>(requests[i].target));
      if (seg == open_.end()) {
        return absl::NotFoundError(absl::StrCat("request ", i, ": segment handle ",
                                                static_cast<uint64_t>(requests[i].target),
                                                " is not open"));
      }
      records[i] = seg->second;
    }
  }
  std::vector<std::shared_ptr<OpenSegmentRecord>> targets;
  for (size_t i = 0; i < requests.size(); ++i) {
    const TransferRequest& r = requests[i];
    const SegmentDescriptor& d = records[i]->descriptor;
    if (r.op != TransferOp::kRead && r.op != TransferOp::kWrite) {
      return absl::InvalidArgumentError(
          absl::StrCat("request ", i, ": unknown op ", static_cast<int>(r.op)));
    }
    if (r.local_addr == nullptr && r.length > 0) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": null local_addr"));
    }
    CRESCENT_RETURN_IF_ERROR(Annotate(tcp::CheckBounds(r.target_offset, r.length, d.length),
                                      absl::StrCat("request ", i, " to segment '", d.name, "'")));
    if (notify.has_value() &&
        std::find(targets.begin(), targets.end(), records[i]) == targets.end()) {
      if (records[i]->control == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("request ", i, ": cannot notify segment '",
                                                       d.name, "': no tcp path to its node"));
      }
      targets.push_back(records[i]);
    }
  }
  size_t first = 0;
  {
    MutexLock lock(&batch->mu);
    if (batch->capacity - batch->requests.size() < requests.size()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "batch ", static_cast<uint64_t>(batch_id), " holds ", batch->requests.size(), " of ",
          batch->capacity, " requests; ", requests.size(), " more do not fit"));
    }
    first = batch->requests.size();
    batch->requests.resize(first + requests.size());
    batch->pending += requests.size();
  }
  std::shared_ptr<Group> group;
  if (notify.has_value()) {
    group = std::make_shared<Group>();
    group->batch = batch;
    group->first_index = first;
    group->payload = std::move(notify->payload);
    group->targets = std::move(targets);
    group->remaining.store(requests.size());
    {
      MutexLock lock(&group->mu);
      group->statuses.resize(requests.size());
    }
    if (requests.empty()) FinishGroup(group);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const TransferRequest& r = requests[i];
    const std::shared_ptr<OpenSegmentRecord>& record = records[i];
    TransportOp op;
    op.op = r.op;
    op.local_addr = r.local_addr;
    op.target = record->data.get();
    op.target_offset = r.target_offset;
    op.length = r.length;
    const size_t index = first + i;
    if (group) {
      record->transport->Submit(op, [this, group, i, record](absl::Status s) {
        {
          MutexLock lock(&group->mu);
          group->statuses[i] = std::move(s);
        }
        if (group->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) FinishGroup(group);
      });
    } else {
      record->transport->Submit(op, [batch, index, record](absl::Status s) {
        CompleteRequest(batch, index, std::move(s));
      });
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RequestStatus>> TransferEngine::GetBatchStatus(BatchId batch_id) const {
  std::shared_ptr<Batch> batch;
  {
    MutexLock lock(&mu_);
    auto it = batches_.find(static_cast<uint64_t>(batch_id));
    if (it == batches_.end()) {
      return absl::NotFoundError(
          absl::StrCat("batch ", static_cast<uint64_t>(batch_id), " is not allocated"));
    }
    batch = it->second;
  }
  MutexLock lock(&batch->mu);
  // Clones: the caller's statuses share nothing with the batch's (see clone_status.h).
  std::vector<RequestStatus> out;
  out.reserve(batch->requests.size());
  for (const RequestStatus& r : batch->requests) {
    out.push_back(RequestStatus{r.state, internal::CloneStatus(r.status)});
  }
  return out;
}

absl::Status TransferEngine::Wait(BatchId batch_id, std::chrono::nanoseconds timeout) {
  std::shared_ptr<Batch> batch;
  {
    MutexLock lock(&mu_);
    auto it = batches_.find(static_cast<uint64_t>(batch_id));
    if (it == batches_.end()) {
      return absl::NotFoundError(
          absl::StrCat("batch ", static_cast<uint64_t>(batch_id), " is not allocated"));
    }
    batch = it->second;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(&batch->mu);
  while (batch->pending > 0 && batch->cv.WaitUntil(&batch->mu, deadline)) {
  }
  if (batch->pending > 0) {
    return absl::DeadlineExceededError(absl::StrCat(
        batch->pending, " of ", batch->requests.size(), " requests of batch ",
        static_cast<uint64_t>(batch_id), " still pending after ",
        std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count(), " ms"));
  }
  for (size_t i = 0; i < batch->requests.size(); ++i) {
    if (batch->requests[i].state == TransferState::kFailed) {
      return Annotate(batch->requests[i].status, absl::StrCat("request ", i));
    }
  }
  return absl::OkStatus();
}

absl::Status TransferEngine::FreeBatch(BatchId batch_id) {
  MutexLock lock(&mu_);
  auto it = batches_.find(static_cast<uint64_t>(batch_id));
  if (it == batches_.end()) {
    return absl::NotFoundError(
        absl::StrCat("batch ", static_cast<uint64_t>(batch_id), " is not allocated"));
  }
  {
    MutexLock batch_lock(&it->second->mu);
    if (it->second->pending > 0) {
      return absl::FailedPreconditionError(absl::StrCat("batch ", static_cast<uint64_t>(batch_id),
                                                        " has ", it->second->pending,
                                                        " requests pending"));
    }
  }
  batches_.erase(it);
  return absl::OkStatus();
}

// ------------------------------------------------------------------------------------------------
// Notifications.

void TransferEngine::SetNotificationCallback(std::function<void(const Notification&)> callback) {
  MutexLock lock(&callback_mu_);
  notification_callback_ = std::move(callback);
}

absl::Status TransferEngine::OnNotification(std::string_view segment, std::string_view payload) {
  std::function<void(const Notification&)> callback;
  {
    MutexLock lock(&callback_mu_);
    callback = notification_callback_;
  }
  if (!callback) {
    return absl::FailedPreconditionError(absl::StrCat(
        "notification for segment '", std::string(segment), "' refused: no callback is set"));
  }
  callback(Notification{std::string(segment), std::string(payload)});
  return absl::OkStatus();
}

}  // namespace crescent::kvstore
