#include "prefill_node/prefill_service.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <span>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "src/cluster/proto_convert.h"
#include "src/common/logging.h"
#include "src/common/status.h"
#include "src/engine/block_hash.h"

namespace crescent::prefill_node {

namespace v1 = cluster::v1;
using engine::FinishReason;
using engine::KvCache;
using kvstore::BatchId;
using kvstore::TransferRequest;
using SteadyTime = std::chrono::steady_clock::time_point;

namespace {

constexpr size_t kBatchCapacity = 4096;  // transfer requests per BatchId

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::vector<double> RatioBuckets() { return {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99}; }

std::string_view OutcomeOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return "ok";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline";
    case absl::StatusCode::kCancelled:
      return "cancelled";
    case absl::StatusCode::kUnavailable:
      return "transfer_error";
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return "rejected";
    default:
      return "error";
  }
}

}  // namespace

PrefillMetrics::PrefillMetrics(server::MetricsRegistry* r)
    : queue_seconds(r->GetHistogram("crescent:prefill_queue_seconds",
                                    "Prefill requests' time from arrival to first scheduled.",
                                    server::LatencyBuckets())),
      compute_seconds(r->GetHistogram("crescent:prefill_compute_seconds",
                                      "Prefill compute time (first scheduled to first token).",
                                      server::LatencyBuckets())),
      kv_transfer_seconds(
          r->GetHistogram("crescent:kv_transfer_seconds",
                          "KV transfer time to the decode node not hidden behind compute.",
                          server::LatencyBuckets())),
      overlap_ratio(r->GetHistogram(
          "crescent:kv_transfer_overlap_ratio",
          "Share of a request's KV bytes whose write completed before its compute ended.",
          RatioBuckets())),
      pool_fetch_seconds(r->GetHistogram("crescent:pool_fetch_seconds",
                                         "Time reading prefix blocks from the KV pool.",
                                         server::LatencyBuckets())),
      pool_fetched_tokens(r->GetCounter("crescent:pool_fetched_tokens_total",
                                        "Prompt tokens whose KV was read from the KV pool.")),
      pool_put_blocks(r->GetCounter("crescent:pool_put_blocks_total",
                                    "KV blocks this node stored into the KV pool.")),
      kv_transfer_bytes(
          r->GetCounter("crescent:kv_transfer_bytes_total", "KV bytes written to decode nodes.")),
      in_flight(
          r->GetGauge("crescent:prefill_requests_in_flight", "Prefill requests being served.")),
      registry_(r) {}

server::Counter* PrefillMetrics::Requests(std::string_view outcome) {
  return registry_->GetCounter("crescent:prefill_requests_total", "Prefill requests by outcome.",
                               {{"outcome", std::string(outcome)}});
}

// One Prefill in flight. Fields marked "engine thread" are touched only by the engine's
// callbacks until `done` is set, and by the handler thread only after it.
struct PrefillNodeService::Call {
  struct Batch {
    BatchId id{};
    std::vector<uint64_t> lengths;  // per submitted request, in order
  };

  // Fixed before Submit.
  kvstore::TransferEngine* transfer = nullptr;
  KvCache* cache = nullptr;
  kvstore::SegmentHandle target{};
  std::string segment;
  std::vector<uint64_t> offsets;  // target byte offset of each prompt block
  std::vector<uint64_t> hashes;   // the prompt's block hash chain
  int n_layers = 0;
  int64_t block_tokens = 0;
  int64_t prompt_len = 0;
  size_t page_bytes = 0;
  size_t row_bytes = 0;
  size_t block_bytes = 0;
  SteadyTime submitted;
  SteadyTime deadline;
  std::chrono::milliseconds finish_wait{0};

  // Engine thread.
  std::vector<Batch> batches;
  int64_t next_begin = 0;  // where the last chunk ended (a restart from the cache differs)
  uint64_t bytes_submitted = 0;
  std::vector<TransferRequest> scratch;

