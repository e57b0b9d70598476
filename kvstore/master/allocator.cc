#include "kvstore/master/allocator.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace crescent::kvstore::master {

RangeAllocator::RangeAllocator(uint64_t capacity, uint64_t alignment)
    : capacity_(capacity & ~(alignment - 1)), alignment_(alignment) {
  if (capacity_ > 0) free_.emplace(0, capacity_);
}

uint64_t RangeAllocator::LargestFree() const {
  uint64_t largest = 0;
  for (const auto& [offset, length] : free_) largest = std::max(largest, length);
  return largest;
}

absl::StatusOr<Extent> RangeAllocator::Allocate(uint64_t length) {
  if (length == 0) return absl::InvalidArgumentError("allocation of 0 bytes");
  const uint64_t need = RoundUp(length);
  if (need < length) {
    return absl::InvalidArgumentError(absl::StrCat("allocation of ", length, " bytes overflows"));
  }
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    const uint64_t offset = it->first;
    const uint64_t remaining = it->second - need;
    free_.erase(it);
    if (remaining > 0) free_.emplace(offset + need, remaining);
    allocated_.emplace(offset, need);
    used_ += need;
    return Extent{offset, need};
  }
  return absl::ResourceExhaustedError(absl::StrCat("no free range of ", need, " bytes (capacity ",
                                                   capacity_, ", used ", used_,
                                                   ", largest free range ", LargestFree(), ")"));
}

absl::Status RangeAllocator::Free(uint64_t offset) {
  auto alloc = allocated_.find(offset);
  if (alloc == allocated_.end()) {
    return absl::NotFoundError(absl::StrCat("no allocation starts at offset ", offset));
  }
  uint64_t start = offset;
  uint64_t length = alloc->second;
  allocated_.erase(alloc);
  used_ -= length;

  auto next = free_.lower_bound(start);
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      length += prev->second;
      free_.erase(prev);
    }
  }
  if (next != free_.end() && start + length == next->first) {
    length += next->second;
    free_.erase(next);
  }
  free_.emplace(start, length);
  return absl::OkStatus();
}

}  // namespace crescent::kvstore::master
