// LocalCluster: `crescent up` — a whole disaggregated cluster on loopback, from one command.
//
// Starts, as children of this process (Supervisor), `crescent kvstore master`, `crescent
// conductor`, P `crescent prefill-node` (ids prefill-0, prefill-1, ...) and D `crescent
// decode-node` (decode-0, ...), each on free loopback ports, waits until every one has printed
// its ready line and the conductor counts P live prefill and D live decode nodes
// (crescent:cluster_nodes on its /metrics), and then describes the cluster (ClusterInfo, also
// written as JSON to a ports file for scripts and tests). Stop() stops the children in reverse
// start order (nodes drain first, then the conductor, then the master).
//
// Failure policy (docs/operations.md): a prefill or decode node that dies is reported loudly
// and the rest keeps serving (the conductor routes around it); the cluster cannot serve
// without its conductor or KV master, so EssentialExit() reports their death and `crescent
// up` then stops everything and exits 1.
#ifndef CRESCENT_SRC_CLUSTER_UP_H_
#define CRESCENT_SRC_CLUSTER_UP_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "src/cluster/supervisor.h"

namespace crescent::cluster {

struct UpOptions {
  std::string model;              // GGUF path, passed to every role. Required.
  std::string served_model_name;  // Empty: the conductor's default (the model's id).
  int port = 8000;                // The conductor's OpenAI HTTP port (0: any free port).
  int prefill = 1;                // Number of prefill nodes, >= 1.
  int decode = 1;                 // Number of decode nodes, >= 1.
  int threads_per_node = 0;       // Compute threads per node; 0: DefaultThreadsPerNode().
  std::string backend = "cpu";    // Every node's forward pass: cpu | cuda.
  int64_t kv_cache_mb = 256;      // Per node.
  int speculative_tokens = 0;     // Decode nodes' --speculative-tokens.
  std::optional<double> speculative_draft_cost;  // Decode nodes' --speculative-draft-cost;
                                                 // unset: their default.
  std::string prefill_policy;     // Empty: the conductor's default.
  int64_t slo_ttft_ms = 0;        // 0: the conductor's default.
  int64_t slo_tbt_ms = 0;         // 0: the conductor's default.
  bool no_early_rejection = false;
  std::string transport = "auto";
  std::string api_key;     // Empty: no key.
  std::string ports_file;  // Non-empty: ClusterInfo::ToJson() is written there once ready.
  std::string binary;      // The crescent binary to run; empty: this process's own.
  absl::Duration ready_timeout = absl::Seconds(300);  // For the whole start-up.
  absl::Duration stop_timeout = absl::Seconds(40);    // Per child, SIGTERM -> SIGKILL.
  bool forward_output = true;  // Children's lines to our stderr as "[name] line".
};

// One process of the cluster as started.
struct ProcessInfo {
  std::string name;  // "kv-master", "conductor", "prefill-0", "decode-1", ...
  std::string role;  // "kv-master", "conductor", "prefill", "decode".
  pid_t pid = 0;
  std::string grpc;  // host:port of its gRPC service.
  std::string http;  // host:port of its HTTP server (OpenAI API or /metrics), "" if none.
};

struct ClusterInfo {
  std::string url;       // "http://127.0.0.1:<port>/v1"
  int http_port = 0;     // The conductor's OpenAI port.
  std::string model_id;  // As /v1/models names it.
  std::string kv_master;
  std::string conductor_grpc;
  std::vector<ProcessInfo> processes;  // In start order.
  // {"url":..., "http_port":..., "model":..., "kv_master":..., "conductor_grpc":...,
  //  "pid": <up's pid>, "processes":[{"name","role","pid","grpc","http"}, ...]}
  std::string ToJson() const;
};

// One parsed `crescent: <role> <id> ready grpc=<host:port> http=<host:port or ->` line.
struct ReadyLine {
  std::string role;
  std::string id;    // "-" for the conductor.
  std::string grpc;  // "" when "-".
  std::string http;  // "" when "-".
};

// Parses a ready line. InvalidArgument (naming the line) when it is not one.
absl::StatusOr<ReadyLine> ParseReadyLine(std::string_view line);

// max(1, hardware_threads / nodes). REQUIRES: nodes >= 1.
int DefaultThreadsPerNode(int nodes, int hardware_threads);

// The value of the sample `series` (name with its labels exactly as exposed, e.g.
// `crescent:cluster_nodes{role="prefill"}`) in a Prometheus text exposition; nullopt if absent.
std::optional<double> MetricValue(std::string_view exposition, std::string_view series);

// The kernel's ephemeral port range (/proc/sys/net/ipv4/ip_local_port_range): the ports it picks
// for bind(port 0) and outgoing connections. Linux's default [32768, 60999] if unreadable.
struct PortRange {
  int first = 0;
  int last = 0;  // inclusive
};
PortRange EphemeralPortRange();

// `n` different free TCP ports on 127.0.0.1, outside EphemeralPortRange() where there is room
// (ports >= 20000), so that no bind(port 0) or outgoing connection of a process started meanwhile
// can take one before it is listened on; each was bound, then closed (another program binding
// it on purpose still could). Errors: the errno-derived status of socket/bind/getsockname.
absl::StatusOr<std::vector<int>> PickFreePorts(int n);

// PickFreePorts(1)[0].
absl::StatusOr<int> PickFreePort();

// A blocking HTTP/1.1 GET to 127.0.0.1:port; returns the body of a 200 answer. Errors:
// Unavailable (cannot connect, or no answer within `timeout`), Internal (a non-200 status or an
// unparsable answer; the message has the status line).
absl::StatusOr<std::string> HttpGet(int port, std::string_view path, std::string_view api_key,
                                    absl::Duration timeout);

// The argv (after the binary) of each role as `crescent up` starts it; exposed for tests.
struct ClusterPorts {
  int master = 0;
  int conductor_grpc = 0;
  int http = 0;
  std::vector<int> prefill_grpc, prefill_metrics;  // One per prefill node.
  std::vector<int> decode_grpc, decode_metrics;    // One per decode node.
};
std::vector<std::string> MasterArgs(const UpOptions& o, const ClusterPorts& p);
std::vector<std::string> ConductorArgs(const UpOptions& o, const ClusterPorts& p);
// role: "prefill" or "decode"; index < o.prefill / o.decode; threads: compute threads.
std::vector<std::string> NodeArgs(const UpOptions& o, const ClusterPorts& p, std::string_view role,
                                  int index, int threads);

class LocalCluster {
 public:
  // Starts the cluster and returns once it serves (see the file comment). On any failure the
  // processes already started are stopped. Errors: InvalidArgument (bad options), the start
  // errors of Supervisor::Start, Aborted (a process exited during start-up: which and how),
  // DeadlineExceeded (not ready within ready_timeout: what was still missing).
  // REQUIRES: called from a thread that outlives the cluster (the main thread).
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const UpOptions& options);
  ~LocalCluster();  // Stop().

  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  const ClusterInfo& info() const { return info_; }
  Supervisor* supervisor() { return supervisor_.get(); }

  // The first unexpected exit of the conductor or the KV master, if any (the cluster cannot
  // serve without them). Thread-safe.
  std::optional<ChildExit> EssentialExit() const;
  // Unexpected exits of any process so far, in order. Thread-safe.
  std::vector<ChildExit> UnexpectedExits() const;

  // Stops every process (Supervisor::Stop). Idempotent.
  void Stop();

 private:
  LocalCluster() = default;
  std::unique_ptr<Supervisor> supervisor_;
  ClusterInfo info_;
};

}  // namespace crescent::cluster

#endif  // CRESCENT_SRC_CLUSTER_UP_H_
