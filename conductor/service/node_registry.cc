#include "conductor/service/node_registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "src/common/logging.h"

namespace crescent::conductor::service {

namespace v1 = cluster::v1;
namespace policy = conductor::policy;

policy::CostModel DefaultCostModel(int block_tokens, int64_t kv_bytes_per_token) {
  return policy::CostModel::FromCoefficients(
      /*prefill=*/{0.005, 5e-4, 1e-9}, /*decode=*/{0.01, 5e-4, 1e-7}, std::max(block_tokens, 1),
      std::max<int64_t>(kv_bytes_per_token, 1), /*bandwidth_bytes_per_s=*/1e9,
      /*latency_s=*/1e-4);
}

NodeRegistry::NodeRegistry(const NodeRegistryOptions& options, const Clock* clock)
    : options_(options), clock_(clock), block_tokens_(options.block_tokens) {}

std::shared_ptr<const policy::CostModel> NodeRegistry::CostFor(const v1::NodeInfo& info,
                                                               int block_tokens) const {
  const v1::CostProfile& p = info.profile();
  const policy::CostModel fallback = DefaultCostModel(block_tokens, options_.kv_bytes_per_token);
  // A prefill node measures prefill and transfer, a decode node its decode steps: each measured
  // half replaces the default's.
  if (p.prefill_size() >= 2 || p.decode_size() >= 2) {
    policy::CostProfile profile;
    profile.block_tokens = block_tokens;
    profile.kv_bytes_per_token = std::max<int64_t>(options_.kv_bytes_per_token, 1);
    profile.transfer_bandwidth_bytes_per_s = p.transfer_bytes_per_second();
    for (const auto& pt : p.prefill()) {
      profile.prefill.push_back({static_cast<int64_t>(pt.new_tokens()),
                                 static_cast<int64_t>(pt.cached_tokens()), pt.seconds()});
    }
    for (const auto& pt : p.decode()) {
      profile.decode.push_back(
          {static_cast<int>(pt.batch()), static_cast<int64_t>(pt.context()), pt.seconds()});
    }
    absl::StatusOr<policy::CostModel> fitted = policy::CostModel::FitOver(profile, fallback);
    if (fitted.ok()) return std::make_shared<const policy::CostModel>(*fitted);
    CRESCENT_LOG(warn, "node {}: unusable cost profile ({}); using the default cost model",
                 info.node_id(), std::string(fitted.status().message()));
  }
  return std::make_shared<const policy::CostModel>(fallback);
}

absl::StatusOr<v1::RegisterResponse> NodeRegistry::Register(const v1::NodeInfo& info) {
  if (info.node_id().empty()) return absl::InvalidArgumentError("node_id is empty");
  if (info.grpc_endpoint().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("node ", info.node_id(), ": grpc_endpoint is empty"));
  }
  if (info.role() != v1::ROLE_PREFILL && info.role() != v1::ROLE_DECODE) {
    return absl::InvalidArgumentError(
        absl::StrCat("node ", info.node_id(), ": role must be prefill or decode"));
  }
  if (info.block_tokens() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node ", info.node_id(), ": block_tokens must be at least 1, got ", info.block_tokens()));
  }
  if (info.model_fingerprint() != options_.model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        "node ", info.node_id(), " serves model '", info.model_id(), "' (fingerprint ",
        absl::Hex(info.model_fingerprint()), "), the conductor serves '", options_.model_id,
        "' (fingerprint ", absl::Hex(options_.model_fingerprint), ")"));
  }
  absl::MutexLock lock(&mu_);
  if (block_tokens_ != 0 && info.block_tokens() != block_tokens_) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", info.node_id(), " uses block_tokens ", info.block_tokens(),
                     ", the cluster uses block_tokens ", block_tokens_));
  }
  if (block_tokens_ == 0) block_tokens_ = info.block_tokens();
  std::unique_ptr<Node>& slot = nodes_[info.node_id()];
  if (slot == nullptr) slot = std::make_unique<Node>();
  Node& node = *slot;
  node.entry.info = info;
  node.entry.load = v1::NodeLoad();
  node.entry.load.set_free_blocks(info.total_blocks());
  node.entry.last_beat_ns = clock_->NowNanos();
  node.entry.suspect = false;
  node.cost = CostFor(info, block_tokens_);
  // A shrunk node keeps only as many held hashes as it can hold.
  while (static_cast<int64_t>(node.held_order.size()) > HeldCapacity(node)) {
    node.held.erase(node.held_order.front());
    node.held_order.pop_front();
  }
  CRESCENT_LOG(info, "registered {} node {} at {} ({} blocks of {} tokens)",
               info.role() == v1::ROLE_PREFILL ? "prefill" : "decode", info.node_id(),
               info.grpc_endpoint(), info.total_blocks(), info.block_tokens());
  v1::RegisterResponse response;
  response.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  return response;
}

