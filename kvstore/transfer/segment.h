// Segments: named byte ranges of a node's memory that peers read and write one-sidedly.
//
// A node registers local memory under a name ("node-a/kv0"); the engine fills in a
// SegmentDescriptor with everything a peer needs to reach it over each transport and publishes
// it in a SegmentDirectory. A peer looks the name up and opens the segment with the best
// transport it shares with the owner. Segments are plain byte ranges: nothing here knows about
// KV blocks, layers or pages.
#ifndef CRESCENT_KVSTORE_TRANSFER_SEGMENT_H_
#define CRESCENT_KVSTORE_TRANSFER_SEGMENT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::kvstore {

// What a peer needs to reach one segment. Each transport owns its own fields; a field left empty
// means the segment is not reachable that way.
struct SegmentDescriptor {
  std::string name;     // unique in the cluster, e.g. "node-a/kv0".
  uint64_t length = 0;  // bytes; valid offsets are [0, length).
  // Identifies the owner's host (LocalHostId()); same-host peers may use shared memory.
  std::string host_id;

  // tcp: the owner's data server, "host:port", and the segment's id on that server.
  std::string tcp_endpoint;
  uint64_t tcp_segment_id = 0;

  // shm: a path a same-host peer opens and mmaps (the owner's memfd, /proc/<pid>/fd/<fd>), and the
  // memfd's inode, checked on open so that a recycled pid/fd never maps someone else's memory.
  std::string shm_path;
  uint64_t shm_inode = 0;

  // rdma: opaque to all but RdmaTransport (GID, LID, port, rkey, address; see rdma_common.h).
  std::string rdma_info;

  bool operator==(const SegmentDescriptor&) const = default;
};

// Checks a segment name: 1..255 bytes of [A-Za-z0-9._/:-], not starting with '/'.
// Returns InvalidArgument naming the offending character or length.
absl::Status ValidateSegmentName(std::string_view name);

// Encodes a descriptor as a JSON object (rdma_info base64-encoded). Pure.
std::string SerializeSegmentDescriptor(const SegmentDescriptor& descriptor);

// Parses SerializeSegmentDescriptor's output. Returns InvalidArgument naming the missing or
// malformed field; unknown fields are ignored so that newer writers stay readable.
absl::StatusOr<SegmentDescriptor> ParseSegmentDescriptor(std::string_view text);

// "<hostname>/<boot id>": equal for two processes exactly when they run on the same booted host
// (and UTS namespace). Computed once; thread-safe.
const std::string& LocalHostId();

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_SEGMENT_H_
