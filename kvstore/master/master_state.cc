#include "kvstore/master/master_state.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/status.h"

namespace crescent::kvstore::master {
namespace {

std::string Quote(std::string_view s) {
  return absl::StrCat("\"", absl::string_view(s.data(), s.size()), "\"");
}

}  // namespace

std::string_view TierName(Tier tier) { return tier == Tier::kDram ? "dram" : "ssd"; }

std::string KeyHex(uint64_t key) { return absl::StrFormat("%016x", key); }

absl::StatusOr<std::unique_ptr<MasterState>> MasterState::Create(const MasterConfig& config) {
  if (!(config.high_watermark > 0.0 && config.high_watermark <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("high_watermark ", config.high_watermark, " is outside (0, 1]"));
  }
  if (!(config.low_watermark > 0.0 && config.low_watermark <= config.high_watermark)) {
    return absl::InvalidArgumentError(absl::StrCat("low_watermark ", config.low_watermark,
                                                   " is outside (0, high_watermark ",
                                                   config.high_watermark, "]"));
  }
  if (config.put_timeout_ns <= 0 || config.lease_ns <= 0 || config.node_timeout_ns <= 0 ||
      config.move_timeout_ns <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "timeouts must be positive (put ", config.put_timeout_ns, " ns, lease ", config.lease_ns,
        " ns, node ", config.node_timeout_ns, " ns, move ", config.move_timeout_ns, " ns)"));
  }
  if (config.alignment == 0 || (config.alignment & (config.alignment - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("alignment ", config.alignment, " is not a power of two"));
  }
  return std::unique_ptr<MasterState>(new MasterState(config));
}

// ---- Helpers ----

bool MasterState::Alive(const Node& node, int64_t now_ns) const {
  return now_ns - node.last_heartbeat_ns <= config_.node_timeout_ns;
}

bool MasterState::IsNodeAlive(std::string_view node_id, int64_t now_ns) const {
  auto it = nodes_.find(node_id);
  return it != nodes_.end() && Alive(it->second, now_ns);
}

bool MasterState::ReplicaLive(const Replica& r, int64_t now_ns) const {
  return segments_.contains(r.segment) && IsNodeAlive(r.node_id, now_ns);
}

bool MasterState::HasLiveReplica(const Object& obj, int64_t now_ns) const {
  return std::any_of(obj.replicas.begin(), obj.replicas.end(),
                     [&](const Replica& r) { return ReplicaLive(r, now_ns); });
}

void MasterState::Touch(Object& obj, int64_t now_ns) {
  obj.last_access_ns = now_ns;
  obj.access_seq = next_access_seq_++;
}

const std::string* MasterState::PickSegment(Tier tier, uint64_t size, std::string_view node_id,
                                            const std::vector<std::string>& exclude,
                                            int64_t now_ns) const {
  const std::string* best = nullptr;
  uint64_t best_free = 0;
  for (const auto& [name, seg] : segments_) {
    if (seg.tier != tier) continue;
    if (!node_id.empty() && seg.node_id != node_id) continue;
    if (std::find(exclude.begin(), exclude.end(), seg.node_id) != exclude.end()) continue;
    if (!IsNodeAlive(seg.node_id, now_ns) || !seg.allocator.CanAllocate(size)) continue;
    if (best == nullptr || seg.allocator.free_bytes() > best_free) {
      best = &name;
      best_free = seg.allocator.free_bytes();
    }
  }
  return best;
}

absl::StatusOr<Replica> MasterState::AllocateOn(const std::string& segment, uint64_t size) {
  auto it = segments_.find(segment);
  if (it == segments_.end()) return absl::NotFoundError(absl::StrCat("segment ", Quote(segment)));
  auto extent = it->second.allocator.Allocate(size);
  if (!extent.ok()) {
    return crescent::Annotate(extent.status(), absl::StrCat("segment ", Quote(segment)));
  }
  Replica r;
  r.node_id = it->second.node_id;
  r.endpoint = nodes_.find(r.node_id)->second.endpoint;
  r.segment = segment;
  r.tier = it->second.tier;
  r.offset = extent->offset;
  r.length = size;
  return r;
}

void MasterState::ReleaseReplica(const Replica& r, int64_t lease_expires_ns, int64_t now_ns) {
  if (lease_expires_ns > now_ns) {
    deferred_frees_.push_back({r.segment, r.offset, lease_expires_ns});
    return;
  }
  auto it = segments_.find(r.segment);
  // A replica in an unmounted segment has no space left to free.
  if (it != segments_.end()) (void)it->second.allocator.Free(r.offset);
}

