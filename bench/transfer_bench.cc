// transfer_bench: throughput and latency of the transfer engine between two processes on this
// host, next to the ceilings they should be compared with.
//
//   memcpy   single-threaded memcpy bandwidth between two warm buffers, same sizes;
//   shm      engine writes/reads through shared memory into a peer process's segment;
//   tcp      the same over the tcp transport on loopback;
//   iperf3   one iperf3 TCP stream on loopback (3 s), if iperf3 is installed.
//
// Prints GB/s per size (each transfer size is submitted in batches of up to 64 MiB in flight),
// the ratios shm/memcpy and tcp/iperf3 for large transfers (targets: >= 0.8 and >= 0.9), and the
// p50/p99 latency of one 4 KiB request (submit + wait), then the KV master's put/get/exists
// operations per second on an in-process MasterState. Figures, not assertions.
//
//   transfer_bench [--seconds=S] [--tcp-connections=N] [--tcp-slice=BYTES] [--no-iperf]
//                  [--master-keys=N]
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/kvstore/master_ops.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/transfer_engine.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace crescent::kvstore {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMaxSize = 64ull << 20;
constexpr uint64_t kPeerSegment = 2 * kMaxSize;
const std::vector<uint64_t> kSizes = {4ull << 10, 64ull << 10, 1ull << 20, 16ull << 20,
                                      64ull << 20};

struct Flags {
  double seconds = 1.0;  // per measurement
  int tcp_connections = 4;
  uint64_t tcp_slice = 1 << 20;
  bool iperf = true;
  size_t master_keys = 100000;  // objects put and got in the master measurement
};

std::string SizeName(uint64_t size) {
  if (size >= (1 << 20)) return absl::StrCat(size >> 20, " MiB");
  return absl::StrCat(size >> 10, " KiB");
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ------------------------------------------------------------------------------------------------
// The peer: owns a shared segment and serves it until its stdin closes.

int ServePeer() {
  InMemorySegmentDirectory directory;
  auto engine = TransferEngine::Create(TransferEngineOptions(), &directory);
  if (!engine.ok()) {
    std::cerr << "peer: " << engine.status() << "\n";
    return 1;
  }
  auto base = (*engine)->AllocateSharedSegment("bench/peer", kPeerSegment);
  if (!base.ok()) {
    std::cerr << "peer: " << base.status() << "\n";
    return 1;
  }
  std::memset(*base, 1, kPeerSegment);  // fault the pages in
  std::cout << SerializeSegmentDescriptor(*(*engine)->LocalSegmentDescriptor("bench/peer"))
            << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  return 0;
}

struct Peer {
  pid_t pid = -1;
  int to_child = -1;
  SegmentDescriptor descriptor;
  ~Peer() {
    if (to_child >= 0) ::close(to_child);
    if (pid > 0) ::waitpid(pid, nullptr, 0);
  }
};

absl::StatusOr<std::unique_ptr<Peer>> StartPeer() {
  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError("pipe2 failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  std::string self = "/proc/self/exe", flag = "--peer";
  char* argv[] = {self.data(), flag.data(), nullptr};
  auto peer = std::make_unique<Peer>();
  const int rc = ::posix_spawn(&peer->pid, self.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  peer->to_child = in_pipe[1];
  if (rc != 0) {
    peer->pid = -1;
    ::close(out_pipe[0]);
    return absl::InternalError(absl::StrCat("posix_spawn: ", std::strerror(rc)));
  }
  std::string line;
  char c;
  while (::read(out_pipe[0], &c, 1) == 1 && c != '\n') line.push_back(c);
  ::close(out_pipe[0]);
  auto descriptor = ParseSegmentDescriptor(line);
  if (!descriptor.ok()) return descriptor.status();
  peer->descriptor = *descriptor;
  return peer;
}

// ------------------------------------------------------------------------------------------------
// Measurements.

// memcpy of `size` bytes, rotating through 64 MiB buffers so that large sizes come from DRAM.
double MemcpyGBps(uint64_t size, double seconds, std::vector<uint8_t>& src,
                  std::vector<uint8_t>& dst) {
  uint64_t bytes = 0, offset = 0;
  const auto start = Clock::now();
  Clock::duration elapsed{};
  do {
    for (int i = 0; i < 16; ++i) {
      if (offset + size > src.size()) offset = 0;
      std::memcpy(dst.data() + offset, src.data() + offset, size);
      offset += size;
      bytes += size;
    }
    elapsed = Clock::now() - start;
  } while (Seconds(elapsed) < seconds);
  return static_cast<double>(bytes) / Seconds(elapsed) / 1e9;
}

// Engine throughput: batches of requests of `size` bytes, up to 64 MiB (and 256 requests) in
// flight per batch, for about `seconds`.
double EngineGBps(TransferEngine& engine, SegmentHandle handle, TransferOp op, uint64_t size,
                  double seconds, std::vector<uint8_t>& local) {
  const uint64_t per_batch = std::max<uint64_t>(1, std::min<uint64_t>(256, kMaxSize / size));
  std::vector<TransferRequest> requests;
  for (uint64_t i = 0; i < per_batch; ++i) {
    requests.push_back(TransferRequest{op, local.data() + i * size, handle, i * size, size});
  }
  uint64_t bytes = 0;
  const auto start = Clock::now();
  Clock::duration elapsed{};
  do {
    BatchId batch = engine.AllocateBatch(requests.size());
    absl::Status s = engine.SubmitTransfer(batch, requests);
    if (s.ok()) s = engine.Wait(batch, std::chrono::seconds(60));
    engine.FreeBatch(batch).IgnoreError();
    if (!s.ok()) {
      std::cerr << "transfer failed: " << s << "\n";
      return 0;
    }
    bytes += per_batch * size;
    elapsed = Clock::now() - start;
  } while (Seconds(elapsed) < seconds);
  return static_cast<double>(bytes) / Seconds(elapsed) / 1e9;
}

struct Latency {
  double p50_us = 0, p99_us = 0;
};

Latency SmallLatency(TransferEngine& engine, SegmentHandle handle, std::vector<uint8_t>& local) {
  std::vector<double> samples;
  TransferRequest request{TransferOp::kWrite, local.data(), handle, 0, 4096};
  for (int i = 0; i < 3000; ++i) {
    const auto start = Clock::now();
    BatchId batch = engine.AllocateBatch(1);
    absl::Status s = engine.SubmitTransfer(batch, {&request, 1});
    if (s.ok()) s = engine.Wait(batch, std::chrono::seconds(10));
    engine.FreeBatch(batch).IgnoreError();
    if (!s.ok()) return {};
    if (i >= 200) samples.push_back(Seconds(Clock::now() - start) * 1e6);  // after warm-up
  }
  std::sort(samples.begin(), samples.end());
  return Latency{samples[samples.size() / 2], samples[samples.size() * 99 / 100]};
}

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs `argv`, returns its stdout (or nullopt if it could not be started).
std::optional<std::string> RunCapture(std::vector<std::string> args) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return std::nullopt;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  const int rc = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    return std::nullopt;
  }
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return text;
}

bool HaveProgram(const char* name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string p = path;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    if (::access((p.substr(start, end - start) + "/" + name).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

// GB/s of one iperf3 stream over loopback, or a negative value with a reason printed.
double IperfGBps() {
  if (!HaveProgram("iperf3")) {
    std::cout << "iperf3 not installed\n";
    return -1;
  }
  const std::string port = std::to_string(FreePort());
  pid_t server;
  std::string a0 = "iperf3", a1 = "-s", a2 = "-1", a3 = "-p", a4 = port;
  int devnull = ::open("/dev/null", O_WRONLY);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, devnull, 1);
  posix_spawn_file_actions_adddup2(&actions, devnull, 2);
  char* argv[] = {a0.data(), a1.data(), a2.data(), a3.data(), a4.data(), nullptr};
  if (::posix_spawnp(&server, "iperf3", &actions, nullptr, argv, environ) != 0) {
    posix_spawn_file_actions_destroy(&actions);
    ::close(devnull);
    std::cout << "iperf3 could not be started\n";
    return -1;
  }
  posix_spawn_file_actions_destroy(&actions);
  ::close(devnull);
  std::optional<std::string> json;
  double gbps = -1;
  for (int attempt = 0; attempt < 20 && gbps < 0; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // until the server listens
    json = RunCapture({"iperf3", "-c", "127.0.0.1", "-p", port, "-J", "-t", "3"});
    if (!json) break;
    nlohmann::json j = nlohmann::json::parse(*json, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("end")) continue;
    const nlohmann::json& end = j["end"];
    if (end.contains("sum_received") && end["sum_received"].contains("bits_per_second")) {
      gbps = end["sum_received"]["bits_per_second"].get<double>() / 8 / 1e9;
    }
  }
  ::kill(server, SIGTERM);
  ::waitpid(server, nullptr, 0);
  if (gbps < 0) std::cout << "iperf3 gave no result\n";
  return gbps;
}

int Main(const Flags& flags) {
  std::vector<uint8_t> src(kMaxSize, 7), dst(kMaxSize, 0);
  std::map<uint64_t, double> memcpy_gbps;
  for (uint64_t size : kSizes) memcpy_gbps[size] = MemcpyGBps(size, flags.seconds, src, dst);

  auto peer = StartPeer();
  if (!peer.ok()) {
    std::cerr << "cannot start the peer process: " << peer.status() << "\n";
    return 1;
  }
  InMemorySegmentDirectory directory;
  if (absl::Status s = directory.Publish((*peer)->descriptor); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  TransferEngineOptions options;
  options.tcp.serve = false;
  options.tcp.connections_per_peer = flags.tcp_connections;
  options.tcp.slice_bytes = flags.tcp_slice;
  auto engine = TransferEngine::Create(options, &directory);
  if (!engine.ok()) {
    std::cerr << engine.status() << "\n";
    return 1;
  }
  std::map<std::string, SegmentHandle> handles;
  for (const char* transport : {"shm", "tcp"}) {
    auto handle = (*engine)->OpenSegment("bench/peer", {transport});
    if (!handle.ok()) {
      std::cerr << "open over " << transport << ": " << handle.status() << "\n";
      return 1;
    }
    handles[transport] = *handle;
  }
  std::vector<uint8_t>& local = src;
  std::map<std::string, std::map<uint64_t, std::pair<double, double>>> results;  // write, read
  for (const auto& [transport, handle] : handles) {
    for (uint64_t size : kSizes) {
      const double w = EngineGBps(**engine, handle, TransferOp::kWrite, size, flags.seconds, local);
      const double r = EngineGBps(**engine, handle, TransferOp::kRead, size, flags.seconds, local);
      results[transport][size] = {w, r};
    }
  }
  const Latency shm_latency = SmallLatency(**engine, handles["shm"], local);
  const Latency tcp_latency = SmallLatency(**engine, handles["tcp"], local);
  engine->reset();
  peer->reset();

  const double iperf = flags.iperf ? IperfGBps() : -1;

  std::printf("\ntransfer_bench: two processes on this host; GB/s = 1e9 bytes/s\n");
  std::printf("tcp: %d connections, %llu KiB slices\n\n", flags.tcp_connections,
              static_cast<unsigned long long>(flags.tcp_slice >> 10));
  std::printf("%-8s %10s %11s %10s %11s %10s\n", "size", "memcpy", "shm write", "shm read",
              "tcp write", "tcp read");
  for (uint64_t size : kSizes) {
    std::printf("%-8s %10.2f %11.2f %10.2f %11.2f %10.2f\n", SizeName(size).c_str(),
                memcpy_gbps[size], results["shm"][size].first, results["shm"][size].second,
                results["tcp"][size].first, results["tcp"][size].second);
  }
  if (iperf > 0) std::printf("\niperf3 loopback, one stream: %.2f GB/s\n", iperf);
  std::printf("\nratios for large transfers (write / read):\n");
  for (uint64_t size : {1ull << 20, 16ull << 20, 64ull << 20}) {
    std::printf("  %-7s shm/memcpy %.2f / %.2f (target >= 0.8)", SizeName(size).c_str(),
                results["shm"][size].first / memcpy_gbps[size],
                results["shm"][size].second / memcpy_gbps[size]);
    if (iperf > 0) {
      std::printf("   tcp/iperf3 %.2f / %.2f (target >= 0.9)", results["tcp"][size].first / iperf,
                  results["tcp"][size].second / iperf);
    }
    std::printf("\n");
  }
  std::printf(
      "\n4 KiB write latency (submit + wait, one request): shm p50 %.1f us p99 %.1f us; "
      "tcp p50 %.1f us p99 %.1f us\n",
      shm_latency.p50_us, shm_latency.p99_us, tcp_latency.p50_us, tcp_latency.p99_us);
  std::printf("\n");
  PrintMasterStateOps(flags.master_keys);
  return 0;
}

}  // namespace
}  // namespace crescent::kvstore

int main(int argc, char** argv) {
  crescent::kvstore::Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--peer") return crescent::kvstore::ServePeer();
    if (arg == "--no-iperf") {
      flags.iperf = false;
    } else if (arg.rfind("--seconds=", 0) == 0) {
      if (!absl::SimpleAtod(arg.substr(10), &flags.seconds)) return 2;
    } else if (arg.rfind("--tcp-connections=", 0) == 0) {
      if (!absl::SimpleAtoi(arg.substr(18), &flags.tcp_connections)) return 2;
    } else if (arg.rfind("--master-keys=", 0) == 0) {
      if (!absl::SimpleAtoi(arg.substr(14), &flags.master_keys)) return 2;
    } else if (arg.rfind("--tcp-slice=", 0) == 0) {
      if (!absl::SimpleAtoi(arg.substr(12), &flags.tcp_slice)) return 2;
    } else {
      std::fprintf(stderr,
                   "usage: transfer_bench [--seconds=S] [--tcp-connections=N] "
                   "[--tcp-slice=BYTES] [--no-iperf] [--master-keys=N]\n");
      return 2;
    }
  }
  return crescent::kvstore::Main(flags);
}