  std::atomic<bool> transfer_failed{false};
  std::atomic<bool> cancel_requested{false};

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;                               // guarded by mu
  absl::Status transfer_status;                    // guarded by mu: the first transfer failure
  absl::Status engine_status;                      // guarded by mu
  FinishReason reason = FinishReason::kCancelled;  // guarded by mu
  engine::RequestStats stats;                      // guarded by mu
  bool have_token = false;                         // guarded by mu
  engine::SampleResult first{};                    // guarded by mu
  std::vector<engine::SampleResult> prompt_logprobs;  // engine thread, then after done
  double overlap = 1.0;                            // guarded by mu
  bool writes_settled = false;  // guarded by mu: every write completed successfully
  SteadyTime compute_end;       // guarded by mu
  SteadyTime transfer_end;      // guarded by mu

  void Fail(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu);
    if (transfer_status.ok()) transfer_status = std::move(status);
    transfer_failed.store(true);
    cv.notify_all();
  }

  // Engine thread: starts the writes in `scratch` (then clears it).
  void SubmitScratch() {
    if (scratch.empty()) return;
    if (transfer_failed.load()) {
      scratch.clear();
      return;
    }
    size_t i = 0;
    while (i < scratch.size()) {
      if (batches.empty() || batches.back().lengths.size() >= kBatchCapacity) {
        batches.push_back({transfer->AllocateBatch(kBatchCapacity), {}});
      }
      Batch& b = batches.back();
      const size_t n = std::min(kBatchCapacity - b.lengths.size(), scratch.size() - i);
      std::span<const TransferRequest> part(scratch.data() + i, n);
      absl::Status s = transfer->SubmitTransfer(b.id, part);
      if (!s.ok()) {
        Fail(absl::UnavailableError(
            absl::StrCat("writing KV to segment '", segment, "' failed: ", s.ToString())));
        break;
      }
      for (const TransferRequest& r : part) {
        b.lengths.push_back(r.length);
        bytes_submitted += r.length;
      }
      i += n;
    }
    scratch.clear();
  }

  void AddWrite(uint8_t* src, int64_t block, size_t in_block_offset, size_t length) {
    TransferRequest r;
    r.op = kvstore::TransferOp::kWrite;
    r.local_addr = src + in_block_offset;
    r.target = target;
    r.target_offset = offsets[block] + in_block_offset;
    r.length = length;
    scratch.push_back(r);
  }

  // Engine thread: K and V rows of `layer` for positions [begin, end).
  void AddLayerRows(int layer, std::span<const KvCache::BlockId> blocks, int64_t begin,
                    int64_t end) {
    int64_t p = begin;
    while (p < end) {
      const int64_t b = p / block_tokens;
      if (b >= static_cast<int64_t>(blocks.size()) || b >= static_cast<int64_t>(offsets.size())) {
        Fail(absl::InternalError(absl::StrCat("position ", p, " is beyond the block table")));
        return;
      }
      const int64_t in0 = p - b * block_tokens;
      const int64_t in1 = std::min<int64_t>(end - b * block_tokens, block_tokens);
      uint8_t* src = cache->BlockData(blocks[b]);
      const size_t k_page = static_cast<size_t>(layer) * 2 * page_bytes;
      if (in0 == 0 && in1 == block_tokens) {
        AddWrite(src, b, k_page, 2 * page_bytes);  // the layer's K and V pages are adjacent
      } else {
        const size_t rows = static_cast<size_t>(in1 - in0) * row_bytes;
        AddWrite(src, b, k_page + in0 * row_bytes, rows);
        AddWrite(src, b, k_page + page_bytes + in0 * row_bytes, rows);
      }
      p = b * block_tokens + in1;
    }
  }

  // Engine thread: waits (bounded by finish_wait) for every write submitted so far.
  void WaitPending() {
    const SteadyTime until = std::chrono::steady_clock::now() + finish_wait;
    for (const Batch& b : batches) {
      const auto left = std::max(until - std::chrono::steady_clock::now(),
                                 std::chrono::steady_clock::duration::zero());
      absl::Status s = transfer->Wait(b.id, left);
      if (!s.ok()) {
        Fail(absl::UnavailableError(
            absl::StrCat("writing KV to segment '", segment, "' failed: ", s.ToString())));
        return;
      }
    }
  }

  // Engine thread: the per-layer hook.
  void OnLayer(int layer, std::span<const KvCache::BlockId> blocks, int64_t begin, int64_t end) {
    if (transfer_failed.load()) return;
    if (layer == 0 && begin != next_begin) {
      // A restart after a preemption: writes from the blocks the engine released may still be
      // in flight (and those blocks reused). Let them land first, so that the rewrites below
      // and in the next chunks are the last word at every target offset.
      if (!batches.empty()) WaitPending();
    }
    if (layer == 0 && begin != next_begin && begin > 0) {
      // Positions [0, begin) came from the prefix cache (first chunk, or a restart after a
      // preemption): they are never computed, so copy them now, every layer.
      const int64_t whole = begin / block_tokens;
      for (int64_t b = 0; b < whole && b < static_cast<int64_t>(blocks.size()); ++b) {
        AddWrite(cache->BlockData(blocks[b]), b, 0, block_bytes);
      }
      if (begin % block_tokens != 0) {
        for (int l = 0; l < n_layers; ++l) AddLayerRows(l, blocks, whole * block_tokens, begin);
      }
    }
    AddLayerRows(layer, blocks, begin, end);
    if (layer == n_layers - 1) next_begin = end;
    SubmitScratch();
  }
};

