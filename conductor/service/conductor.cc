#include "conductor/service/conductor.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/grpc_listen.h"
#include "src/common/host_port.h"
#include "src/common/logging.h"
#include "src/common/status.h"

namespace crescent::conductor::service {

absl::StatusOr<std::unique_ptr<Conductor>> Conductor::Start(const ConductorOptions& options) {
  if (options.model_path.empty()) return absl::InvalidArgumentError("no model file given");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP port must be in [0, 65535], got ", options.port));
  }
  CRESCENT_RETURN_IF_ERROR(ParseHostPort(options.grpc_listen, "--grpc-listen").status());
  if (options.node_timeout_s <= 0) {
    return absl::InvalidArgumentError("node timeout must be positive");
  }
  std::unique_ptr<Conductor> c(new Conductor());
  c->options_ = options;

  engine::LoadOptions load;
  load.chat_template = options.chat_template;
  load.prefault = false;  // the Conductor never computes with the weights
  CRESCENT_ASSIGN_OR_RETURN(c->model_, engine::LoadModel(options.model_path, load));
  const model::ModelConfig& cfg = c->model_->config;

  c->metrics_ = std::make_unique<server::MetricsRegistry>();
  c->server_metrics_ = std::make_unique<server::ServerMetrics>(c->metrics_.get());

  NodeRegistryOptions ro;
  ro.model_fingerprint = c->model_->fingerprint;
  ro.model_id = c->model_->id;
  ro.kv_bytes_per_token =
      2LL * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2;  // K and V, f16, all layers
  ro.node_timeout_s = options.node_timeout_s;
  ro.heartbeat_interval_ms =
      std::max<int64_t>(50, static_cast<int64_t>(options.node_timeout_s * 1000 / 6));
  c->registry_ = std::make_unique<NodeRegistry>(ro, RealClock::Get());
  c->registry_service_ = std::make_unique<RegistryService>(c->registry_.get());

  grpc::ServerBuilder builder;
  int grpc_port = 0;
  AddExclusiveListeningPort(builder, options.grpc_listen, &grpc_port);
  builder.RegisterService(c->registry_service_.get());
  c->grpc_server_ = builder.BuildAndStart();
  if (c->grpc_server_ == nullptr || grpc_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("conductor cannot listen for gRPC on ", options.grpc_listen));
  }
  c->grpc_address_ =
      absl::StrCat(options.grpc_listen.substr(0, options.grpc_listen.rfind(':')), ":", grpc_port);

  if (!options.kv_master.empty()) {
    CRESCENT_ASSIGN_OR_RETURN(c->pool_, MakeKvMasterPoolIndex(options.kv_master));
  }
  CRESCENT_ASSIGN_OR_RETURN(
      c->generator_, ConductorGenerator::Create(c->model_.get(), c->registry_.get(), c->pool_.get(),
                                                c->metrics_.get(), options.generator));
  c->generator_->RefreshClusterGauges();

  serve::EngineServiceOptions so;
  so.served_model_name = options.served_model_name;
  CRESCENT_ASSIGN_OR_RETURN(
      c->service_, serve::EngineService::Create(c->generator_.get(), c->server_metrics_.get(), so));

  server::HttpServerOptions ho;
  ho.host = options.host;
  ho.port = static_cast<uint16_t>(options.port);
  ho.num_threads = options.http_threads;
  ho.api_key = options.api_key;
  CRESCENT_ASSIGN_OR_RETURN(c->http_,
                            server::HttpServer::Create(ho, c->service_.get(), c->metrics_.get()));
  c->http_port_ = c->http_->port();
  return c;
}

Conductor::~Conductor() { Stop(); }

void Conductor::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (http_ != nullptr) http_->Stop();
  http_.reset();
  service_.reset();
  generator_.reset();  // cancels what is left and waits for it
  if (grpc_server_ != nullptr) {
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc_server_.reset();
  }
}

std::string Conductor::http_address() const {
  const bool ipv6 = options_.host.find(':') != std::string::npos;
  return absl::StrCat(ipv6 ? "[" : "", options_.host, ipv6 ? "]" : "", ":", http_port_);
}

}  // namespace crescent::conductor::service