void MasterState::RevokePending(uint64_t key, int64_t now_ns) {
  auto it = objects_.find(key);
  if (it == objects_.end()) return;
  for (const Replica& r : it->second.replicas) ReleaseReplica(r, 0, now_ns);
  objects_.erase(it);
}

void MasterState::CancelMove(uint64_t task_id, int64_t now_ns) {
  auto it = moves_.find(task_id);
  if (it == moves_.end()) return;
  // The destination was never visible to readers, so its space is free at once.
  ReleaseReplica(it->second.task.to, 0, now_ns);
  auto obj = objects_.find(it->second.task.key);
  if (obj != objects_.end() && obj->second.move_task == task_id) obj->second.move_task = 0;
  moves_.erase(it);
}

TierUsage MasterState::Usage(Tier tier) const {
  TierUsage usage;
  for (const auto& [name, seg] : segments_) {
    if (seg.tier != tier) continue;
    usage.used += seg.allocator.used();
    usage.capacity += seg.allocator.capacity();
  }
  return usage;
}

std::vector<MoveTask> MasterState::PendingMoves() const {
  std::vector<MoveTask> out;
  for (const auto& [id, move] : moves_) out.push_back(move.task);
  return out;
}

size_t MasterState::committed_count() const {
  return std::count_if(objects_.begin(), objects_.end(),
                       [](const auto& kv) { return kv.second.committed; });
}

size_t MasterState::pending_count() const { return objects_.size() - committed_count(); }

// ---- Nodes and segments ----

absl::Status MasterState::RegisterNode(std::string_view node_id, std::string_view endpoint,
                                       int64_t now_ns) {
  if (node_id.empty()) return absl::InvalidArgumentError("empty node id");
  if (auto it = nodes_.find(node_id); it != nodes_.end()) {
    if (Alive(it->second, now_ns)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "node ", Quote(node_id), " is registered and alive (last heartbeat ",
          (now_ns - it->second.last_heartbeat_ns) / 1'000'000,
          " ms ago); a restarted node can register once its previous incarnation has been silent "
          "for ",
          config_.node_timeout_ns / 1'000'000, " ms"));
    }
    // A previous incarnation the next Tick would declare dead: it is, and this one starts over.
    DropNode(std::string(node_id), now_ns, nullptr);
  }
  Node node;
  node.endpoint = std::string(endpoint);
  node.last_heartbeat_ns = now_ns;
  nodes_.emplace(std::string(node_id), std::move(node));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<MoveTask>> MasterState::Heartbeat(std::string_view node_id,
                                                             int64_t now_ns) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat("node ", Quote(node_id), " is not registered"));
  }
  if (!Alive(it->second, now_ns)) {
    // Readers have already stopped seeing this node's replicas; reviving them silently would
    // resurrect data the master may have answered as gone. The node starts over.
    const int64_t silent_ns = now_ns - it->second.last_heartbeat_ns;
    DropNode(std::string(node_id), now_ns, nullptr);
    return absl::NotFoundError(absl::StrCat("node ", Quote(node_id), " was silent for ", silent_ns,
                                            " ns and was declared dead; register again"));
  }
  it->second.last_heartbeat_ns = now_ns;
  std::vector<MoveTask> tasks;
  for (auto& [id, move] : moves_) {
    if (!move.delivered && move.task.to.node_id == node_id) {
      move.delivered = true;
      tasks.push_back(move.task);
    }
  }
  return tasks;
}

absl::Status MasterState::MountSegment(std::string_view node_id, std::string_view segment,
                                       Tier tier, uint64_t capacity_bytes, int64_t now_ns) {
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat("mounting segment ", Quote(segment), ": node ",
                                            Quote(node_id), " is not registered"));
  }
  if (segment.empty()) return absl::InvalidArgumentError("empty segment name");
  if (segments_.contains(segment)) {
    return absl::AlreadyExistsError(absl::StrCat("segment ", Quote(segment), " is mounted"));
  }
  if (capacity_bytes < config_.alignment) {
    return absl::InvalidArgumentError(absl::StrCat("segment ", Quote(segment), " capacity ",
                                                   capacity_bytes, " is below the alignment ",
                                                   config_.alignment));
  }
  segments_.emplace(
      std::string(segment),
      Segment{std::string(node_id), tier, RangeAllocator(capacity_bytes, config_.alignment)});
  node->second.segments.push_back(std::string(segment));
  return absl::OkStatus();
}

