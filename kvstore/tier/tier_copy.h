// Block I/O on tiers: write and read a block framed with its checksum (block_codec.h), and copy
// a block between tiers for the KV master's demote/promote MoveTasks.
//
// A block sits on a tier in one of two formats:
//   kRaw     the payload bytes alone at the offset (as clients write DRAM segments through the
//            transfer engine); the region is the payload rounded up to the tier's alignment,
//            zero-padded on write. Integrity comes from the checksum the KV master holds.
//   kFramed  header + payload (block_codec.h), EncodedSize(length, tier alignment) bytes; the
//            format of SSD tiers. Every read verifies it.
// A failed verification is DataLoss: the caller must treat the block as a miss (and log it);
// the destination of a copy is not written.
//
// Thread-safety: as the tiers'. The functions allocate a temporary buffer of the block's size.
#ifndef CRESCENT_KVSTORE_TIER_TIER_COPY_H_
#define CRESCENT_KVSTORE_TIER_TIER_COPY_H_

#include <cstdint>
#include <optional>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/tier/storage_tier.h"

namespace crescent::kvstore {

enum class BlockFormat { kRaw, kFramed };

// Bytes a block of `length` payload bytes occupies on `tier` in `format`.
uint64_t BlockFootprint(const StorageTier& tier, BlockFormat format, uint64_t length);

// Writes `payload` framed at `offset`. Errors: the tier's (InvalidArgument for a misaligned
// offset or a frame ending past capacity, I/O errors).
absl::Status WriteFramedBlock(StorageTier& tier, uint64_t offset, uint64_t key,
                              std::span<const uint8_t> payload);

// Reads the framed block `key` at `offset` into `out` (whose size is the payload length the
// caller expects), verifying header, key, length and checksum, and the checksum against
// `expected_checksum` when given (the master's replica checksum).
// Errors: DataLoss naming the key on any mismatch (including a stored length other than
// out.size()); the tier's errors.
absl::Status ReadFramedBlock(StorageTier& tier, uint64_t offset, uint64_t key,
                             std::span<uint8_t> out,
                             std::optional<uint64_t> expected_checksum = std::nullopt);

struct BlockPlace {
  StorageTier* tier = nullptr;  // Not owned.
  uint64_t offset = 0;
  BlockFormat format = BlockFormat::kRaw;
};

struct BlockRef {
  uint64_t key = 0;
  uint64_t length = 0;               // Payload bytes.
  std::optional<uint64_t> checksum;  // XXH3-64 of the payload, when known (the master's).
};

// Copies block `block` from `from` to `to`, converting formats: reads the source, verifies it
// (framed: header, key, length, checksum; both formats: `block.checksum` when given), then writes
// the destination. Returns the payload checksum. For a MoveTask: demote = raw DRAM -> framed
// SSD, promote = framed SSD -> raw DRAM, with the replica's checksum.
// Errors: InvalidArgument (null tier), DataLoss when verification fails (destination untouched),
// the tiers' errors.
absl::StatusOr<uint64_t> CopyBlock(const BlockPlace& from, const BlockPlace& to,
                                   const BlockRef& block);

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TIER_TIER_COPY_H_