v1::HeartbeatResponse NodeRegistry::Heartbeat(const v1::HeartbeatRequest& request) {
  v1::HeartbeatResponse response;
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(request.node_id());
  if (it == nodes_.end()) {
    response.set_reregister(true);
    return response;
  }
  Node& node = *it->second;
  if (request.load().draining() && !node.entry.load.draining()) {
    CRESCENT_LOG(info, "node {} is draining", request.node_id());
  }
  node.entry.load = request.load();
  node.entry.last_beat_ns = clock_->NowNanos();
  node.placed_blocks_since_beat = 0;
  node.entry.suspect = false;
  for (uint64_t h : request.load().cached_removed()) {
    auto held = node.held.find(h);
    if (held != node.held.end()) {
      node.held_order.erase(held->second);
      node.held.erase(held);
    }
  }
  for (uint64_t h : request.load().cached_added()) TouchHeld(&node, h);
  // The lists are not kept in the stored load: they are deltas, already applied.
  node.entry.load.clear_cached_added();
  node.entry.load.clear_cached_removed();
  return response;
}

void NodeRegistry::AddPlaced(std::string_view node_id, int64_t prefill_tokens,
                             int decode_requests, int64_t decode_context_tokens,
                             int64_t kv_blocks) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(std::string(node_id));
  if (it == nodes_.end()) return;
  Node& node = *it->second;
  node.placed_prefill_tokens = std::max<int64_t>(0, node.placed_prefill_tokens + prefill_tokens);
  node.placed_decode_requests =
      std::max<int64_t>(0, node.placed_decode_requests + decode_requests);
  node.placed_decode_context =
      std::max<int64_t>(0, node.placed_decode_context + decode_context_tokens);
  node.placed_blocks_since_beat += std::max<int64_t>(0, kv_blocks);
}

void NodeRegistry::MarkSuspect(std::string_view node_id) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(std::string(node_id));
  if (it != nodes_.end()) it->second->entry.suspect = true;
}

int64_t NodeRegistry::HeldCapacity(const Node& node) const {
  const int64_t total = node.entry.info.total_blocks();
  return std::max<int64_t>(
      1, std::min(total > 0 ? total : options_.max_held_blocks, options_.max_held_blocks));
}

void NodeRegistry::TouchHeld(Node* node, uint64_t hash) const {
  auto it = node->held.find(hash);
  if (it != node->held.end()) {
    node->held_order.splice(node->held_order.end(), node->held_order, it->second);
    return;
  }
  node->held_order.push_back(hash);
  node->held.emplace(hash, std::prev(node->held_order.end()));
  while (static_cast<int64_t>(node->held_order.size()) > HeldCapacity(*node)) {
    node->held.erase(node->held_order.front());
    node->held_order.pop_front();
  }
}

void NodeRegistry::RecordPrefill(std::string_view node_id, std::span<const uint64_t> hashes) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(std::string(node_id));
  if (it == nodes_.end()) return;
  for (uint64_t h : hashes) TouchHeld(it->second.get(), h);
}

bool NodeRegistry::Holds(std::string_view node_id, uint64_t hash) const {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(std::string(node_id));
  return it != nodes_.end() && it->second->held.contains(hash);
}