absl::Status MasterState::UnmountSegment(std::string_view segment, int64_t now_ns) {
  if (!segments_.contains(segment)) {
    return absl::NotFoundError(absl::StrCat("segment ", Quote(segment), " is not mounted"));
  }
  DropSegment(std::string(segment), now_ns, nullptr);
  return absl::OkStatus();
}

void MasterState::DropSegment(const std::string& segment, int64_t now_ns, TickReport* report) {
  std::vector<uint64_t> cancel;
  for (const auto& [id, move] : moves_) {
    if (move.task.from.segment == segment || move.task.to.segment == segment) cancel.push_back(id);
  }
  for (uint64_t id : cancel) {
    CancelMove(id, now_ns);
    if (report != nullptr) report->cancelled_moves.push_back(id);
  }

  std::vector<uint64_t> revoke;
  std::vector<uint64_t> lost;
  for (auto& [key, obj] : objects_) {
    auto in_segment = [&](const Replica& r) { return r.segment == segment; };
    if (std::none_of(obj.replicas.begin(), obj.replicas.end(), in_segment)) continue;
    if (!obj.committed) {
      revoke.push_back(key);
      continue;
    }
    std::erase_if(obj.replicas, in_segment);
    if (obj.replicas.empty()) lost.push_back(key);
  }
  auto seg = segments_.find(segment);
  auto node = nodes_.find(seg->second.node_id);
  if (node != nodes_.end()) std::erase(node->second.segments, segment);
  segments_.erase(seg);  // Before revoking, so that nothing is freed into the dropped segment.
  // A segment mounted later under the same name must not receive these frees.
  std::erase_if(deferred_frees_, [&](const DeferredFree& f) { return f.segment == segment; });
  for (uint64_t key : revoke) RevokePending(key, now_ns);
  for (uint64_t key : lost) objects_.erase(key);
  if (report != nullptr) report->lost.insert(report->lost.end(), lost.begin(), lost.end());
}

void MasterState::DropNode(const std::string& node_id, int64_t now_ns, TickReport* report) {
  auto node = nodes_.find(node_id);
  if (node == nodes_.end()) return;
  const std::vector<std::string> segments = node->second.segments;
  for (const std::string& segment : segments) DropSegment(segment, now_ns, report);
  nodes_.erase(node_id);
  if (report != nullptr) report->dead_nodes.push_back(node_id);
}

// ---- Two-phase put ----

absl::StatusOr<std::vector<Replica>> MasterState::PutStart(uint64_t key, uint64_t size,
                                                           int replica_count, int64_t now_ns) {
  if (size == 0) {
    return absl::InvalidArgumentError(absl::StrCat("block ", KeyHex(key), ": size 0"));
  }
  if (replica_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("block ", KeyHex(key), ": replica count ", replica_count, " < 1"));
  }
  if (auto it = objects_.find(key); it != objects_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("block ", KeyHex(key), " already exists (",
                                                 it->second.committed ? "committed" : "pending",
                                                 ")"));
  }
  std::vector<std::string> used_nodes;
  std::vector<Replica> replicas;
  for (int i = 0; i < replica_count; ++i) {
    const std::string* segment = PickSegment(Tier::kDram, size, "", used_nodes, now_ns);
    if (segment == nullptr) segment = PickSegment(Tier::kSsd, size, "", used_nodes, now_ns);
    absl::StatusOr<Replica> replica = segment == nullptr
                                          ? absl::ResourceExhaustedError("no segment fits")
                                          : AllocateOn(*segment, size);
    if (!replica.ok()) {
      for (const Replica& r : replicas) ReleaseReplica(r, 0, now_ns);
      return absl::ResourceExhaustedError(absl::StrCat(
          "block ", KeyHex(key), ": placed ", i, " of ", replica_count, " replicas of ", size,
          " bytes; no other live node has a segment with room"));
    }
    used_nodes.push_back(replica->node_id);
    replicas.push_back(*std::move(replica));
  }
  Object obj;
  obj.size = size;
  obj.put_deadline_ns = now_ns + config_.put_timeout_ns;
  obj.replicas = replicas;
  Touch(obj, now_ns);
  objects_.emplace(key, std::move(obj));
  return replicas;
}

