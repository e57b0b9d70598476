#include "src/cluster/up.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "src/common/logging.h"
#include "src/common/memory_size.h"
#include "src/common/status.h"

namespace crescent::cluster {
namespace {

constexpr char kMaster[] = "kv-master";
constexpr char kConductor[] = "conductor";
constexpr char kLoopback[] = "127.0.0.1";

std::string Loopback(int port) { return absl::StrCat(kLoopback, ":", port); }

// 127.0.0.1:port as a socket address.
sockaddr_in LoopbackAddress(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

// A socket bound to 127.0.0.1:port (0: any), or -1 with errno set.
int BindLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const sockaddr_in addr = LoopbackAddress(port);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

}  // namespace

PortRange EphemeralPortRange() {
  PortRange range{32768, 60999};  // Linux's default
  FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (f == nullptr) return range;
  int first = 0;
  int last = 0;
  if (std::fscanf(f, "%d %d", &first, &last) == 2 && 0 < first && first <= last && last < 65536) {
    range = {first, last};
  }
  std::fclose(f);
  return range;
}

absl::StatusOr<std::vector<int>> PickFreePorts(int n) {
  // The kernel hands out ports of the ephemeral range by itself, to every bind(port 0) and every
  // outgoing connection. A port picked from that range and only bound later by a child could be
  // taken in between (a storage server of a node started earlier binds port 0), so the ports are
  // drawn outside it, from [kLowest, first) and (last, 65535], tried at random; all stay bound
  // until the last is found, so they differ. Without room there, the kernel picks (port 0).
  constexpr int kLowest = 20000;
  const PortRange ephemeral = EphemeralPortRange();
  std::vector<int> candidates;
  for (int p = kLowest; p < std::min(ephemeral.first, 65536); ++p) candidates.push_back(p);
  for (int p = std::max(ephemeral.last + 1, kLowest); p < 65536; ++p) candidates.push_back(p);
  std::mt19937 rng(std::random_device{}());
  std::shuffle(candidates.begin(), candidates.end(), rng);

  std::vector<int> fds;
  std::vector<int> ports;
  absl::Status status;
  size_t next = 0;
  while (static_cast<int>(ports.size()) < n) {
    const bool kernel_picks = next >= candidates.size();
    const int fd = BindLoopback(kernel_picks ? 0 : candidates[next++]);
    if (fd < 0) {
      if (!kernel_picks && errno == EADDRINUSE) continue;
      status = ErrnoToStatus(errno, "bind 127.0.0.1 for a free port");
      break;
    }
    fds.push_back(fd);
    sockaddr_in addr{};
    socklen_t len = sizeof(addr);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      status = ErrnoToStatus(errno, "getsockname");
      break;
    }
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) close(fd);
  if (!status.ok()) return status;
  return ports;
}

namespace {

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.substr(0, prefix.size()) == prefix;
}

// Decodes a chunked transfer-encoded body; nullopt if malformed.
std::optional<std::string> Dechunk(std::string_view body) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t eol = body.find("\r\n", pos);
    if (eol == std::string_view::npos) return std::nullopt;
    std::string size_hex(body.substr(pos, eol - pos));
    const size_t semi = size_hex.find(';');
    if (semi != std::string::npos) size_hex.resize(semi);
    char* end = nullptr;
    const unsigned long size = std::strtoul(size_hex.c_str(), &end, 16);
    if (end == size_hex.c_str()) return std::nullopt;
    pos = eol + 2;
    if (size == 0) return out;
    if (pos + size > body.size()) return std::nullopt;
    out.append(body.substr(pos, size));
    pos += size + 2;
  }
}

}  // namespace

