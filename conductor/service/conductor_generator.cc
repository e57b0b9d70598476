#include "conductor/service/conductor_generator.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "proto/kvstore.grpc.pb.h"
#include "src/cluster/proto_convert.h"
#include "src/common/logging.h"
#include "src/common/status.h"
#include "src/engine/block_hash.h"
#include "src/engine/sampler.h"
#include "src/server/openai_protocol.h"

namespace crescent::conductor::service {

namespace v1 = cluster::v1;
namespace policy = conductor::policy;

namespace {

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

int64_t UnixMillisIn(double seconds) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
             .count() +
         static_cast<int64_t>(seconds * 1e3);
}

// A failure after which another node may succeed.
bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kResourceExhausted || code == absl::StatusCode::kAborted ||
         code == absl::StatusCode::kCancelled;
}

// A failure that says the node itself is gone or stuck.
bool NodeFailure(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded;
}

engine::FinishReason ParseFinishReason(const std::string& reason) {
  if (reason == "length") return engine::FinishReason::kLength;
  if (reason == "cancelled") return engine::FinishReason::kCancelled;
  return engine::FinishReason::kStop;
}

class KvMasterPoolIndex final : public PoolIndex {
 public:
  KvMasterPoolIndex(const std::string& address, double timeout_s)
      : stub_(kvstore::v1::KvMaster::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))),
        timeout_s_(timeout_s) {}

  absl::StatusOr<int64_t> LongestPrefix(std::span<const uint64_t> hashes) override {
    kvstore::v1::KeysRequest request;
    for (uint64_t h : hashes) request.add_keys(h);
    kvstore::v1::LongestPrefixResponse response;
    grpc::ClientContext context;
    context.set_deadline(DeadlineIn(timeout_s_));
    grpc::Status status = stub_->LongestPrefix(&context, request, &response);
    if (!status.ok()) return Annotate(FromGrpcStatus(status), "KV master LongestPrefix");
    return static_cast<int64_t>(response.length());
  }

 private:
  std::unique_ptr<kvstore::v1::KvMaster::Stub> stub_;
  const double timeout_s_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PoolIndex>> MakeKvMasterPoolIndex(std::string_view master_address,
                                                                 double timeout_s) {
  if (master_address.empty()) return absl::InvalidArgumentError("KV master address is empty");
  return std::make_unique<KvMasterPoolIndex>(std::string(master_address), timeout_s);
}

absl::StatusOr<policy::PrefillPolicy> ParseConductorPrefillPolicy(std::string_view name) {
  if (name == "cache-aware") return policy::PrefillPolicy::kGlobalCacheAware;
  if (name == "local") return policy::PrefillPolicy::kLocalCacheAware;
  if (name == "least-loaded") return policy::PrefillPolicy::kLeastLoaded;
  if (name == "round-robin") return policy::PrefillPolicy::kRoundRobin;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown prefill policy '", std::string(name),
                   "' (expected cache-aware, local, least-loaded or round-robin)"));
}

// One request in flight. `rpc` is the call a Cancel must interrupt.
struct ConductorGenerator::RequestState {
  uint64_t id = 0;
  std::string request_id;
  engine::EngineRequest request;
  engine::TokenCallback on_token;
  serve::GenerationDoneCallback on_done;
  int64_t submit_ns = 0;

  absl::Mutex mu;
  grpc::ClientContext* rpc ABSL_GUARDED_BY(mu) = nullptr;
  bool cancelled ABSL_GUARDED_BY(mu) = false;

  // Makes `context` the call Cancel interrupts. False (and nothing set) when already cancelled.
  bool Begin(grpc::ClientContext* context) {
    absl::MutexLock lock(&mu);
    if (cancelled) return false;
    rpc = context;
    return true;
  }
  void End() {
    absl::MutexLock lock(&mu);
    rpc = nullptr;
  }
  bool IsCancelled() {
    absl::MutexLock lock(&mu);
    return cancelled;
  }
  void CancelNow() {
    absl::MutexLock lock(&mu);
    cancelled = true;
    if (rpc != nullptr) rpc->TryCancel();
  }
};

