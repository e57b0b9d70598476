#include "decode_node/decode_service.h"

#include <algorithm>
#include <deque>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "src/cluster/proto_convert.h"
#include "src/common/logging.h"

namespace crescent::decode_node {
namespace {

namespace v1 = ::crescent::cluster::v1;

// Buckets for per-token times: 1 ms .. 5 s.
std::vector<double> TokenBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
          0.15,  0.2,    0.3,   0.4,  0.5,  0.75, 1.0,  2.5,  5.0};
}

const char* ReasonName(engine::FinishReason reason) {
  switch (reason) {
    case engine::FinishReason::kStop:
    case engine::FinishReason::kPrefillDone:
      return "stop";
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kCancelled:
      return "cancelled";
  }
  return "cancelled";
}

}  // namespace

DecodeMetrics::DecodeMetrics(server::MetricsRegistry* r)
    : kv_wait_seconds(r->GetHistogram(
          "crescent:decode_kv_wait_seconds",
          "Time from a KV reservation to its Decode call (the prefill and KV transfer).",
          server::LatencyBuckets())),
      decode_seconds(r->GetHistogram("crescent:decode_seconds",
                                     "Time from a Decode call to its last token.",
                                     server::LatencyBuckets())),
      time_per_output_token(r->GetHistogram(
          "crescent:time_per_output_token_seconds",
          "Time between consecutive tokens a decode stream produced.", TokenBuckets())),
      reservations_expired(
          r->GetCounter("crescent:reservations_expired_total",
                        "KV reservations released because their Decode did not come in time.")),
      reservations_total(
          r->GetCounter("crescent:decode_reservations_total", "KV reservations granted.")),
      reserve_rejected(r->GetCounter("crescent:decode_reserve_rejected_total",
                                     "Reserve calls refused (no free KV, draining, invalid).")),
      reservations_pending(r->GetGauge("crescent:decode_reservations_pending",
                                       "KV reservations waiting for their Decode call.")),
      num_requests_running(
          r->GetGauge("crescent:num_requests_running", "Requests in the engine's running batch.")),
      num_requests_waiting(r->GetGauge("crescent:num_requests_waiting",
                                       "Requests queued in the engine, not yet running.")),
      kv_cache_usage_perc(
          r->GetGauge("crescent:kv_cache_usage_perc", "Fraction of KV blocks in use (0 to 1).")),
      generation_tokens(r->GetCounter("crescent:generation_tokens_total",
                                      "Tokens streamed by Decode (after the first token).")),
      spec_draft_tokens(r->GetCounter("crescent:spec_decode_num_draft_tokens_total",
                                      "Speculative draft tokens checked.")),
      spec_accepted_tokens(r->GetCounter("crescent:spec_decode_num_accepted_tokens_total",
                                         "Speculative draft tokens confirmed.")),
      registry(r) {}

server::Counter* DecodeMetrics::Outcome(std::string_view outcome) {
  return registry->GetCounter("crescent:decode_requests_total",
                              "Decode requests by how they ended.",
                              {{"outcome", std::string(outcome)}});
}

// What one Decode stream's engine callbacks hand to its gRPC handler.
struct DecodeStream {
  struct Event {
    v1::DecodeEvent event;
    int64_t ns = 0;
  };
  absl::Mutex mu;
  std::deque<Event> events ABSL_GUARDED_BY(mu);
  bool finished ABSL_GUARDED_BY(mu) = false;
  bool cancel_requested ABSL_GUARDED_BY(mu) = false;  // the Cancel RPC
};

absl::StatusOr<std::unique_ptr<DecodeNodeService>> DecodeNodeService::Create(
    engine::Engine* engine, server::MetricsRegistry* registry,
    const DecodeServiceOptions& options) {
  if (engine == nullptr || registry == nullptr) {
    return absl::InvalidArgumentError("DecodeNodeService needs an engine and a metrics registry");
  }
  if (options.node_id.empty()) return absl::InvalidArgumentError("node_id is empty");
  if (options.segment.empty()) return absl::InvalidArgumentError("segment is empty");
  if (options.default_reserve_timeout.count() <= 0 || options.max_reserve_timeout.count() <= 0 ||
      options.poll_interval.count() <= 0) {
    return absl::InvalidArgumentError(
        "default_reserve_timeout, max_reserve_timeout and poll_interval must be positive");
  }
  return std::unique_ptr<DecodeNodeService>(new DecodeNodeService(engine, registry, options));
}

