// `crescent conductor`: the cluster's front door — OpenAI HTTP API, node registry (gRPC),
// scheduling policy, token relay (conductor/service/conductor.h; docs/conductor.md).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "conductor/service/conductor.h"
#include "src/cli/command.h"
#include "src/common/host_port.h"
#include "src/common/logging.h"
#include "src/engine/loaded_model.h"

namespace crescent::cli {
namespace {

struct ConductorFlags {
  std::string model = engine::DefaultModelPath();
  std::string served_model_name;
  std::string chat_template;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string grpc_listen = "127.0.0.1:50060";
  std::string kv_master = "127.0.0.1:50051";
  std::string api_key;
  int64_t slo_ttft_ms = 30000;
  int64_t slo_tbt_ms = 1000;
  bool no_early_rejection = false;
  std::string prefill_policy = "cache-aware";
  int64_t node_timeout_ms = 3000;
  int http_threads = 2;
};

int BadFlag(const std::string& message) {
  std::fprintf(stderr, "crescent conductor: %s\n", message.c_str());
  return 2;
}

int RunConductor(const ConductorFlags& f) {
  if (f.port < 0 || f.port > 65535) {
    return BadFlag("--port must be in [0, 65535], got " + std::to_string(f.port));
  }
  if (f.slo_ttft_ms < 1) return BadFlag("--slo-ttft-ms must be at least 1");
  if (f.slo_tbt_ms < 1) return BadFlag("--slo-tbt-ms must be at least 1");
  if (f.node_timeout_ms < 1) return BadFlag("--node-timeout-ms must be at least 1");
  if (f.http_threads < 1) return BadFlag("--http-threads must be at least 1");
  if (auto listen = ParseHostPort(f.grpc_listen, "--grpc-listen"); !listen.ok()) {
    return BadFlag(std::string(listen.status().message()));
  }
  auto policy = conductor::service::ParseConductorPrefillPolicy(f.prefill_policy);
  if (!policy.ok()) return BadFlag("--prefill-policy: " + std::string(policy.status().message()));

  conductor::service::ConductorOptions o;
  o.model_path = f.model;
  o.chat_template = f.chat_template;
  o.served_model_name = f.served_model_name;
  o.host = f.host;
  o.port = f.port;
  o.http_threads = f.http_threads;
  o.api_key = f.api_key;
  if (o.api_key.empty()) {
    if (const char* env = std::getenv("CRESCENT_API_KEY")) o.api_key = env;
  }
  o.grpc_listen = f.grpc_listen;
  o.kv_master = f.kv_master;
  o.node_timeout_s = static_cast<double>(f.node_timeout_ms) / 1000.0;
  o.generator.prefill_policy = *policy;
  o.generator.scheduler.slo.ttft_s = static_cast<double>(f.slo_ttft_ms) / 1000.0;
  o.generator.scheduler.slo.tbt_s = static_cast<double>(f.slo_tbt_ms) / 1000.0;
  o.generator.scheduler.early_rejection = !f.no_early_rejection;

  // Every thread started from here on inherits the mask; the main thread waits for the signals.
  const sigset_t signals = BlockStopSignals();
  auto conductor = conductor::service::Conductor::Start(o);
  if (!conductor.ok()) {
    std::fprintf(stderr, "crescent conductor: %s\n",
                 std::string(conductor.status().ToString()).c_str());
    return 1;
  }
  CRESCENT_LOG(info,
               "conductor for {} as '{}': registry on {}, OpenAI API on http://{}, prefill policy "
               "{}, KV master {}",
               f.model, (*conductor)->served_model_name(), (*conductor)->grpc_address(),
               (*conductor)->http_address(), f.prefill_policy,
               f.kv_master.empty() ? std::string("(none)") : f.kv_master);
  std::printf("crescent: conductor - ready grpc=%s http=%s\n", (*conductor)->grpc_address().c_str(),
              (*conductor)->http_address().c_str());
  std::fflush(stdout);

  const int signo = WaitForStopSignal(signals);
  CRESCENT_LOG(info, "{}: stopping (cancelling requests in flight)",
               signo == SIGINT ? "SIGINT" : "SIGTERM");
  (*conductor)->Stop();
  conductor->reset();
  CRESCENT_LOG(info, "stopped");
  return 0;
}

}  // namespace

void AddConductorCommands(CLI::App& app, std::vector<Command>* commands) {
  auto flags = std::make_shared<ConductorFlags>();
  CLI::App* c = app.add_subcommand(
      "conductor", "the cluster's front: OpenAI HTTP API, node registry, scheduling, token relay");
  c->add_option("-m,--model", flags->model, "GGUF model file (tokenizer, template, fingerprint)")
      ->capture_default_str();
  c->add_option("--served-model-name", flags->served_model_name,
                "model id clients use (default: the file name without .gguf)");
  c->add_option("--chat-template", flags->chat_template,
                "override the model's chat template: chatml, llama3, llama3.1, llama2, mistral");
  c->add_option("--host", flags->host, "HTTP address to listen on")->capture_default_str();
  c->add_option("--port", flags->port, "HTTP port (0 = any free port)")->capture_default_str();
  c->add_option("--grpc-listen", flags->grpc_listen,
                "host:port of the Registry the nodes report to (port 0 = any free port)")
      ->capture_default_str();
  c->add_option("--kv-master", flags->kv_master,
                "host:port of the KV master, asked for the pool's prefixes ('' = no pool)")
      ->capture_default_str();
  c->add_option("--api-key", flags->api_key,
                "require 'Authorization: Bearer KEY' on /v1/* (default: $CRESCENT_API_KEY)");
  c->add_option("--slo-ttft-ms", flags->slo_ttft_ms, "time-to-first-token SLO")
      ->capture_default_str();
  c->add_option("--slo-tbt-ms", flags->slo_tbt_ms, "time-between-tokens SLO")
      ->capture_default_str();
  c->add_flag("--no-early-rejection", flags->no_early_rejection,
              "do not reject requests predicted to miss the SLOs (only when no node has room)");
  c->add_option("--prefill-policy", flags->prefill_policy,
                "cache-aware | local | least-loaded | round-robin")
      ->capture_default_str();
  c->add_option("--node-timeout-ms", flags->node_timeout_ms,
                "a node silent this long is considered dead")
      ->capture_default_str();
  c->add_option("--http-threads", flags->http_threads, "HTTP I/O threads")->capture_default_str();
  commands->push_back({c, [flags] { return RunConductor(*flags); }});
}

}  // namespace crescent::cli