struct ConductorGenerator::Metrics {
  explicit Metrics(server::MetricsRegistry* r) : registry(r) {
    static constexpr const char* kPhaseHelp =
        "Seconds per request phase at the Conductor: schedule (policy), prefill (Prefill RPC, "
        "queue included), kv_transfer (KV write time not hidden behind compute), decode (decode "
        "stream), e2e (submit to finish).";
    for (const char* phase : {"schedule", "prefill", "kv_transfer", "decode", "e2e"}) {
      phases[phase] = r->GetHistogram("crescent:phase_seconds", kPhaseHelp,
                                      server::LatencyBuckets(), {{"phase", phase}});
    }
    prefill_retries = r->GetCounter("crescent:prefill_retries_total",
                                    "Prefill attempts retried on another node after a failure.");
    prefill_nodes = r->GetGauge("crescent:cluster_nodes", "Live registered nodes by role.",
                                {{"role", "prefill"}});
    decode_nodes = r->GetGauge("crescent:cluster_nodes", "Live registered nodes by role.",
                               {{"role", "decode"}});
    for (policy::RejectReason reason :
         {policy::RejectReason::kNoPrefillNode, policy::RejectReason::kNoDecodeCapacity,
          policy::RejectReason::kTtftSlo, policy::RejectReason::kTbtSlo}) {
      Rejected(reason);  // registered up front, so that /metrics lists every reason at 0
    }
  }

  server::Counter* Rejected(policy::RejectReason reason) const {
    return registry->GetCounter("crescent:requests_rejected_total",
                                "Requests rejected by the Conductor's policy, by reason.",
                                {{"reason", std::string(policy::RejectReasonName(reason))}});
  }

  server::MetricsRegistry* registry;
  std::map<std::string, server::Histogram*> phases;
  server::Counter* prefill_retries;
  server::Gauge* prefill_nodes;
  server::Gauge* decode_nodes;
};

// One channel per node endpoint, kept for the Conductor's life (a restarted node at the same
// address is reconnected by gRPC).
class ConductorGenerator::NodeStubs {
 public:
  std::shared_ptr<grpc::Channel> Channel(const std::string& endpoint) {
    absl::MutexLock lock(&mu_);
    std::shared_ptr<grpc::Channel>& channel = channels_[endpoint];
    if (channel == nullptr) {
      channel = grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
    }
    return channel;
  }
  std::unique_ptr<v1::PrefillNode::Stub> Prefill(const std::string& endpoint) {
    return v1::PrefillNode::NewStub(Channel(endpoint));
  }
  std::unique_ptr<v1::DecodeNode::Stub> Decode(const std::string& endpoint) {
    return v1::DecodeNode::NewStub(Channel(endpoint));
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<ConductorGenerator>> ConductorGenerator::Create(
    const engine::LoadedModel* model, NodeRegistry* registry, PoolIndex* pool,
    server::MetricsRegistry* metrics, const ConductorGeneratorOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("ConductorGenerator: model is null");
  if (registry == nullptr) {
    return absl::InvalidArgumentError("ConductorGenerator: registry is null");
  }
  if (options.max_prefill_attempts < 1 || options.max_reserve_attempts < 1) {
    return absl::InvalidArgumentError(
        "ConductorGenerator: max_prefill_attempts and max_reserve_attempts must be >= 1");
  }
  return std::unique_ptr<ConductorGenerator>(
      new ConductorGenerator(model, registry, pool, metrics, options));
}

ConductorGenerator::ConductorGenerator(const engine::LoadedModel* model, NodeRegistry* registry,
                                       PoolIndex* pool, server::MetricsRegistry* metrics,
                                       const ConductorGeneratorOptions& options)
    : model_(model),
      registry_(registry),
      pool_(pool),
      options_(options),
      stubs_(std::make_unique<NodeStubs>()),
      scheduler_(policy::MakePrefillSelector(options.prefill_policy), options.scheduler) {
  if (metrics == nullptr) {
    own_metrics_ = std::make_unique<server::MetricsRegistry>();
    metrics = own_metrics_.get();
  }
  metrics_ = std::make_unique<Metrics>(metrics);
}

ConductorGenerator::~ConductorGenerator() {
  std::vector<std::shared_ptr<RequestState>> active;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [id, state] : active_) active.push_back(state);
  }
  for (auto& state : active) state->CancelNow();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](absl::flat_hash_map<uint64_t, std::shared_ptr<RequestState>>* a) { return a->empty(); },
      &active_));
}

