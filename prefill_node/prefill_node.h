// PrefillNode: the body of a `crescent prefill-node` process.
//
// Start: loads the model; creates the transfer engine (segment names resolved through the KV
// master's directory) and the engine, whose KV cache is the engine's shared segment
// "<node-id>/kv"; embeds a pool storage node "<node-id>-pool" with pool_dram_bytes of this
// node's DRAM (a prefill node's DRAM is part of the pool); measures a cost profile (a few
// throwaway prefills and a transfer-engine write); serves gRPC PrefillNode on grpc_listen and
// /health /ready /metrics on the metrics port; registers with the Conductor and heartbeats its
// load (NodeAgent), including which block hashes its prefix cache holds.
//
// Drain (SIGTERM): new Prefill calls get UNAVAILABLE, heartbeats say draining, in-flight
// prefills and queued pool puts finish (bounded), then everything stops.
//
// Thread-safety: Drain/Stop from one thread; accessors from any.
#ifndef CRESCENT_PREFILL_NODE_PREFILL_NODE_H_
#define CRESCENT_PREFILL_NODE_PREFILL_NODE_H_

#include <grpcpp/server.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvstore/client/pool_client.h"
#include "kvstore/server/storage_server.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/transfer_engine.h"
#include "prefill_node/cache_report.h"
#include "prefill_node/prefill_service.h"
#include "proto/cluster.pb.h"
#include "src/cluster/node_agent.h"
#include "src/cluster/node_options.h"
#include "src/engine/backend.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"
#include "src/server/http_server.h"
#include "src/server/metrics.h"

namespace crescent::prefill_node {

// The shared node options (src/cluster/node_options.h; transport: "auto" = shm, rdma, tcp;
// "tcp" = tcp only; "shm" = shm, tcp; "rdma" = rdma, tcp), then the prefill node's own.
struct PrefillNodeOptions : cluster::NodeOptions {
  uint64_t pool_dram_bytes = uint64_t{256} << 20;  // 0: no embedded pool storage.
  // How long Start keeps retrying while the KV master is unreachable.
  std::chrono::milliseconds master_wait{15000};
  PrefillServiceOptions service;
};

// The transfer-engine transport order for a --transport value; InvalidArgument if unknown.
absl::StatusOr<std::vector<std::string>> TransportOrder(const std::string& transport);

class PrefillNode {
 public:
  // Starts everything described above. Errors: InvalidArgument (options), the model's,
  // engine's, transfer engine's, pool's or server's error (Unavailable: cannot listen, or the
  // KV master stayed unreachable for master_wait).
  static absl::StatusOr<std::unique_ptr<PrefillNode>> Start(const PrefillNodeOptions& options);
  ~PrefillNode();  // Stop().
  PrefillNode(const PrefillNode&) = delete;
  PrefillNode& operator=(const PrefillNode&) = delete;

  // Stops taking work, tells the Conductor, waits up to `timeout` for in-flight prefills and
  // queued pool puts, then Stop()s. Returns whether everything finished in time.
  bool Drain(std::chrono::milliseconds timeout);
  // Stops serving and releases everything; in-flight prefills are cancelled. Idempotent.
  void Stop();

  const std::string& grpc_endpoint() const { return grpc_endpoint_; }
  // "host:port" of the metrics server, "-" without one.
  std::string metrics_endpoint() const;
  // `crescent: prefill <id> ready grpc=<host:port> http=<host:port or ->`.
  std::string ReadyLine() const;
  const cluster::v1::NodeInfo& info() const { return info_; }
  PrefillNodeService* service() const { return service_.get(); }
  engine::Engine* engine() const { return engine_.get(); }
  cluster::NodeAgent* agent() const { return agent_.get(); }

 private:
  explicit PrefillNode(const PrefillNodeOptions& options) : options_(options) {}
  absl::Status Init();
  absl::Status CreateEngine();
  // Measured prefill and transfer points for the Conductor's cost model.
  cluster::v1::CostProfile MeasureProfile();
  cluster::v1::NodeLoad Load();

  const PrefillNodeOptions options_;
  std::unique_ptr<engine::LoadedModel> model_;
  std::unique_ptr<engine::Backend> backend_;
  std::unique_ptr<kvstore::SegmentDirectory> directory_;
  std::unique_ptr<kvstore::TransferEngine> transfer_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<kvstore::client::PoolClient> pool_;
  std::unique_ptr<kvstore::server::StorageServer> storage_;
  server::MetricsRegistry registry_;
  std::unique_ptr<PrefillNodeService> service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::unique_ptr<server::HttpServer> http_;
  std::unique_ptr<cluster::NodeAgent> agent_;
  cluster::v1::NodeInfo info_;
  std::string grpc_endpoint_;

  std::mutex load_mu_;
  CacheReport cache_report_;  // guarded by load_mu_
  bool stopped_ = false;
};

}  // namespace crescent::prefill_node

#endif  // CRESCENT_PREFILL_NODE_PREFILL_NODE_H_
