// ConductorGenerator: the serve::Generator of `crescent conductor` — it generates by driving one
// request through the cluster (DESIGN.md "One request, disaggregated"):
//
//   1. block hashes of the prompt (engine::BlockHashes, seed from the model fingerprint + salt),
//      the KV pool's longest prefix of them (PoolIndex, i.e. the KV master);
//   2. policy::Scheduler::Schedule over the registry's live nodes -> a prefill node and a decode
//      node, or a rejection: ResourceExhausted carrying a Retry-After (server::WithRetryAfter);
//   3. DecodeNode.Reserve(prompt + 1 positions) -> a KvTarget;
//   4. PrefillNode.Prefill(prompt, target, pool_prefix_blocks) -> the first token, delivered to
//      on_token at once; a prefill node that fails with UNAVAILABLE / DEADLINE_EXCEEDED / an
//      unreachable endpoint is marked suspect and the prefill is retried on another node with
//      the same reservation (crescent:prefill_retries_total);
//   5. DecodeNode.Decode(reservation, prompt, first token) -> a stream of tokens relayed to
//      on_token, ending with the node's Finish event.
//
// Every unary RPC has a deadline, the decode stream an overall one; a decode node that dies
// mid-stream ends the request with Unavailable("decode node X failed: ..."), never a hang. A
// reservation that will not be used (prefill failed everywhere, cancellation before decode) is
// released.
//
// Threading: thread-safe. Each accepted request runs on its own thread, which calls its
// callbacks in order. The destructor cancels requests in flight and waits for their threads.
#ifndef CRESCENT_CONDUCTOR_SERVICE_CONDUCTOR_GENERATOR_H_
#define CRESCENT_CONDUCTOR_SERVICE_CONDUCTOR_GENERATOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "conductor/policy/prefill_selector.h"
#include "conductor/policy/scheduler.h"
#include "conductor/service/node_registry.h"
#include "proto/cluster.grpc.pb.h"
#include "src/serve/generator.h"
#include "src/server/metrics.h"

namespace crescent::conductor::service {

// Which prompt prefixes the KV pool holds. Thread-safe implementations.
class PoolIndex {
 public:
  virtual ~PoolIndex() = default;
  // Number of leading `hashes` whose blocks are committed in the pool. Errors: the lookup's
  // (the caller then assumes an empty pool).
  virtual absl::StatusOr<int64_t> LongestPrefix(std::span<const uint64_t> hashes) = 0;
};

// A PoolIndex asking the KV master (KvMaster.LongestPrefix) with a deadline per call.
// Errors: InvalidArgument for an empty address.
absl::StatusOr<std::unique_ptr<PoolIndex>> MakeKvMasterPoolIndex(std::string_view master_address,
                                                                 double timeout_s = 0.5);

// The prefill policies of `--prefill-policy`.
//   cache-aware  Mooncake's Algorithm 1 (policy::kGlobalCacheAware)
//   local        local prefix only (policy::kLocalCacheAware)
//   least-loaded smallest predicted queue
//   round-robin  live prefill nodes in turn
// Errors: InvalidArgument naming the unknown value.
absl::StatusOr<conductor::policy::PrefillPolicy> ParseConductorPrefillPolicy(std::string_view name);

struct ConductorGeneratorOptions {
  conductor::policy::SchedulerOptions scheduler;
  conductor::policy::PrefillPolicy prefill_policy =
      conductor::policy::PrefillPolicy::kGlobalCacheAware;
  // Deadlines.
  double rpc_timeout_s = 5.0;         // Reserve, Release, Cancel
  double prefill_timeout_s = 300.0;   // one Prefill call
  double request_timeout_s = 3600.0;  // the whole decode stream
  // How long the decode node keeps a reservation whose Decode has not started.
  int64_t reserve_timeout_ms = 30000;
  // Prefill attempts per request (the first one included), each on another node.
  int max_prefill_attempts = 3;
  // Decode nodes tried for the reservation.
  int max_reserve_attempts = 2;
  // Output tokens the policy assumes when it checks a decode node's free KV (the request's
  // max_tokens when smaller): the decode node reserves prompt + 1 positions and grows the
  // sequence as it goes, and max_tokens defaults to the whole context.
  int64_t policy_max_output_tokens = 256;
};

class ConductorGenerator final : public serve::Generator {
 public:
  // `model`, `registry`, `pool` (nullable: no pool) and `metrics` (nullable: no metrics) are not
  // owned and must outlive the generator. Errors: InvalidArgument for a null model or registry.
  static absl::StatusOr<std::unique_ptr<ConductorGenerator>> Create(
      const engine::LoadedModel* model, NodeRegistry* registry, PoolIndex* pool,
      server::MetricsRegistry* metrics, const ConductorGeneratorOptions& options);