absl::StatusOr<std::unique_ptr<PrefillNodeService>> PrefillNodeService::Create(
    engine::Engine* engine, kvstore::TransferEngine* transfer, kvstore::client::PoolClient* pool,
    server::MetricsRegistry* metrics, const PrefillServiceOptions& options) {
  if (engine == nullptr || transfer == nullptr) {
    return absl::InvalidArgumentError("PrefillNodeService needs an engine and a transfer engine");
  }
  std::unique_ptr<server::MetricsRegistry> own;
  if (metrics == nullptr) {
    own = std::make_unique<server::MetricsRegistry>();
    metrics = own.get();
  }
  std::unique_ptr<PrefillNodeService> service(
      new PrefillNodeService(engine, transfer, pool, metrics, options));
  service->own_registry_ = std::move(own);
  return service;
}

PrefillNodeService::PrefillNodeService(engine::Engine* engine, kvstore::TransferEngine* transfer,
                                       kvstore::client::PoolClient* pool,
                                       server::MetricsRegistry* metrics,
                                       const PrefillServiceOptions& options)
    : engine_(engine), transfer_(transfer), pool_(pool), options_(options), metrics_(metrics) {
  if (pool_ != nullptr && options_.publish) {
    publisher_ = std::thread([this] { PublishLoop(); });
  }
}

PrefillNodeService::~PrefillNodeService() {
  {
    std::lock_guard<std::mutex> lock(publish_mu_);
    stop_ = true;
  }
  publish_cv_.notify_all();
  if (publisher_.joinable()) publisher_.join();
}

void PrefillNodeService::SetDraining() { draining_.store(true); }

bool PrefillNodeService::WaitIdle(std::chrono::milliseconds timeout) {
  const SteadyTime until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(publish_mu_);
      if (in_flight_.load() == 0 && publish_queue_.empty() && !publishing_) return true;
    }
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

grpc::Status PrefillNodeService::Prefill(grpc::ServerContext* context,
                                         const v1::PrefillRequest* request,
                                         v1::PrefillResponse* response) {
  return cluster::ToGrpcStatus(RunPrefill(*request, response, context));
}

grpc::Status PrefillNodeService::Cancel(grpc::ServerContext* context,
                                        const v1::CancelRequest* request,
                                        v1::CancelResponse* response) {
  std::shared_ptr<Call> call;
  {
    std::lock_guard<std::mutex> lock(calls_mu_);
    auto it = calls_.find(request->request_id());
    if (it != calls_.end()) call = it->second;
  }
  if (call != nullptr) {
    call->cancel_requested.store(true);
    std::lock_guard<std::mutex> lock(call->mu);
    call->cv.notify_all();
  }
  return grpc::Status::OK;
}

absl::Status PrefillNodeService::RunPrefill(const v1::PrefillRequest& request,
                                            v1::PrefillResponse* response,
                                            grpc::ServerContext* context) {
  if (draining_.load()) {
    metrics_.Requests("rejected")->Increment();
    return absl::UnavailableError("prefill node is draining");
  }
  in_flight_.fetch_add(1);
  metrics_.in_flight->Add(1);
  absl::Status status = RunPrefillImpl(request, response, context);
  metrics_.in_flight->Add(-1);
  in_flight_.fetch_sub(1);
  metrics_.Requests(OutcomeOf(status))->Increment();
  if (!status.ok()) {
    CRESCENT_LOG(debug, "prefill {}: {}", request.request_id(), std::string(status.ToString()));
  }
  return status;
}