std::vector<absl::StatusOr<std::vector<Replica>>> MasterState::BatchPutStart(
    std::span<const PutSpec> puts, int replica_count, int64_t now_ns) {
  std::vector<absl::StatusOr<std::vector<Replica>>> out;
  out.reserve(puts.size());
  for (const PutSpec& put : puts) out.push_back(PutStart(put.key, put.size, replica_count, now_ns));
  return out;
}

absl::Status MasterState::PutEnd(uint64_t key, uint64_t checksum, int64_t now_ns) {
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return absl::NotFoundError(absl::StrCat("no pending put of block ", KeyHex(key)));
  }
  Object& obj = it->second;
  if (obj.committed) {
    return absl::FailedPreconditionError(
        absl::StrCat("block ", KeyHex(key), " is already committed"));
  }
  if (now_ns >= obj.put_deadline_ns) {
    RevokePending(key, now_ns);
    return absl::DeadlineExceededError(
        absl::StrCat("put of block ", KeyHex(key), " passed its timeout and was revoked"));
  }
  for (const Replica& r : obj.replicas) {
    if (!ReplicaLive(r, now_ns)) {
      const std::string where =
          absl::StrCat("node ", Quote(r.node_id), " segment ", Quote(r.segment));
      RevokePending(key, now_ns);
      return absl::UnavailableError(
          absl::StrCat("put of block ", KeyHex(key), ": ", where, " is gone; the put was revoked"));
    }
  }
  obj.committed = true;
  for (Replica& r : obj.replicas) r.checksum = checksum;
  Touch(obj, now_ns);
  return absl::OkStatus();
}

std::vector<absl::Status> MasterState::BatchPutEnd(std::span<const PutEndSpec> ends,
                                                   int64_t now_ns) {
  std::vector<absl::Status> out;
  out.reserve(ends.size());
  for (const PutEndSpec& end : ends) out.push_back(PutEnd(end.key, end.checksum, now_ns));
  return out;
}

absl::Status MasterState::PutRevoke(uint64_t key, int64_t now_ns) {
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return absl::NotFoundError(absl::StrCat("no pending put of block ", KeyHex(key)));
  }
  if (it->second.committed) {
    return absl::FailedPreconditionError(
        absl::StrCat("block ", KeyHex(key), " is committed and cannot be revoked"));
  }
  RevokePending(key, now_ns);
  return absl::OkStatus();
}

// ---- Reads ----

std::vector<bool> MasterState::BatchExists(std::span<const uint64_t> keys, int64_t now_ns) const {
  std::vector<bool> out;
  out.reserve(keys.size());
  for (uint64_t key : keys) {
    auto it = objects_.find(key);
    out.push_back(it != objects_.end() && it->second.committed &&
                  HasLiveReplica(it->second, now_ns));
  }
  return out;
}

size_t MasterState::LongestPrefix(std::span<const uint64_t> keys, int64_t now_ns) const {
  size_t n = 0;
  for (uint64_t key : keys) {
    auto it = objects_.find(key);
    if (it == objects_.end() || !it->second.committed || !HasLiveReplica(it->second, now_ns)) {
      break;
    }
    ++n;
  }
  return n;
}

absl::StatusOr<GetResult> MasterState::Get(uint64_t key, int64_t now_ns) {
  auto it = objects_.find(key);
  if (it == objects_.end() || !it->second.committed) {
    return absl::NotFoundError(absl::StrCat("block ", KeyHex(key), " not found"));
  }
  Object& obj = it->second;
  GetResult result;
  for (const Replica& r : obj.replicas) {
    if (ReplicaLive(r, now_ns)) result.replicas.push_back(r);
  }
  if (result.replicas.empty()) {
    return absl::NotFoundError(absl::StrCat("block ", KeyHex(key), " has no live replica"));
  }
  std::stable_sort(result.replicas.begin(), result.replicas.end(),
                   [](const Replica& a, const Replica& b) { return a.tier < b.tier; });
  obj.lease_expires_ns = std::max(obj.lease_expires_ns, now_ns + config_.lease_ns);
  result.lease_expires_ns = obj.lease_expires_ns;
  Touch(obj, now_ns);

  // Promotion: an SSD-only hit is answered from SSD now, and a copy to DRAM is scheduled if
  // that does not push DRAM past its high watermark (which would only cause a demotion).
  if (config_.promote_on_hit && obj.move_task == 0 && result.replicas.front().tier == Tier::kSsd) {
    const TierUsage dram = Usage(Tier::kDram);
    const std::string* segment = PickSegment(Tier::kDram, obj.size, "", {}, now_ns);
    if (segment != nullptr) {
      const uint64_t reserve = segments_.find(*segment)->second.allocator.RoundUp(obj.size);
      if (static_cast<double>(dram.used + reserve) <=
          config_.high_watermark * static_cast<double>(dram.capacity)) {
        absl::StatusOr<Replica> to = AllocateOn(*segment, obj.size);
        if (to.ok()) {
          to->checksum = result.replicas.front().checksum;
          Move move;
          move.task.id = next_task_id_++;
          move.task.kind = MoveTask::Kind::kPromote;
          move.task.key = key;
          move.task.from = result.replicas.front();
          move.task.to = *std::move(to);
          move.task.deadline_ns = now_ns + config_.move_timeout_ns;
          obj.move_task = move.task.id;
          result.promotion_task_id = move.task.id;
          moves_.emplace(move.task.id, std::move(move));
        }
      }
    }
  }
  return result;
}

