// MasterState: the KV pool master's pure decision logic.
//
// Storage nodes register, heartbeat and mount segments (a DRAM or SSD byte range they serve).
// Objects are immutable blocks keyed by a 64-bit block hash; each has one or more replicas, each
// a range inside a segment. The master only does bookkeeping: it decides where bytes go, who may
// read what, and what to evict or move; storage nodes and clients move the bytes.
//
// No I/O, no threads, no wall clock: every call takes `now_ns` (monotonic nanoseconds, never
// decreasing between calls), so the same code runs in the gRPC service, in scenario tests and in
// the simulator. Protocol and consistency rules: docs/kvstore.md, "## KV master".
//
// Thread-safety: none. The service wraps one instance behind a mutex.
#ifndef CRESCENT_KVSTORE_MASTER_MASTER_STATE_H_
#define CRESCENT_KVSTORE_MASTER_MASTER_STATE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/master/allocator.h"

namespace crescent::kvstore::master {

enum class Tier { kDram = 0, kSsd = 1 };
std::string_view TierName(Tier tier);

// A key as the master prints it in messages: 16 lowercase hex digits.
std::string KeyHex(uint64_t key);

struct MasterConfig {
  int64_t put_timeout_ns = 30'000'000'000;   // A pending put not ended by then is revoked.
  int64_t lease_ns = 5'000'000'000;          // How long a Get protects what it returned.
  int64_t node_timeout_ns = 10'000'000'000;  // A node silent this long is dead.
  int64_t move_timeout_ns = 60'000'000'000;  // A move task not reported by then is cancelled.
  double high_watermark = 0.90;  // Eviction starts when a tier's used/capacity exceeds this...
  double low_watermark = 0.80;   // ...and stops once it is at or below this.
  bool demote_to_ssd = true;     // DRAM eviction moves blocks to SSD when there is room.
  bool promote_on_hit = true;    // A Get of an SSD-only block schedules a copy back to DRAM.
  uint64_t alignment = 64;       // Replica offsets and reserved lengths are multiples of this.
};

// Where one copy of an object's bytes lives.
struct Replica {
  std::string node_id;
  std::string endpoint;  // The node's transfer endpoint, as registered.
  std::string segment;
  Tier tier = Tier::kDram;
  uint64_t offset = 0;
  uint64_t length = 0;    // The object's size in bytes.
  uint64_t checksum = 0;  // XXH3-64 of the bytes, as given to PutEnd; 0 while pending.
};

struct PutSpec {
  uint64_t key = 0;
  uint64_t size = 0;
};

struct PutEndSpec {
  uint64_t key = 0;
  uint64_t checksum = 0;
};

struct GetResult {
  std::vector<Replica> replicas;  // Live replicas only, DRAM before SSD. Never empty.
  int64_t lease_expires_ns = 0;   // The replicas' bytes stay put until then.
  // Set when this Get scheduled a copy of an SSD-only object back to DRAM (see MoveTask).
  std::optional<uint64_t> promotion_task_id;
};

// A copy the destination node must perform: read `from`, write `to`, then report MoveDone.
// Until then readers keep being answered from `from`.
struct MoveTask {
  enum class Kind { kDemote, kPromote };
  uint64_t id = 0;
  Kind kind = Kind::kDemote;
  uint64_t key = 0;
  Replica from;
  Replica to;
  int64_t deadline_ns = 0;
};

// What one Tick did, for logs, metrics and tests.
struct TickReport {
  std::vector<std::string> dead_nodes;
  std::vector<uint64_t> expired_puts;     // Pending puts revoked for timeout.
  std::vector<uint64_t> evicted;          // Objects dropped entirely, in eviction order.
  std::vector<uint64_t> dropped_dram;     // DRAM replicas dropped because an SSD copy exists.
  std::vector<uint64_t> dropped_ssd;      // SSD replicas evicted while a DRAM copy remains.
  std::vector<uint64_t> lost;             // Objects whose last replica was on a dropped node.
  std::vector<MoveTask> new_moves;        // Demotions scheduled (also handed out by Heartbeat).
  std::vector<uint64_t> cancelled_moves;  // Task ids cancelled (timeout or node loss).
};

struct TierUsage {
  uint64_t used = 0;      // Bytes reserved: committed, pending, in-flight moves, deferred frees.
  uint64_t capacity = 0;  // Over segments of registered nodes.
};

class MasterState {
 public:
  // Errors: InvalidArgument if the config is inconsistent (watermarks outside (0,1] or
  // low > high, non-positive timeouts, alignment not a power of two).
  static absl::StatusOr<std::unique_ptr<MasterState>> Create(const MasterConfig& config);

