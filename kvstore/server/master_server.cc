#include "kvstore/server/master_server.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "src/common/grpc_listen.h"
#include "src/common/logging.h"
#include "src/common/status.h"

namespace crescent::kvstore::server {
namespace {

const Clock* DefaultClock() {
  static const RealClock* clock = new RealClock();
  return clock;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MasterServer>> MasterServer::Start(
    const MasterServerOptions& options, const Clock* clock) {
  if (clock == nullptr) clock = DefaultClock();
  std::unique_ptr<MasterServer> server(new MasterServer());
  CRESCENT_ASSIGN_OR_RETURN(server->service_, master::MasterService::Create(options.config, clock));
  server->directory_ = std::make_unique<client::SegmentDirectoryService>();
  grpc::ServerBuilder builder;
  int port = 0;
  AddExclusiveListeningPort(builder, options.listen, &port);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->directory_.get());
  builder.SetMaxReceiveMessageSize(64 << 20);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    return absl::UnavailableError("KV master cannot listen on " + options.listen);
  }
  const std::string host = options.listen.substr(0, options.listen.rfind(':'));
  server->address_ = absl::StrCat(host, ":", port);
  server->ticker_ =
      std::thread([s = server.get(), interval = options.tick_interval] { s->TickLoop(interval); });
  return server;
}

MasterServer::~MasterServer() { Stop(); }

void MasterServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stop_.Notify();
  if (ticker_.joinable()) ticker_.join();
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

void MasterServer::TickLoop(std::chrono::milliseconds interval) {
  while (!stop_.WaitForNotificationWithTimeout(absl::FromChrono(interval))) {
    master::TickReport report = service_->Tick();
    for (const std::string& node : report.dead_nodes) {
      CRESCENT_LOG(warn, "kv master: node {} missed its heartbeats: declared dead", node);
    }
    if (!report.lost.empty()) {
      CRESCENT_LOG(warn, "kv master: {} objects lost with their last replica", report.lost.size());
    }
    if (!report.expired_puts.empty() || !report.evicted.empty() || !report.new_moves.empty() ||
        !report.dropped_dram.empty() || !report.dropped_ssd.empty() ||
        !report.cancelled_moves.empty()) {
      CRESCENT_LOG(debug,
                   "kv master tick: {} puts expired, {} evicted, {} demotions scheduled, {} dram "
                   "and {} ssd copies dropped, {} moves cancelled",
                   report.expired_puts.size(), report.evicted.size(), report.new_moves.size(),
                   report.dropped_dram.size(), report.dropped_ssd.size(),
                   report.cancelled_moves.size());
    }
  }
}

}  // namespace crescent::kvstore::server