DecodeNodeService::DecodeNodeService(engine::Engine* engine, server::MetricsRegistry* registry,
                                     const DecodeServiceOptions& options)
    : engine_(engine),
      options_(options),
      clock_(options.clock != nullptr ? options.clock : RealClock::Get()),
      metrics_(registry) {
  reaper_ = std::thread([this] { ReaperLoop(); });
}

DecodeNodeService::~DecodeNodeService() {
  std::map<uint64_t, PendingReservation> left;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    reaper_cv_.SignalAll();
    left.swap(reservations_);
  }
  reaper_.join();
  for (const auto& [id, r] : left) engine_->Release(id);
}

void DecodeNodeService::ReaperLoop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    reaper_cv_.WaitWithTimeout(&mu_, absl::FromChrono(options_.poll_interval));
    if (stop_) break;
    const int64_t now = clock_->NowNanos();
    std::vector<std::pair<uint64_t, std::string>> expired;
    for (auto it = reservations_.begin(); it != reservations_.end();) {
      if (it->second.deadline_ns <= now) {
        expired.emplace_back(it->first, it->second.request_id);
        it = reservations_.erase(it);
      } else {
        ++it;
      }
    }
    metrics_.reservations_pending->Set(static_cast<double>(reservations_.size()));
    if (expired.empty()) continue;
    mu_.Unlock();
    for (const auto& [id, request_id] : expired) {
      engine_->Release(id);
      metrics_.reservations_expired->Increment();
      CRESCENT_LOG(warn, "reservation {} of request '{}' expired before its Decode; released", id,
                   request_id);
    }
    mu_.Lock();
  }
}

bool DecodeNodeService::TakeReservation(uint64_t reservation, PendingReservation* taken) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(reservation);
  if (it == reservations_.end()) return false;
  if (taken != nullptr) *taken = std::move(it->second);
  reservations_.erase(it);
  metrics_.reservations_pending->Set(static_cast<double>(reservations_.size()));
  return true;
}

grpc::Status DecodeNodeService::Reserve(grpc::ServerContext* context,
                                        const v1::ReserveRequest* request,
                                        v1::ReserveResponse* response) {
  if (draining()) {
    metrics_.reserve_rejected->Increment();
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "decode node " + options_.node_id + " is draining");
  }
  if (request->positions() <= 0) {
    metrics_.reserve_rejected->Increment();
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("positions must be positive, got ", request->positions()));
  }
  auto timeout = request->timeout_ms() > 0 ? std::chrono::milliseconds(request->timeout_ms())
                                           : options_.default_reserve_timeout;
  timeout = std::min(timeout, options_.max_reserve_timeout);
  absl::StatusOr<engine::Engine::Reservation> r = engine_->Reserve(request->positions());
  if (!r.ok()) {
    metrics_.reserve_rejected->Increment();
    return cluster::ToGrpcStatus(r.status());
  }
  const uint64_t block_bytes = engine_->cache()->config().BlockBytes();
  v1::KvTarget* target = response->mutable_target();
  target->set_decode_node_id(options_.node_id);
  target->set_segment(options_.segment);
  target->set_transfer_endpoint(options_.transfer_endpoint);
  for (engine::KvCache::BlockId b : r->blocks) {
    target->add_block_offsets(static_cast<uint64_t>(b) * block_bytes);
  }
  target->set_block_bytes(block_bytes);
  target->set_reservation_id(r->id);
  response->mutable_status()->set_code(0);

  const int64_t now = clock_->NowNanos();
  PendingReservation pending;
  pending.request_id = request->request_id();
  pending.reserved_ns = now;
  pending.deadline_ns = now + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  {
    absl::MutexLock lock(&mu_);
    reservations_[r->id] = std::move(pending);
    metrics_.reservations_pending->Set(static_cast<double>(reservations_.size()));
  }
  metrics_.reservations_total->Increment();
  return grpc::Status::OK;
}

