// `crescent serve`: the OpenAI-compatible HTTP front over one colocated engine, in one process.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/cli/command.h"
#include "src/common/clock.h"
#include "src/common/logging.h"
#include "src/common/memory_size.h"
#include "src/engine/backend_factory.h"
#include "src/engine/cpu_backend.h"
#include "src/engine/engine.h"
#include "src/engine/loaded_model.h"
#include "src/serve/engine_service.h"
#include "src/server/http_server.h"
#include "src/server/metrics.h"

namespace crescent::cli {
namespace {

struct ServeFlags {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;
  std::string model = engine::DefaultModelPath();
  std::string served_model_name;
  std::string chat_template;
  int threads = 0;
  std::string backend = "cpu";
  int64_t kv_cache_mb = 256;
  int block_tokens = 16;
  int max_step_tokens = 512;
  int max_running = 64;
  int max_waiting = 4096;
  int speculative_tokens = 0;
  double speculative_draft_cost = engine::EngineOptions{}.speculative_draft_cost;
  int http_threads = 2;
  int64_t max_body_bytes = 1 << 20;
};

int BadFlag(const std::string& message) {
  std::fprintf(stderr, "crescent serve: %s\n", message.c_str());
  return 2;
}

// "2 compute threads" for the CPU backend, "<name> backend" for another.
std::string BackendDescription(const engine::Backend& backend) {
  if (const auto* cpu = dynamic_cast<const engine::CpuBackend*>(&backend)) {
    return absl::StrCat(cpu->num_threads(), " compute threads");
  }
  return absl::StrCat(backend.name(), " backend");
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "crescent serve: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

int RunServe(const ServeFlags& f) {
  if (f.port < 0 || f.port > 65535) {
    return BadFlag("--port must be in [0, 65535], got " + std::to_string(f.port));
  }
  if (f.threads < 0) return BadFlag("--threads must be >= 0 (0 = all CPUs)");
  if (absl::Status s = CheckMemoryMb("--kv-cache-mb", f.kv_cache_mb, 1); !s.ok()) {
    return BadFlag(std::string(s.message()));
  }
  if (f.block_tokens < 1) return BadFlag("--block-tokens must be at least 1");
  if (f.max_step_tokens < 1) return BadFlag("--max-step-tokens must be at least 1");
  if (f.max_running < 1) return BadFlag("--max-running must be at least 1");
  if (f.max_waiting < 1) return BadFlag("--max-waiting must be at least 1");
  if (f.speculative_tokens < 0 || f.speculative_tokens > 64) {
    return BadFlag("--speculative-tokens must be in [0, 64]");
  }
  if (!(f.speculative_draft_cost >= 0 && f.speculative_draft_cost < 1)) {
    return BadFlag("--speculative-draft-cost must be in [0, 1)");
  }
  if (f.http_threads < 1) return BadFlag("--http-threads must be at least 1");
  if (f.max_body_bytes < 1) return BadFlag("--max-body-bytes must be at least 1");
  std::string api_key = f.api_key;
  if (api_key.empty()) {
    if (const char* env = std::getenv("CRESCENT_API_KEY")) api_key = env;
  }

  // Every thread started from here on inherits the mask; the main thread waits for the signals.
  const sigset_t signals = BlockStopSignals();

  engine::LoadOptions load;
  load.chat_template = f.chat_template;
  if (isatty(STDERR_FILENO)) {
    load.progress = [](double fraction) {
      std::fprintf(stderr, "\rloading model: %3d%%", static_cast<int>(fraction * 100));
      if (fraction >= 1.0) std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
    };
  }
  auto model = engine::LoadModel(f.model, load);
  if (!model.ok()) return Fail(model.status());
  auto backend = engine::CreateBackend(f.backend, (*model)->config, (*model)->weights, f.threads);
  if (!backend.ok()) return Fail(backend.status());

  engine::EngineOptions eo;
  eo.block_tokens = f.block_tokens;
  eo.kv_cache_bytes = f.kv_cache_mb << 20;
  eo.max_step_tokens = f.max_step_tokens;
  eo.max_running = f.max_running;
  eo.max_waiting = f.max_waiting;
  eo.speculative_tokens = f.speculative_tokens;
  eo.speculative_draft_cost = f.speculative_draft_cost;
  auto engine = engine::Engine::Create(model->get(), backend->get(), eo, RealClock::Get());
  if (!engine.ok()) return Fail(engine.status());

  server::MetricsRegistry registry;
  server::ServerMetrics metrics(&registry);
  serve::EngineServiceOptions so;
  so.served_model_name = f.served_model_name;
  auto service = serve::EngineService::Create(engine->get(), &metrics, so);
  if (!service.ok()) return Fail(service.status());

  server::HttpServerOptions ho;
  ho.host = f.host;
  ho.port = static_cast<uint16_t>(f.port);
  ho.num_threads = f.http_threads;
  ho.max_body_bytes = static_cast<size_t>(f.max_body_bytes);
  ho.api_key = api_key;
  auto http = server::HttpServer::Create(ho, service->get(), &registry);
  if (!http.ok()) return Fail(http.status());

  const bool ipv6 = f.host.find(':') != std::string::npos;
  CRESCENT_LOG(info, "serving {} as '{}' ({} KV blocks of {} tokens, {})", f.model,
               (*service)->served_model_name(), (*engine)->cache()->num_blocks(), f.block_tokens,
               BackendDescription(**backend));
  CRESCENT_LOG(info, "listening on http://{}{}{}:{}", ipv6 ? "[" : "", f.host, ipv6 ? "]" : "",
               (*http)->port());

  const int signo = WaitForStopSignal(signals);
  CRESCENT_LOG(info, "{}: stopping (cancelling requests in flight)",
               signo == SIGINT ? "SIGINT" : "SIGTERM");
  (*http)->Stop();
  http->reset();
  service->reset();
  engine->reset();
  CRESCENT_LOG(info, "stopped");
  return 0;
}

}  // namespace

void AddServeCommands(CLI::App& app, std::vector<Command>* commands) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* serve = app.add_subcommand(
      "serve", "OpenAI-compatible HTTP server over one engine (prefill and decode colocated)");
  serve->add_option("--host", flags->host, "address to listen on")->capture_default_str();
  serve->add_option("--port", flags->port, "TCP port (0 = any free port)")->capture_default_str();
  serve->add_option("--api-key", flags->api_key,
                    "require 'Authorization: Bearer KEY' on /v1/* (default: $CRESCENT_API_KEY)");
  serve->add_option("-m,--model", flags->model, "GGUF model file")->capture_default_str();
  serve->add_option("--served-model-name", flags->served_model_name,
                    "model id clients use (default: the file name without .gguf)");
  serve->add_option(
      "--chat-template", flags->chat_template,
      "override the model's chat template: chatml, llama3, llama3.1, llama2, mistral");
  serve->add_option("-t,--threads", flags->threads, "compute threads (default: all CPUs)");
  serve->add_option("--backend", flags->backend, "forward pass: cpu, or cuda (builds with nvcc)")
      ->capture_default_str();
  serve->add_option("--kv-cache-mb", flags->kv_cache_mb, "KV cache memory in MiB")
      ->capture_default_str();
  serve->add_option("--block-tokens", flags->block_tokens, "tokens per KV block")
      ->capture_default_str();
  serve
      ->add_option("--max-step-tokens", flags->max_step_tokens,
                   "token budget of one engine step (decode tokens + prefill chunks)")
      ->capture_default_str();
  serve->add_option("--max-running", flags->max_running, "sequences in the running batch at most")
      ->capture_default_str();
  serve
      ->add_option("--max-waiting", flags->max_waiting,
                   "queued requests at most; beyond it requests get HTTP 429")
      ->capture_default_str();
  serve
      ->add_option("--speculative-tokens", flags->speculative_tokens,
                   "speculative decoding: draft tokens a step for greedy requests, by prompt "
                   "lookup (0: off)")
      ->capture_default_str();
  serve
      ->add_option("--speculative-draft-cost", flags->speculative_draft_cost,
                   "one position's arithmetic as a fraction of a one-token decode step, in "
                   "[0, 1): a sequence gets the drafts its record of confirmed drafts pays for "
                   "while the step stays memory-bound (0: every proposed draft)")
      ->capture_default_str();
  serve->add_option("--http-threads", flags->http_threads, "HTTP I/O threads")
      ->capture_default_str();
  serve
      ->add_option("--max-body-bytes", flags->max_body_bytes,
                   "largest request body; larger ones get HTTP 413")
      ->capture_default_str();
  commands->push_back({serve, [flags] { return RunServe(*flags); }});
}

}  // namespace crescent::cli