absl::StatusOr<std::vector<Replica>> MasterState::PeekReplicas(uint64_t key, int64_t now_ns) const {
  auto it = objects_.find(key);
  if (it == objects_.end() || !it->second.committed) {
    return absl::NotFoundError(absl::StrCat("block ", KeyHex(key), " not found"));
  }
  std::vector<Replica> out;
  for (const Replica& r : it->second.replicas) {
    if (ReplicaLive(r, now_ns)) out.push_back(r);
  }
  if (out.empty()) {
    return absl::NotFoundError(absl::StrCat("block ", KeyHex(key), " has no live replica"));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Replica& a, const Replica& b) { return a.tier < b.tier; });
  return out;
}

std::vector<absl::StatusOr<GetResult>> MasterState::BatchGet(std::span<const uint64_t> keys,
                                                             int64_t now_ns) {
  std::vector<absl::StatusOr<GetResult>> out;
  out.reserve(keys.size());
  for (uint64_t key : keys) out.push_back(Get(key, now_ns));
  return out;
}

absl::Status MasterState::PinFor(uint64_t key, int64_t ttl_ns, int64_t now_ns) {
  if (ttl_ns < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pin of block ", KeyHex(key), ": negative ttl ", ttl_ns, " ns"));
  }
  auto it = objects_.find(key);
  if (it == objects_.end() || !it->second.committed) {
    return absl::NotFoundError(absl::StrCat("pin of block ", KeyHex(key), ": not found"));
  }
  it->second.pin_expires_ns = std::max(it->second.pin_expires_ns, now_ns + ttl_ns);
  return absl::OkStatus();
}

// ---- Maintenance ----

absl::Status MasterState::MoveDone(uint64_t task_id, const absl::Status& result, int64_t now_ns) {
  auto it = moves_.find(task_id);
  if (it == moves_.end()) {
    return absl::NotFoundError(absl::StrCat("move task ", task_id, " is unknown or cancelled"));
  }
  if (!result.ok()) {
    CancelMove(task_id, now_ns);
    return absl::OkStatus();
  }
  MoveTask task = std::move(it->second.task);
  moves_.erase(it);
  Object& obj = objects_.find(task.key)->second;  // Objects with a move in flight stay.
  obj.move_task = 0;
  if (task.kind == MoveTask::Kind::kDemote) {
    std::vector<Replica> kept;
    for (Replica& r : obj.replicas) {
      if (r.tier == Tier::kDram) {
        ReleaseReplica(r, obj.lease_expires_ns, now_ns);
      } else {
        kept.push_back(std::move(r));
      }
    }
    obj.replicas = std::move(kept);
  }
  obj.replicas.push_back(std::move(task.to));
  return absl::OkStatus();
}

