#include "bench/sim/simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "bench/sim/block_cache.h"
#include "bench/sim/event_queue.h"
#include "conductor/policy/scheduler.h"

namespace crescent::bench::sim {
namespace {

enum EventKind : int { kArrival = 0, kPrefillDone = 1, kKvArrive = 2, kStepEnd = 3 };

struct Instance {
  explicit Instance(int64_t cache_blocks) : cache(cache_blocks) {}

  // Prefill side.
  std::deque<int> queue;      // requests waiting (colocated: head is the one being chunked)
  int running = -1;           // disaggregated: request being prefilled
  double busy_until = 0.0;    // disaggregated: end of the running prefill
  double queued_est_s = 0.0;  // predicted work of queued, not started requests
  int64_t queued_tokens = 0;  // tokens still to compute, running job included
  LruBlockCache cache;

  // Decode side.
  std::vector<int> batch;
  std::vector<int> joining;  // KV complete, joining at the next step
  std::vector<int> pending;  // routed here, not yet in the batch (includes joining)
  bool stepping = false;
  int64_t context = 0;
  int64_t free_kv = 0;
  int64_t chunk = 0;       // colocated: prefill tokens in the current iteration
  int chunk_request = -1;  // colocated: whose tokens (-1: no prefill in this iteration)
};

struct RequestState {
  policy::Request request;
  int64_t output_tokens = 0;
  int prefill = -1, decode = -1;
  double est_s = 0.0;  // predicted fetch + prefill time when routed
  double predicted_join_s = 0.0;
  double routed_s = 0.0;
  double prefill_start = 0.0, fetch_s = 0.0;
  double last_token = 0.0;
  int64_t produced = 0;
  int64_t kv_blocks = 0;
  int64_t done_tokens = 0;  // colocated: computed so far
  bool started = false;
};

class Simulator {
 public:
  Simulator(const std::vector<TraceRequest>& trace, const policy::CostModel& cost,
            const SimConfig& config)
      : trace_(trace),
        cost_(cost),
        config_(config),
        pool_(config.pool_blocks),
        scheduler_(policy::MakePrefillSelector(config.policy, config.seed),
                   policy::SchedulerOptions{config.slo, config.early_rejection}) {
    const int n = config.colocated ? config.prefill_instances + config.decode_instances
                                   : config.prefill_instances + config.decode_instances;
    for (int i = 0; i < n; ++i) {
      instances_.push_back(std::make_unique<Instance>(config.local_cache_blocks));
      if (config.colocated || i >= config.prefill_instances) {
        instances_.back()->free_kv = config.kv_blocks_per_instance;
      }
    }
    global_ = config.policy == policy::PrefillPolicy::kGlobalCacheAware;
  }

  SimResult Run() {
    const auto wall_start = std::chrono::steady_clock::now();
    reqs_.resize(trace_.size());
    outcomes_.resize(trace_.size());
    for (size_t i = 0; i < trace_.size(); ++i) {
      const TraceRequest& t = trace_[i];
      RequestState& r = reqs_[i];
      r.request.id = i;
      r.request.prompt_tokens = std::max<int64_t>(t.input_length, 1);
      const size_t full = static_cast<size_t>(r.request.prompt_tokens / config_.trace_block_tokens);
      r.request.block_hashes.assign(t.hash_ids.begin(),
                                    t.hash_ids.begin() + std::min(full, t.hash_ids.size()));
      r.output_tokens = std::max<int64_t>(t.output_length, 1);
      r.request.max_output_tokens = r.output_tokens;
      r.request.arrival_s = t.timestamp_ms / 1000.0 * config_.time_scale;
      outcomes_[i].prompt_tokens = r.request.prompt_tokens;
      events_.Push({r.request.arrival_s, kArrival, static_cast<int>(i), 0});
    }
    const double first = reqs_.front().request.arrival_s;
    double last_time = first;
    while (!events_.empty()) {
      const Event e = events_.Pop();
      now_ = e.time_s;
      last_time = now_;
      switch (e.kind) {
        case kArrival:
          OnArrival(e.a);
          break;
        case kPrefillDone:
          OnPrefillDone(e.a, e.b);
          break;
        case kKvArrive:
          OnKvArrive(e.a, e.b);
          break;
        case kStepEnd:
          if (config_.colocated) {
            OnIterationEnd(e.a);
          } else {
            OnStepEnd(e.a);
          }
          break;
      }
    }
    SimResult result;
    result.events = events_.pushed();
    const double span = reqs_.back().request.arrival_s - first;
    result.report = Summarize(outcomes_, config_.slo, last_time - first, span);
    result.report.policy = std::string(policy::PrefillPolicyName(config_.policy));
    result.report.mode = config_.colocated ? "colocated" : "disaggregated";
    result.report.early_rejection = config_.early_rejection;
    result.report.time_scale = config_.time_scale;
    result.report.wall_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    result.outcomes = std::move(outcomes_);
    return result;
  }