  // Cancels every request in flight and waits until each has called on_done.
  ~ConductorGenerator() override;
  ConductorGenerator(const ConductorGenerator&) = delete;
  ConductorGenerator& operator=(const ConductorGenerator&) = delete;

  const engine::LoadedModel& model() const override { return *model_; }
  // Min over live decode nodes of total_blocks * block_tokens, capped by the model's context;
  // the model's context when no decode node is live.
  int64_t max_sequence_tokens() const override;
  // As engine::Engine::Validate (empty prompt, vocabulary, max_tokens, sampling, context), plus
  // Unavailable when no live prefill or no live decode node is registered.
  absl::Status Validate(const engine::EngineRequest& request) override;
  // Errors: as Validate. A rejection by the policy is not an error of Submit: it reaches on_done
  // as ResourceExhausted with a retry hint (server::RetryAfterOf, result.retry_after_seconds).
  absl::StatusOr<uint64_t> Submit(engine::EngineRequest request, engine::TokenCallback on_token,
                                  serve::GenerationDoneCallback on_done) override;
  void Cancel(uint64_t id) override;
  // Sums of the live nodes' last loads (running, waiting, total/free blocks), plus this
  // Conductor's cumulative token and prefix-hit counters.
  engine::EngineStats Stats() const override;
  // At least one live prefill node and one live decode node.
  bool Ready() const override;

  // Sets crescent:cluster_nodes{role} from the registry (also done by Stats and Ready).
  void RefreshClusterGauges() const;

  // Requests whose thread has not finished yet (tests).
  int64_t in_flight() const;

 private:
  struct RequestState;
  struct Metrics;
  class NodeStubs;

  ConductorGenerator(const engine::LoadedModel* model, NodeRegistry* registry, PoolIndex* pool,
                     server::MetricsRegistry* metrics, const ConductorGeneratorOptions& options);
  void Run(std::shared_ptr<RequestState> state);
  // The request's steps; returns the final status and fills result.
  absl::Status Drive(RequestState& state, serve::GenerationResult* result);
  // Takes the registry's snapshot (without `excluded`), decides, and records an accepted
  // decision's work as placed on its nodes (NodeRegistry::AddPlaced; the decode side only with
  // `place_decode`), all under one lock, so that a burst of requests sees each other's load.
  conductor::policy::Decision Schedule(const conductor::policy::Request& request,
                                       const std::set<std::string>& excluded,
                                       const conductor::policy::PoolView& pool, bool place_decode,
                                       RegistrySnapshot* snapshot);

  const engine::LoadedModel* const model_;
  NodeRegistry* const registry_;
  PoolIndex* const pool_;
  const ConductorGeneratorOptions options_;
  std::unique_ptr<server::MetricsRegistry> own_metrics_;  // when none was given
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<NodeStubs> stubs_;

  absl::Mutex scheduler_mu_;
  conductor::policy::Scheduler scheduler_ ABSL_GUARDED_BY(scheduler_mu_);

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, std::shared_ptr<RequestState>> active_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Cumulative counters for Stats().
  std::atomic<int64_t> prompt_tokens_{0};
  std::atomic<int64_t> generated_tokens_{0};
  std::atomic<int64_t> prefix_queries_{0};
  std::atomic<int64_t> prefix_hits_{0};
};

}  // namespace crescent::conductor::service

#endif  // CRESCENT_CONDUCTOR_SERVICE_CONDUCTOR_GENERATOR_H_