int64_t PrefillNodeService::FetchFromPool(std::span<const uint64_t> hashes, int64_t local,
                                          int64_t limit) {
  const int64_t n = limit - local;
  const int64_t bt = engine_->options().block_tokens;
  const size_t block_bytes = engine_->cache()->config().BlockBytes();
  absl::StatusOr<engine::Engine::Reservation> reservation = engine_->Reserve(n * bt);
  if (!reservation.ok()) {
    CRESCENT_LOG(debug, "no room to fetch {} pool blocks: {}", n,
                 std::string(reservation.status().message()));
    return 0;
  }
  std::vector<uint64_t> keys(hashes.begin() + local, hashes.begin() + limit);
  std::vector<std::span<std::byte>> buffers;
  buffers.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    buffers.emplace_back(
        reinterpret_cast<std::byte*>(engine_->cache()->BlockData(reservation->blocks[i])),
        block_bytes);
  }
  int64_t got = 0;
  absl::StatusOr<std::vector<absl::StatusOr<uint64_t>>> results = pool_->BatchGet(keys, buffers);
  if (!results.ok()) {
    CRESCENT_LOG(warn, "KV pool read failed, computing instead: {}",
                 std::string(results.status().ToString()));
  } else {
    // Only the leading run of verified blocks: the chain needs every earlier block.
    while (got < n && (*results)[got].ok() && *(*results)[got] == block_bytes) ++got;
    if (got < n && !(*results)[got].ok() &&
        (*results)[got].status().code() != absl::StatusCode::kNotFound) {
      CRESCENT_LOG(warn, "KV pool block {} of the prompt unusable ({}); computing from there",
                   local + got, std::string((*results)[got].status().ToString()));
    }
  }
  absl::Status cached = engine_->CacheReserved(
      reservation->id, std::span<const uint64_t>(hashes.data() + local, static_cast<size_t>(got)));
  if (!cached.ok()) {
    CRESCENT_LOG(warn, "caching pool blocks failed: {}", std::string(cached.ToString()));
    return 0;
  }
  return got;
}

