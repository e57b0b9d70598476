// PrefillNodeService: the prefill node's gRPC service (proto/cluster.proto, service PrefillNode)
// over one engine::Engine.
//
// One Prefill call, in order:
//   1. Block hashes of the prompt (engine.hash_seed(cache_salt)); the local prefix-cache hit.
//   2. Pool fetch: when the Conductor says the pool holds more leading blocks than the local
//      cache does, those blocks are read from the pool (PoolClient, checksum-verified) straight
//      into reserved cache blocks and handed to the prefix cache (Engine::CacheReserved). The
//      fetch stops at the first miss or bad block; the rest is computed. Never the block holding
//      the prompt's last token (the engine computes it anyway, for the logits).
//   3. A PrefillOnly engine request. From the engine's per-layer hook, each layer's new K and V
//      rows go straight into the decode node's reserved blocks (KvTarget) with the transfer
//      engine, while later layers compute. Positions the engine took from its prefix cache are
//      never computed: their blocks are copied whole (all layers, one write per block) at the
//      request's first layer-0 hook. The block layout (kv_cache.h) is identical on both nodes,
//      so a row's target offset is block_offsets[position / block_tokens] + its in-block offset.
//      After a preemption (the engine recomputes the request), the writes submitted before are
//      waited for first, so that the rewrites are the last to land at every offset.
//   4. On finish (engine thread) the remaining writes are waited for, bounded by
//      options.finish_wait and the deadline: the engine releases (and may later reuse) the
//      request's source blocks right after the finish callback returns, so a write still in
//      flight after that could carry another request's bytes — when the bound passes the
//      request fails instead (the decode node's reservation is then never used).
//   5. Publish: the prompt's full blocks computed now (not taken from the cache) are copied into
//      a staging buffer inside the finish callback and put into the pool by a background thread
//      under their block hashes (at most options.max_staging_bytes queued; beyond, skipped).
//
// Errors (returned as the gRPC status; PrefillResponse.status mirrors OK on success):
//   UNAVAILABLE: draining; the target segment cannot be opened; a KV write failed (the message
//     names the segment). INVALID_ARGUMENT: a bad request (empty prompt, a target whose block
//     size or block count does not fit the prompt, bad sampling). DEADLINE_EXCEEDED: the
//     deadline passed (before or during the prefill). CANCELLED: Cancel(request_id) or the
//     client went away. RESOURCE_EXHAUSTED / OUT_OF_RANGE: the engine's admission errors.
//
// Thread-safety: all methods are thread-safe.
#ifndef CRESCENT_PREFILL_NODE_PREFILL_SERVICE_H_
#define CRESCENT_PREFILL_NODE_PREFILL_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/client/pool_client.h"
#include "kvstore/transfer/transfer_engine.h"
#include "proto/cluster.grpc.pb.h"
#include "src/engine/engine.h"
#include "src/server/metrics.h"

namespace crescent::prefill_node {

struct PrefillServiceOptions {
  // Transport order used to open KV targets (empty: the transfer engine's own order).
  std::vector<std::string> target_transports;
  // Deadline of a request whose deadline_unix_ms is 0.
  std::chrono::milliseconds default_timeout{30000};
  // Longest the finish callback (engine thread) waits for a request's last KV writes.
  std::chrono::milliseconds finish_wait{5000};
  // Put newly computed full blocks into the pool (needs a PoolClient).
  bool publish = true;
  // Staged bytes waiting to be put at most; a request that would exceed it is not published.
  size_t max_staging_bytes = size_t{256} << 20;
};

// The node's per-phase metrics (names as agreed for the prefill role's /metrics).
struct PrefillMetrics {
  explicit PrefillMetrics(server::MetricsRegistry* registry);

  server::Histogram* queue_seconds;        // crescent:prefill_queue_seconds
  server::Histogram* compute_seconds;      // crescent:prefill_compute_seconds
  server::Histogram* kv_transfer_seconds;  // crescent:kv_transfer_seconds (exposed part)
  server::Histogram* overlap_ratio;        // crescent:kv_transfer_overlap_ratio
  server::Histogram* pool_fetch_seconds;   // crescent:pool_fetch_seconds
  server::Counter* pool_fetched_tokens;    // crescent:pool_fetched_tokens_total
  server::Counter* pool_put_blocks;        // crescent:pool_put_blocks_total
  server::Counter* kv_transfer_bytes;      // crescent:kv_transfer_bytes_total
  server::Gauge* in_flight;                // crescent:prefill_requests_in_flight
  // crescent:prefill_requests_total{outcome=ok|rejected|deadline|cancelled|transfer_error|error}
  server::Counter* Requests(std::string_view outcome);