void MasterState::EvictTier(Tier tier, int64_t now_ns, TickReport* report) {
  const TierUsage usage = Usage(tier);
  const double cap = static_cast<double>(usage.capacity);
  // Demotions in flight will free their source copies: count them as gone already, or every
  // Tick before the storage node reports would schedule another batch.
  double projected = static_cast<double>(usage.used);
  for (const auto& [id, move] : moves_) {
    if (move.task.kind != MoveTask::Kind::kDemote || tier != Tier::kDram) continue;
    const Object& obj = objects_.find(move.task.key)->second;
    for (const Replica& r : obj.replicas) {
      auto seg = segments_.find(r.segment);
      if (r.tier == tier && seg != segments_.end()) {
        projected -= static_cast<double>(seg->second.allocator.RoundUp(r.length));
      }
    }
  }
  if (usage.capacity == 0 || projected <= config_.high_watermark * cap) return;
  const double target = config_.low_watermark * cap;

  std::vector<std::tuple<int64_t, uint64_t, uint64_t>> lru;  // (last access, seq, key)
  for (const auto& [key, obj] : objects_) {
    if (!obj.committed || obj.move_task != 0 || obj.lease_expires_ns > now_ns ||
        obj.pin_expires_ns > now_ns) {
      continue;
    }
    if (std::none_of(obj.replicas.begin(), obj.replicas.end(),
                     [&](const Replica& r) { return r.tier == tier; })) {
      continue;
    }
    lru.emplace_back(obj.last_access_ns, obj.access_seq, key);
  }
  std::sort(lru.begin(), lru.end());

  for (const auto& [last_access, seq, key] : lru) {
    if (projected <= target) break;
    Object& obj = objects_.find(key)->second;
    uint64_t tier_bytes = 0;
    bool other_tier = false;
    for (const Replica& r : obj.replicas) {
      if (r.tier == tier) {
        tier_bytes += segments_.find(r.segment)->second.allocator.RoundUp(r.length);
      } else {
        other_tier = true;
      }
    }
    projected -= static_cast<double>(tier_bytes);

    if (other_tier) {  // Drop this tier's copies; the object lives on in the other tier.
      std::erase_if(obj.replicas, [&](const Replica& r) {
        if (r.tier != tier) return false;
        ReleaseReplica(r, 0, now_ns);
        return true;
      });
      (tier == Tier::kDram ? report->dropped_dram : report->dropped_ssd).push_back(key);
      continue;
    }
    if (tier == Tier::kDram && config_.demote_to_ssd) {
      const Replica& from = obj.replicas.front();
      const std::string* segment = PickSegment(Tier::kSsd, obj.size, from.node_id, {}, now_ns);
      if (segment == nullptr) segment = PickSegment(Tier::kSsd, obj.size, "", {}, now_ns);
      if (segment != nullptr) {
        absl::StatusOr<Replica> to = AllocateOn(*segment, obj.size);
        if (to.ok()) {
          to->checksum = from.checksum;
          Move move;
          move.task.id = next_task_id_++;
          move.task.kind = MoveTask::Kind::kDemote;
          move.task.key = key;
          move.task.from = from;
          move.task.to = *std::move(to);
          move.task.deadline_ns = now_ns + config_.move_timeout_ns;
          obj.move_task = move.task.id;
          report->new_moves.push_back(move.task);
          moves_.emplace(move.task.id, std::move(move));
          continue;
        }
      }
    }
    for (const Replica& r : obj.replicas) ReleaseReplica(r, 0, now_ns);
    objects_.erase(key);
    report->evicted.push_back(key);
  }
}

TickReport MasterState::Tick(int64_t now_ns) {
  TickReport report;
  std::vector<std::string> dead;
  for (const auto& [id, node] : nodes_) {
    if (!Alive(node, now_ns)) dead.push_back(id);
  }
  for (const std::string& id : dead) DropNode(id, now_ns, &report);

  for (const auto& [key, obj] : objects_) {
    if (!obj.committed && now_ns >= obj.put_deadline_ns) report.expired_puts.push_back(key);
  }
  std::sort(report.expired_puts.begin(), report.expired_puts.end());
  for (uint64_t key : report.expired_puts) RevokePending(key, now_ns);

  std::vector<uint64_t> overdue;
  for (const auto& [id, move] : moves_) {
    if (now_ns >= move.task.deadline_ns) overdue.push_back(id);
  }
  for (uint64_t id : overdue) {
    CancelMove(id, now_ns);
    report.cancelled_moves.push_back(id);
  }

  std::erase_if(deferred_frees_, [&](const DeferredFree& f) {
    if (f.release_ns > now_ns) return false;
    auto seg = segments_.find(f.segment);
    if (seg != segments_.end()) (void)seg->second.allocator.Free(f.offset);
    return true;
  });

  EvictTier(Tier::kDram, now_ns, &report);
  EvictTier(Tier::kSsd, now_ns, &report);
  return report;
}

}  // namespace crescent::kvstore::master
