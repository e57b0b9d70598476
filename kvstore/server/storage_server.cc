#include "kvstore/server/storage_server.h"

#include <grpcpp/grpcpp.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/master/master_service.h"
#include "kvstore/master/master_state.h"
#include "src/common/grpc_listen.h"
#include "src/common/hash.h"
#include "src/common/host_port.h"
#include "src/common/logging.h"
#include "src/common/status.h"

namespace crescent::kvstore::server {
namespace {

using master::FromGrpcStatus;
using master::KeyHex;
using master::ToGrpcStatus;

}  // namespace

void StorageServer::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
}

absl::StatusOr<std::unique_ptr<StorageServer>> StorageServer::Start(
    const StorageServerOptions& options) {
  if (options.node_id.empty()) return absl::InvalidArgumentError("storage node needs a node id");
  if (options.dram_bytes == 0)
    return absl::InvalidArgumentError("storage node needs DRAM bytes > 0");
  if (!options.ssd_path.empty() && options.ssd_bytes == 0) {
    return absl::InvalidArgumentError("--ssd-path needs SSD bytes > 0");
  }
  TransferEngineOptions engine_options;
  if (options.transport == "tcp") {
    engine_options.transports = {"tcp"};
  } else if (options.transport == "shm" || options.transport == "auto") {
    engine_options.transports = {"shm", "tcp"};
  } else {
    return absl::InvalidArgumentError("unknown transport '" + options.transport +
                                      "' (want tcp, shm or auto)");
  }
  CRESCENT_ASSIGN_OR_RETURN(HostPort data,
                            ParseHostPort(options.data_listen, "data listen address"));
  engine_options.tcp.listen_host = data.host;
  engine_options.tcp.listen_port = data.port;
  engine_options.tcp.advertise_host = AdvertisedHost(data.host, options.advertise_host);
  CRESCENT_ASSIGN_OR_RETURN(HostPort rpc, ParseHostPort(options.rpc_listen, "rpc listen address"));

  std::unique_ptr<StorageServer> server(new StorageServer(options));
  server->directory_ =
      client::GrpcSegmentDirectory::Create(options.master_address, options.rpc_timeout);
  CRESCENT_ASSIGN_OR_RETURN(server->engine_,
                            TransferEngine::Create(engine_options, server->directory_.get()));
  server->master_ = v1::KvMaster::NewStub(
      grpc::CreateChannel(options.master_address, grpc::InsecureChannelCredentials()));
  if (!options.ssd_path.empty()) {
    CRESCENT_ASSIGN_OR_RETURN(server->ssd_, SsdFile::Open(options.ssd_path, options.ssd_bytes));
  }

  grpc::ServerBuilder builder;
  int port = 0;
  AddExclusiveListeningPort(builder, options.rpc_listen, &port);
  builder.RegisterService(server.get());
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    return absl::UnavailableError("storage node cannot listen on " + options.rpc_listen);
  }
  server->endpoint_ =
      JoinHostPort(AdvertisedHost(rpc.host, options.advertise_host), static_cast<uint16_t>(port));

  // A previous incarnation killed before unpublishing leaves its names in the directory.
  (void)server->directory_->Unpublish(server->dram_segment());
  CRESCENT_ASSIGN_OR_RETURN(void* dram, server->engine_->AllocateSharedSegment(
                                            server->dram_segment(), options.dram_bytes));
  server->dram_ = static_cast<std::byte*>(dram);
  // The master may still be starting (e.g. `crescent up` starts everything at once), or still
  // hold this id for a previous incarnation of this node that died without unregistering
  // (AlreadyExists until it has been silent for the master's node timeout).
  const auto give_up = std::chrono::steady_clock::now() + options.master_wait;
  absl::Status registered = server->RegisterAndMount();
  bool told = false;
  while ((absl::IsUnavailable(registered) || absl::IsAlreadyExists(registered)) &&
         std::chrono::steady_clock::now() < give_up) {
    if (absl::IsAlreadyExists(registered) && !told) {
      CRESCENT_LOG(warn, "kv storage node {}: {}; retrying", options.node_id,
                   std::string(registered.message()));
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    registered = server->RegisterAndMount();
  }
  CRESCENT_RETURN_IF_ERROR(registered);
  server->mounted_ = true;
  server->heartbeat_thread_ = std::thread([s = server.get()] { s->HeartbeatLoop(); });
  server->move_thread_ = std::thread([s = server.get()] { s->MoveLoop(); });
  CRESCENT_LOG(info, "kv storage node {}: endpoint {}, data server {}, dram {} bytes{}",
               options.node_id, server->endpoint_, server->engine_->tcp_endpoint(),
               options.dram_bytes,
               options.ssd_path.empty()
                   ? std::string()
                   : absl::StrCat(", ssd ", options.ssd_bytes, " bytes at ", options.ssd_path));
  return server;
}