std::string ClusterInfo::ToJson() const {
  nlohmann::json j;
  j["url"] = url;
  j["http_port"] = http_port;
  j["model"] = model_id;
  j["kv_master"] = kv_master;
  j["conductor_grpc"] = conductor_grpc;
  j["pid"] = static_cast<int64_t>(getpid());
  j["processes"] = nlohmann::json::array();
  for (const auto& p : processes) {
    j["processes"].push_back({{"name", p.name},
                              {"role", p.role},
                              {"pid", static_cast<int64_t>(p.pid)},
                              {"grpc", p.grpc},
                              {"http", p.http}});
  }
  return j.dump(2);
}

absl::StatusOr<ReadyLine> ParseReadyLine(std::string_view line) {
  std::vector<absl::string_view> split = absl::StrSplit(Absl(line), ' ', absl::SkipEmpty());
  std::vector<std::string_view> words;
  for (absl::string_view w : split) words.emplace_back(w.data(), w.size());
  if (words.size() < 4 || words[0] != "crescent:" || words[3] != "ready") {
    return absl::InvalidArgumentError(
        absl::StrCat("not a ready line (want 'crescent: <role> <id> ready grpc=... http=...'): '",
                     std::string(line), "'"));
  }
  ReadyLine r;
  r.role = std::string(words[1]);
  r.id = std::string(words[2]);
  for (size_t i = 4; i < words.size(); ++i) {
    const std::string_view w = words[i];
    std::string_view value;
    if (StartsWith(w, "grpc=")) {
      value = w.substr(5);
      r.grpc = value == "-" ? "" : std::string(value);
    } else if (StartsWith(w, "http=")) {
      value = w.substr(5);
      r.http = value == "-" ? "" : std::string(value);
    }
  }
  return r;
}

int DefaultThreadsPerNode(int nodes, int hardware_threads) {
  return std::max(1, hardware_threads / std::max(1, nodes));
}

std::optional<double> MetricValue(std::string_view exposition, std::string_view series) {
  for (absl::string_view piece : absl::StrSplit(Absl(exposition), '\n')) {
    const std::string_view line(piece.data(), piece.size());
    if (line.empty() || line[0] == '#') continue;
    if (!StartsWith(line, series) || line.size() <= series.size() || line[series.size()] != ' ') {
      continue;
    }
    std::string_view rest = line.substr(series.size() + 1);
    const size_t space = rest.find(' ');  // An optional timestamp follows.
    if (space != std::string_view::npos) rest = rest.substr(0, space);
    double v = 0;
    if (absl::SimpleAtod(Absl(rest), &v)) return v;
    if (rest == "+Inf") return HUGE_VAL;
    return std::nullopt;
  }
  return std::nullopt;
}

absl::StatusOr<int> PickFreePort() {
  CRESCENT_ASSIGN_OR_RETURN(std::vector<int> ports, PickFreePorts(1));
  return ports[0];
}

absl::StatusOr<std::string> HttpGet(int port, std::string_view path, std::string_view api_key,
                                    absl::Duration timeout) {
  const std::string where = absl::StrCat("GET http://", Loopback(port), std::string(path));
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoToStatus(errno, "socket for " + where);
  timeval tv = absl::ToTimeval(timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const sockaddr_in addr = LoopbackAddress(port);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat(where, ": connect: ", std::strerror(err)));
  }
  std::string request =
      absl::StrCat("GET ", std::string(path), " HTTP/1.1\r\nHost: ", Loopback(port),
                   "\r\nConnection: close\r\n");
  if (!api_key.empty())
    absl::StrAppend(&request, "Authorization: Bearer ", std::string(api_key), "\r\n");
  request += "\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      close(fd);
      return absl::UnavailableError(absl::StrCat(where, ": send: ", std::strerror(err)));
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[16384];
  while (true) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return absl::UnavailableError(absl::StrCat(where, ": recv: ", std::strerror(err)));
    }
    if (n == 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t header_end = response.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::InternalError(absl::StrCat(where, ": no complete HTTP header in the answer"));
  }
  const std::string_view head(response.data(), header_end);
  const std::string_view status_line = head.substr(0, head.find("\r\n"));
  std::vector<absl::string_view> parts = absl::StrSplit(Absl(status_line), ' ');
  if (parts.size() < 2 || parts[1] != "200") {
    return absl::InternalError(absl::StrCat(where, ": ", std::string(status_line)));
  }
  std::string body = response.substr(header_end + 4);
  std::string lower_head(head);
  std::transform(lower_head.begin(), lower_head.end(), lower_head.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower_head.find("transfer-encoding: chunked") != std::string::npos) {
    std::optional<std::string> decoded = Dechunk(body);
    if (!decoded) return absl::InternalError(absl::StrCat(where, ": malformed chunked body"));
    return *decoded;
  }
  return body;
}

