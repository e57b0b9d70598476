// MasterServer: a running KV master process body — the KvMaster gRPC service (MasterService),
// the segment directory service (KvSegmentDirectory) on the same port, and a thread that ticks
// the master's state with the real clock. `crescent kvstore master` is this plus flags and
// signal handling; tests and benchmarks start one in-process.
#ifndef CRESCENT_KVSTORE_SERVER_MASTER_SERVER_H_
#define CRESCENT_KVSTORE_SERVER_MASTER_SERVER_H_

#include <grpcpp/server.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/master/master_service.h"
#include "src/common/clock.h"

namespace crescent::kvstore::server {

struct MasterServerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one.
  master::MasterConfig config;
  std::chrono::milliseconds tick_interval{100};
};

class MasterServer {
 public:
  // Starts serving and ticking. `clock` (not owned) must outlive the server; null means a
  // process-wide RealClock. Errors: InvalidArgument (config), Unavailable (cannot listen).
  static absl::StatusOr<std::unique_ptr<MasterServer>> Start(const MasterServerOptions& options,
                                                             const Clock* clock = nullptr);
  ~MasterServer();  // Stop().

  // Stops ticking and serving (in-flight RPCs are cancelled). Idempotent. Not thread-safe
  // against a concurrent Stop.
  void Stop();

  // "host:port" actually listened on.
  const std::string& address() const { return address_; }
  master::MasterService* service() const { return service_.get(); }

 private:
  MasterServer() = default;
  void TickLoop(std::chrono::milliseconds interval);

  std::string address_;
  std::unique_ptr<master::MasterService> service_;
  std::unique_ptr<client::SegmentDirectoryService> directory_;
  std::unique_ptr<grpc::Server> server_;
  absl::Notification stop_;
  std::thread ticker_;
  bool stopped_ = false;
};

}  // namespace crescent::kvstore::server

#endif  // CRESCENT_KVSTORE_SERVER_MASTER_SERVER_H_
