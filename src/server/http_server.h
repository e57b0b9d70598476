// HttpServer: the OpenAI-compatible HTTP front (Boost.Beast, HTTP/1.1, one io_context run by N
// threads, one strand per connection). It parses requests, checks the API key, and hands the
// work to a CompletionService; results go back as JSON or as Server-Sent Events.
//
//   POST /v1/chat/completions, POST /v1/completions, GET /v1/models   (API key if configured)
//   GET /health (liveness), GET /ready (200 when service->Ready(), else 503), GET /metrics
//
// The same server fronts the colocated engine (`crescent serve`) and the Conductor. See
// docs/api.md for the fields and error codes supported.
#ifndef CRESCENT_SRC_SERVER_HTTP_SERVER_H_
#define CRESCENT_SRC_SERVER_HTTP_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/server/completion_service.h"
#include "src/server/metrics.h"

namespace crescent::server {

struct HttpServerOptions {
  std::string host = "127.0.0.1";        // Address to bind (IPv4 or IPv6 literal).
  uint16_t port = 0;                     // 0 picks an ephemeral port; read it back with port().
  int num_threads = 2;                   // Threads running the io_context.
  size_t max_body_bytes = 1 << 20;       // Larger bodies get 413.
  size_t max_header_bytes = 64 << 10;    // Larger headers get 431.
  std::string api_key;                   // Non-empty: /v1/* need "Authorization: Bearer <api_key>".
  double sse_keep_alive_seconds = 15.0;  // ": keep-alive" comment after this long without output.
  int retry_after_seconds = 1;           // Retry-After on 429 and 503.
  double idle_timeout_seconds = 120.0;   // Closes connections idle (or slow to send) this long.
};

class HttpServer {
 public:
  // Binds, listens and starts the threads. `service` and `metrics` are not owned and must
  // outlive the server; `metrics` may be null (then the server keeps its own registry).
  // `service` may be null: then only /health, /ready and /metrics are served (the prefill and
  // decode nodes' metrics endpoint) and /v1/* answers 404.
  // Errors: InvalidArgument for a bad host or num_threads < 1; Unavailable / the errno's code
  // when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options,
                                                            CompletionService* service,
                                                            MetricsRegistry* metrics);

  // Stop()s.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port.
  uint16_t port() const;

  // Stops accepting, closes every connection, cancels requests in flight, and waits until the
  // service has called on_done for each of them and the threads have finished. Idempotent.
  // REQUIRES: not called from a server thread or from inside a service callback.
  void Stop();

  // The registry /metrics renders (the one passed to Create(), or the server's own).
  MetricsRegistry* metrics_registry();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crescent::server

#endif  // CRESCENT_SRC_SERVER_HTTP_SERVER_H_