absl::Status StorageServer::RegisterAndMount() {
  {
    v1::RegisterNodeRequest request;
    request.set_node_id(options_.node_id);
    request.set_endpoint(endpoint_);
    v1::RegisterNodeResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    CRESCENT_RETURN_IF_ERROR(FromGrpcStatus(master_->RegisterNode(&context, request, &response)));
  }
  auto mount = [&](const std::string& segment, v1::Tier tier, uint64_t bytes) {
    v1::MountSegmentRequest request;
    request.set_node_id(options_.node_id);
    request.set_segment(segment);
    request.set_tier(tier);
    request.set_capacity_bytes(bytes);
    v1::MountSegmentResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    return FromGrpcStatus(master_->MountSegment(&context, request, &response));
  };
  CRESCENT_RETURN_IF_ERROR(mount(dram_segment(), v1::TIER_DRAM, options_.dram_bytes));
  if (ssd_ != nullptr) {
    CRESCENT_RETURN_IF_ERROR(mount(ssd_segment(), v1::TIER_SSD, options_.ssd_bytes));
  }
  return absl::OkStatus();
}

StorageServer::~StorageServer() { Stop(); }

void StorageServer::Stop() {
  if (stopped_.exchange(true)) return;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  if (move_thread_.joinable()) move_thread_.join();
  if (mounted_) {
    std::vector<std::string> segments = {dram_segment()};
    if (ssd_ != nullptr) segments.push_back(ssd_segment());
    for (const std::string& segment : segments) {
      v1::UnmountSegmentRequest request;
      request.set_segment(segment);
      v1::UnmountSegmentResponse response;
      grpc::ClientContext context;
      SetDeadline(&context);
      absl::Status s = FromGrpcStatus(master_->UnmountSegment(&context, request, &response));
      if (!s.ok()) CRESCENT_LOG(warn, "unmounting {}: {}", segment, s.ToString());
    }
  }
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  engine_.reset();  // Unpublishes the DRAM segment.
}

void StorageServer::HeartbeatLoop() {
  auto stopping = [this] { return stopping_; };
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping),
                               absl::FromChrono(options_.heartbeat_interval))) {
        return;
      }
    }
    v1::HeartbeatRequest request;
    request.set_node_id(options_.node_id);
    v1::HeartbeatResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Status s = FromGrpcStatus(master_->Heartbeat(&context, request, &response));
    if (absl::IsNotFound(s)) {
      CRESCENT_LOG(warn,
                   "kv storage node {}: the master does not know this node ({}); "
                   "registering again with empty segments",
                   options_.node_id, s.ToString());
      s = RegisterAndMount();
      if (!s.ok()) CRESCENT_LOG(error, "re-registering: {}", s.ToString());
      continue;
    }
    if (!s.ok()) {
      CRESCENT_LOG(warn, "kv storage node {}: heartbeat failed: {}", options_.node_id,
                   s.ToString());
      continue;
    }
    if (response.tasks_size() > 0) {
      absl::MutexLock lock(&mu_);
      for (const v1::MoveTask& task : response.tasks()) moves_.push_back(task);
    }
  }
}

void StorageServer::MoveLoop() {
  auto ready = [this] { return stopping_ || !moves_.empty(); };
  while (true) {
    v1::MoveTask task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      task = std::move(moves_.front());
      moves_.pop_front();
    }
    absl::Status result = ExecuteMove(task);
    if (result.ok()) {
      ++moves_done_;
    } else {
      ++moves_failed_;
      CRESCENT_LOG(error, "kv storage node {}: {} of key {} failed: {}", options_.node_id,
                   task.kind() == v1::MoveTask::KIND_DEMOTE ? "demotion" : "promotion",
                   KeyHex(task.key()), result.ToString());
    }
    v1::MoveDoneRequest request;
    request.set_task_id(task.id());
    request.mutable_result()->set_code(static_cast<int>(result.code()));
    request.mutable_result()->set_message(std::string(result.message()));
    v1::MoveDoneResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Status s = FromGrpcStatus(master_->MoveDone(&context, request, &response));
    if (!s.ok()) CRESCENT_LOG(warn, "MoveDone({}): {}", task.id(), s.ToString());
  }
}

absl::Status StorageServer::ExecuteMove(const v1::MoveTask& task) {
  const v1::Replica& from = task.from();
  const v1::Replica& to = task.to();
  if (to.node_id() != options_.node_id) {
    return absl::InvalidArgumentError("move task " + std::to_string(task.id()) + " targets node " +
                                      to.node_id());
  }
  if (from.length() != to.length()) {
    return absl::InvalidArgumentError("move task lengths differ");
  }
  std::vector<std::byte> bytes(from.length());
  CRESCENT_RETURN_IF_ERROR(ReadReplica(from, bytes));
  return WriteLocal(to.segment(), to.offset(), bytes);
}

