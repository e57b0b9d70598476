// DecodeNodeService: the decode node's gRPC service (proto/cluster.proto, service DecodeNode)
// over one engine whose KV cache peers can write (a transfer-engine segment).
//
//   Reserve  -> Engine::Reserve: blocks for the prompt + first token; answers where they are
//               (segment, byte offset of each block). Released by a reaper if Decode has not
//               started within the request's timeout_ms.
//   Decode   -> Engine::SubmitPrefilled over the reservation the prefill node filled; streams
//               every token after the first, then one Finish event. A cancelled stream cancels
//               the engine request (its blocks are freed).
//   Release  -> frees a reservation that will not be used. Unknown ids are ignored.
//   Cancel   -> cancels the Decode of a request id, or releases its pending reservation.
//
// Errors come back as the RPC's status (ReserveResponse.status is left OK): NOT_FOUND for an
// unknown or expired reservation, INVALID_ARGUMENT naming the bad field, RESOURCE_EXHAUSTED
// when the KV cache has too few free blocks, UNAVAILABLE once draining (Reserve only: Decode
// of a reservation made before the drain is still served).
//
// Thread-safety: every method is thread-safe; gRPC calls the handlers on its own threads.
#ifndef CRESCENT_DECODE_NODE_DECODE_SERVICE_H_
#define CRESCENT_DECODE_NODE_DECODE_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/cluster.grpc.pb.h"
#include "src/common/clock.h"
#include "src/engine/engine.h"
#include "src/server/metrics.h"

namespace crescent::decode_node {

struct DecodeStream;  // decode_service.cc

struct DecodeServiceOptions {
  std::string node_id;            // KvTarget.decode_node_id. Required.
  std::string segment;            // KvTarget.segment: the KV cache's segment name. Required.
  std::string transfer_endpoint;  // KvTarget.transfer_endpoint (the tcp data server).
  // Used when a ReserveRequest has timeout_ms <= 0; requests may not ask for more than max.
  std::chrono::milliseconds default_reserve_timeout{30000};
  std::chrono::milliseconds max_reserve_timeout{300000};
  // How often a Decode handler looks at its stream's cancellation, and the reaper at deadlines.
  std::chrono::milliseconds poll_interval{50};
  // Reservation deadlines are measured on this clock (null: RealClock); not owned.
  const Clock* clock = nullptr;
};

// The decode-side metrics, registered in a MetricsRegistry (see docs/decode_node.md).
struct DecodeMetrics {
  explicit DecodeMetrics(server::MetricsRegistry* registry);

  server::Histogram* kv_wait_seconds;        // crescent:decode_kv_wait_seconds
  server::Histogram* decode_seconds;         // crescent:decode_seconds
  server::Histogram* time_per_output_token;  // crescent:time_per_output_token_seconds
  server::Counter* reservations_expired;     // crescent:reservations_expired_total
  server::Counter* reservations_total;       // crescent:decode_reservations_total
  server::Counter* reserve_rejected;         // crescent:decode_reserve_rejected_total
  server::Gauge* reservations_pending;       // crescent:decode_reservations_pending
  server::Gauge* num_requests_running;       // crescent:num_requests_running
  server::Gauge* num_requests_waiting;       // crescent:num_requests_waiting
  server::Gauge* kv_cache_usage_perc;        // crescent:kv_cache_usage_perc
  server::Counter* generation_tokens;        // crescent:generation_tokens_total
  server::Counter* spec_draft_tokens;        // crescent:spec_decode_num_draft_tokens_total
  server::Counter* spec_accepted_tokens;     // crescent:spec_decode_num_accepted_tokens_total
  server::MetricsRegistry* registry;
  // crescent:decode_requests_total{outcome="stop|length|cancelled|error"}.
  server::Counter* Outcome(std::string_view outcome);
};

class DecodeNodeService final : public cluster::v1::DecodeNode::Service {
 public:
  // Starts the reservation reaper. `engine` and `registry` are not owned and must outlive the
  // service. Errors: InvalidArgument when node_id or segment is empty or a timeout is not
  // positive.
  static absl::StatusOr<std::unique_ptr<DecodeNodeService>> Create(
      engine::Engine* engine, server::MetricsRegistry* registry,
      const DecodeServiceOptions& options);

  // Stops the reaper and releases every pending reservation. Decode streams must have ended
  // (stop the gRPC server first).
  ~DecodeNodeService() override;

  grpc::Status Reserve(grpc::ServerContext* context, const cluster::v1::ReserveRequest* request,
                       cluster::v1::ReserveResponse* response) override;
  grpc::Status Release(grpc::ServerContext* context, const cluster::v1::ReleaseRequest* request,
                       cluster::v1::ReleaseResponse* response) override;
  grpc::Status Decode(grpc::ServerContext* context, const cluster::v1::DecodeRequest* request,
                      grpc::ServerWriter<cluster::v1::DecodeEvent>* writer) override;
  grpc::Status Cancel(grpc::ServerContext* context, const cluster::v1::CancelRequest* request,
                      cluster::v1::CancelResponse* response) override;

  // From now on Reserve answers UNAVAILABLE. Idempotent.
  void SetDraining();
  bool draining() const { return draining_.load(); }

  // Waits until no Decode stream and no reservation is in flight, or `timeout` passes; returns
  // whether it became idle.
  bool WaitIdle(std::chrono::milliseconds timeout);

  // Decode streams in flight and reservations waiting for their Decode.
  int64_t active_decodes() const;
  int64_t pending_reservations() const;

  // Refreshes the load gauges (running, waiting, KV usage) from the engine's stats.
  void UpdateGauges();

  const DecodeMetrics& metrics() const { return metrics_; }

 private:
  struct PendingReservation {
    std::string request_id;
    int64_t reserved_ns = 0;
    int64_t deadline_ns = 0;
  };

  DecodeNodeService(engine::Engine* engine, server::MetricsRegistry* registry,
                    const DecodeServiceOptions& options);
  void ReaperLoop();
  // Removes a pending reservation from the table; false when it is not there (expired, released
  // or already decoding).
  bool TakeReservation(uint64_t reservation, PendingReservation* taken);

  engine::Engine* const engine_;
  const DecodeServiceOptions options_;
  const Clock* const clock_;
  DecodeMetrics metrics_;
  std::atomic<bool> draining_{false};

  mutable absl::Mutex mu_;
  // The engine's speculative counters as last added to the metrics (UpdateGauges).
  absl::Mutex published_mu_;
  int64_t published_drafts_ ABSL_GUARDED_BY(published_mu_) = 0;
  int64_t published_accepted_ ABSL_GUARDED_BY(published_mu_) = 0;
  std::map<uint64_t, PendingReservation> reservations_ ABSL_GUARDED_BY(mu_);
  // Decode streams in flight, by request id.
  std::multimap<std::string, std::shared_ptr<DecodeStream>> decoding_ ABSL_GUARDED_BY(mu_);
  int64_t active_decodes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar reaper_cv_;
  std::thread reaper_;
};

}  // namespace crescent::decode_node

#endif  // CRESCENT_DECODE_NODE_DECODE_SERVICE_H_