std::vector<std::string> MasterArgs(const UpOptions& o, const ClusterPorts& p) {
  return {"kvstore", "master", "--listen", Loopback(p.master)};
}

std::vector<std::string> ConductorArgs(const UpOptions& o, const ClusterPorts& p) {
  std::vector<std::string> a = {"conductor",
                                "--model",
                                o.model,
                                "--host",
                                kLoopback,
                                "--port",
                                absl::StrCat(p.http),
                                "--grpc-listen",
                                Loopback(p.conductor_grpc),
                                "--kv-master",
                                Loopback(p.master)};
  if (!o.served_model_name.empty()) {
    a.insert(a.end(), {"--served-model-name", o.served_model_name});
  }
  if (!o.api_key.empty()) a.insert(a.end(), {"--api-key", o.api_key});
  if (!o.prefill_policy.empty()) a.insert(a.end(), {"--prefill-policy", o.prefill_policy});
  if (o.slo_ttft_ms > 0) a.insert(a.end(), {"--slo-ttft-ms", absl::StrCat(o.slo_ttft_ms)});
  if (o.slo_tbt_ms > 0) a.insert(a.end(), {"--slo-tbt-ms", absl::StrCat(o.slo_tbt_ms)});
  if (o.no_early_rejection) a.push_back("--no-early-rejection");
  return a;
}

