// StorageServer: a storage-only KV pool node (`crescent kvstore server`).
//
// On Start it registers with the master (node id, endpoint = its KvStorageNode gRPC address),
// mounts a DRAM segment "<node-id>/dram" — transfer-engine shared memory, so clients reach it
// over shm on this host and over tcp from anywhere — and, with an SSD path, an SSD segment
// "<node-id>/ssd" backed by an SsdFile. A heartbeat thread keeps it alive at the master and
// collects MoveTasks, which a mover thread executes and reports with MoveDone:
//   demote:  read the DRAM copy, verify its checksum, write it to SSD (read back and checked);
//   promote: read the SSD copy (checksum verified), write it to DRAM.
// The source may be on another node (read through the transfer engine or its ReadBlock).
// If the master declares this node dead (heartbeat answers NotFound), it registers and mounts
// again with empty segments.
//
// Thread-safety: Stop and the accessors may be called from any thread.
#ifndef CRESCENT_KVSTORE_SERVER_STORAGE_SERVER_H_
#define CRESCENT_KVSTORE_SERVER_STORAGE_SERVER_H_

#include <grpcpp/server.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/server/ssd_file.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/transfer_engine.h"
#include "proto/kvstore.grpc.pb.h"

namespace crescent::kvstore::server {

struct StorageServerOptions {
  std::string master_address = "127.0.0.1:50051";
  std::string node_id;                      // Required; segment names derive from it.
  uint64_t dram_bytes = 0;                  // Required (> 0).
  std::string ssd_path;                     // Empty: no SSD segment.
  uint64_t ssd_bytes = 0;                   // Required with ssd_path.
  std::string transport = "auto";           // "tcp" (tcp only), "shm" or "auto" (shm and tcp).
  std::string data_listen = "127.0.0.1:0";  // The transfer engine's tcp data server.
  std::string rpc_listen = "127.0.0.1:0";   // KvStorageNode; registered as the endpoint.
  // The host the master and clients dial for both ports; empty: AdvertisedHost's default.
  std::string advertise_host;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds rpc_timeout{5000};
  // How long Start keeps retrying while the master is unreachable or still holds this id for a
  // dead predecessor: more than the master's default node timeout (10 s) plus a heartbeat.
  std::chrono::milliseconds master_wait{15000};
};

class StorageServer final : public v1::KvStorageNode::Service {
 public:
  // Starts the engine and block service, registers, mounts and starts heartbeating.
  // Registration is retried for options.master_wait while the master is unreachable or still
  // holds the id for a live-looking node (a previous incarnation that died without unmounting
  // is dropped once silent for the master's node timeout, 10 s by default).
  // Errors: InvalidArgument (options), Unavailable (cannot listen, or the master stayed
  // unreachable), the master's error (e.g. AlreadyExists: a live node still has this id after
  // master_wait), the engine's or the SSD file's.
  static absl::StatusOr<std::unique_ptr<StorageServer>> Start(const StorageServerOptions& options);
  ~StorageServer() override;  // Stop().

  // Graceful stop: stops heartbeats and moves, unmounts its segments at the master (its blocks
  // leave the pool at once instead of after the heartbeat timeout), stops serving. Idempotent.
  void Stop();

  const std::string& endpoint() const { return endpoint_; }
  std::string dram_segment() const { return options_.node_id + "/dram"; }
  std::string ssd_segment() const { return options_.node_id + "/ssd"; }
  uint64_t moves_done() const { return moves_done_.load(); }
  uint64_t moves_failed() const { return moves_failed_.load(); }

  grpc::Status ReadBlock(grpc::ServerContext* context, const v1::ReadBlockRequest* request,
                         v1::ReadBlockResponse* response) override;
  grpc::Status WriteBlock(grpc::ServerContext* context, const v1::WriteBlockRequest* request,
                          v1::WriteBlockResponse* response) override;

 private:
  explicit StorageServer(const StorageServerOptions& options) : options_(options) {}
  absl::Status RegisterAndMount();
  void HeartbeatLoop();
  void MoveLoop();
  absl::Status ExecuteMove(const v1::MoveTask& task);
  // Reads a replica's bytes (local or remote) into `out`, verified against its checksum.
  absl::Status ReadReplica(const v1::Replica& replica, std::span<std::byte> out);
  absl::Status ReadLocal(const std::string& segment, uint64_t offset, std::span<std::byte> out,
                         uint64_t checksum);
  absl::Status WriteLocal(const std::string& segment, uint64_t offset,
                          std::span<const std::byte> data);
  void SetDeadline(grpc::ClientContext* context) const;

  const StorageServerOptions options_;
  std::string endpoint_;
  std::unique_ptr<SegmentDirectory> directory_;
  std::unique_ptr<TransferEngine> engine_;
  std::byte* dram_ = nullptr;  // Owned by engine_.
  std::unique_ptr<SsdFile> ssd_;
  std::unique_ptr<v1::KvMaster::Stub> master_;
  std::unique_ptr<grpc::Server> server_;

  absl::Mutex mu_;
  std::deque<v1::MoveTask> moves_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread heartbeat_thread_;
  std::thread move_thread_;
  bool mounted_ = false;  // Set once by Start.
  std::atomic<bool> stopped_{false};
  std::atomic<uint64_t> moves_done_{0};
  std::atomic<uint64_t> moves_failed_{0};
};

}  // namespace crescent::kvstore::server

#endif  // CRESCENT_KVSTORE_SERVER_STORAGE_SERVER_H_
