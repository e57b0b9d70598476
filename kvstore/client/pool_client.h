// PoolClient: what prefill/decode nodes (and tools) use to put and get blocks in the KV pool.
//
//   PoolClientOptions options;
//   options.master_address = "10.0.0.5:50051";
//   auto client = PoolClient::Create(options);
//   std::vector<absl::Status> put = *(*client)->BatchPut(keys, sources);
//   auto got = *(*client)->BatchGet(keys, destinations);   // per key: bytes read, or a miss
//
// Put is the master's two-phase put: BatchPutStart reserves replicas, the client writes each
// replica (DRAM: one-sided transfer-engine writes; SSD: the storage node's WriteBlock), then
// BatchPutEnd commits with the XXH3-64 checksum of the bytes; any failure revokes the key
// (PutRevoke), so no reader ever sees a partly written block. Get leases the replicas
// (BatchGet), reads a DRAM replica with the transfer engine, or an SSD-only one through the
// storage node's ReadBlock (which verifies the bytes), falls back to the next replica on any
// failure, and verifies every byte range against the master's checksum: a mismatch is a miss
// (DataLoss) plus a logged error, never wrong bytes reported as a hit.
//
// Thread-safety: all methods are thread-safe; concurrent calls share the engine and channels.
#ifndef CRESCENT_KVSTORE_CLIENT_POOL_CLIENT_H_
#define CRESCENT_KVSTORE_CLIENT_POOL_CLIENT_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/transfer_engine.h"
#include "proto/kvstore.grpc.pb.h"

namespace crescent::kvstore::client {

struct PoolClientOptions {
  std::string master_address = "127.0.0.1:50051";  // KvMaster and KvSegmentDirectory.
  // How to reach DRAM replicas: "tcp" (tcp only), "shm" (shared memory only: same host),
  // "auto" (shm when the owner is on this host, tcp otherwise). Ignored for `engine`'s choice
  // of transports, but still restricts the order used to open segments.
  std::string transport = "auto";
  // An existing engine to use (not owned; must outlive the client and resolve segment names
  // through the master's directory). Null: the client creates its own, without a data server.
  TransferEngine* engine = nullptr;
  int replica_count = 1;  // Copies per put, on distinct nodes.
  std::chrono::milliseconds rpc_timeout{10000};
};

// Counters since creation, for logs, tests and benchmarks.
struct PoolClientStats {
  uint64_t dram_reads = 0;           // Keys served from a DRAM replica.
  uint64_t ssd_reads = 0;            // Keys served from an SSD replica.
  uint64_t checksum_mismatches = 0;  // Replica reads whose bytes failed the checksum.
  uint64_t replica_failures = 0;     // Replica reads or writes that failed in transport.
};

class PoolClient {
 public:
  // Creates the client and, without options.engine, a transfer engine whose segment directory
  // is the master's. Does not contact the master. Errors: InvalidArgument (transport name,
  // replica_count < 1), the engine's creation error.
  static absl::StatusOr<std::unique_ptr<PoolClient>> Create(const PoolClientOptions& options);

  ~PoolClient();
  PoolClient(const PoolClient&) = delete;
  PoolClient& operator=(const PoolClient&) = delete;

  // Whether each key is committed with a live replica (no lease). Errors: the RPC's.
  absl::StatusOr<std::vector<bool>> BatchExists(std::span<const uint64_t> keys);

  // How many leading hashes of a block-hash chain the pool holds. Errors: the RPC's.
  absl::StatusOr<size_t> LongestPrefix(std::span<const uint64_t> hashes);

  // Stores buffers[i] under keys[i]. Per key: OK (committed), AlreadyExists (the key is
  // committed or being put by someone else: its bytes are whatever that put stored),
  // ResourceExhausted (no room), InvalidArgument (empty buffer), Unavailable / DeadlineExceeded
  // (a replica write failed; the key was revoked), or the master's PutEnd error. The whole call
  // fails only if BatchPutStart's RPC fails (then nothing was reserved) or the sizes differ.
  // REQUIRES: the buffers stay valid and unchanged during the call.
  absl::StatusOr<std::vector<absl::Status>> BatchPut(
      std::span<const uint64_t> keys, std::span<const std::span<const std::byte>> buffers);

  // Reads keys[i] into buffers[i]. Per key: the object's size (the first that many bytes of the
  // buffer hold exactly the bytes that were put), or NotFound (not in the pool), DataLoss (every
  // replica failed its checksum), Unavailable (no replica could be read), InvalidArgument (the
  // buffer is smaller than the object). After an error the buffer's contents are unspecified
  // and must not be used. The call fails only if the BatchGet RPC fails or the sizes differ.
  absl::StatusOr<std::vector<absl::StatusOr<uint64_t>>> BatchGet(
      std::span<const uint64_t> keys, std::span<const std::span<std::byte>> buffers);

  PoolClientStats stats() const;
  TransferEngine* engine() const { return engine_; }

 private:
  PoolClient(const PoolClientOptions& options) : options_(options) {}

  // An open handle for `segment`, cached; a failed transfer forgets it (ForgetSegment).
  absl::StatusOr<SegmentHandle> OpenCached(const std::string& segment);
  void ForgetSegment(const std::string& segment);
  v1::KvStorageNode::Stub* StorageStub(const std::string& endpoint);
  // Runs `requests` in one batch and waits for all of them; one status per request.
  std::vector<absl::Status> RunTransfers(std::span<const TransferRequest> requests);
  void SetDeadline(grpc::ClientContext* context) const;

  const PoolClientOptions options_;
  std::vector<std::string> transport_order_;
  std::unique_ptr<SegmentDirectory> own_directory_;
  std::unique_ptr<TransferEngine> own_engine_;
  TransferEngine* engine_ = nullptr;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KvMaster::Stub> master_;

  absl::Mutex mu_;
  std::map<std::string, SegmentHandle> segments_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<v1::KvStorageNode::Stub>> storage_ ABSL_GUARDED_BY(mu_);

  std::atomic<uint64_t> dram_reads_{0};
  std::atomic<uint64_t> ssd_reads_{0};
  std::atomic<uint64_t> checksum_mismatches_{0};
  std::atomic<uint64_t> replica_failures_{0};
};

}  // namespace crescent::kvstore::client

#endif  // CRESCENT_KVSTORE_CLIENT_POOL_CLIENT_H_
