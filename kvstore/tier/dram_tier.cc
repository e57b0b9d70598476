#include "kvstore/tier/dram_tier.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::kvstore {
namespace {

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

class DramTier final : public StorageTier {
 public:
  DramTier(uint8_t* base, uint64_t capacity, uint64_t alignment,
           std::unique_ptr<uint8_t, FreeDeleter> owned)
      : base_(base), capacity_(capacity), alignment_(alignment), owned_(std::move(owned)) {}

  std::string_view name() const override { return owned_ ? "dram" : "dram:wrapped"; }
  uint64_t capacity() const override { return capacity_; }
  uint64_t alignment() const override { return alignment_; }

  absl::Status WriteBatch(std::span<const WriteRequest> requests) override {
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::Status s = CheckRange(requests[i].offset, requests[i].data.size());
      if (!s.ok()) return Annotate(s, absl::StrCat("request ", i));
    }
    for (const WriteRequest& r : requests) {
      if (!r.data.empty()) std::memcpy(base_ + r.offset, r.data.data(), r.data.size());
    }
    return absl::OkStatus();
  }

  absl::Status ReadBatch(std::span<const ReadRequest> requests) override {
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::Status s = CheckRange(requests[i].offset, requests[i].out.size());
      if (!s.ok()) return Annotate(s, absl::StrCat("request ", i));
    }
    for (const ReadRequest& r : requests) {
      if (!r.out.empty()) std::memcpy(r.out.data(), base_ + r.offset, r.out.size());
    }
    return absl::OkStatus();
  }

 private:
  uint8_t* const base_;
  const uint64_t capacity_;
  const uint64_t alignment_;
  const std::unique_ptr<uint8_t, FreeDeleter> owned_;
};

absl::Status CheckShape(uint64_t length, uint64_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dram tier: alignment ", alignment, " is not a power of two"));
  }
  if (length == 0 || length % alignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dram tier: capacity ", length, " is zero or not a multiple of the alignment ", alignment));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<StorageTier>> CreateDramTier(uint64_t capacity, uint64_t alignment) {
  CRESCENT_RETURN_IF_ERROR(CheckShape(capacity, alignment));
  const uint64_t allocated = AlignUp(capacity, 64);
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, allocated));
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("dram tier: cannot allocate ", capacity, " bytes"));
  }
  std::memset(p, 0, allocated);
  std::unique_ptr<uint8_t, FreeDeleter> owned(p);
  return std::make_unique<DramTier>(p, capacity, alignment, std::move(owned));
}

absl::StatusOr<std::unique_ptr<StorageTier>> WrapDramTier(uint8_t* base, size_t length,
                                                          uint64_t alignment) {
  if (base == nullptr) return absl::InvalidArgumentError("dram tier: null base address");
  CRESCENT_RETURN_IF_ERROR(CheckShape(length, alignment));
  return std::make_unique<DramTier>(base, length, alignment, nullptr);
}

}  // namespace crescent::kvstore