int64_t ConductorGenerator::in_flight() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(active_.size());
}

int64_t ConductorGenerator::max_sequence_tokens() const {
  const int64_t context = model_->config.context_length;
  const int bt = registry_->block_tokens();
  int64_t best = std::numeric_limits<int64_t>::max();
  for (const NodeEntry& node : registry_->LiveNodes()) {
    if (node.info.role() != v1::ROLE_DECODE) continue;
    best = std::min<int64_t>(best, node.info.total_blocks() * bt);
  }
  if (best == std::numeric_limits<int64_t>::max()) return context;
  return std::min(best, context);
}

absl::Status ConductorGenerator::Validate(const engine::EngineRequest& r) {
  CRESCENT_RETURN_IF_ERROR(engine::ValidateRequestForModel(r, *model_));
  const LiveCounts live = registry_->CountLive();
  if (live.prefill == 0 || live.decode == 0) {
    return server::WithRetryAfter(
        absl::UnavailableError(absl::StrCat("the cluster has no live ",
                                            live.prefill == 0 ? "prefill" : "decode",
                                            " node registered")),
        1.0);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ConductorGenerator::Submit(engine::EngineRequest request,
                                                    engine::TokenCallback on_token,
                                                    serve::GenerationDoneCallback on_done) {
  CRESCENT_RETURN_IF_ERROR(Validate(request));
  auto state = std::make_shared<RequestState>();
  state->request = std::move(request);
  state->on_token = std::move(on_token);
  state->on_done = std::move(on_done);
  state->submit_ns = RealClock::Get()->NowNanos();
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the conductor is shutting down");
    state->id = next_id_++;
    active_[state->id] = state;
  }
  state->request_id = absl::StrCat("cr-", state->id, "-", state->submit_ns);
  std::thread([this, state] { Run(state); }).detach();
  return state->id;
}

void ConductorGenerator::Cancel(uint64_t id) {
  std::shared_ptr<RequestState> state;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it == active_.end()) return;
    state = it->second;
  }
  state->CancelNow();
}

void ConductorGenerator::Run(std::shared_ptr<RequestState> state) {
  serve::GenerationResult result;
  result.stats.prompt_tokens = static_cast<int64_t>(state->request.prompt.size());
  absl::Status status = Drive(*state, &result);
  if (!status.ok()) result.reason = engine::FinishReason::kCancelled;
  prompt_tokens_.fetch_add(result.stats.prompt_tokens);
  generated_tokens_.fetch_add(result.stats.generated_tokens);
  metrics_->phases["e2e"]->Observe(
      static_cast<double>(RealClock::Get()->NowNanos() - state->submit_ns) * 1e-9);
  state->on_done(std::move(status), result);
  absl::MutexLock lock(&mu_);
  active_.erase(state->id);
  // Nothing of `this` is touched after this point: the destructor may be waiting for it.
}

policy::Decision ConductorGenerator::Schedule(const policy::Request& request,
                                              const std::set<std::string>& excluded,
                                              const policy::PoolView& pool, bool place_decode,
                                              RegistrySnapshot* snapshot) {
  absl::MutexLock lock(&scheduler_mu_);
  *snapshot = registry_->Snapshot(excluded);
  policy::Decision decision =
      scheduler_.Schedule(request, snapshot->nodes, pool, RealClock::Get()->NowSeconds());
  if (decision.accepted) {
    registry_->AddPlaced(snapshot->nodes[decision.prefill.node].id,
                         decision.prefill.compute_tokens, 0, 0, 0);
    if (place_decode) {
      registry_->AddPlaced(snapshot->nodes[decision.decode.node].id, 0, 1,
                           request.prompt_tokens + request.max_output_tokens,
                           decision.decode.kv_blocks_needed);
    }
  }
  return decision;
}

