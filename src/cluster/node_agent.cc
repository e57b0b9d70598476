#include "src/cluster/node_agent.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "src/common/logging.h"

namespace crescent::cluster {

absl::StatusOr<std::unique_ptr<NodeAgent>> NodeAgent::Start(const NodeAgentOptions& options,
                                                            LoadFn load) {
  if (options.conductor_address.empty()) {
    return absl::InvalidArgumentError("NodeAgent: conductor_address is empty");
  }
  if (options.node.node_id().empty() || options.node.grpc_endpoint().empty() ||
      options.node.role() == v1::ROLE_UNSPECIFIED) {
    return absl::InvalidArgumentError("NodeAgent: node_id, grpc_endpoint and role are required");
  }
  if (!load) return absl::InvalidArgumentError("NodeAgent: load callback is null");
  if (options.heartbeat_interval.count() <= 0 || options.rpc_timeout.count() <= 0) {
    return absl::InvalidArgumentError("NodeAgent: heartbeat_interval and rpc_timeout must be > 0");
  }
  std::unique_ptr<NodeAgent> agent(new NodeAgent(options, std::move(load)));
  agent->thread_ = std::thread([a = agent.get()] { a->Run(); });
  return agent;
}

NodeAgent::NodeAgent(const NodeAgentOptions& options, LoadFn load)
    : options_(options),
      load_(std::move(load)),
      stub_(v1::Registry::NewStub(
          grpc::CreateChannel(options.conductor_address, grpc::InsecureChannelCredentials()))) {}

NodeAgent::~NodeAgent() { Stop(); }

void NodeAgent::SetDraining() { draining_.store(true); }

void NodeAgent::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void NodeAgent::Run() {
  auto deadline = [this](grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
  };
  std::chrono::milliseconds interval = options_.heartbeat_interval;
  bool registered = false;
  uint64_t sequence = 0;
  bool logged_unreachable = false;
  while (!stop_.HasBeenNotified()) {
    if (!registered) {
      grpc::ClientContext context;
      deadline(&context);
      v1::RegisterRequest request;
      *request.mutable_node() = options_.node;
      v1::RegisterResponse response;
      grpc::Status status = stub_->Register(&context, request, &response);
      if (status.ok()) {
        registered = true;
        sequence = 0;
        logged_unreachable = false;
        connected_.store(true);
        if (response.heartbeat_interval_ms() > 0) {
          interval = std::chrono::milliseconds(response.heartbeat_interval_ms());
        }
        CRESCENT_LOG(info, "node {} registered with the conductor at {} (heartbeat every {} ms)",
                     options_.node.node_id(), options_.conductor_address, interval.count());
        continue;  // Beat at once: the conductor learns the load before the first request.
      }
      connected_.store(false);
      if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
          status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        // A misconfigured node (wrong model, block size) never becomes right by retrying fast.
        CRESCENT_LOG(error, "node {}: the conductor refused registration: {}",
                     options_.node.node_id(), status.error_message());
      } else if (!logged_unreachable) {
        CRESCENT_LOG(warn, "node {}: conductor {} unreachable ({}); retrying",
                     options_.node.node_id(), options_.conductor_address, status.error_message());
        logged_unreachable = true;
      }
    } else {
      grpc::ClientContext context;
      deadline(&context);
      v1::HeartbeatRequest request;
      request.set_node_id(options_.node.node_id());
      *request.mutable_load() = load_();
      request.mutable_load()->set_draining(draining_.load());
      request.set_sequence(++sequence);
      v1::HeartbeatResponse response;
      grpc::Status status = stub_->Heartbeat(&context, request, &response);
      if (status.ok() && response.reregister()) {
        CRESCENT_LOG(info, "node {}: the conductor does not know this node; registering again",
                     options_.node.node_id());
        registered = false;
        continue;
      }
      if (status.ok()) {
        connected_.store(true);
        heartbeats_.fetch_add(1);
        logged_unreachable = false;
      } else {
        connected_.store(false);
        if (!logged_unreachable) {
          CRESCENT_LOG(warn, "node {}: heartbeat to {} failed: {}", options_.node.node_id(),
                       options_.conductor_address, status.error_message());
          logged_unreachable = true;
        }
        // Unreachable for a while: the conductor may have restarted and forgotten us; the
        // answer to the next successful beat says so (reregister).
      }
    }
    stop_.WaitForNotificationWithTimeout(absl::FromChrono(interval));
  }
}

}  // namespace crescent::cluster
