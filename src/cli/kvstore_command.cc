// `crescent kvstore master` and `crescent kvstore server`: the KV pool's metadata master and a
// storage-only node (kvstore/server). Both run until SIGINT or SIGTERM, then stop gracefully.
#include <pthread.h>
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "kvstore/server/master_server.h"
#include "kvstore/server/storage_server.h"
#include "src/cli/command.h"
#include "src/common/logging.h"

namespace crescent::cli {
namespace {

struct MasterFlags {
  std::string listen = "127.0.0.1:50051";
  int64_t tick_ms = 100;
  int64_t lease_ms = 5000;
  int64_t put_timeout_ms = 30000;
  int64_t node_timeout_ms = 10000;
  int64_t move_timeout_ms = 60000;
  double high_watermark = 0.90;
  double low_watermark = 0.80;
  bool no_demote = false;
  bool no_promote = false;
};

struct ServerFlags {
  std::string master = "127.0.0.1:50051";
  std::string node_id;
  double dram_gb = 1.0;
  std::string ssd_path;
  double ssd_gb = 0.0;
  std::string transport = "auto";
  std::string listen = "127.0.0.1:0";
  std::string rpc_listen = "127.0.0.1:0";
  std::string advertise_host;
  int64_t heartbeat_ms = 1000;
};

int Fail(const char* command, const std::string& message, int code) {
  std::fprintf(stderr, "crescent kvstore %s: %s\n", command, message.c_str());
  return code;
}

uint64_t GbToBytes(double gb) { return static_cast<uint64_t>(std::llround(gb * (1ull << 30))); }

int RunMaster(const MasterFlags& f) {
  if (f.tick_ms < 1) return Fail("master", "--tick-ms must be >= 1", 2);
  kvstore::server::MasterServerOptions options;
  options.listen = f.listen;
  options.tick_interval = std::chrono::milliseconds(f.tick_ms);
  options.config.lease_ns = f.lease_ms * 1'000'000;
  options.config.put_timeout_ns = f.put_timeout_ms * 1'000'000;
  options.config.node_timeout_ns = f.node_timeout_ms * 1'000'000;
  options.config.move_timeout_ns = f.move_timeout_ms * 1'000'000;
  options.config.high_watermark = f.high_watermark;
  options.config.low_watermark = f.low_watermark;
  options.config.demote_to_ssd = !f.no_demote;
  options.config.promote_on_hit = !f.no_promote;
  SetLogRole("kv-master");
  const sigset_t signals = BlockStopSignals();
  auto server = kvstore::server::MasterServer::Start(options);
  if (!server.ok()) return Fail("master", std::string(server.status().ToString()), 1);
  CRESCENT_LOG(info,
               "kv master listening on {} (lease {} ms, node timeout {} ms, watermarks "
               "{:.2f}/{:.2f})",
               (*server)->address(), f.lease_ms, f.node_timeout_ms, f.high_watermark,
               f.low_watermark);
  // Tests and scripts wait for this line on stdout to learn the address.
  std::printf("listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);
  const int signal_number = WaitForStopSignal(signals);
  CRESCENT_LOG(info, "kv master: signal {}, stopping", signal_number);
  (*server)->Stop();
  return 0;
}

int RunServer(const ServerFlags& f) {
  if (f.node_id.empty()) return Fail("server", "--node-id is required", 2);
  if (!(f.dram_gb > 0)) return Fail("server", "--dram-gb must be > 0", 2);
  if (!f.ssd_path.empty() && !(f.ssd_gb > 0)) {
    return Fail("server", "--ssd-path needs --ssd-gb > 0", 2);
  }
  if (f.heartbeat_ms < 1) return Fail("server", "--heartbeat-ms must be >= 1", 2);
  kvstore::server::StorageServerOptions options;
  options.master_address = f.master;
  options.node_id = f.node_id;
  options.dram_bytes = GbToBytes(f.dram_gb);
  options.ssd_path = f.ssd_path;
  options.ssd_bytes = f.ssd_path.empty() ? 0 : GbToBytes(f.ssd_gb);
  options.transport = f.transport;
  options.data_listen = f.listen;
  options.rpc_listen = f.rpc_listen;
  options.advertise_host = f.advertise_host;
  options.heartbeat_interval = std::chrono::milliseconds(f.heartbeat_ms);
  SetLogRole("kv-server");
  const sigset_t signals = BlockStopSignals();
  auto server = kvstore::server::StorageServer::Start(options);
  if (!server.ok()) return Fail("server", std::string(server.status().ToString()), 1);
  std::printf("serving %s at %s\n", f.node_id.c_str(), (*server)->endpoint().c_str());
  std::fflush(stdout);
  const int signal_number = WaitForStopSignal(signals);
  CRESCENT_LOG(info, "kv storage node {}: signal {}, stopping", f.node_id, signal_number);
  (*server)->Stop();
  return 0;
}

}  // namespace

void AddKvstoreCommands(CLI::App& app, std::vector<Command>* commands) {
  CLI::App* kvstore = app.add_subcommand("kvstore", "KV pool processes: master, storage server");
  kvstore->require_subcommand(1);

  auto mf = std::make_shared<MasterFlags>();
  CLI::App* master = kvstore->add_subcommand("master", "Run the KV pool master (gRPC)");
  master->add_option("--listen", mf->listen, "host:port to serve on (port 0: any free port)")
      ->capture_default_str();
  master->add_option("--tick-ms", mf->tick_ms, "Maintenance tick interval (ms)")
      ->capture_default_str();
  master->add_option("--lease-ms", mf->lease_ms, "How long a get protects what it returned")
      ->capture_default_str();
  master
      ->add_option("--put-timeout-ms", mf->put_timeout_ms, "A put not ended within this is revoked")
      ->capture_default_str();
  master
      ->add_option("--node-timeout-ms", mf->node_timeout_ms,
                   "A node silent this long is declared dead")
      ->capture_default_str();
  master
      ->add_option("--move-timeout-ms", mf->move_timeout_ms,
                   "A demotion/promotion not reported within this is cancelled")
      ->capture_default_str();
  master
      ->add_option("--high-watermark", mf->high_watermark,
                   "Eviction starts above this fraction of a tier's capacity")
      ->capture_default_str();
  master->add_option("--low-watermark", mf->low_watermark, "...and stops at this fraction")
      ->capture_default_str();
  master->add_flag("--no-demote", mf->no_demote, "Evict from DRAM without moving to SSD");
  master->add_flag("--no-promote", mf->no_promote, "Do not copy SSD hits back to DRAM");
  commands->push_back({master, [mf] { return RunMaster(*mf); }});

  auto sf = std::make_shared<ServerFlags>();
  CLI::App* server = kvstore->add_subcommand("server", "Run a storage-only KV pool node");
  server->add_option("--master", sf->master, "KV master host:port")->capture_default_str();
  server->add_option("--node-id", sf->node_id, "Unique node id")->required();
  server->add_option("--dram-gb", sf->dram_gb, "DRAM contributed to the pool (GiB, e.g. 0.05)")
      ->capture_default_str();
  server->add_option("--ssd-path", sf->ssd_path, "File backing the SSD segment (none: no SSD)");
  server->add_option("--ssd-gb", sf->ssd_gb, "SSD segment size (GiB)")->capture_default_str();
  server->add_option("--transport", sf->transport, "Serve DRAM over: tcp, shm or auto")
      ->check(CLI::IsMember({"tcp", "shm", "auto"}))
      ->capture_default_str();
  server->add_option("--listen", sf->listen, "host:port of the transfer data server")
      ->capture_default_str();
  server
      ->add_option("--rpc-listen", sf->rpc_listen,
                   "host:port of the block service (registered as the node's endpoint)")
      ->capture_default_str();
  server->add_option("--advertise-host", sf->advertise_host,
                     "host or IP the master and clients dial for both ports (default: the listen "
                     "host, or this host's name for 0.0.0.0)");
  server->add_option("--heartbeat-ms", sf->heartbeat_ms, "Heartbeat interval (ms)")
      ->capture_default_str();
  commands->push_back({server, [sf] { return RunServer(*sf); }});
}

}  // namespace crescent::cli
