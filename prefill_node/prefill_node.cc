#include "prefill_node/prefill_node.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <condition_variable>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "src/common/clock.h"
#include "src/common/grpc_listen.h"
#include "src/common/host_port.h"
#include "src/common/logging.h"
#include "src/common/status.h"
#include "src/engine/backend_factory.h"

namespace crescent::prefill_node {

namespace v1 = cluster::v1;
using Steady = std::chrono::steady_clock;

namespace {

// Runs one PrefillOnly request to completion (no KV target) and returns its compute seconds.
absl::StatusOr<double> TimedPrefill(engine::Engine* engine, std::vector<int32_t> prompt,
                                    uint64_t salt) {
  engine::EngineRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = 1;
  r.cache_salt = salt;
  r.mode = engine::RequestMode::kPrefillOnly;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  absl::Status status;
  double seconds = 0;
  const Steady::time_point start = Steady::now();
  CRESCENT_ASSIGN_OR_RETURN(
      engine::Engine::RequestId id,
      engine->Submit(std::move(r), nullptr,
                     [&](absl::Status s, engine::FinishReason, const engine::RequestStats& st,
                         std::span<const engine::KvCache::BlockId>) {
                       std::lock_guard<std::mutex> lock(mu);
                       status = s;
                       seconds = std::chrono::duration<double>(Steady::now() - start).count() -
                                 st.queue_seconds;
                       done = true;
                       cv.notify_all();
                     }));
  (void)id;
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  CRESCENT_RETURN_IF_ERROR(status);
  return std::max(seconds, 0.0);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> TransportOrder(const std::string& transport) {
  if (transport == "auto") return std::vector<std::string>{"shm", "rdma", "tcp"};
  if (transport == "tcp") return std::vector<std::string>{"tcp"};
  if (transport == "shm") return std::vector<std::string>{"shm", "tcp"};
  if (transport == "rdma") return std::vector<std::string>{"rdma", "tcp"};
  return absl::InvalidArgumentError(
      absl::StrCat("--transport must be auto, tcp, shm or rdma, got '", transport, "'"));
}

absl::StatusOr<std::unique_ptr<PrefillNode>> PrefillNode::Start(const PrefillNodeOptions& options) {
  CRESCENT_RETURN_IF_ERROR(cluster::ValidateNodeOptions(options));
  std::unique_ptr<PrefillNode> node(new PrefillNode(options));
  absl::Status status = node->Init();
  if (!status.ok()) {
    node->Stop();
    return status;
  }
  return node;
}

absl::Status PrefillNode::CreateEngine() {
  // The KV cache lives in the transfer engine's shared segment "<id>/kv", so that peers can
  // reach it (rdma reads need it registered; same-host peers map it over shm).
  const std::string segment = options_.node_id + "/kv";
  engine::EngineOptions eo;
  eo.block_tokens = options_.block_tokens;
  eo.kv_cache_bytes = options_.kv_cache_bytes;
  eo.max_step_tokens = options_.max_step_tokens;
  eo.kv_memory = [this, segment](size_t bytes) -> absl::StatusOr<void*> {
    absl::StatusOr<void*> memory = transfer_->AllocateSharedSegment(segment, bytes);
    if (memory.status().code() == absl::StatusCode::kAlreadyExists) {
      // A previous process with this node id died without unpublishing: take the name over.
      CRESCENT_LOG(warn, "segment {} was still published (a previous run?); replacing it", segment);
      directory_->Unpublish(segment).IgnoreError();
      memory = transfer_->AllocateSharedSegment(segment, bytes);
    }
    return memory;
  };
  const Steady::time_point until = Steady::now() + options_.master_wait;
  while (true) {
    absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
        engine::Engine::Create(model_.get(), backend_.get(), eo, RealClock::Get());
    if (engine.ok()) {
      engine_ = *std::move(engine);
      return absl::OkStatus();
    }
    const absl::StatusCode code = engine.status().code();
    const bool retry =
        code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded;
    if (!retry || Steady::now() >= until) {
      return Annotate(engine.status(), "creating the engine (KV cache segment " + segment + ")");
    }
    CRESCENT_LOG(info, "KV master {} not reachable yet ({}); retrying", options_.kv_master_address,
                 std::string(engine.status().message()));
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

absl::Status PrefillNode::Init() {
  CRESCENT_ASSIGN_OR_RETURN(std::vector<std::string> transports,
                            TransportOrder(options_.transport));
  CRESCENT_ASSIGN_OR_RETURN(HostPort data, ParseHostPort(options_.data_listen, "--data-listen"));
  CRESCENT_ASSIGN_OR_RETURN(HostPort grpc_listen,
                            ParseHostPort(options_.grpc_listen, "--grpc-listen"));

  engine::LoadOptions load;
  CRESCENT_ASSIGN_OR_RETURN(model_, engine::LoadModel(options_.model_path, load));
  CRESCENT_ASSIGN_OR_RETURN(backend_, engine::CreateBackend(options_.backend, model_->config,
                                                            model_->weights, options_.threads));

  directory_ = kvstore::client::GrpcSegmentDirectory::Create(options_.kv_master_address);
  kvstore::TransferEngineOptions to;
  to.transports = transports;
  to.tcp.listen_host = data.host;
  to.tcp.listen_port = data.port;
  to.tcp.advertise_host = AdvertisedHost(data.host, options_.advertise_host);
  CRESCENT_ASSIGN_OR_RETURN(transfer_, kvstore::TransferEngine::Create(to, directory_.get()));
  CRESCENT_RETURN_IF_ERROR(CreateEngine());

  kvstore::client::PoolClientOptions po;
  po.master_address = options_.kv_master_address;
  po.engine = transfer_.get();
  po.transport = options_.transport == "rdma" ? "auto" : options_.transport;
  CRESCENT_ASSIGN_OR_RETURN(pool_, kvstore::client::PoolClient::Create(po));

  if (options_.pool_dram_bytes > 0) {
    kvstore::server::StorageServerOptions so;
    so.master_address = options_.kv_master_address;
    so.node_id = options_.node_id + "-pool";
    so.dram_bytes = options_.pool_dram_bytes;
    so.transport = options_.transport == "rdma" ? "auto" : options_.transport;
    so.data_listen = JoinHostPort(data.host, 0);
    so.rpc_listen = JoinHostPort(data.host, 0);
    so.master_wait = options_.master_wait;
    so.advertise_host = options_.advertise_host;
    CRESCENT_ASSIGN_OR_RETURN(storage_, kvstore::server::StorageServer::Start(so));
  }

  CRESCENT_ASSIGN_OR_RETURN(
      service_, PrefillNodeService::Create(engine_.get(), transfer_.get(), pool_.get(), &registry_,
                                           options_.service));

  v1::CostProfile profile;
  if (options_.measure_profile) profile = MeasureProfile();

  grpc::ServerBuilder builder;
  int port = 0;
  AddExclusiveListeningPort(builder, options_.grpc_listen, &port);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(64 << 20);
  grpc_ = builder.BuildAndStart();
  if (grpc_ == nullptr || port == 0) {
    return absl::UnavailableError("prefill node cannot listen on " + options_.grpc_listen);
  }
  grpc_endpoint_ = JoinHostPort(AdvertisedHost(grpc_listen.host, options_.advertise_host),
                                static_cast<uint16_t>(port));

  if (options_.metrics_port >= 0) {
    server::HttpServerOptions ho;
    ho.host = options_.metrics_host;
    ho.port = static_cast<uint16_t>(options_.metrics_port);
    ho.num_threads = 1;
    CRESCENT_ASSIGN_OR_RETURN(http_, server::HttpServer::Create(ho, nullptr, &registry_));
  }

  info_.set_node_id(options_.node_id);
  info_.set_role(v1::ROLE_PREFILL);
  info_.set_grpc_endpoint(grpc_endpoint_);
  info_.set_model_id(model_->id);
  info_.set_model_fingerprint(model_->fingerprint);
  info_.set_block_tokens(options_.block_tokens);
  info_.set_total_blocks(engine_->cache()->num_blocks());
  *info_.mutable_profile() = profile;

  cluster::NodeAgentOptions ao;
  ao.conductor_address = options_.conductor_address;
  ao.node = info_;
  ao.heartbeat_interval = options_.heartbeat_interval;
  CRESCENT_ASSIGN_OR_RETURN(agent_, cluster::NodeAgent::Start(ao, [this] { return Load(); }));
  CRESCENT_LOG(info,
               "prefill node {} serving {} on {} ({} KV blocks of {} tokens, pool DRAM {} MiB, "
               "transports {})",
               options_.node_id, model_->id, grpc_endpoint_, engine_->cache()->num_blocks(),
               options_.block_tokens, options_.pool_dram_bytes >> 20,
               absl::StrJoin(transfer_->transport_names(), ","));
  return absl::OkStatus();
}

v1::CostProfile PrefillNode::MeasureProfile() {
  v1::CostProfile profile;
  // Throwaway prompts under a random salt (their blocks never match a real request's).
  std::mt19937_64 rng(std::random_device{}());
  const uint64_t salt = rng() | 1;
  const int64_t context = model_->config.context_length;
  const int64_t big = std::min<int64_t>(128, context / 2);
  const int64_t small = std::max<int64_t>(big / 4, 1);
  const int vocab = model_->config.vocab_size;
  auto tokens = [&](int64_t n) {
    std::vector<int32_t> t(n);
    for (int32_t& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
    return t;
  };
  struct Case {
    int64_t new_tokens, cached_tokens;
    std::vector<int32_t> prompt;
  };
  std::vector<int32_t> shared = tokens(big);
  std::vector<int32_t> extended = shared;
  for (int32_t x : tokens(small)) extended.push_back(x);
  // Warm-up (page faults, thread start) is the first, short prompt; it is not reported.
  std::vector<Case> cases = {{8, 0, tokens(8)},
                             {small, 0, tokens(small)},
                             {big, 0, shared},
                             {small, big - big % options_.block_tokens, extended}};
  for (size_t i = 0; i < cases.size(); ++i) {
    absl::StatusOr<double> s = TimedPrefill(engine_.get(), cases[i].prompt, salt);
    if (!s.ok()) {
      CRESCENT_LOG(warn, "cost profile: prefill of {} tokens failed: {}", cases[i].prompt.size(),
                   std::string(s.status().message()));
      continue;
    }
    if (i == 0) continue;
    v1::CostProfile::Point* p = profile.add_prefill();
    const int64_t cached = cases[i].cached_tokens;
    p->set_cached_tokens(static_cast<double>(cached));
    p->set_new_tokens(static_cast<double>(static_cast<int64_t>(cases[i].prompt.size()) - cached));
    p->set_seconds(*s);
  }

  // Transfer bandwidth: an 8 MiB write through the transfer engine into a scratch segment.
  const std::string probe = options_.node_id + "/probe";
  const size_t bytes = 8 << 20;
  absl::StatusOr<void*> target = transfer_->AllocateSharedSegment(probe, bytes);
  if (target.ok()) {
    std::vector<uint8_t> source(bytes, 0x5a);
    absl::StatusOr<kvstore::SegmentHandle> handle = transfer_->OpenSegment(probe);
    if (handle.ok()) {
      kvstore::BatchId batch = transfer_->AllocateBatch(1);
      kvstore::TransferRequest write{kvstore::TransferOp::kWrite, source.data(), *handle, 0, bytes};
      const Steady::time_point t0 = Steady::now();
      if (transfer_->SubmitTransfer(batch, {&write, 1}).ok() &&
          transfer_->Wait(batch, std::chrono::seconds(10)).ok()) {
        const double s = std::chrono::duration<double>(Steady::now() - t0).count();
        if (s > 0) profile.set_transfer_bytes_per_second(static_cast<double>(bytes) / s);
      }
      transfer_->Wait(batch, std::chrono::seconds(10)).IgnoreError();
      transfer_->FreeBatch(batch).IgnoreError();
      transfer_->CloseSegment(*handle).IgnoreError();
    }
    transfer_->UnregisterLocalSegment(probe).IgnoreError();
  }
  std::string points;
  for (const v1::CostProfile::Point& p : profile.prefill()) {
    absl::StrAppend(&points, " (", p.new_tokens(), " new, ", p.cached_tokens(),
                    " cached: ", p.seconds() * 1e3, " ms)");
  }
  CRESCENT_LOG(info, "cost profile:{}; transfer {} MB/s", points,
               profile.transfer_bytes_per_second() / 1e6);
  return profile;
}

v1::NodeLoad PrefillNode::Load() {
  const engine::EngineStats stats = engine_->Stats();
  v1::NodeLoad load;
  load.set_queued_prefill_tokens(stats.queued_prefill_tokens);
  load.set_running_requests(stats.running);
  load.set_waiting_requests(stats.waiting);
  load.set_free_blocks(stats.free_blocks);
  load.set_last_step_seconds(stats.last_step_seconds);
  load.set_draining(service_->draining());
  std::lock_guard<std::mutex> lock(load_mu_);
  for (std::vector<uint64_t>& chain : service_->TakeRecentChains()) {
    cache_report_.AddChain(std::move(chain));
  }
  CacheReport::Delta delta = cache_report_.Update(
      [this](std::span<const uint64_t> chain) { return engine_->CachedPrefixBlocks(chain); });
  for (uint64_t h : delta.cached) load.add_cached_added(h);
  for (uint64_t h : delta.removed) load.add_cached_removed(h);
  return load;
}

bool PrefillNode::Drain(std::chrono::milliseconds timeout) {
  if (service_ != nullptr) service_->SetDraining();
  if (agent_ != nullptr) agent_->SetDraining();
  bool idle = service_ == nullptr || service_->WaitIdle(timeout);
  if (!idle) {
    CRESCENT_LOG(warn, "drain: {} prefills still in flight after {} ms; stopping anyway",
                 service_->in_flight(), timeout.count());
  }
  Stop();
  return idle;
}

void PrefillNode::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (agent_ != nullptr) agent_->Stop();
  // Cancels in-flight RPCs after a short grace period; handlers then cancel their engine work.
  if (grpc_ != nullptr) grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (http_ != nullptr) http_->Stop();
  agent_.reset();
  grpc_.reset();
  http_.reset();
  service_.reset();
  if (storage_ != nullptr) storage_->Stop();
  engine_.reset();  // before the segment its cache lives in
  pool_.reset();
  storage_.reset();
  transfer_.reset();
  backend_.reset();
}

PrefillNode::~PrefillNode() { Stop(); }

std::string PrefillNode::metrics_endpoint() const {
  if (http_ == nullptr) return "-";
  return JoinHostPort(AdvertisedHost(options_.metrics_host, options_.advertise_host),
                      static_cast<uint16_t>(http_->port()));
}

std::string PrefillNode::ReadyLine() const {
  return absl::StrCat("crescent: prefill ", options_.node_id, " ready grpc=", grpc_endpoint_,
                      " http=", metrics_endpoint());
}

}  // namespace crescent::prefill_node