grpc::Status DecodeNodeService::Release(grpc::ServerContext* context,
                                        const v1::ReleaseRequest* request,
                                        v1::ReleaseResponse* response) {
  // Only a reservation still waiting for its Decode is released: once decoding, its blocks are
  // the request's (Cancel ends that).
  if (TakeReservation(request->reservation_id(), nullptr)) {
    engine_->Release(request->reservation_id());
  }
  return grpc::Status::OK;
}

grpc::Status DecodeNodeService::Cancel(grpc::ServerContext* context,
                                       const v1::CancelRequest* request,
                                       v1::CancelResponse* response) {
  std::vector<uint64_t> release;
  std::vector<std::shared_ptr<DecodeStream>> streams;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = reservations_.begin(); it != reservations_.end();) {
      if (it->second.request_id == request->request_id()) {
        release.push_back(it->first);
        it = reservations_.erase(it);
      } else {
        ++it;
      }
    }
    metrics_.reservations_pending->Set(static_cast<double>(reservations_.size()));
    auto [begin, end] = decoding_.equal_range(request->request_id());
    for (auto it = begin; it != end; ++it) streams.push_back(it->second);
  }
  for (uint64_t id : release) engine_->Release(id);
  for (const auto& stream : streams) {
    absl::MutexLock lock(&stream->mu);
    stream->cancel_requested = true;
  }
  return grpc::Status::OK;
}

