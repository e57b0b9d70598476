// DRAM tiers: a StorageTier over process memory, either owned or an external region (for
// example a transfer-engine segment registered for remote access, so that the same bytes are a
// pool segment and a tier).
#ifndef CRESCENT_KVSTORE_TIER_DRAM_TIER_H_
#define CRESCENT_KVSTORE_TIER_DRAM_TIER_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kvstore/tier/storage_tier.h"

namespace crescent::kvstore {

// Allocates `capacity` zeroed bytes (64-byte aligned) that the tier owns. Requests must be
// multiples of `alignment` (a power of two; 1 accepts any offset and length).
// Errors: InvalidArgument (capacity 0 or not a multiple of alignment, alignment not a power of
// two), ResourceExhausted (allocation failed).
absl::StatusOr<std::unique_ptr<StorageTier>> CreateDramTier(uint64_t capacity,
                                                            uint64_t alignment = 1);

// A tier over [base, base + length), which the caller owns and keeps alive (and does not free or
// unmap) while the tier exists. Errors: InvalidArgument (null base, length 0 or not a multiple
// of alignment, alignment not a power of two).
absl::StatusOr<std::unique_ptr<StorageTier>> WrapDramTier(uint8_t* base, size_t length,
                                                          uint64_t alignment = 1);

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TIER_DRAM_TIER_H_
