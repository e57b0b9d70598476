// MasterService: the KV master's gRPC service (proto/kvstore.proto, service KvMaster).
//
// A thin edge around MasterState: each RPC takes the mutex, reads the clock, calls the state and
// converts the answer. absl status codes map one to one onto gRPC's; per-key errors travel as
// KeyStatus inside the response, RPC-level errors (unknown node, bad segment) as the RPC status.
//
// Thread-safety: all methods are thread-safe (gRPC calls them from its own threads).
#ifndef CRESCENT_KVSTORE_MASTER_MASTER_SERVICE_H_
#define CRESCENT_KVSTORE_MASTER_MASTER_SERVICE_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/master/master_state.h"
#include "proto/kvstore.grpc.pb.h"
#include "src/common/clock.h"

namespace crescent::kvstore::master {

class MasterService final : public v1::KvMaster::Service {
 public:
  // REQUIRES: `clock` outlives the service. Errors: as MasterState::Create.
  static absl::StatusOr<std::unique_ptr<MasterService>> Create(const MasterConfig& config,
                                                               const Clock* clock);

  // Runs MasterState::Tick at the clock's time. The owner calls it periodically (e.g. every
  // 100 ms) from a thread of its choice.
  TickReport Tick();

  grpc::Status RegisterNode(grpc::ServerContext* context, const v1::RegisterNodeRequest* request,
                            v1::RegisterNodeResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status MountSegment(grpc::ServerContext* context, const v1::MountSegmentRequest* request,
                            v1::MountSegmentResponse* response) override;
  grpc::Status UnmountSegment(grpc::ServerContext* context,
                              const v1::UnmountSegmentRequest* request,
                              v1::UnmountSegmentResponse* response) override;
  grpc::Status BatchPutStart(grpc::ServerContext* context, const v1::PutStartRequest* request,
                             v1::PutStartResponse* response) override;
  grpc::Status BatchPutEnd(grpc::ServerContext* context, const v1::PutEndRequest* request,
                           v1::PutEndResponse* response) override;
  grpc::Status PutRevoke(grpc::ServerContext* context, const v1::PutRevokeRequest* request,
                         v1::PutRevokeResponse* response) override;
  grpc::Status BatchExists(grpc::ServerContext* context, const v1::KeysRequest* request,
                           v1::ExistsResponse* response) override;
  grpc::Status BatchGet(grpc::ServerContext* context, const v1::KeysRequest* request,
                        v1::GetResponse* response) override;
  grpc::Status LongestPrefix(grpc::ServerContext* context, const v1::KeysRequest* request,
                             v1::LongestPrefixResponse* response) override;
  grpc::Status PinFor(grpc::ServerContext* context, const v1::PinRequest* request,
                      v1::PinResponse* response) override;
  grpc::Status MoveDone(grpc::ServerContext* context, const v1::MoveDoneRequest* request,
                        v1::MoveDoneResponse* response) override;

 private:
  MasterService(std::unique_ptr<MasterState> state, const Clock* clock)
      : clock_(clock), state_(std::move(state)) {}

  const Clock* const clock_;
  absl::Mutex mu_;
  std::unique_ptr<MasterState> state_ ABSL_GUARDED_BY(mu_);
};

// absl::Status <-> gRPC, for clients of this service too.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace crescent::kvstore::master

#endif  // CRESCENT_KVSTORE_MASTER_MASTER_SERVICE_H_