 private:
  bool IsPrefill(int i) const { return config_.colocated || i < config_.prefill_instances; }
  bool IsDecode(int i) const { return config_.colocated || i >= config_.prefill_instances; }

  // The decode load of instance `i` forecast at absolute time t: running requests that will
  // not have finished, and routed ones that will have joined and not finished.
  policy::DecodeLoad ForecastLoad(int i, double t) const {
    const Instance& in = *instances_[i];
    const double step = cost_.DecodeStepSeconds(std::max<int>(1, in.batch.size()), in.context);
    policy::DecodeLoad load;
    for (int id : in.batch) {
      const RequestState& r = reqs_[id];
      if (now_ + static_cast<double>(r.output_tokens - r.produced) * step > t) {
        ++load.batch;
        load.context_tokens += r.request.prompt_tokens + r.produced;
      }
    }
    for (int id : in.pending) {
      const RequestState& r = reqs_[id];
      const double join = std::max(now_, r.predicted_join_s);
      if (join <= t && join + static_cast<double>(r.output_tokens - 1) * step > t) {
        ++load.batch;
        load.context_tokens += r.request.prompt_tokens;
      }
    }
    return load;
  }

  // A colocated instance's prefill backlog: the unstarted jobs' predictions, the rest of the
  // job being chunked, and the decode step that rides along with every chunk.
  double ColocatedQueueSeconds(const Instance& in) const {
    double s = in.queued_est_s;
    int64_t tokens = 0;
    for (int id : in.queue) {
      const RequestState& r = reqs_[id];
      if (r.started) {
        const double left = static_cast<double>(outcomes_[id].computed_tokens - r.done_tokens);
        s += r.est_s * left / std::max<double>(1.0, outcomes_[id].computed_tokens);
        tokens += outcomes_[id].computed_tokens - r.done_tokens;
      } else {
        tokens += std::max<int64_t>(1, r.request.prompt_tokens);
      }
    }
    const double chunks = std::ceil(static_cast<double>(tokens) / config_.chunk_tokens);
    return s + chunks * cost_.DecodeStepSeconds(static_cast<int>(in.batch.size()), in.context);
  }

  policy::NodeState StateOf(int i) const {
    const Instance& in = *instances_[i];
    policy::NodeState s;
    s.id = absl::StrCat(config_.colocated ? "c" : (IsPrefill(i) ? "p" : "d"), i);
    s.role = config_.colocated
                 ? policy::NodeRole::kColocated
                 : (IsPrefill(i) ? policy::NodeRole::kPrefill : policy::NodeRole::kDecode);
    s.cost = &cost_;
    if (IsPrefill(i)) {
      s.queued_prefill_tokens = in.queued_tokens;
      s.queued_prefill_s = config_.colocated
                               ? ColocatedQueueSeconds(in)
                               : std::max(0.0, in.busy_until - now_) + in.queued_est_s;
      const LruBlockCache* cache = &in.cache;
      s.holds_block = [cache](policy::BlockHash h) { return cache->Contains(h); };
    }
    if (IsDecode(i)) {
      s.running_decode_batch = static_cast<int>(in.batch.size());
      s.decode_context_tokens = in.context;
      s.free_kv_blocks = in.free_kv;
      s.decode_load_at = [this, i](double t) { return ForecastLoad(i, t); };
    }
    return s;
  }

  policy::PoolView Pool() const {
    policy::PoolView pool;
    if (config_.pool_blocks > 0) {
      pool.holds_block = [this](policy::BlockHash h) { return pool_.Contains(h); };
    }
    return pool;
  }

  void OnArrival(int id) {
    RequestState& r = reqs_[id];
    std::vector<policy::NodeState> nodes;
    nodes.reserve(instances_.size());
    for (size_t i = 0; i < instances_.size(); ++i) nodes.push_back(StateOf(static_cast<int>(i)));
    const policy::Decision d = scheduler_.Schedule(r.request, nodes, Pool(), now_);
    if (!d.accepted) {
      outcomes_[id].rejected = true;
      outcomes_[id].reject_reason = std::string(policy::RejectReasonName(d.reason));
      return;
    }
    r.prefill = d.prefill.node;
    r.decode = d.decode.node;
    r.est_s = d.prefill.fetch_s + d.prefill.prefill_s;
    r.predicted_join_s = now_ + d.prefill.ttft_s;
    r.routed_s = now_;
    r.kv_blocks = d.decode.kv_blocks_needed;
    Instance& dec = *instances_[r.decode];
    dec.free_kv -= r.kv_blocks;
    dec.pending.push_back(id);
    Instance& pre = *instances_[r.prefill];
    pre.queue.push_back(id);
    pre.queued_est_s += r.est_s;
    pre.queued_tokens += d.prefill.compute_tokens;
    if (config_.colocated) {
      if (!pre.stepping) StartIteration(r.prefill);
    } else if (pre.running < 0) {
      StartPrefill(r.prefill);
    }
  }