grpc::Status DecodeNodeService::Decode(grpc::ServerContext* context,
                                       const v1::DecodeRequest* request,
                                       grpc::ServerWriter<v1::DecodeEvent>* writer) {
  const int64_t start_ns = clock_->NowNanos();
  if (request->prompt_size() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt is empty");
  }
  if (request->max_tokens() < 1) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("max_tokens must be at least 1 (it counts the first token), "
                                     "got ",
                                     request->max_tokens()));
  }
  if (!request->has_first_token()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "first_token is missing");
  }
  PendingReservation pending;
  if (!TakeReservation(request->reservation_id(), &pending)) {
    metrics_.Outcome("error")->Increment();
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("no pending reservation ", request->reservation_id(), " on decode node ",
                     options_.node_id, " (unknown, expired, released or already decoding)"));
  }
  metrics_.kv_wait_seconds->Observe(static_cast<double>(start_ns - pending.reserved_ns) * 1e-9);

  auto stream = std::make_shared<DecodeStream>();
  {
    absl::MutexLock lock(&mu_);
    decoding_.emplace(request->request_id(), stream);
    ++active_decodes_;
  }
  // Leaves the in-flight table however the handler returns.
  struct Deregister {
    DecodeNodeService* self;
    const std::string& request_id;
    const DecodeStream* stream;
    ~Deregister() {
      absl::MutexLock lock(&self->mu_);
      auto [begin, end] = self->decoding_.equal_range(request_id);
      for (auto it = begin; it != end; ++it) {
        if (it->second.get() == stream) {
          self->decoding_.erase(it);
          break;
        }
      }
      --self->active_decodes_;
    }
  } deregister{this, request->request_id(), stream.get()};

  engine::EngineRequest er;
  er.prompt.assign(request->prompt().begin(), request->prompt().end());
  er.sampling = cluster::SamplingFromProto(request->sampling());
  er.max_tokens = request->max_tokens();
  er.ignore_eos = request->ignore_eos();
  er.cache_salt = request->cache_salt();
  const Clock* clock = clock_;
  auto on_token = [stream, clock](const engine::SampleResult& result) {
    DecodeStream::Event e;
    cluster::SampledTokenToProto(result, e.event.mutable_token());
    e.ns = clock->NowNanos();
    absl::MutexLock lock(&stream->mu);
    stream->events.push_back(std::move(e));
    return true;
  };
  auto on_finish = [stream, clock](absl::Status status, engine::FinishReason reason,
                                   const engine::RequestStats& stats,
                                   std::span<const engine::KvCache::BlockId>) {
    DecodeStream::Event e;
    v1::DecodeEvent::Finish* finish = e.event.mutable_finish();
    cluster::StatusToProto(status, finish->mutable_status());
    finish->set_reason(ReasonName(reason));
    finish->set_generated_tokens(stats.generated_tokens);
    finish->set_queue_seconds(stats.queue_seconds);
    e.ns = clock->NowNanos();
    absl::MutexLock lock(&stream->mu);
    stream->events.push_back(std::move(e));
    stream->finished = true;
  };
  absl::StatusOr<engine::Engine::RequestId> id =
      engine_->SubmitPrefilled(request->reservation_id(), std::move(er),
                               request->first_token().token(), on_token, on_finish);
  if (!id.ok()) {
    // The reservation is dead either way: a failed request is not retried on it.
    engine_->Release(request->reservation_id());
    metrics_.Outcome("error")->Increment();
    return cluster::ToGrpcStatus(id.status());
  }

  // Relay events until the Finish event is written. The client going away (or Cancel) cancels
  // the engine request; the handler then waits, bounded, for the engine to confirm.
  bool cancelled = false;    // we asked the engine to cancel
  bool client_gone = false;  // the stream can no longer be written
  std::chrono::steady_clock::time_point cancel_deadline;
  int64_t last_token_ns = start_ns;
  std::string outcome = "cancelled";
  while (true) {
    std::deque<DecodeStream::Event> events;
    bool finished = false;
    bool cancel_requested = false;
    {
      absl::MutexLock lock(&stream->mu);
      auto ready = [&stream]() ABSL_SHARED_LOCKS_REQUIRED(stream->mu) {
        return !stream->events.empty() || stream->finished || stream->cancel_requested;
      };
      stream->mu.AwaitWithTimeout(absl::Condition(&ready),
                                  absl::FromChrono(options_.poll_interval));
      events.swap(stream->events);
      finished = stream->finished;
      cancel_requested = stream->cancel_requested;
      stream->cancel_requested = false;
    }
    for (DecodeStream::Event& e : events) {
      if (e.event.has_token()) {
        metrics_.time_per_output_token->Observe(static_cast<double>(e.ns - last_token_ns) * 1e-9);
        metrics_.generation_tokens->Increment();
        last_token_ns = e.ns;
      } else if (e.event.has_finish()) {
        const auto& f = e.event.finish();
        outcome = f.status().code() != 0 ? "error" : f.reason();
        metrics_.decode_seconds->Observe(static_cast<double>(e.ns - start_ns) * 1e-9);
      }
      if (!client_gone && !writer->Write(e.event)) client_gone = true;
    }
    if (finished) break;
    if (!cancelled && (cancel_requested || client_gone || context->IsCancelled())) {
      engine_->Cancel(*id);
      cancelled = true;
      cancel_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    }
    if (cancelled && std::chrono::steady_clock::now() > cancel_deadline) {
      // The engine owns the request's blocks and frees them when it gets to the cancel; the
      // callbacks keep the stream alive, so the handler may leave.
      CRESCENT_LOG(warn, "decode of request '{}' not finished 5 s after its cancel",
                   request->request_id());
      break;
    }
  }
  metrics_.Outcome(outcome)->Increment();
  UpdateGauges();
  if (client_gone || context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the Decode stream was cancelled");
  }
  return grpc::Status::OK;
}

void DecodeNodeService::SetDraining() { draining_.store(true); }

bool DecodeNodeService::WaitIdle(std::chrono::milliseconds timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return active_decodes_ == 0 && reservations_.empty();
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), absl::FromChrono(timeout));
}

int64_t DecodeNodeService::active_decodes() const {
  absl::MutexLock lock(&mu_);
  return active_decodes_;
}

int64_t DecodeNodeService::pending_reservations() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(reservations_.size());
}

void DecodeNodeService::UpdateGauges() {
  const engine::EngineStats s = engine_->Stats();
  metrics_.num_requests_running->Set(static_cast<double>(s.running));
  metrics_.num_requests_waiting->Set(static_cast<double>(s.waiting));
  if (s.total_blocks > 0) {
    metrics_.kv_cache_usage_perc->Set(static_cast<double>(s.total_blocks - s.free_blocks) /
                                      static_cast<double>(s.total_blocks));
  }
  absl::MutexLock lock(&published_mu_);
  server::AddGrowth(metrics_.spec_draft_tokens, s.draft_tokens, &published_drafts_);
  server::AddGrowth(metrics_.spec_accepted_tokens, s.accepted_draft_tokens, &published_accepted_);
}

}  // namespace crescent::decode_node
