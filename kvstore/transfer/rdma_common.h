// The parts of the rdma transport that need no NIC: what travels in the segment directory and in
// the connection exchange, how a transfer is cut into work requests, how segment offsets become
// remote addresses and local addresses become lkeys, the queue-pair state machine and the
// attributes of each transition, and what a work completion's status means. Pure functions and
// plain data structures; unit-tested without a device (tests/kvstore/transfer/rdma_common_test).
#ifndef CRESCENT_KVSTORE_TRANSFER_RDMA_COMMON_H_
#define CRESCENT_KVSTORE_TRANSFER_RDMA_COMMON_H_

#include <infiniband/verbs.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::kvstore::rdma {

using Gid = std::array<uint8_t, 16>;

// The segment directory's rdma blob: how to address one registered segment.
struct SegmentInfo {
  Gid gid{};
  uint16_t lid = 0;
  uint8_t port = 1;
  uint8_t mtu = IBV_MTU_1024;  // an ibv_mtu value
  uint64_t addr = 0;           // virtual address the rkey covers from
  uint64_t length = 0;
  uint32_t rkey = 0;
  bool operator==(const SegmentInfo&) const = default;
};

// One side of a reliable-connection queue pair, sent through the control channel.
struct ConnInfo {
  uint64_t connection_id = 0;  // chosen by the initiator; the target echoes it
  Gid gid{};
  uint16_t lid = 0;
  uint8_t port = 1;
  uint8_t mtu = IBV_MTU_1024;
  uint32_t qp_num = 0;  // 24 bits
  uint32_t psn = 0;     // 24 bits: the first packet sequence number this side sends
  bool operator==(const ConnInfo&) const = default;
};

// Fixed-size little-endian encodings with a magic and a version. Parse returns InvalidArgument
// naming what is wrong (size, magic, version, a field out of range).
std::string SerializeSegmentInfo(const SegmentInfo& info);
absl::StatusOr<SegmentInfo> ParseSegmentInfo(std::string_view blob);
std::string SerializeConnInfo(const ConnInfo& info);
absl::StatusOr<ConnInfo> ParseConnInfo(std::string_view blob);

// A contiguous piece of one transfer, posted as one work request.
struct Slice {
  uint64_t local_addr = 0;
  uint64_t remote_addr = 0;
  uint32_t length = 0;
  bool operator==(const Slice&) const = default;
};

// Cuts [local_addr, +length) <-> [remote_addr, +length) into slices of at most max_slice bytes
// (a work request's byte count is 32-bit and bounded by the port's max_msg_sz). Empty for
// length 0. REQUIRES: 0 < max_slice <= 2^31.
std::vector<Slice> PlanSlices(uint64_t local_addr, uint64_t remote_addr, uint64_t length,
                              uint64_t max_slice);

// The remote address and rkey for [offset, offset + length) of a segment. OutOfRange when the
// range leaves the segment (overflow-safe).
struct RemoteAddress {
  uint64_t addr = 0;
  uint32_t rkey = 0;
};
absl::StatusOr<RemoteAddress> TranslateRemote(const SegmentInfo& segment, uint64_t offset,
                                              uint64_t length);

// Registered local memory regions, for finding the lkey that covers a local buffer. Not
// thread-safe; the transport guards it.
class LocalRegionTable {
 public:
  // AlreadyExists for a known name, InvalidArgument when the range overlaps a registered one.
  absl::Status Add(std::string name, uint64_t addr, uint64_t length, uint32_t lkey);
  absl::Status Remove(std::string_view name);
  // The lkey of the region that holds all of [addr, addr + length); FailedPrecondition naming the
  // address when no single region does (RDMA needs registered local memory).
  absl::StatusOr<uint32_t> FindLkey(uint64_t addr, uint64_t length) const;
  size_t size() const { return by_addr_.size(); }

 private:
  struct Region {
    std::string name;
    uint64_t length;
    uint32_t lkey;
  };
  std::map<uint64_t, Region> by_addr_;
};

// Queue-pair states (a subset of ibv_qp_state) and the events that move between them.
enum class QpState { kReset, kInit, kRtr, kRts, kError };
enum class QpEvent {
  kInit,      // RESET -> INIT: port and access flags set
  kPeerInfo,  // INIT -> RTR: the peer's QP number, PSN and address are known
  kReady,     // RTR -> RTS: our send side is configured
  kFatal,     // any -> ERROR: an error completion or async event
  kReset,     // any -> RESET: to reuse the QP
};
std::string_view QpStateName(QpState state);
// The state after `event`; FailedPrecondition naming both for a transition verbs does not allow.
absl::StatusOr<QpState> NextQpState(QpState state, QpEvent event);
ibv_qp_state ToVerbsState(QpState state);

// Attributes and mask for ibv_modify_qp, one per transition.
struct QpTransition {
  ibv_qp_attr attr{};
  int mask = 0;
};
inline constexpr unsigned kRemoteAccess =
    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
QpTransition InitTransition(uint8_t port);
// `local_mtu` is our port's active mtu; the path uses the smaller of the two. A peer with a
// non-zero GID (RoCE, or IB across subnets) is addressed through the GRH with `gid_index`.
QpTransition RtrTransition(const ConnInfo& remote, uint8_t local_port, uint8_t local_mtu,
                           int gid_index);
QpTransition RtsTransition(uint32_t local_psn);

// What an error work completion means, as a Status: the code says whether a retry elsewhere can
// help (Unavailable: peer unreachable / retries exhausted; PermissionDenied: rkey or bounds;
// FailedPrecondition: local memory; Aborted: flushed because the QP broke earlier).
absl::Status CompletionStatus(ibv_wc_status status, uint32_t vendor_err, std::string_view what);

// Back-off for a completion poller: spin while completions keep coming, then yield, then sleep
// briefly, so that an idle poller costs little and a busy one adds no latency.
class PollBackoff {
 public:
  // Returns how long to sleep after a poll that found `found` completions (0: poll again now).
  std::chrono::microseconds Next(int found);

 private:
  int empty_polls_ = 0;
};

// A random 24-bit packet sequence number.
uint32_t RandomPsn();

}  // namespace crescent::kvstore::rdma

#endif  // CRESCENT_KVSTORE_TRANSFER_RDMA_COMMON_H_