bool NodeRegistry::IsLive(const Node& node, int64_t now_ns) const {
  const double silent_s = static_cast<double>(now_ns - node.entry.last_beat_ns) * 1e-9;
  return silent_s <= options_.node_timeout_s && !node.entry.suspect && !node.entry.load.draining();
}

RegistrySnapshot NodeRegistry::Snapshot(const std::set<std::string>& excluded) const {
  RegistrySnapshot snap;
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->NowNanos();
  std::vector<const Node*> live;
  for (const auto& [id, node] : nodes_) {
    if (IsLive(*node, now) && !excluded.contains(id)) live.push_back(node.get());
  }
  // A stable order (by id), so that round-robin and ties are deterministic.
  std::sort(live.begin(), live.end(), [](const Node* a, const Node* b) {
    return a->entry.info.node_id() < b->entry.info.node_id();
  });
  for (const Node* node : live) {
    const v1::NodeInfo& info = node->entry.info;
    const v1::NodeLoad& load = node->entry.load;
    policy::NodeState s;
    s.id = info.node_id();
    s.role =
        info.role() == v1::ROLE_PREFILL ? policy::NodeRole::kPrefill : policy::NodeRole::kDecode;
    // The node's last report, or what this conductor has placed there since, if more.
    s.queued_prefill_tokens = std::max(load.queued_prefill_tokens(), node->placed_prefill_tokens);
    s.running_decode_batch = static_cast<int>(std::max<int64_t>(
        load.running_requests() + load.waiting_requests(), node->placed_decode_requests));
    s.decode_context_tokens =
        std::max(load.running_context_tokens(), node->placed_decode_context);
    s.free_kv_blocks = std::max<int64_t>(0, load.free_blocks() - node->placed_blocks_since_beat);
    if (s.role == policy::NodeRole::kPrefill) {
      s.holds_block = [this, id = s.id](uint64_t h) { return Holds(id, h); };
    }
    s.cost = node->cost.get();
    snap.nodes.push_back(std::move(s));
    snap.endpoints.push_back(info.grpc_endpoint());
    snap.costs.push_back(node->cost);
  }
  return snap;
}

std::optional<NodeEntry> NodeRegistry::Find(std::string_view node_id) const {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(std::string(node_id));
  if (it == nodes_.end()) return std::nullopt;
  return it->second->entry;
}

std::vector<NodeEntry> NodeRegistry::LiveNodes() const {
  std::vector<NodeEntry> out;
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->NowNanos();
  for (const auto& [id, node] : nodes_) {
    if (IsLive(*node, now)) out.push_back(node->entry);
  }
  return out;
}

LiveCounts NodeRegistry::CountLive() const {
  LiveCounts counts;
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->NowNanos();
  for (const auto& [id, node] : nodes_) {
    if (!IsLive(*node, now)) continue;
    if (node->entry.info.role() == v1::ROLE_PREFILL) {
      ++counts.prefill;
    } else {
      ++counts.decode;
    }
  }
  return counts;
}

int NodeRegistry::block_tokens() const {
  absl::MutexLock lock(&mu_);
  return block_tokens_;
}

grpc::Status RegistryService::Register(grpc::ServerContext* context,
                                       const v1::RegisterRequest* request,
                                       v1::RegisterResponse* response) {
  absl::StatusOr<v1::RegisterResponse> r = registry_->Register(request->node());
  if (!r.ok()) {
    CRESCENT_LOG(warn, "refused registration of node '{}': {}", request->node().node_id(),
                 std::string(r.status().message()));
    return ToGrpcStatus(r.status());
  }
  *response = *r;
  return grpc::Status::OK;
}

grpc::Status RegistryService::Heartbeat(grpc::ServerContext* context,
                                        const v1::HeartbeatRequest* request,
                                        v1::HeartbeatResponse* response) {
  *response = registry_->Heartbeat(*request);
  return grpc::Status::OK;
}

}  // namespace crescent::conductor::service
