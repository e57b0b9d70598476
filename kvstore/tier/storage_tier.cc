#include "kvstore/tier/storage_tier.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace crescent::kvstore {

absl::Status StorageTier::Write(uint64_t offset, std::span<const uint8_t> data) {
  const WriteRequest request{offset, data};
  return WriteBatch(std::span<const WriteRequest>(&request, 1));
}

absl::Status StorageTier::Read(uint64_t offset, std::span<uint8_t> out) {
  const ReadRequest request{offset, out};
  return ReadBatch(std::span<const ReadRequest>(&request, 1));
}

absl::Status StorageTier::CheckRange(uint64_t offset, uint64_t length) const {
  const uint64_t align = alignment();
  if (offset % align != 0 || length % align != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tier ", std::string(name()), ": offset ",
                                                   offset, " or length ", length,
                                                   " is not a multiple of the alignment ", align));
  }
  if (offset > capacity() || length > capacity() - offset) {
    return absl::InvalidArgumentError(absl::StrCat("tier ", std::string(name()), ": range [",
                                                   offset, ", ", offset, " + ", length,
                                                   ") ends past the capacity ", capacity()));
  }
  return absl::OkStatus();
}

}  // namespace crescent::kvstore
