#include "kvstore/tier/tier_copy.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kvstore/tier/block_codec.h"
#include "src/common/status.h"

namespace crescent::kvstore {
namespace {

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// A zeroed buffer aligned to the tier's alignment (at least 64), so an O_DIRECT tier needs no
// bounce copy.
absl::StatusOr<Buffer> AllocateFor(const StorageTier& tier, uint64_t length) {
  const uint64_t align = std::max<uint64_t>(tier.alignment(), 64);
  const uint64_t size = std::max<uint64_t>(AlignUp(length, align), align);
  void* p = nullptr;
  if (posix_memalign(&p, align, size) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tier copy: cannot allocate ", length, " bytes"));
  }
  std::memset(p, 0, size);
  return Buffer(static_cast<uint8_t*>(p));
}

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

absl::Status CheckExpected(uint64_t key, uint64_t actual, std::optional<uint64_t> expected) {
  if (expected.has_value() && *expected != actual) {
    return absl::DataLossError(absl::StrCat("block ", Hex(key), ": checksum mismatch: expected ",
                                            Hex(*expected), ", actual ", Hex(actual)));
  }
  return absl::OkStatus();
}

// Reads and verifies a block into room[0, block.length), returning its checksum. `room` must
// hold the source's raw footprint, which a raw read covers.
absl::StatusOr<uint64_t> ReadBlock(const BlockPlace& from, const BlockRef& block,
                                   std::span<uint8_t> room) {
  std::span<uint8_t> out = room.first(block.length);
  if (from.format == BlockFormat::kFramed) {
    CRESCENT_RETURN_IF_ERROR(
        ReadFramedBlock(*from.tier, from.offset, block.key, out, block.checksum));
    return BlockChecksum(out);
  }
  const uint64_t footprint = BlockFootprint(*from.tier, BlockFormat::kRaw, block.length);
  CRESCENT_RETURN_IF_ERROR(from.tier->Read(from.offset, room.first(footprint)));
  const uint64_t actual = BlockChecksum(out);
  CRESCENT_RETURN_IF_ERROR(CheckExpected(block.key, actual, block.checksum));
  return actual;
}

}  // namespace

uint64_t BlockFootprint(const StorageTier& tier, BlockFormat format, uint64_t length) {
  return format == BlockFormat::kFramed ? EncodedSize(length, tier.alignment())
                                        : AlignUp(length, tier.alignment());
}

absl::Status WriteFramedBlock(StorageTier& tier, uint64_t offset, uint64_t key,
                              std::span<const uint8_t> payload) {
  const uint64_t size = EncodedSize(payload.size(), tier.alignment());
  CRESCENT_ASSIGN_OR_RETURN(Buffer frame, AllocateFor(tier, size));
  CRESCENT_RETURN_IF_ERROR(EncodeFrame(key, payload, tier.alignment(), {frame.get(), size}));
  return tier.Write(offset, {frame.get(), size});
}

absl::Status ReadFramedBlock(StorageTier& tier, uint64_t offset, uint64_t key,
                             std::span<uint8_t> out, std::optional<uint64_t> expected_checksum) {
  const uint64_t size = EncodedSize(out.size(), tier.alignment());
  CRESCENT_ASSIGN_OR_RETURN(Buffer frame, AllocateFor(tier, size));
  CRESCENT_RETURN_IF_ERROR(tier.Read(offset, {frame.get(), size}));
  CRESCENT_ASSIGN_OR_RETURN(std::span<const uint8_t> payload,
                            Verify(key, std::span<const uint8_t>(frame.get(), size)));
  if (payload.size() != out.size()) {
    return absl::DataLossError(absl::StrCat("block ", Hex(key), ": stored length ", payload.size(),
                                            ", expected ", out.size()));
  }
  CRESCENT_RETURN_IF_ERROR(CheckExpected(key, BlockChecksum(payload), expected_checksum));
  if (!out.empty()) std::memcpy(out.data(), payload.data(), out.size());
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> CopyBlock(const BlockPlace& from, const BlockPlace& to,
                                   const BlockRef& block) {
  if (from.tier == nullptr || to.tier == nullptr) {
    return absl::InvalidArgumentError("tier copy: null tier");
  }
  // Room for the payload rounded up to either tier's alignment (raw reads and writes cover it).
  const uint64_t room = std::max(BlockFootprint(*from.tier, BlockFormat::kRaw, block.length),
                                 BlockFootprint(*to.tier, BlockFormat::kRaw, block.length));
  CRESCENT_ASSIGN_OR_RETURN(Buffer buffer, AllocateFor(*from.tier, room));
  CRESCENT_ASSIGN_OR_RETURN(uint64_t checksum, ReadBlock(from, block, {buffer.get(), room}));
  if (to.format == BlockFormat::kFramed) {
    CRESCENT_RETURN_IF_ERROR(
        WriteFramedBlock(*to.tier, to.offset, block.key, {buffer.get(), block.length}));
  } else {
    const uint64_t footprint = BlockFootprint(*to.tier, BlockFormat::kRaw, block.length);
    // Zero the padding (a raw source read may have left neighbouring bytes there).
    std::memset(buffer.get() + block.length, 0, footprint - block.length);
    CRESCENT_RETURN_IF_ERROR(to.tier->Write(to.offset, {buffer.get(), footprint}));
  }
  return checksum;
}

}  // namespace crescent::kvstore