  // Plans the prefill against the caches as they are now (they may have changed since the
  // request was routed), takes the reused blocks into use, and records the split.
  policy::PrefillPlan BeginPrefill(int p, int id) {
    RequestState& r = reqs_[id];
    Instance& in = *instances_[p];
    policy::NodeState s = StateOf(p);
    s.queued_prefill_s = 0.0;
    const policy::PoolView pool = Pool();
    const policy::PrefillPlan plan =
        policy::PlanPrefillOn(r.request, s, p, global_ ? &pool : nullptr);
    const auto& h = r.request.block_hashes;
    for (int64_t b = 0; b < plan.local_blocks + plan.fetch_blocks; ++b) {
      in.cache.Touch(h[b]);
      if (b >= plan.local_blocks) pool_.Touch(h[b]);
    }
    r.started = true;
    r.prefill_start = now_;
    r.fetch_s = plan.fetch_s;
    in.queued_est_s -= r.est_s;
    outcomes_[id].cached_tokens = plan.cached_tokens;
    outcomes_[id].computed_tokens = plan.compute_tokens;
    return plan;
  }

  void StartPrefill(int p) {
    Instance& in = *instances_[p];
    if (in.queue.empty()) return;
    const int id = in.queue.front();
    in.queue.pop_front();
    const policy::PrefillPlan plan = BeginPrefill(p, id);
    in.running = id;
    in.busy_until = now_ + plan.fetch_s + plan.prefill_s;
    events_.Push({in.busy_until, kPrefillDone, p, id});
  }

  // The first token is out: TTFT ends, the prompt's full blocks enter the caches.
  void FinishPrefill(int p, int id) {
    RequestState& r = reqs_[id];
    Instance& in = *instances_[p];
    for (policy::BlockHash h : r.request.block_hashes) {
      in.cache.Touch(h);
      pool_.Touch(h);
    }
    in.queued_tokens -= outcomes_[id].computed_tokens;
    outcomes_[id].ttft_s = now_ - r.request.arrival_s;
    r.produced = 1;
    r.last_token = now_;
  }

  void Finish(int id) {
    RequestState& r = reqs_[id];
    Instance& dec = *instances_[r.decode];
    dec.free_kv += r.kv_blocks;
    outcomes_[id].e2e_s = now_ - r.request.arrival_s;
    outcomes_[id].output_tokens = r.produced;
  }

  void RemovePending(Instance& in, int id) {
    in.pending.erase(std::find(in.pending.begin(), in.pending.end(), id));
  }

  void OnPrefillDone(int p, int id) {
    RequestState& r = reqs_[id];
    FinishPrefill(p, id);
    instances_[p]->running = -1;
    if (r.output_tokens <= 1) {
      RemovePending(*instances_[r.decode], id);
      Finish(id);
    } else {
      // The decode instance pulls the reused prefix (held by the prefill instance or the pool)
      // from the moment the request is routed; the newly computed KV streams layer by layer
      // alongside the compute, so what remains after the prefill is the last layer's share, or
      // the rest of a transfer slower than the compute.
      const int64_t kv = cost_.kv_bytes_per_token();
      const double t_new = cost_.TransferSeconds(outcomes_[id].computed_tokens * kv);
      const double t_cached = cost_.TransferSeconds(outcomes_[id].cached_tokens * kv);
      const double arrive = std::max({now_ + t_new / std::max(1, config_.layers),
                                      r.prefill_start + r.fetch_s + t_new, r.routed_s + t_cached});
      events_.Push({arrive, kKvArrive, r.decode, id});
    }
    StartPrefill(p);
  }

  void OnKvArrive(int d, int id) {
    Instance& in = *instances_[d];
    in.joining.push_back(id);
    if (!in.stepping) StartStep(d);
  }

  void JoinBatch(Instance& in) {
    for (int id : in.joining) {
      in.batch.push_back(id);
      in.context += reqs_[id].request.prompt_tokens + reqs_[id].produced;
      RemovePending(in, id);
    }
    in.joining.clear();
  }

