#include "kvstore/master/master_service.h"

#include <string>
#include <utility>
#include <vector>

namespace crescent::kvstore::master {
namespace {

void SetKeyStatus(const absl::Status& status, v1::KeyStatus* out) {
  out->set_code(static_cast<int32_t>(status.code()));
  out->set_message(std::string(status.message()));
}

void ToProto(const Replica& r, v1::Replica* out) {
  out->set_node_id(r.node_id);
  out->set_endpoint(r.endpoint);
  out->set_segment(r.segment);
  out->set_tier(r.tier == Tier::kDram ? v1::TIER_DRAM : v1::TIER_SSD);
  out->set_offset(r.offset);
  out->set_length(r.length);
  out->set_checksum(r.checksum);
}

void ToProto(const MoveTask& t, v1::MoveTask* out) {
  out->set_id(t.id);
  out->set_kind(t.kind == MoveTask::Kind::kDemote ? v1::MoveTask::KIND_DEMOTE
                                                  : v1::MoveTask::KIND_PROMOTE);
  out->set_key(t.key);
  ToProto(t.from, out->mutable_from());
  ToProto(t.to, out->mutable_to());
  out->set_deadline_ns(t.deadline_ns);
}

std::vector<uint64_t> Keys(const v1::KeysRequest& request) {
  return std::vector<uint64_t>(request.keys().begin(), request.keys().end());
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode values are gRPC's by design.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<std::unique_ptr<MasterService>> MasterService::Create(const MasterConfig& config,
                                                                     const Clock* clock) {
  auto state = MasterState::Create(config);
  if (!state.ok()) return state.status();
  return std::unique_ptr<MasterService>(new MasterService(*std::move(state), clock));
}

TickReport MasterService::Tick() {
  absl::MutexLock lock(&mu_);
  return state_->Tick(clock_->NowNanos());
}

grpc::Status MasterService::RegisterNode(grpc::ServerContext*,
                                         const v1::RegisterNodeRequest* request,
                                         v1::RegisterNodeResponse*) {
  absl::MutexLock lock(&mu_);
  return ToGrpcStatus(
      state_->RegisterNode(request->node_id(), request->endpoint(), clock_->NowNanos()));
}

grpc::Status MasterService::Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) {
  absl::MutexLock lock(&mu_);
  auto tasks = state_->Heartbeat(request->node_id(), clock_->NowNanos());
  if (!tasks.ok()) return ToGrpcStatus(tasks.status());
  for (const MoveTask& t : *tasks) ToProto(t, response->add_tasks());
  return grpc::Status::OK;
}

grpc::Status MasterService::MountSegment(grpc::ServerContext*,
                                         const v1::MountSegmentRequest* request,
                                         v1::MountSegmentResponse*) {
  const Tier tier = request->tier() == v1::TIER_SSD ? Tier::kSsd : Tier::kDram;
  absl::MutexLock lock(&mu_);
  return ToGrpcStatus(state_->MountSegment(request->node_id(), request->segment(), tier,
                                           request->capacity_bytes(), clock_->NowNanos()));
}

grpc::Status MasterService::UnmountSegment(grpc::ServerContext*,
                                           const v1::UnmountSegmentRequest* request,
                                           v1::UnmountSegmentResponse*) {
  absl::MutexLock lock(&mu_);
  return ToGrpcStatus(state_->UnmountSegment(request->segment(), clock_->NowNanos()));
}

grpc::Status MasterService::BatchPutStart(grpc::ServerContext*, const v1::PutStartRequest* request,
                                          v1::PutStartResponse* response) {
  std::vector<PutSpec> puts;
  puts.reserve(request->items_size());
  for (const auto& item : request->items()) puts.push_back({item.key(), item.size()});
  absl::MutexLock lock(&mu_);
  auto results = state_->BatchPutStart(puts, request->replica_count(), clock_->NowNanos());
  for (const auto& result : results) {
    v1::PutStartResponse::Item* item = response->add_items();
    SetKeyStatus(result.status(), item->mutable_status());
    if (!result.ok()) continue;
    for (const Replica& r : *result) ToProto(r, item->add_replicas());
  }
  return grpc::Status::OK;
}

grpc::Status MasterService::BatchPutEnd(grpc::ServerContext*, const v1::PutEndRequest* request,
                                        v1::PutEndResponse* response) {
  std::vector<PutEndSpec> ends;
  ends.reserve(request->items_size());
  for (const auto& item : request->items()) ends.push_back({item.key(), item.checksum()});
  absl::MutexLock lock(&mu_);
  for (const absl::Status& s : state_->BatchPutEnd(ends, clock_->NowNanos())) {
    SetKeyStatus(s, response->add_statuses());
  }
  return grpc::Status::OK;
}

grpc::Status MasterService::PutRevoke(grpc::ServerContext*, const v1::PutRevokeRequest* request,
                                      v1::PutRevokeResponse*) {
  absl::MutexLock lock(&mu_);
  return ToGrpcStatus(state_->PutRevoke(request->key(), clock_->NowNanos()));
}

grpc::Status MasterService::BatchExists(grpc::ServerContext*, const v1::KeysRequest* request,
                                        v1::ExistsResponse* response) {
  const std::vector<uint64_t> keys = Keys(*request);
  absl::MutexLock lock(&mu_);
  for (bool exists : state_->BatchExists(keys, clock_->NowNanos())) response->add_exists(exists);
  return grpc::Status::OK;
}

grpc::Status MasterService::BatchGet(grpc::ServerContext*, const v1::KeysRequest* request,
                                     v1::GetResponse* response) {
  const std::vector<uint64_t> keys = Keys(*request);
  absl::MutexLock lock(&mu_);
  for (const auto& result : state_->BatchGet(keys, clock_->NowNanos())) {
    v1::GetResponse::Item* item = response->add_items();
    SetKeyStatus(result.status(), item->mutable_status());
    if (!result.ok()) continue;
    for (const Replica& r : result->replicas) ToProto(r, item->add_replicas());
    item->set_lease_expires_ns(result->lease_expires_ns);
    item->set_promotion_task_id(result->promotion_task_id.value_or(0));
  }
  return grpc::Status::OK;
}

grpc::Status MasterService::LongestPrefix(grpc::ServerContext*, const v1::KeysRequest* request,
                                          v1::LongestPrefixResponse* response) {
  const std::vector<uint64_t> keys = Keys(*request);
  absl::MutexLock lock(&mu_);
  response->set_length(state_->LongestPrefix(keys, clock_->NowNanos()));
  return grpc::Status::OK;
}

grpc::Status MasterService::PinFor(grpc::ServerContext*, const v1::PinRequest* request,
                                   v1::PinResponse*) {
  absl::MutexLock lock(&mu_);
  return ToGrpcStatus(state_->PinFor(request->key(), request->ttl_ns(), clock_->NowNanos()));
}

grpc::Status MasterService::MoveDone(grpc::ServerContext*, const v1::MoveDoneRequest* request,
                                     v1::MoveDoneResponse*) {
  const absl::Status result(static_cast<absl::StatusCode>(request->result().code()),
                            request->result().message());
  absl::MutexLock lock(&mu_);
  return ToGrpcStatus(state_->MoveDone(request->task_id(), result, clock_->NowNanos()));
}

}  // namespace crescent::kvstore::master