absl::Status PrefillNodeService::RunPrefillImpl(const v1::PrefillRequest& request,
                                                v1::PrefillResponse* response,
                                                grpc::ServerContext* context) {
  const SteadyTime start = std::chrono::steady_clock::now();
  SteadyTime deadline = start + options_.default_timeout;
  if (request.deadline_unix_ms() > 0) {
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    const int64_t left_ms = request.deadline_unix_ms() - now_ms;
    if (left_ms <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("prefill ", request.request_id(),
                                                      ": deadline passed ", -left_ms,
                                                      " ms before it started"));
    }
    deadline = start + std::chrono::milliseconds(left_ms);
  }

  const engine::KvCacheConfig& kc = engine_->cache()->config();
  const int64_t bt = kc.block_tokens;
  const v1::KvTarget& target = request.target();
  engine::EngineRequest er;
  er.prompt.assign(request.prompt().begin(), request.prompt().end());
  er.sampling = cluster::SamplingFromProto(request.sampling());
  er.max_tokens = std::max(1, request.max_tokens());
  er.ignore_eos = request.ignore_eos();
  er.cache_salt = request.cache_salt();
  er.mode = engine::RequestMode::kPrefillOnly;
  if (request.prompt_logprobs()) er.prompt_logprobs = request.prompt_top_logprobs();
  CRESCENT_RETURN_IF_ERROR(engine_->Validate(er));
  const int64_t prompt_len = static_cast<int64_t>(er.prompt.size());
  const int64_t prompt_blocks = (prompt_len + bt - 1) / bt;
  if (target.segment().empty()) {
    return absl::InvalidArgumentError("the KV target names no segment");
  }
  if (target.block_bytes() != kc.BlockBytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV target's blocks are ", target.block_bytes(), " bytes; this node's are ",
        kc.BlockBytes(), " (model or block_tokens differ)"));
  }
  if (target.block_offsets_size() < prompt_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV target has ", target.block_offsets_size(), " blocks; a prompt of ",
                     prompt_len, " tokens needs ", prompt_blocks, " of ", bt, " tokens"));
  }

  auto call = std::make_shared<Call>();
  call->transfer = transfer_;
  call->cache = engine_->cache();
  call->segment = target.segment();
  call->offsets.assign(target.block_offsets().begin(), target.block_offsets().end());
  call->n_layers = kc.n_layers;
  call->block_tokens = bt;
  call->prompt_len = prompt_len;
  call->page_bytes = kc.PageBytes();
  call->row_bytes = kc.PageBytes() / static_cast<size_t>(bt);
  call->block_bytes = kc.BlockBytes();
  call->deadline = deadline;
  call->finish_wait = options_.finish_wait;

  absl::StatusOr<kvstore::SegmentHandle> handle =
      transfer_->OpenSegment(target.segment(), options_.target_transports);
  if (!handle.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot open the KV target segment '",
                                               target.segment(),
                                               "': ", handle.status().ToString()));
  }
  call->target = *handle;
  struct CloseGuard {
    kvstore::TransferEngine* transfer;
    kvstore::SegmentHandle handle;
    ~CloseGuard() { transfer->CloseSegment(handle).IgnoreError(); }
  } close_guard{transfer_, *handle};

  // Local and pool prefix.
  call->hashes = engine::BlockHashes(engine_->hash_seed(request.cache_salt()), er.prompt,
                                     static_cast<int>(bt));
  const int64_t local = engine_->CachedPrefixBlocks(call->hashes);
  // Never the block holding the last token: the engine recomputes it for the logits.
  const int64_t limit = std::min<int64_t>(request.pool_prefix_blocks(), (prompt_len - 1) / bt);
  int64_t fetched = 0;
  // (Prompt logprobs take no cached prefix: nothing to fetch for them.)
  if (pool_ != nullptr && limit > local && !request.prompt_logprobs()) {
    const SteadyTime t0 = std::chrono::steady_clock::now();
    fetched = FetchFromPool(call->hashes, local, limit);
    metrics_.pool_fetch_seconds->Observe(Seconds(std::chrono::steady_clock::now() - t0));
  }

  if (!request.request_id().empty()) {
    std::lock_guard<std::mutex> lock(calls_mu_);
    if (!calls_.emplace(request.request_id(), call).second) {
      return absl::AlreadyExistsError(
          absl::StrCat("prefill ", request.request_id(), " is already in flight"));
    }
  }
  struct Unregister {
    PrefillNodeService* service;
    const std::string& id;
    ~Unregister() {
      if (id.empty()) return;
      std::lock_guard<std::mutex> lock(service->calls_mu_);
      service->calls_.erase(id);
    }
  } unregister{this, request.request_id()};

  er.on_layer = [call](int layer, std::span<const KvCache::BlockId> blocks, int64_t begin,
                       int64_t end) { call->OnLayer(layer, blocks, begin, end); };
  if (er.prompt_logprobs >= 0) {
    call->prompt_logprobs.reserve(static_cast<size_t>(prompt_len - 1));
    er.on_prompt_logprob = [call](int64_t, const engine::SampleResult& result) {
      call->prompt_logprobs.push_back(result);
    };
  }
  auto on_token = [call](const engine::SampleResult& result) {
    std::lock_guard<std::mutex> lock(call->mu);
    call->have_token = true;
    call->first = result;
    return true;
  };
  const bool publish = pool_ != nullptr && options_.publish;
  auto on_finish = [this, call, publish](absl::Status status, FinishReason reason,
                                         const engine::RequestStats& stats,
                                         std::span<const KvCache::BlockId> blocks) {
    const SteadyTime compute_end = std::chrono::steady_clock::now();
    // Bytes whose write already completed: the part of the transfer hidden behind compute.
    uint64_t total = 0, landed = 0;
    for (const Call::Batch& b : call->batches) {
      absl::StatusOr<std::vector<kvstore::RequestStatus>> states = transfer_->GetBatchStatus(b.id);
      for (size_t i = 0; i < b.lengths.size(); ++i) {
        total += b.lengths[i];
        if (states.ok() && i < states->size() &&
            (*states)[i].state == kvstore::TransferState::kDone) {
          landed += b.lengths[i];
        }
      }
    }
    // The source blocks may be reused once this callback returns: wait for the writes here.
    SteadyTime until = std::min(compute_end + call->finish_wait, call->deadline);
    absl::Status wait = absl::OkStatus();
    for (const Call::Batch& b : call->batches) {
      const auto left = std::max(until - std::chrono::steady_clock::now(),
                                 std::chrono::steady_clock::duration::zero());
      wait = transfer_->Wait(b.id, left);
      if (!wait.ok()) break;
    }
    const SteadyTime transfer_end = std::chrono::steady_clock::now();
    if (!wait.ok()) {
      call->Fail(absl::UnavailableError(
          absl::StrCat("writing KV to segment '", call->segment, "' failed: ", wait.ToString())));
    }
    const bool good = status.ok() && !call->transfer_failed.load() &&
                      (reason == FinishReason::kPrefillDone || reason == FinishReason::kStop);
    if (good) {
      const size_t full = static_cast<size_t>(call->prompt_len / call->block_tokens);
      if (full > 0) {
        std::lock_guard<std::mutex> lock(chains_mu_);
        recent_chains_.emplace_back(call->hashes.begin(), call->hashes.begin() + full);
        if (recent_chains_.size() > 1024) recent_chains_.pop_front();
      }
    }
    if (good && publish) {
      const int64_t full = call->prompt_len / call->block_tokens;
      const int64_t first = std::min(stats.cached_tokens / call->block_tokens, full);
      const size_t n = static_cast<size_t>(full - first);
      const size_t bytes = n * call->block_bytes;
      bool stage = false;
      if (n > 0 && static_cast<int64_t>(blocks.size()) >= full) {
        std::lock_guard<std::mutex> lock(publish_mu_);
        stage = staged_bytes_ + bytes <= options_.max_staging_bytes;
        if (stage) staged_bytes_ += bytes;
      }
      if (stage) {
        PublishJob job;
        job.keys.assign(call->hashes.begin() + first, call->hashes.begin() + full);
        job.data.resize(bytes);
        for (size_t i = 0; i < n; ++i) {
          std::memcpy(job.data.data() + i * call->block_bytes,
                      call->cache->BlockData(blocks[first + i]), call->block_bytes);
        }
        {
          std::lock_guard<std::mutex> lock(publish_mu_);
          publish_queue_.push_back(std::move(job));
        }
        publish_cv_.notify_all();
      }
    }
    std::lock_guard<std::mutex> lock(call->mu);
    call->engine_status = std::move(status);
    call->reason = reason;
    call->stats = stats;
    call->overlap = total == 0 ? 1.0 : static_cast<double>(landed) / static_cast<double>(total);
    call->writes_settled = wait.ok() && !call->transfer_failed.load();
    call->compute_end = compute_end;
    call->transfer_end = transfer_end;
    call->done = true;
    call->cv.notify_all();
  };

  call->submitted = std::chrono::steady_clock::now();
  CRESCENT_ASSIGN_OR_RETURN(engine::Engine::RequestId id,
                            engine_->Submit(std::move(er), on_token, on_finish));

  // Wait for the finish callback; cancel on deadline, client cancellation, Cancel() or a failed
  // write (the engine then finishes the request with kCancelled before its next step).
  absl::Status abort = absl::OkStatus();
  {
    std::unique_lock<std::mutex> lock(call->mu);
    bool cancelled = false;
    while (!call->done) {
      call->cv.wait_for(lock, std::chrono::milliseconds(20));
      if (call->done || cancelled) continue;
      if (std::chrono::steady_clock::now() >= deadline) {
        abort = absl::DeadlineExceededError(
            absl::StrCat("prefill ", request.request_id(), " missed its deadline"));
      } else if (context != nullptr && context->IsCancelled()) {
        abort = absl::CancelledError("the caller cancelled the prefill");
      } else if (call->cancel_requested.load()) {
        abort = absl::CancelledError(absl::StrCat("prefill ", request.request_id(), " cancelled"));
      } else if (call->transfer_failed.load()) {
        abort = call->transfer_status;
      }
      if (!abort.ok()) {
        cancelled = true;
        lock.unlock();
        engine_->Cancel(id);
        lock.lock();
      }
    }
  }

  // Free the batches (a write still pending after a failed wait gets more time first).
  for (const Call::Batch& b : call->batches) {
    if (!transfer_->FreeBatch(b.id).ok()) {
      transfer_->Wait(b.id, std::chrono::seconds(30)).IgnoreError();
      transfer_->FreeBatch(b.id).IgnoreError();
    }
  }
  metrics_.kv_transfer_bytes->Increment(static_cast<double>(call->bytes_submitted));

  std::lock_guard<std::mutex> lock(call->mu);
  if (!call->transfer_status.ok()) return call->transfer_status;
  if (!abort.ok()) return abort;
  if (!call->engine_status.ok()) return call->engine_status;
  if (call->reason == FinishReason::kCancelled) {
    return absl::CancelledError(absl::StrCat("prefill ", request.request_id(), " was cancelled"));
  }
  if (!call->writes_settled) {
    return absl::UnavailableError(
        absl::StrCat("KV writes to segment '", call->segment, "' did not complete"));
  }

  const engine::RequestStats& st = call->stats;
  const int64_t pool_tokens = std::clamp<int64_t>(st.cached_tokens - local * bt, 0, fetched * bt);
  const double queue = st.queue_seconds;
  const double compute = std::max(0.0, Seconds(call->compute_end - call->submitted) - queue);
  const double transfer = Seconds(call->transfer_end - call->compute_end);
  metrics_.queue_seconds->Observe(queue);
  metrics_.compute_seconds->Observe(compute);
  metrics_.kv_transfer_seconds->Observe(transfer);
  metrics_.overlap_ratio->Observe(call->overlap);
  metrics_.pool_fetched_tokens->Increment(static_cast<double>(pool_tokens));

  response->Clear();
  response->mutable_status()->set_code(0);
  v1::SampledToken* token = response->mutable_first_token();
  const bool eos = !call->have_token;  // kStop without a token: end-of-generation was sampled
  token->set_token(eos ? engine_->model().tokenizer->eos_id() : call->first.token);
  if (!eos) {
    token->set_logprob(call->first.logprob);
    for (const engine::TokenLogprob& t : call->first.top_logprobs) {
      v1::TokenLogprob* out = token->add_top_logprobs();
      out->set_token(t.token);
      out->set_logprob(t.logprob);
    }
  }
  response->set_prompt_tokens(st.prompt_tokens);
  response->set_cached_tokens(st.cached_tokens);
  response->set_pool_tokens(pool_tokens);
  response->set_queue_seconds(queue);
  response->set_prefill_seconds(compute);
  response->set_transfer_seconds(transfer);
  response->set_overlap_fraction(call->overlap);
  response->set_end_of_generation(eos || request.max_tokens() == 1);
  for (const engine::SampleResult& r : call->prompt_logprobs) {
    cluster::SampledTokenToProto(r, response->add_prompt_logprobs());
  }
  return absl::OkStatus();
}