  MasterState(const MasterState&) = delete;
  MasterState& operator=(const MasterState&) = delete;

  // ---- Nodes and segments ----

  // Adds a node, alive as of now_ns. A registered id whose node has been silent for
  // node_timeout_ns is dropped first, as a Tick would (a restarted node starts over, empty).
  // Errors: InvalidArgument (empty id); AlreadyExists if the id's node is alive.
  absl::Status RegisterNode(std::string_view node_id, std::string_view endpoint, int64_t now_ns);

  // Records that the node is alive and hands it the move tasks it must perform that it has not
  // been given yet. Errors: NotFound if the node is unknown or was declared dead (it must
  // register and mount again: its old data is gone from the master's view).
  absl::StatusOr<std::vector<MoveTask>> Heartbeat(std::string_view node_id, int64_t now_ns);

  // Adds a segment of `capacity_bytes` served by a registered node. Errors: NotFound (node),
  // AlreadyExists (segment name is global), InvalidArgument (empty name, capacity smaller than
  // one alignment unit).
  absl::Status MountSegment(std::string_view node_id, std::string_view segment, Tier tier,
                            uint64_t capacity_bytes, int64_t now_ns);

  // Removes a segment; replicas in it vanish (objects left without replicas are dropped,
  // pending puts and moves touching it are revoked/cancelled). Errors: NotFound.
  absl::Status UnmountSegment(std::string_view segment, int64_t now_ns);

  // ---- Two-phase put ----

  // Reserves space for `replica_count` copies of each object on distinct live nodes. Each copy
  // goes to the DRAM segment with the most free bytes among nodes not yet used for the object;
  // SSD is used only when no such node has a DRAM segment that fits. The objects are pending:
  // invisible to Exists/Get/LongestPrefix until PutEnd. A pending put is revoked by PutRevoke,
  // by put_timeout_ns passing, or by the loss of one of its nodes or segments. Returned
  // replicas carry checksum 0. Per-key errors: InvalidArgument (size 0, replica_count < 1),
  // AlreadyExists (key pending or committed, including earlier in the same batch),
  // ResourceExhausted (fewer than replica_count live nodes with room; PutStart does not evict,
  // Tick does). A failed key reserves nothing.
  std::vector<absl::StatusOr<std::vector<Replica>>> BatchPutStart(std::span<const PutSpec> puts,
                                                                  int replica_count,
                                                                  int64_t now_ns);
  absl::StatusOr<std::vector<Replica>> PutStart(uint64_t key, uint64_t size, int replica_count,
                                                int64_t now_ns);

  // Commits a pending put: its replicas become visible with `checksum`. Errors: NotFound (no
  // such pending put, e.g. already revoked), FailedPrecondition (already committed),
  // DeadlineExceeded (put timeout passed; the put is revoked), Unavailable (a replica's node is
  // dead or its segment unmounted; the put is revoked).
  std::vector<absl::Status> BatchPutEnd(std::span<const PutEndSpec> ends, int64_t now_ns);
  absl::Status PutEnd(uint64_t key, uint64_t checksum, int64_t now_ns);

  // Abandons a pending put and frees its space. Errors: NotFound, FailedPrecondition
  // (committed objects are immutable; they leave only by eviction or node loss).
  absl::Status PutRevoke(uint64_t key, int64_t now_ns);

  // ---- Reads ----

  // Whether each key is committed with at least one live replica. No lease, no LRU touch.
  std::vector<bool> BatchExists(std::span<const uint64_t> keys, int64_t now_ns) const;

  // Returns each object's live replicas and leases them for lease_ns: until the lease expires
  // the returned ranges are neither evicted nor reused (only node loss can take them). Marks the
  // object recently used. Errors per key: NotFound (absent, pending, or no live replica).
  std::vector<absl::StatusOr<GetResult>> BatchGet(std::span<const uint64_t> keys, int64_t now_ns);
  absl::StatusOr<GetResult> Get(uint64_t key, int64_t now_ns);

  // How many leading keys of a block-hash chain are committed with a live replica. Read-only.
  size_t LongestPrefix(std::span<const uint64_t> keys, int64_t now_ns) const;