absl::Status ConductorGenerator::Drive(RequestState& state, serve::GenerationResult* result) {
  const engine::EngineRequest& req = state.request;
  const Clock* clock = RealClock::Get();
  const int block_tokens = registry_->block_tokens();
  if (block_tokens < 1) return absl::UnavailableError("no node has registered with the conductor");

  // 1. Block hashes and the pool's longest prefix of them.
  const uint64_t seed = engine::BlockHashSeed(model_->fingerprint, req.cache_salt);
  const std::vector<uint64_t> hashes = engine::BlockHashes(seed, req.prompt, block_tokens);
  int64_t pool_blocks = 0;
  if (pool_ != nullptr && !hashes.empty()) {
    absl::StatusOr<int64_t> longest = pool_->LongestPrefix(hashes);
    if (longest.ok()) {
      pool_blocks = std::clamp<int64_t>(*longest, 0, static_cast<int64_t>(hashes.size()));
    } else {
      CRESCENT_LOG(debug, "request {}: pool lookup failed ({}); assuming an empty pool",
                   state.request_id, std::string(longest.status().message()));
    }
  }
  absl::flat_hash_set<uint64_t> in_pool(hashes.begin(), hashes.begin() + pool_blocks);
  policy::PoolView pool_view;
  pool_view.holds_block = [&in_pool](uint64_t h) { return in_pool.contains(h); };

  policy::Request preq;
  preq.id = state.id;
  preq.prompt_tokens = static_cast<int64_t>(req.prompt.size());
  preq.block_hashes = hashes;
  // The decode node reserves prompt + 1 positions and grows the sequence as it decodes: admit
  // on a bounded output estimate, not on a max_tokens that defaults to the whole context.
  preq.max_output_tokens = std::min<int64_t>(req.max_tokens, options_.policy_max_output_tokens);
  preq.arrival_s = clock->NowSeconds();

  v1::SamplingParams sampling;
  cluster::SamplingToProto(req.sampling, &sampling);
  std::set<std::string> excluded;
  absl::Status last_error;
  bool reserved = false;
  std::string decode_id, decode_endpoint;
  v1::KvTarget target;
  int reserve_attempts = 0;
  int prefill_attempts = 0;
  // The decode work Schedule placed on a node's account, taken off when this request ends (or
  // moves to another decode node).
  struct DecodePlacement {
    NodeRegistry* registry = nullptr;
    std::string node;
    int64_t context = 0;
    void Clear() {
      if (node.empty()) return;
      registry->AddPlaced(node, 0, -1, -context, 0);
      node.clear();
    }
    ~DecodePlacement() { Clear(); }
  } placement{registry_, "", 0};

  auto release = [&] {
    if (!reserved) return;
    reserved = false;
    v1::ReleaseRequest rr;
    rr.set_reservation_id(target.reservation_id());
    v1::ReleaseResponse rresp;
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(options_.rpc_timeout_s));
    grpc::Status st = stubs_->Decode(decode_endpoint)->Release(&ctx, rr, &rresp);
    if (!st.ok()) {
      CRESCENT_LOG(warn, "request {}: releasing reservation {} on decode node {} failed: {}",
                   state.request_id, target.reservation_id(), decode_id, st.error_message());
    }
  };
  auto cancelled = [&] {
    release();
    result->reason = engine::FinishReason::kCancelled;
    return absl::OkStatus();
  };

  // 2-4. Schedule, reserve, prefill; retry on other nodes when one fails.
  v1::PrefillResponse presp;
  std::string prefill_id;
  double prefill_wall_s = 0;
  while (true) {
    if (state.IsCancelled()) return cancelled();
    const int64_t t0 = clock->NowNanos();
    RegistrySnapshot snapshot;
    policy::Decision decision = Schedule(preq, excluded, pool_view, !reserved, &snapshot);
    metrics_->phases["schedule"]->Observe(static_cast<double>(clock->NowNanos() - t0) * 1e-9);
    if (!decision.accepted) {
      if (reserve_attempts == 0 && prefill_attempts == 0) {
        metrics_->Rejected(decision.reason)->Increment();
        const double retry = std::max(decision.retry_after_s, 1.0);
        result->retry_after_seconds = retry;
        CRESCENT_LOG(info, "request {} rejected ({}): {}", state.request_id,
                     policy::RejectReasonName(decision.reason), decision.detail);
        return server::WithRetryAfter(
            absl::ResourceExhaustedError(absl::StrCat(
                "the cluster cannot take the request now (",
                std::string(policy::RejectReasonName(decision.reason)), "): ", decision.detail)),
            retry);
      }
      release();
      return absl::UnavailableError(
          absl::StrCat("no node could serve the request after ", reserve_attempts, " reserve and ",
                       prefill_attempts, " prefill attempts; last error: ", last_error.ToString()));
    }

    if (!reserved) {
      const policy::NodeState& dnode = snapshot.nodes[decision.decode.node];
      placement.Clear();
      placement.node = dnode.id;
      placement.context = preq.prompt_tokens + preq.max_output_tokens;
      ++reserve_attempts;
      v1::ReserveRequest rq;
      rq.set_request_id(state.request_id);
      // Room for the prompt and the output the policy admitted the request with, so that an
      // admitted request never starves for KV on the decode node (SubmitPrefilled needs only
      // prompt + 1; the decode engine grows the sequence beyond the reservation if it must).
      rq.set_positions(preq.prompt_tokens + std::max<int64_t>(1, preq.max_output_tokens));
      rq.set_timeout_ms(options_.reserve_timeout_ms);
      v1::ReserveResponse rresp;
      grpc::ClientContext ctx;
      ctx.set_deadline(DeadlineIn(options_.rpc_timeout_s));
      if (!state.Begin(&ctx)) return cancelled();
      const std::string endpoint = snapshot.endpoints[decision.decode.node];
      grpc::Status st = stubs_->Decode(endpoint)->Reserve(&ctx, rq, &rresp);
      state.End();
      absl::Status s = st.ok() ? cluster::StatusFromProto(rresp.status()) : FromGrpcStatus(st);
      if (!s.ok()) {
        if (state.IsCancelled()) return cancelled();
        last_error = Annotate(s, absl::StrCat("decode node ", dnode.id, " Reserve"));
        CRESCENT_LOG(warn, "request {}: {} (endpoint {})", state.request_id, last_error.ToString(),
                     endpoint);
        if (!st.ok() && NodeFailure(s.code())) registry_->MarkSuspect(dnode.id);
        if (Retryable(s.code()) && reserve_attempts < options_.max_reserve_attempts) {
          excluded.insert(dnode.id);
          continue;
        }
        return last_error;
      }
      reserved = true;
      decode_id = dnode.id;
      decode_endpoint = endpoint;
      target = rresp.target();
      if (target.decode_node_id().empty()) target.set_decode_node_id(decode_id);
    }

    const policy::NodeState& pnode = snapshot.nodes[decision.prefill.node];
    ++prefill_attempts;
    v1::PrefillRequest pq;
    pq.set_request_id(state.request_id);
    pq.mutable_prompt()->Assign(req.prompt.begin(), req.prompt.end());
    *pq.mutable_sampling() = sampling;
    pq.set_cache_salt(req.cache_salt);
    int64_t pool_prefix = 0;
    switch (options_.prefill_policy) {
      case policy::PrefillPolicy::kGlobalCacheAware:
        pool_prefix = std::max(decision.prefill.local_blocks + decision.prefill.fetch_blocks,
                               decision.prefill.fetch_blocks > 0 ? pool_blocks : 0);
        break;
      case policy::PrefillPolicy::kLocalCacheAware:
        pool_prefix = 0;
        break;
      default:
        pool_prefix = pool_blocks;
        break;
    }
    pq.set_pool_prefix_blocks(static_cast<int32_t>(pool_prefix));
    *pq.mutable_target() = target;
    pq.set_deadline_unix_ms(UnixMillisIn(options_.prefill_timeout_s));
    pq.set_max_tokens(req.max_tokens);
    pq.set_ignore_eos(req.ignore_eos);
    if (req.prompt_logprobs >= 0) {
      pq.set_prompt_logprobs(true);
      pq.set_prompt_top_logprobs(req.prompt_logprobs);
      pq.set_pool_prefix_blocks(0);  // every position is computed
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(options_.prefill_timeout_s));
    if (!state.Begin(&ctx)) return cancelled();
    const int64_t p0 = clock->NowNanos();
    presp.Clear();
    grpc::Status st =
        stubs_->Prefill(snapshot.endpoints[decision.prefill.node])->Prefill(&ctx, pq, &presp);
    state.End();
    registry_->AddPlaced(pnode.id, -decision.prefill.compute_tokens, 0, 0, 0);
    prefill_wall_s = static_cast<double>(clock->NowNanos() - p0) * 1e-9;
    absl::Status s = st.ok() ? cluster::StatusFromProto(presp.status()) : FromGrpcStatus(st);
    if (s.ok()) {
      prefill_id = pnode.id;
      break;
    }
    if (state.IsCancelled()) return cancelled();
    last_error = Annotate(s, absl::StrCat("prefill node ", pnode.id));
    CRESCENT_LOG(warn, "request {}: {} (endpoint {})", state.request_id, last_error.ToString(),
                 snapshot.endpoints[decision.prefill.node]);
    if (!st.ok() && NodeFailure(s.code())) registry_->MarkSuspect(pnode.id);
    if (Retryable(s.code()) && prefill_attempts < options_.max_prefill_attempts) {
      excluded.insert(pnode.id);
      metrics_->prefill_retries->Increment();
      continue;
    }
    release();
    return last_error;
  }

  // The first token: straight to the client.
  metrics_->phases["prefill"]->Observe(prefill_wall_s);
  metrics_->phases["kv_transfer"]->Observe(presp.transfer_seconds());
  registry_->RecordPrefill(prefill_id, hashes);
  result->stats.cached_tokens = presp.cached_tokens();
  result->stats.queue_seconds = presp.queue_seconds();
  result->stats.first_token_seconds =
      static_cast<double>(clock->NowNanos() - state.submit_ns) * 1e-9;
  prefix_queries_.fetch_add(static_cast<int64_t>(req.prompt.size()));
  prefix_hits_.fetch_add(presp.cached_tokens());

  if (req.prompt_logprobs >= 0) {
    const int64_t want = static_cast<int64_t>(req.prompt.size()) - 1;
    if (presp.prompt_logprobs_size() != want) {
      release();
      return absl::InternalError(absl::StrCat("prefill node ", prefill_id, " returned ",
                                              presp.prompt_logprobs_size(), " prompt logprobs for ",
                                              want, " positions"));
    }
    if (req.on_prompt_logprob) {
      for (int64_t p = 0; p < want; ++p) {
        req.on_prompt_logprob(p + 1, cluster::SampledTokenFromProto(presp.prompt_logprobs(p)));
      }
    }
  }
  const engine::SampleResult first = cluster::SampledTokenFromProto(presp.first_token());
  const std::vector<int32_t>& stops = req.sampling.stop_token_ids;
  if ((!req.ignore_eos && model_->tokenizer->IsEndOfGeneration(first.token)) ||
      std::find(stops.begin(), stops.end(), first.token) != stops.end()) {
    release();  // end-of-generation is not reported as a token
    result->reason = engine::FinishReason::kStop;
    return absl::OkStatus();
  }
  result->stats.generated_tokens = 1;
  if (!state.on_token(first)) {
    release();
    result->reason = engine::FinishReason::kStop;
    return absl::OkStatus();
  }
  if (req.max_tokens <= 1) {
    release();
    result->reason = engine::FinishReason::kLength;
    return absl::OkStatus();
  }
  if (presp.end_of_generation()) {
    release();
    result->reason = engine::FinishReason::kStop;
    return absl::OkStatus();
  }

  // 5. Decode: relay the stream.
  v1::DecodeRequest dq;
  dq.set_request_id(state.request_id);
  dq.set_reservation_id(target.reservation_id());
  dq.mutable_prompt()->Assign(req.prompt.begin(), req.prompt.end());
  *dq.mutable_first_token() = presp.first_token();
  *dq.mutable_sampling() = sampling;
  dq.set_max_tokens(req.max_tokens);
  dq.set_ignore_eos(req.ignore_eos);
  dq.set_cache_salt(req.cache_salt);
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(options_.request_timeout_s));
  if (!state.Begin(&ctx)) return cancelled();
  const int64_t d0 = clock->NowNanos();
  auto stub = stubs_->Decode(decode_endpoint);
  std::unique_ptr<grpc::ClientReader<v1::DecodeEvent>> reader = stub->Decode(&ctx, dq);
  reserved = false;  // the decode node owns the reservation from here on
  v1::DecodeEvent event;
  bool finished = false;
  bool stopped = false;
  v1::DecodeEvent::Finish finish;
  while (reader->Read(&event)) {
    if (stopped) continue;  // draining after TryCancel
    if (event.has_token()) {
      ++result->stats.generated_tokens;
      if (!state.on_token(cluster::SampledTokenFromProto(event.token()))) {
        stopped = true;
        ctx.TryCancel();
      }
    } else if (event.has_finish()) {
      finished = true;
      finish = event.finish();
    }
  }
  grpc::Status st = reader->Finish();
  state.End();
  metrics_->phases["decode"]->Observe(static_cast<double>(clock->NowNanos() - d0) * 1e-9);
  if (stopped) {
    result->reason = engine::FinishReason::kStop;
    return absl::OkStatus();
  }
  if (finished) {
    absl::Status fs = cluster::StatusFromProto(finish.status());
    if (!fs.ok()) return Annotate(fs, absl::StrCat("decode node ", decode_id));
    result->reason = ParseFinishReason(finish.reason());
    return absl::OkStatus();
  }
  if (state.IsCancelled()) {
    result->reason = engine::FinishReason::kCancelled;
    return absl::OkStatus();
  }
  if (NodeFailure(static_cast<absl::StatusCode>(st.error_code())) || st.ok()) {
    registry_->MarkSuspect(decode_id);
  }
  return absl::UnavailableError(
      absl::StrCat("decode node ", decode_id, " failed: ",
                   st.ok() ? std::string("stream ended without a finish event")
                           : absl::StrCat(st.error_message(), " (grpc code ",
                                          static_cast<int>(st.error_code()), ")")));
}

