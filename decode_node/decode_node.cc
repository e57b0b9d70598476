#include "decode_node/decode_node.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "src/common/clock.h"
#include "src/common/grpc_listen.h"
#include "src/common/host_port.h"
#include "src/common/logging.h"
#include "src/common/status.h"
#include "src/engine/backend_factory.h"

namespace crescent::decode_node {

absl::StatusOr<std::vector<std::string>> TransportsFor(std::string_view transport) {
  if (transport == "auto" || transport == "shm")
    return std::vector<std::string>{"shm", "rdma", "tcp"};
  if (transport == "tcp" || transport == "rdma") return std::vector<std::string>{"rdma", "tcp"};
  return absl::InvalidArgumentError(absl::StrCat(
      "--transport must be auto, tcp, shm or rdma, got '", std::string(transport), "'"));
}

absl::StatusOr<std::unique_ptr<DecodeNode>> DecodeNode::Start(const DecodeNodeOptions& options) {
  CRESCENT_RETURN_IF_ERROR(cluster::ValidateNodeOptions(options));
  if (options.max_running < 1) return absl::InvalidArgumentError("--max-running must be >= 1");
  if (options.reserve_timeout_ms < 1) {
    return absl::InvalidArgumentError("--reserve-timeout-ms must be >= 1");
  }
  std::unique_ptr<DecodeNode> node(new DecodeNode(options));
  absl::Status status = node->Init();
  if (!status.ok()) {
    node->Stop();
    return status;
  }
  return node;
}

absl::Status DecodeNode::Init() {
  const DecodeNodeOptions& o = options_;
  segment_ = o.node_id + "/kv";
  CRESCENT_ASSIGN_OR_RETURN(std::vector<std::string> transports, TransportsFor(o.transport));
  CRESCENT_ASSIGN_OR_RETURN(HostPort data, ParseHostPort(o.data_listen, "--data-listen"));
  CRESCENT_ASSIGN_OR_RETURN(HostPort grpc_listen, ParseHostPort(o.grpc_listen, "--grpc-listen"));

  CRESCENT_ASSIGN_OR_RETURN(model_, engine::LoadModel(o.model_path, {}));
  CRESCENT_ASSIGN_OR_RETURN(
      backend_, engine::CreateBackend(o.backend, model_->config, model_->weights, o.threads));

  directory_ = kvstore::client::GrpcSegmentDirectory::Create(o.kv_master_address);
  kvstore::TransferEngineOptions to;
  to.transports = transports;
  to.tcp.listen_host = data.host;
  to.tcp.listen_port = data.port;
  to.tcp.advertise_host = AdvertisedHost(data.host, o.advertise_host);
  CRESCENT_ASSIGN_OR_RETURN(transfer_, kvstore::TransferEngine::Create(to, directory_.get()));

  // The KV cache goes into a shared segment peers write (shm on this host, rdma/tcp elsewhere).
  engine::EngineOptions eo;
  eo.block_tokens = o.block_tokens;
  eo.kv_cache_bytes = o.kv_cache_bytes;
  eo.max_running = o.max_running;
  eo.max_step_tokens = o.max_step_tokens;
  eo.speculative_tokens = o.speculative_tokens;
  eo.speculative_draft_cost = o.speculative_draft_cost;
  // Decode requests arrive with their prompt's KV written by a prefill node; nothing for the
  // prefix cache to find here, but it costs nothing either.
  void* kv_memory = nullptr;
  kvstore::TransferEngine* transfer = transfer_.get();
  const std::string segment = segment_;
  eo.kv_memory = [transfer, segment, &kv_memory](size_t bytes) -> absl::StatusOr<void*> {
    CRESCENT_ASSIGN_OR_RETURN(void* p, transfer->AllocateSharedSegment(segment, bytes));
    kv_memory = p;
    return p;
  };
  CRESCENT_ASSIGN_OR_RETURN(
      engine_, engine::Engine::Create(model_.get(), backend_.get(), eo, RealClock::Get()));
  engine::KvCache* cache = engine_->cache();
  const size_t cache_bytes = engine::KvCache::MemoryBytes(cache->config());
  if (kv_memory == nullptr || cache->BlockData(0) != kv_memory) {
    // An engine that allocated its cache itself: publish that memory instead (tcp/rdma only).
    if (kv_memory != nullptr) (void)transfer_->UnregisterLocalSegment(segment_);
    CRESCENT_RETURN_IF_ERROR(
        transfer_->RegisterLocalSegment(segment_, cache->BlockData(0), cache_bytes));
    CRESCENT_LOG(warn, "engine ignored kv_memory: segment {} is not reachable over shm", segment_);
  }

  DecodeServiceOptions so;
  so.node_id = o.node_id;
  so.segment = segment_;
  so.transfer_endpoint = transfer_->tcp_endpoint();
  so.default_reserve_timeout = std::chrono::milliseconds(o.reserve_timeout_ms);
  so.max_reserve_timeout = std::chrono::milliseconds(o.reserve_timeout_ms);
  CRESCENT_ASSIGN_OR_RETURN(service_, DecodeNodeService::Create(engine_.get(), &registry_, so));

  grpc::ServerBuilder builder;
  int bound_port = 0;
  AddExclusiveListeningPort(builder, o.grpc_listen, &bound_port);
  builder.RegisterService(service_.get());
  grpc_server_ = builder.BuildAndStart();
  if (grpc_server_ == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on --grpc-listen ", o.grpc_listen));
  }
  grpc_endpoint_ = JoinHostPort(AdvertisedHost(grpc_listen.host, o.advertise_host),
                                static_cast<uint16_t>(bound_port));

  if (o.metrics_port >= 0) {
    server::HttpServerOptions ho;
    ho.host = o.metrics_host;
    ho.port = static_cast<uint16_t>(o.metrics_port);
    ho.num_threads = 1;
    CRESCENT_ASSIGN_OR_RETURN(http_, server::HttpServer::Create(ho, nullptr, &registry_));
  }

  cluster::NodeAgentOptions ao;
  ao.conductor_address = o.conductor_address;
  ao.heartbeat_interval = o.heartbeat_interval;
  cluster::v1::NodeInfo& info = ao.node;
  info.set_node_id(o.node_id);
  info.set_role(cluster::v1::ROLE_DECODE);
  info.set_grpc_endpoint(grpc_endpoint_);
  info.set_model_id(model_->id);
  info.set_model_fingerprint(model_->fingerprint);
  info.set_block_tokens(o.block_tokens);
  info.set_total_blocks(cache->num_blocks());
  if (o.measure_profile) profile_ = MeasureProfile();
  *info.mutable_profile() = profile_;
  CRESCENT_ASSIGN_OR_RETURN(agent_, cluster::NodeAgent::Start(ao, [this] { return Load(); }));

  CRESCENT_LOG(info,
               "decode node {}: {} ({} KV blocks of {} tokens in segment {}, transports {}, "
               "data {}), grpc {}, metrics {}",
               o.node_id, o.model_path, cache->num_blocks(), o.block_tokens, segment_,
               absl::StrJoin(transfer_->transport_names(), ","), transfer_->tcp_endpoint(),
               grpc_endpoint_, metrics_endpoint());
  return absl::OkStatus();
}

cluster::v1::CostProfile DecodeNode::MeasureProfile() {
  // Batches of throwaway requests (random tokens under a random salt, so no block matches a real
  // request's) decoded for kSteps tokens each. A step's time is the span between the batch's
  // last first token and its last finish, over the steps in between.
  constexpr int kPrompt = 32;
  constexpr int kSteps = 17;
  std::mt19937_64 rng(std::random_device{}());
  const uint64_t salt = rng() | 1;
  const int vocab = model_->config.vocab_size;
  cluster::v1::CostProfile profile;
  std::string points;
  struct Run {
    int batch;
    bool report;  // the first, a warm-up (page faults, thread start), is not reported
  };
  for (Run run : {Run{1, false}, Run{1, true}, Run{4, true}}) {
    int batch = run.batch;
    struct Tracker {
      std::mutex mu;
      std::condition_variable cv;
      int done = 0;
      absl::Status status;
      std::chrono::steady_clock::time_point last_first, last_finish;
    } t;
    for (int i = 0; i < batch; ++i) {
      engine::EngineRequest r;
      for (int k = 0; k < kPrompt; ++k) r.prompt.push_back(static_cast<int32_t>(rng() % vocab));
      r.sampling.temperature = 0.0f;
      r.max_tokens = kSteps;
      r.ignore_eos = true;
      r.cache_salt = salt;
      r.allow_speculation = false;  // a plain step's cost, the conservative one
      auto first = std::make_shared<bool>(true);
      auto id = engine_->Submit(
          std::move(r),
          [&t, first](const engine::SampleResult&) {
            if (*first) {
              *first = false;
              std::lock_guard<std::mutex> lock(t.mu);
              t.last_first = std::max(t.last_first, std::chrono::steady_clock::now());
            }
            return true;
          },
          [&t](absl::Status s, engine::FinishReason, const engine::RequestStats&,
               std::span<const engine::KvCache::BlockId>) {
            std::lock_guard<std::mutex> lock(t.mu);
            if (!s.ok()) t.status = s;
            t.last_finish = std::max(t.last_finish, std::chrono::steady_clock::now());
            ++t.done;
            t.cv.notify_all();
          });
      if (!id.ok()) {
        std::lock_guard<std::mutex> lock(t.mu);  // accepted requests' callbacks may be running
        t.status = id.status();
        batch = i;  // wait for the ones accepted
        break;
      }
    }
    std::unique_lock<std::mutex> lock(t.mu);
    t.cv.wait(lock, [&] { return t.done == batch; });
    if (!t.status.ok() || batch == 0) {
      CRESCENT_LOG(warn, "cost profile: a decode batch failed: {}",
                   std::string(t.status.message()));
      continue;
    }
    if (!run.report) continue;
    const double seconds =
        std::chrono::duration<double>(t.last_finish - t.last_first).count() / (kSteps - 1);
    cluster::v1::CostProfile::Point* p = profile.add_decode();
    p->set_batch(batch);
    p->set_context(static_cast<double>(batch) * (kPrompt + kSteps / 2));
    p->set_seconds(std::max(seconds, 0.0));
    absl::StrAppend(&points, " (batch ", batch, ": ", seconds * 1e3, " ms per step)");
  }
  // The engine frees a request's blocks just after its finish callback: wait for that, so the
  // node starts serving with every block available (bounded; the profile is done either way).
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (engine::EngineStats s = engine_->Stats();
       s.free_blocks < s.total_blocks && std::chrono::steady_clock::now() < until;
       s = engine_->Stats()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CRESCENT_LOG(info, "cost profile:{}", points);
  return profile;
}

DecodeNode::~DecodeNode() { Stop(); }

std::string DecodeNode::metrics_endpoint() const {
  if (http_ == nullptr) return "-";
  return JoinHostPort(AdvertisedHost(options_.metrics_host, options_.advertise_host),
                      static_cast<uint16_t>(http_->port()));
}

std::string DecodeNode::ReadyLine() const {
  return absl::StrCat("crescent: decode ", options_.node_id, " ready grpc=", grpc_endpoint_,
                      " http=", metrics_endpoint());
}

cluster::v1::NodeLoad DecodeNode::Load() const {
  cluster::v1::NodeLoad load;
  if (engine_ == nullptr) return load;
  const engine::EngineStats s = engine_->Stats();
  load.set_queued_prefill_tokens(s.queued_prefill_tokens);
  load.set_running_requests(s.running);
  load.set_waiting_requests(s.waiting + (service_ ? service_->pending_reservations() : 0));
  // The engine does not report the running batch's context; blocks in use approximate it
  // (reservations and cached blocks excluded from the free count are counted too).
  load.set_running_context_tokens((s.total_blocks - s.free_blocks) * options_.block_tokens);
  load.set_free_blocks(s.free_blocks);
  load.set_last_step_seconds(s.last_step_seconds);
  load.set_draining(service_ != nullptr && service_->draining());
  load.set_draft_tokens(s.draft_tokens);
  load.set_accepted_draft_tokens(s.accepted_draft_tokens);
  if (service_ != nullptr) service_->UpdateGauges();
  return load;
}

bool DecodeNode::Drain(std::chrono::milliseconds timeout) {
  if (service_ == nullptr) return true;
  service_->SetDraining();
  if (agent_ != nullptr) agent_->SetDraining();
  const bool idle = service_->WaitIdle(timeout);
  if (!idle) {
    CRESCENT_LOG(warn,
                 "decode node {}: {} decodes and {} reservations still in flight after the "
                 "drain timeout",
                 options_.node_id, service_->active_decodes(), service_->pending_reservations());
  }
  return idle;
}

void DecodeNode::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (agent_ != nullptr) agent_->Stop();
  if (grpc_server_ != nullptr) {
    // Open streams see their context cancelled and cancel their engine requests.
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc_server_->Wait();
  }
  if (http_ != nullptr) http_->Stop();
  agent_.reset();
  grpc_server_.reset();
  http_.reset();
  service_.reset();
  engine_.reset();
  transfer_.reset();
}

}  // namespace crescent::decode_node
