// RangeAllocator: first-fit allocation of byte ranges inside one segment [0, capacity).
//
// The KV master uses one per mounted segment to decide where a replica's bytes go; it never
// touches the memory itself. Free ranges are kept ordered by offset and coalesced with their
// neighbours on Free, so fragmentation is bounded by what is actually allocated.
//
// Thread-safety: none; the owner (MasterState) serializes calls.
#ifndef CRESCENT_KVSTORE_MASTER_ALLOCATOR_H_
#define CRESCENT_KVSTORE_MASTER_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::kvstore::master {

// A range of bytes inside a segment.
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;  // Bytes reserved (the request rounded up to the alignment).
  bool operator==(const Extent&) const = default;
};

class RangeAllocator {
 public:
  // REQUIRES: alignment is a power of two >= 1. capacity is rounded down to the alignment.
  explicit RangeAllocator(uint64_t capacity, uint64_t alignment = 1);

  // Reserves `length` bytes (rounded up to the alignment) at the lowest offset that fits.
  // Errors: InvalidArgument if length == 0; ResourceExhausted (with the request and the largest
  // free range) if no free range is large enough.
  absl::StatusOr<Extent> Allocate(uint64_t length);

  // Returns the extent starting at `offset` to the free list, merging it with free neighbours.
  // Errors: NotFound if no allocation starts at `offset` (double free or a foreign offset).
  absl::Status Free(uint64_t offset);

  // Whether `length` bytes could be allocated now.
  bool CanAllocate(uint64_t length) const { return RoundUp(length) <= LargestFree(); }

  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }
  uint64_t free_bytes() const { return capacity_ - used_; }
  uint64_t LargestFree() const;
  size_t free_range_count() const { return free_.size(); }
  size_t allocation_count() const { return allocated_.size(); }
  uint64_t RoundUp(uint64_t length) const { return (length + alignment_ - 1) & ~(alignment_ - 1); }

 private:
  uint64_t capacity_;
  uint64_t alignment_;
  uint64_t used_ = 0;
  std::map<uint64_t, uint64_t> free_;       // offset -> length, never adjacent (always merged)
  std::map<uint64_t, uint64_t> allocated_;  // offset -> reserved length
};

}  // namespace crescent::kvstore::master

#endif  // CRESCENT_KVSTORE_MASTER_ALLOCATOR_H_