engine::EngineStats ConductorGenerator::Stats() const {
  RefreshClusterGauges();
  engine::EngineStats stats;
  for (const NodeEntry& node : registry_->LiveNodes()) {
    stats.running += node.load.running_requests();
    stats.waiting += node.load.waiting_requests();
    stats.total_blocks += node.info.total_blocks();
    stats.free_blocks += node.load.free_blocks();
    stats.queued_prefill_tokens += node.load.queued_prefill_tokens();
    stats.last_step_seconds = std::max(stats.last_step_seconds, node.load.last_step_seconds());
    // Cumulative per node: the sum only grows while nodes live (the metrics add increases).
    stats.draft_tokens += node.load.draft_tokens();
    stats.accepted_draft_tokens += node.load.accepted_draft_tokens();
  }
  stats.prompt_tokens = prompt_tokens_.load();
  stats.generated_tokens = generated_tokens_.load();
  stats.prefix_queries = prefix_queries_.load();
  stats.prefix_hits = prefix_hits_.load();
  return stats;
}

bool ConductorGenerator::Ready() const {
  const LiveCounts live = registry_->CountLive();
  metrics_->prefill_nodes->Set(live.prefill);
  metrics_->decode_nodes->Set(live.decode);
  return live.prefill > 0 && live.decode > 0;
}

void ConductorGenerator::RefreshClusterGauges() const { Ready(); }

}  // namespace crescent::conductor::service