std::vector<std::vector<uint64_t>> PrefillNodeService::TakeRecentChains() {
  std::lock_guard<std::mutex> lock(chains_mu_);
  std::vector<std::vector<uint64_t>> out(std::make_move_iterator(recent_chains_.begin()),
                                         std::make_move_iterator(recent_chains_.end()));
  recent_chains_.clear();
  return out;
}

void PrefillNodeService::PublishLoop() {
  std::unique_lock<std::mutex> lock(publish_mu_);
  while (true) {
    publish_cv_.wait(lock, [&] { return stop_ || !publish_queue_.empty(); });
    if (publish_queue_.empty()) return;  // stop_ and nothing left
    PublishJob job = std::move(publish_queue_.front());
    publish_queue_.pop_front();
    publishing_ = true;
    lock.unlock();

    const size_t block_bytes = job.keys.empty() ? 0 : job.data.size() / job.keys.size();
    std::vector<std::span<const std::byte>> buffers;
    buffers.reserve(job.keys.size());
    for (size_t i = 0; i < job.keys.size(); ++i) {
      buffers.emplace_back(job.data.data() + i * block_bytes, block_bytes);
    }
    absl::StatusOr<std::vector<absl::Status>> put = pool_->BatchPut(job.keys, buffers);
    uint64_t stored = 0;
    if (!put.ok()) {
      CRESCENT_LOG(warn, "KV pool put of {} blocks failed: {}", job.keys.size(),
                   std::string(put.status().ToString()));
    } else {
      for (const absl::Status& s : *put) stored += s.ok() ? 1 : 0;
    }
    metrics_.pool_put_blocks->Increment(static_cast<double>(stored));

    lock.lock();
    staged_bytes_ -= job.data.size();
    publishing_ = false;
    publish_cv_.notify_all();
  }
}

}  // namespace crescent::prefill_node