 private:
  server::MetricsRegistry* registry_;
};

class PrefillNodeService final : public cluster::v1::PrefillNode::Service {
 public:
  // `engine` and `transfer` are required; `pool` may be null (no pool fetch, no publishing);
  // `metrics` may be null (a private registry is used). None are owned; all must outlive the
  // service. Errors: InvalidArgument for a null engine or transfer engine.
  static absl::StatusOr<std::unique_ptr<PrefillNodeService>> Create(
      engine::Engine* engine, kvstore::TransferEngine* transfer, kvstore::client::PoolClient* pool,
      server::MetricsRegistry* metrics, const PrefillServiceOptions& options = {});

  // Stops the publisher thread after the puts already queued (bounded by their RPC timeouts).
  // REQUIRES: no Prefill in flight (stop the gRPC server first).
  ~PrefillNodeService() override;

  grpc::Status Prefill(grpc::ServerContext* context, const cluster::v1::PrefillRequest* request,
                       cluster::v1::PrefillResponse* response) override;
  grpc::Status Cancel(grpc::ServerContext* context, const cluster::v1::CancelRequest* request,
                      cluster::v1::CancelResponse* response) override;

  // The same as the RPC, for in-process callers: `context` may be null (no client
  // cancellation). Errors: as described at the top of this file.
  absl::Status RunPrefill(const cluster::v1::PrefillRequest& request,
                          cluster::v1::PrefillResponse* response,
                          grpc::ServerContext* context = nullptr);

  // New Prefill calls fail with UNAVAILABLE from now on; calls in flight finish.
  void SetDraining();
  bool draining() const { return draining_.load(); }
  int64_t in_flight() const { return in_flight_.load(); }
  // Waits until no Prefill is in flight and no put is queued or running, up to `timeout`.
  // Returns whether that happened.
  bool WaitIdle(std::chrono::milliseconds timeout);

  const PrefillMetrics& metrics() const { return metrics_; }

  // The full-block hash chains of the prompts prefilled successfully since the last call (at
  // most 1024 kept), for the node's report of which prefixes its cache holds.
  std::vector<std::vector<uint64_t>> TakeRecentChains();

 private:
  struct Call;
  struct PublishJob {
    std::vector<uint64_t> keys;
    std::vector<std::byte> data;  // keys.size() blocks of block_bytes
  };

  PrefillNodeService(engine::Engine* engine, kvstore::TransferEngine* transfer,
                     kvstore::client::PoolClient* pool, server::MetricsRegistry* metrics,
                     const PrefillServiceOptions& options);

  absl::Status RunPrefillImpl(const cluster::v1::PrefillRequest& request,
                              cluster::v1::PrefillResponse* response, grpc::ServerContext* context);
  // Reads blocks [local, limit) of `hashes` from the pool into the engine's prefix cache.
  // Returns how many leading blocks arrived (0 on any failure: the engine computes them).
  int64_t FetchFromPool(std::span<const uint64_t> hashes, int64_t local, int64_t limit);
  void PublishLoop();

  engine::Engine* const engine_;
  kvstore::TransferEngine* const transfer_;
  kvstore::client::PoolClient* const pool_;
  const PrefillServiceOptions options_;
  std::unique_ptr<server::MetricsRegistry> own_registry_;
  PrefillMetrics metrics_;

  std::atomic<bool> draining_{false};
  std::atomic<int64_t> in_flight_{0};

  std::mutex calls_mu_;
  std::map<std::string, std::shared_ptr<Call>> calls_;  // by request_id; guarded by calls_mu_

  std::mutex chains_mu_;
  std::deque<std::vector<uint64_t>> recent_chains_;  // guarded by chains_mu_

  std::mutex publish_mu_;
  std::condition_variable publish_cv_;
  std::deque<PublishJob> publish_queue_;  // guarded by publish_mu_
  size_t staged_bytes_ = 0;               // guarded by publish_mu_
  bool publishing_ = false;               // a job is being put; guarded by publish_mu_
  bool stop_ = false;                     // guarded by publish_mu_
  std::thread publisher_;
};

}  // namespace crescent::prefill_node

#endif  // CRESCENT_PREFILL_NODE_PREFILL_SERVICE_H_