std::vector<std::string> NodeArgs(const UpOptions& o, const ClusterPorts& p, std::string_view role,
                                  int index, int threads) {
  const bool prefill = role == "prefill";
  const int grpc = prefill ? p.prefill_grpc.at(index) : p.decode_grpc.at(index);
  const int metrics = prefill ? p.prefill_metrics.at(index) : p.decode_metrics.at(index);
  std::vector<std::string> a = {prefill ? "prefill-node" : "decode-node",
                                "--model",
                                o.model,
                                "--node-id",
                                absl::StrCat(std::string(role), "-", index),
                                "--conductor",
                                Loopback(p.conductor_grpc),
                                "--kv-master",
                                Loopback(p.master),
                                "--grpc-listen",
                                Loopback(grpc),
                                "--metrics-port",
                                absl::StrCat(metrics),
                                "--threads",
                                absl::StrCat(threads),
                                "--kv-cache-mb",
                                absl::StrCat(o.kv_cache_mb),
                                "--transport",
                                o.transport};
  if (o.backend != "cpu") a.insert(a.end(), {"--backend", o.backend});
  if (role == "decode" && o.speculative_tokens > 0) {
    a.insert(a.end(), {"--speculative-tokens", absl::StrCat(o.speculative_tokens)});
    if (o.speculative_draft_cost) {
      a.insert(a.end(), {"--speculative-draft-cost", absl::StrCat(*o.speculative_draft_cost)});
    }
  }
  return a;
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const UpOptions& o) {
  if (o.model.empty()) return absl::InvalidArgumentError("crescent up: no model given");
  if (o.prefill < 1) return absl::InvalidArgumentError("--prefill must be at least 1");
  if (o.decode < 1) return absl::InvalidArgumentError("--decode must be at least 1");
  if (o.port < 0 || o.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--port must be in [0, 65535], got ", o.port));
  }
  if (o.threads_per_node < 0) {
    return absl::InvalidArgumentError("--threads-per-node must be >= 0 (0: automatic)");
  }
  CRESCENT_RETURN_IF_ERROR(CheckMemoryMb("--kv-cache-mb", o.kv_cache_mb, 1));
  if (o.speculative_tokens < 0 || o.speculative_tokens > 64) {
    return absl::InvalidArgumentError("--speculative-tokens must be in [0, 64]");
  }
  if (o.speculative_draft_cost &&
      !(*o.speculative_draft_cost >= 0 && *o.speculative_draft_cost < 1)) {
    return absl::InvalidArgumentError("--speculative-draft-cost must be in [0, 1)");
  }
  const int threads =
      o.threads_per_node > 0
          ? o.threads_per_node
          : DefaultThreadsPerNode(o.prefill + o.decode,
                                  static_cast<int>(std::thread::hardware_concurrency()));

  // Every port is chosen here (rather than each process binding port 0) so that the addresses
  // are known before the processes print them; the ready lines confirm them.
  const int n_ports = 3 + 2 * (o.prefill + o.decode);
  CRESCENT_ASSIGN_OR_RETURN(std::vector<int> free, PickFreePorts(n_ports));
  ClusterPorts ports;
  size_t next = 0;
  ports.master = free[next++];
  ports.conductor_grpc = free[next++];
  ports.http = o.port != 0 ? o.port : free[next];
  ++next;
  for (int i = 0; i < o.prefill; ++i) {
    ports.prefill_grpc.push_back(free[next++]);
    ports.prefill_metrics.push_back(free[next++]);
  }
  for (int i = 0; i < o.decode; ++i) {
    ports.decode_grpc.push_back(free[next++]);
    ports.decode_metrics.push_back(free[next++]);
  }

  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  SupervisorOptions so;
  so.forward_output = o.forward_output;
  so.stop_timeout = o.stop_timeout;
  CRESCENT_ASSIGN_OR_RETURN(cluster->supervisor_, Supervisor::Create(std::move(so)));
  Supervisor* sup = cluster->supervisor_.get();
  ClusterInfo& info = cluster->info_;
  info.http_port = ports.http;
  info.url = absl::StrCat("http://", Loopback(ports.http), "/v1");
  info.kv_master = Loopback(ports.master);
  info.conductor_grpc = Loopback(ports.conductor_grpc);

  const absl::Time deadline = absl::Now() + o.ready_timeout;
  auto left = [&] { return std::max(absl::ZeroDuration(), deadline - absl::Now()); };
  auto start = [&](const std::string& name, const std::string& role,
                   std::vector<std::string> args) -> absl::Status {
    CRESCENT_ASSIGN_OR_RETURN(const pid_t pid, sup->Start({name, o.binary, std::move(args), {}}));
    info.processes.push_back({name, role, pid, "", ""});
    return absl::OkStatus();
  };
  // Waits for the ready line of processes[i] and fills in its addresses.
  auto await_ready = [&](size_t i) -> absl::Status {
    ProcessInfo& p = info.processes[i];
    CRESCENT_ASSIGN_OR_RETURN(const std::string line,
                              sup->WaitForLine(p.name, "crescent: ", left()));
    CRESCENT_ASSIGN_OR_RETURN(const ReadyLine ready, ParseReadyLine(line));
    p.grpc = ready.grpc;
    p.http = ready.http;
    return absl::OkStatus();
  };

  CRESCENT_LOG(info,
               "starting a local cluster: KV master, conductor, {} prefill + {} decode "
               "nodes ({} compute threads each)",
               o.prefill, o.decode, threads);
  CRESCENT_RETURN_IF_ERROR(start(kMaster, kMaster, MasterArgs(o, ports)));
  CRESCENT_RETURN_IF_ERROR(sup->WaitForLine(kMaster, "listening on ", left()).status());
  info.processes[0].grpc = info.kv_master;

  CRESCENT_RETURN_IF_ERROR(start(kConductor, kConductor, ConductorArgs(o, ports)));
  CRESCENT_RETURN_IF_ERROR(await_ready(1));

  for (int i = 0; i < o.prefill; ++i) {
    CRESCENT_RETURN_IF_ERROR(
        start(absl::StrCat("prefill-", i), "prefill", NodeArgs(o, ports, "prefill", i, threads)));
  }
  for (int i = 0; i < o.decode; ++i) {
    CRESCENT_RETURN_IF_ERROR(
        start(absl::StrCat("decode-", i), "decode", NodeArgs(o, ports, "decode", i, threads)));
  }
  for (size_t i = 2; i < info.processes.size(); ++i) CRESCENT_RETURN_IF_ERROR(await_ready(i));

  // Ready lines say each node serves; the conductor's gauges say it has registered them.
  const std::string prefill_series = "crescent:cluster_nodes{role=\"prefill\"}";
  const std::string decode_series = "crescent:cluster_nodes{role=\"decode\"}";
  std::string last_problem = "no answer yet";
  while (true) {
    for (const ChildExit& e : sup->Exits()) {
      return absl::AbortedError(
          absl::StrCat(e.name, " ", e.Describe(), " while the cluster was starting"));
    }
    absl::StatusOr<std::string> metrics =
        HttpGet(ports.http, "/metrics", o.api_key, absl::Seconds(5));
    if (metrics.ok()) {
      const double p = MetricValue(*metrics, prefill_series).value_or(0);
      const double d = MetricValue(*metrics, decode_series).value_or(0);
      if (p >= o.prefill && d >= o.decode) break;
      last_problem = absl::StrCat("the conductor counts ", p, " prefill and ", d, " decode nodes");
    } else {
      last_problem = std::string(metrics.status().message());
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the cluster was not ready within ", absl::FormatDuration(o.ready_timeout),
                       ": ", last_problem, " (want ", o.prefill, " and ", o.decode, ")"));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }

  info.model_id = o.served_model_name;
  absl::StatusOr<std::string> models =
      HttpGet(ports.http, "/v1/models", o.api_key, absl::Seconds(5));
  if (models.ok()) {
    nlohmann::json j = nlohmann::json::parse(*models, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
        j["data"][0].contains("id") && j["data"][0]["id"].is_string()) {
      info.model_id = j["data"][0]["id"].get<std::string>();
    }
  } else {
    CRESCENT_LOG(warn, "could not read the model id from the conductor: {}",
                 models.status().ToString());
  }

  if (!o.ports_file.empty()) {
    const std::string tmp = o.ports_file + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) return ErrnoToStatus(errno, "open " + tmp);
    const std::string json = info.ToJson() + "\n";
    const bool written = std::fwrite(json.data(), 1, json.size(), f) == json.size();
    if (std::fclose(f) != 0 || !written) return ErrnoToStatus(errno, "write " + tmp);
    if (std::rename(tmp.c_str(), o.ports_file.c_str()) != 0) {
      return ErrnoToStatus(errno, "rename " + tmp + " to " + o.ports_file);
    }
  }
  return cluster;
}

LocalCluster::~LocalCluster() { Stop(); }

std::optional<ChildExit> LocalCluster::EssentialExit() const {
  for (const ChildExit& e : supervisor_->Exits()) {
    if (!e.expected && (e.name == kMaster || e.name == kConductor)) return e;
  }
  return std::nullopt;
}

std::vector<ChildExit> LocalCluster::UnexpectedExits() const {
  std::vector<ChildExit> out;
  for (const ChildExit& e : supervisor_->Exits()) {
    if (!e.expected) out.push_back(e);
  }
  return out;
}

void LocalCluster::Stop() {
  if (supervisor_ != nullptr) supervisor_->Stop();
}

}  // namespace crescent::cluster