  // Keeps a committed object from eviction until now_ns + ttl_ns (extends, never shortens).
  // Errors: NotFound, InvalidArgument (ttl_ns < 0).
  absl::Status PinFor(uint64_t key, int64_t ttl_ns, int64_t now_ns);

  // ---- Maintenance ----

  // Declares silent nodes dead (dropping their replicas and revoking their pending puts),
  // revokes expired pending puts, cancels overdue moves, releases space whose lease expired,
  // and evicts per tier while usage is above the high watermark. Call it periodically.
  TickReport Tick(int64_t now_ns);

  // Reports a move task's outcome. On OK, a demotion replaces the object's DRAM replicas with
  // the SSD one, a promotion adds the DRAM replica; space still under lease is freed once the
  // lease expires. On error the destination space is freed and the object is unchanged.
  // Errors: NotFound (unknown or cancelled task).
  absl::Status MoveDone(uint64_t task_id, const absl::Status& result, int64_t now_ns);

  // ---- Introspection ----

  // The live replicas of a committed object, like Get but without lease, LRU touch or
  // promotion (for admin tools and tests). Errors: NotFound as Get.
  absl::StatusOr<std::vector<Replica>> PeekReplicas(uint64_t key, int64_t now_ns) const;
  TierUsage Usage(Tier tier) const;
  std::vector<MoveTask> PendingMoves() const;  // In id order.
  size_t committed_count() const;
  size_t pending_count() const;
  bool IsNodeAlive(std::string_view node_id, int64_t now_ns) const;

 private:
  struct Node {
    std::string endpoint;
    int64_t last_heartbeat_ns = 0;
    std::vector<std::string> segments;
  };
  struct Segment {
    std::string node_id;
    Tier tier;
    RangeAllocator allocator;
  };
  struct Object {
    uint64_t size = 0;
    bool committed = false;
    int64_t put_deadline_ns = 0;  // Pending only.
    int64_t lease_expires_ns = 0;
    int64_t pin_expires_ns = 0;
    int64_t last_access_ns = 0;
    uint64_t access_seq = 0;  // Breaks LRU ties deterministically.
    uint64_t move_task = 0;   // Nonzero while a move of this object is in flight.
    std::vector<Replica> replicas;
  };
  struct DeferredFree {
    std::string segment;
    uint64_t offset;
    int64_t release_ns;
  };
  struct Move {
    MoveTask task;
    bool delivered = false;
  };

  explicit MasterState(const MasterConfig& config) : config_(config) {}

  bool Alive(const Node& node, int64_t now_ns) const;
  bool ReplicaLive(const Replica& r, int64_t now_ns) const;
  bool HasLiveReplica(const Object& obj, int64_t now_ns) const;
  void Touch(Object& obj, int64_t now_ns);

  // Picks a segment of `tier` on `node_id` (or on any live node not in `exclude` when node_id is
  // empty) with the most free space that fits `size`; nullptr if none.
  const std::string* PickSegment(Tier tier, uint64_t size, std::string_view node_id,
                                 const std::vector<std::string>& exclude, int64_t now_ns) const;
  absl::StatusOr<Replica> AllocateOn(const std::string& segment, uint64_t size);
  // Frees a replica's range now, or when `lease_expires_ns` passes if that is later.
  void ReleaseReplica(const Replica& r, int64_t lease_expires_ns, int64_t now_ns);
  void RevokePending(uint64_t key, int64_t now_ns);
  void CancelMove(uint64_t task_id, int64_t now_ns);
  void DropSegment(const std::string& segment, int64_t now_ns, TickReport* report);
  void DropNode(const std::string& node_id, int64_t now_ns, TickReport* report);
  void EvictTier(Tier tier, int64_t now_ns, TickReport* report);

  MasterConfig config_;
  std::map<std::string, Node, std::less<>> nodes_;
  std::map<std::string, Segment, std::less<>> segments_;
  absl::flat_hash_map<uint64_t, Object> objects_;
  std::map<uint64_t, Move> moves_;  // By task id.
  std::vector<DeferredFree> deferred_frees_;
  uint64_t next_task_id_ = 1;
  uint64_t next_access_seq_ = 1;
};

}  // namespace crescent::kvstore::master

#endif  // CRESCENT_KVSTORE_MASTER_MASTER_STATE_H_
