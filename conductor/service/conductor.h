// Conductor: the `crescent conductor` process as an object — the model (tokenizer, chat
// template, fingerprint; weights mmapped, never computed with), the gRPC Registry the nodes
// report to, the ConductorGenerator, the OpenAI text layer (serve::EngineService) over it and the
// HTTP front (server::HttpServer), with one metrics registry for all of them.
//
//   ConductorOptions options;
//   options.model_path = ...;
//   auto conductor = Conductor::Start(options);   // listening when it returns
//   ... (*conductor)->http_port(), (*conductor)->grpc_address() ...
//   (*conductor)->Stop();                          // requests in flight end; listeners close
//
// Thread-safety: the accessors are thread-safe; Stop must not run concurrently with itself.
#ifndef CRESCENT_CONDUCTOR_SERVICE_CONDUCTOR_H_
#define CRESCENT_CONDUCTOR_SERVICE_CONDUCTOR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "conductor/service/conductor_generator.h"
#include "conductor/service/node_registry.h"
#include "src/engine/loaded_model.h"
#include "src/serve/engine_service.h"
#include "src/server/http_server.h"
#include "src/server/metrics.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace crescent::conductor::service {

struct ConductorOptions {
  std::string model_path;          // GGUF file. Required.
  std::string chat_template;       // Override the file's template; empty = the file's.
  std::string served_model_name;   // Empty = the model's id.
  std::string host = "127.0.0.1";  // HTTP
  int port = 8000;                 // HTTP; 0 = any free port
  int http_threads = 2;
  std::string api_key;                          // Non-empty: /v1/* need it
  std::string grpc_listen = "127.0.0.1:50060";  // Registry; port 0 = any free port
  std::string kv_master;        // host:port of the KV master; empty = no pool lookups
  double node_timeout_s = 3.0;  // a node silent this long is dead
  ConductorGeneratorOptions generator;
};

class Conductor {
 public:
  // Loads the model and starts listening (gRPC, then HTTP). Errors: the model's (NotFound,
  // InvalidArgument naming the file), InvalidArgument for bad options, Unavailable when an
  // address cannot be bound (naming it).
  static absl::StatusOr<std::unique_ptr<Conductor>> Start(const ConductorOptions& options);

  // Stop()s.
  ~Conductor();
  Conductor(const Conductor&) = delete;
  Conductor& operator=(const Conductor&) = delete;

  // Stops the HTTP front (requests in flight are cancelled and finish), then the generator, then
  // the gRPC server. Idempotent.
  void Stop();

  // The bound addresses.
  const std::string& grpc_address() const { return grpc_address_; }
  uint16_t http_port() const { return http_port_; }
  std::string http_address() const;

  const engine::LoadedModel& model() const { return *model_; }
  NodeRegistry* registry() const { return registry_.get(); }
  ConductorGenerator* generator() const { return generator_.get(); }
  server::MetricsRegistry* metrics() const { return metrics_.get(); }
  const std::string& served_model_name() const { return service_->served_model_name(); }

 private:
  Conductor() = default;

  ConductorOptions options_;
  std::unique_ptr<engine::LoadedModel> model_;
  std::unique_ptr<server::MetricsRegistry> metrics_;
  std::unique_ptr<server::ServerMetrics> server_metrics_;
  std::unique_ptr<NodeRegistry> registry_;
  std::unique_ptr<RegistryService> registry_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<PoolIndex> pool_;
  std::unique_ptr<ConductorGenerator> generator_;
  std::unique_ptr<serve::EngineService> service_;
  std::unique_ptr<server::HttpServer> http_;
  std::string grpc_address_;
  uint16_t http_port_ = 0;
  bool stopped_ = false;
};

}  // namespace crescent::conductor::service

#endif  // CRESCENT_CONDUCTOR_SERVICE_CONDUCTOR_H_
