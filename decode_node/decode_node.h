// DecodeNode: the body of `crescent decode-node` — a model, an engine whose KV cache lives in a
// transfer-engine segment "<node-id>/kv" (published through the KV master, so prefill nodes can
// write reserved pages over shm, rdma or tcp), the DecodeNode gRPC service, a metrics-only HTTP
// server (/health, /ready, /metrics), and a NodeAgent registering the node with the Conductor and
// heartbeating its load.
//
//   DecodeNodeOptions o;  o.model_path = ...; o.node_id = "decode-0"; o.conductor_address = ...;
//   auto node = DecodeNode::Start(o);            // serving when it returns
//   ... SIGTERM ...
//   (*node)->Drain(std::chrono::seconds(30));    // no new reservations; in-flight decodes end
//   (*node)->Stop();
//
// Thread-safety: Drain and Stop are called from one controlling thread; accessors are const.
#ifndef CRESCENT_DECODE_NODE_DECODE_NODE_H_
#define CRESCENT_DECODE_NODE_DECODE_NODE_H_

#include <grpcpp/server.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "decode_node/decode_service.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/transfer/transfer_engine.h"
#include "src/cluster/node_agent.h"
#include "src/cluster/node_options.h"
#include "src/engine/backend.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"
#include "src/server/http_server.h"
#include "src/server/metrics.h"

namespace crescent::decode_node {

// The shared node options (src/cluster/node_options.h; transport: see TransportsFor), then the
// decode node's own.
struct DecodeNodeOptions : cluster::NodeOptions {
  int max_running = 64;
  int speculative_tokens = 0;  // the engine's speculative_tokens (prompt-lookup drafts a step)
  // the engine's speculative_draft_cost
  double speculative_draft_cost = engine::EngineOptions{}.speculative_draft_cost;
  int64_t reserve_timeout_ms = 30000;  // Default and upper bound of a reservation's wait.
};

// The transfer-engine transports a --transport value selects, in preference order. rdma is
// always listed (the engine skips it without a device). InvalidArgument for an unknown name.
absl::StatusOr<std::vector<std::string>> TransportsFor(std::string_view transport);

class DecodeNode {
 public:
  // Loads the model and starts everything; the node is registering with the Conductor (which
  // may come up later) when this returns. Errors: InvalidArgument (options, naming the field),
  // the model loader's, the transfer engine's, Unavailable (an address cannot be bound).
  static absl::StatusOr<std::unique_ptr<DecodeNode>> Start(const DecodeNodeOptions& options);

  ~DecodeNode();  // Stop().
  DecodeNode(const DecodeNode&) = delete;
  DecodeNode& operator=(const DecodeNode&) = delete;

  // Takes nothing new (Reserve answers UNAVAILABLE, heartbeats say draining) and waits up to
  // `timeout` for in-flight decodes and reservations to end. Returns whether they all did.
  bool Drain(std::chrono::milliseconds timeout);

  // Stops heartbeats, the gRPC and HTTP servers (cancelling streams still open), the engine and
  // the transfer engine. Idempotent.
  void Stop();

  // The line `crescent decode-node` prints on stdout once serving:
  // "crescent: decode <node-id> ready grpc=<host:port> http=<host:port or ->".
  std::string ReadyLine() const;

  // The bound "host:port" of the gRPC service and of the metrics server ("-" without one).
  const std::string& grpc_endpoint() const { return grpc_endpoint_; }
  std::string metrics_endpoint() const;
  const std::string& segment() const { return segment_; }
  engine::Engine* engine() const { return engine_.get(); }
  // What the node registered as its cost profile (empty with measure_profile off).
  const cluster::v1::CostProfile& profile() const { return profile_; }
  DecodeNodeService* service() const { return service_.get(); }
  kvstore::TransferEngine* transfer() const { return transfer_.get(); }
  server::MetricsRegistry* registry() { return &registry_; }
  cluster::NodeAgent* agent() const { return agent_.get(); }

  // The load reported in heartbeats (also refreshes the load gauges).
  cluster::v1::NodeLoad Load() const;

 private:
  explicit DecodeNode(const DecodeNodeOptions& options) : options_(options) {}
  absl::Status Init();
  // Times decode steps of throwaway batches (1 and 4 sequences) on this node's engine, for the
  // Conductor's cost model. Failures are logged and leave points out.
  cluster::v1::CostProfile MeasureProfile();
  cluster::v1::CostProfile profile_;

  const DecodeNodeOptions options_;
  std::string segment_;
  std::string grpc_endpoint_;
  bool stopped_ = false;

  // Declared in construction order; Stop() tears down in reverse.
  server::MetricsRegistry registry_;
  std::unique_ptr<engine::LoadedModel> model_;
  std::unique_ptr<engine::Backend> backend_;
  std::unique_ptr<kvstore::client::GrpcSegmentDirectory> directory_;
  std::unique_ptr<kvstore::TransferEngine> transfer_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<DecodeNodeService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<server::HttpServer> http_;
  std::unique_ptr<cluster::NodeAgent> agent_;
};

}  // namespace crescent::decode_node

#endif  // CRESCENT_DECODE_NODE_DECODE_NODE_H_