absl::Status StorageServer::ReadReplica(const v1::Replica& replica, std::span<std::byte> out) {
  if (replica.node_id() == options_.node_id) {
    return ReadLocal(replica.segment(), replica.offset(), out, replica.checksum());
  }
  if (replica.tier() == v1::TIER_SSD) {
    auto stub = v1::KvStorageNode::NewStub(
        grpc::CreateChannel(replica.endpoint(), grpc::InsecureChannelCredentials()));
    v1::ReadBlockRequest request;
    request.set_segment(replica.segment());
    request.set_offset(replica.offset());
    request.set_length(replica.length());
    request.set_checksum(replica.checksum());
    v1::ReadBlockResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    CRESCENT_RETURN_IF_ERROR(FromGrpcStatus(stub->ReadBlock(&context, request, &response)));
    if (response.data().size() != out.size()) return absl::InternalError("short ReadBlock");
    std::memcpy(out.data(), response.data().data(), out.size());
  } else {
    CRESCENT_ASSIGN_OR_RETURN(SegmentHandle handle, engine_->OpenSegment(replica.segment()));
    BatchId batch = engine_->AllocateBatch(1);
    TransferRequest request{TransferOp::kRead, out.data(), handle, replica.offset(), out.size()};
    absl::Status s = engine_->SubmitTransfer(batch, {&request, 1});
    if (s.ok()) {
      do {
        s = engine_->Wait(batch, std::chrono::seconds(30));
      } while (absl::IsDeadlineExceeded(s));
    }
    (void)engine_->FreeBatch(batch);
    (void)engine_->CloseSegment(handle);
    CRESCENT_RETURN_IF_ERROR(s);
  }
  if (Hash64(out.data(), out.size()) != replica.checksum()) {
    return absl::DataLossError("checksum mismatch reading key source " + replica.segment());
  }
  return absl::OkStatus();
}

absl::Status StorageServer::ReadLocal(const std::string& segment, uint64_t offset,
                                      std::span<std::byte> out, uint64_t checksum) {
  if (segment == dram_segment()) {
    if (offset > options_.dram_bytes || out.size() > options_.dram_bytes - offset) {
      return absl::OutOfRangeError("read beyond the DRAM segment " + segment);
    }
    std::memcpy(out.data(), dram_ + offset, out.size());
    if (Hash64(out.data(), out.size()) != checksum) {
      return absl::DataLossError(absl::StrCat("checksum mismatch for ", out.size(), " bytes at ",
                                              offset, " in ", segment));
    }
    return absl::OkStatus();
  }
  if (ssd_ != nullptr && segment == ssd_segment()) {
    return ssd_->ReadVerified(offset, out, checksum);
  }
  return absl::NotFoundError("segment " + segment + " is not on node " + options_.node_id);
}

absl::Status StorageServer::WriteLocal(const std::string& segment, uint64_t offset,
                                       std::span<const std::byte> data) {
  if (segment == dram_segment()) {
    if (offset > options_.dram_bytes || data.size() > options_.dram_bytes - offset) {
      return absl::OutOfRangeError("write beyond the DRAM segment " + segment);
    }
    std::memcpy(dram_ + offset, data.data(), data.size());
    return absl::OkStatus();
  }
  if (ssd_ != nullptr && segment == ssd_segment()) return ssd_->Write(offset, data);
  return absl::NotFoundError("segment " + segment + " is not on node " + options_.node_id);
}

grpc::Status StorageServer::ReadBlock(grpc::ServerContext* /*context*/,
                                      const v1::ReadBlockRequest* request,
                                      v1::ReadBlockResponse* response) {
  if (request->length() > (256u << 20)) {
    return ToGrpcStatus(absl::InvalidArgumentError("ReadBlock of more than 256 MiB"));
  }
  std::string* data = response->mutable_data();
  data->resize(request->length());
  absl::Status s =
      ReadLocal(request->segment(), request->offset(),
                std::span<std::byte>(reinterpret_cast<std::byte*>(data->data()), data->size()),
                request->checksum());
  if (!s.ok()) {
    if (absl::IsDataLoss(s)) CRESCENT_LOG(error, "kv storage node: {}", s.ToString());
    data->clear();
  }
  return ToGrpcStatus(s);
}

grpc::Status StorageServer::WriteBlock(grpc::ServerContext* /*context*/,
                                       const v1::WriteBlockRequest* request,
                                       v1::WriteBlockResponse* /*response*/) {
  const std::string& data = request->data();
  return ToGrpcStatus(WriteLocal(
      request->segment(), request->offset(),
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(data.data()), data.size())));
}

}  // namespace crescent::kvstore::server