  void StartStep(int d) {
    Instance& in = *instances_[d];
    JoinBatch(in);
    if (in.batch.empty()) {
      in.stepping = false;
      return;
    }
    in.stepping = true;
    events_.Push({now_ + cost_.DecodeStepSeconds(static_cast<int>(in.batch.size()), in.context),
                  kStepEnd, d, 0});
  }

  // Every request in the batch gets a token; those that are complete leave.
  void DecodeTokens(Instance& in) {
    size_t kept = 0;
    for (int id : in.batch) {
      RequestState& r = reqs_[id];
      outcomes_[id].gaps_s.push_back(now_ - r.last_token);
      r.last_token = now_;
      ++r.produced;
      ++in.context;
      if (r.produced >= r.output_tokens) {
        in.context -= r.request.prompt_tokens + r.produced;
        Finish(id);
      } else {
        in.batch[kept++] = id;
      }
    }
    in.batch.resize(kept);
  }

  void OnStepEnd(int d) {
    DecodeTokens(*instances_[d]);
    StartStep(d);
  }

  // Colocated: one iteration = a decode step for the batch + one prefill chunk of the head job.
  void StartIteration(int i) {
    Instance& in = *instances_[i];
    JoinBatch(in);
    in.chunk = 0;
    in.chunk_request = -1;
    double prefill_s = 0.0;
    if (!in.queue.empty()) {
      const int id = in.queue.front();
      RequestState& r = reqs_[id];
      double fetch_s = 0.0;
      if (!r.started) fetch_s = BeginPrefill(i, id).fetch_s;
      const int64_t cached = outcomes_[id].cached_tokens + r.done_tokens;
      in.chunk = std::min(config_.chunk_tokens, outcomes_[id].computed_tokens - r.done_tokens);
      in.chunk_request = id;
      prefill_s = fetch_s + cost_.PrefillSeconds(in.chunk, cached);
    }
    if (in.batch.empty() && in.queue.empty()) {
      in.stepping = false;
      return;
    }
    in.stepping = true;
    const double decode_s = cost_.DecodeStepSeconds(static_cast<int>(in.batch.size()), in.context);
    events_.Push({now_ + decode_s + prefill_s, kStepEnd, i, 0});
  }

  void OnIterationEnd(int i) {
    Instance& in = *instances_[i];
    DecodeTokens(in);
    if (in.chunk_request >= 0) {
      // Requests that arrived during the iteration queue behind the one being chunked.
      const int id = in.chunk_request;
      RequestState& r = reqs_[id];
      r.done_tokens += in.chunk;
      if (r.done_tokens >= outcomes_[id].computed_tokens) {
        in.queue.pop_front();
        FinishPrefill(i, id);
        if (r.output_tokens <= 1) {
          RemovePending(in, id);
          Finish(id);
        } else {
          in.joining.push_back(id);
        }
      }
    }
    StartIteration(i);
  }

  const std::vector<TraceRequest>& trace_;
  const policy::CostModel& cost_;
  const SimConfig config_;
  LruBlockCache pool_;
  policy::Scheduler scheduler_;
  bool global_ = false;
  std::vector<std::unique_ptr<Instance>> instances_;
  std::vector<RequestState> reqs_;
  std::vector<RequestOutcome> outcomes_;
  EventQueue events_;
  double now_ = 0.0;
};

}  // namespace

absl::StatusOr<SimResult> Simulate(const std::vector<TraceRequest>& trace,
                                   const policy::CostModel& cost, const SimConfig& config) {
  if (trace.empty()) return absl::InvalidArgumentError("the trace is empty");
  if (config.prefill_instances < 0 || config.decode_instances < 0 ||
      config.prefill_instances + config.decode_instances <= 0) {
    return absl::InvalidArgumentError("the cluster needs at least one instance");
  }
  if (!config.colocated && (config.prefill_instances == 0 || config.decode_instances == 0)) {
    return absl::InvalidArgumentError(
        "a disaggregated cluster needs at least one prefill and one decode instance");
  }
  if (cost.block_tokens() != config.trace_block_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("the cost model's block size (", cost.block_tokens(),
                     " tokens) differs from the trace's (", config.trace_block_tokens, ")"));
  }
  if (!(config.time_scale > 0.0)) return absl::InvalidArgumentError("time_scale must be > 0");
  if (config.chunk_tokens <= 0) return absl::InvalidArgumentError("chunk_tokens must be > 0");
  Simulator sim(trace, cost, config);
  return sim.Run();
}

}  // namespace crescent::bench::sim
