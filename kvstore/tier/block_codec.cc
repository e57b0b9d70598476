#include "kvstore/tier/block_codec.h"

#include <bit>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kvstore/tier/storage_tier.h"
#include "src/common/hash.h"

namespace crescent::kvstore {
namespace {

// Little-endian stores and loads; memcpy keeps them legal at any address (x86 is little-endian,
// which static_assert below pins down).
static_assert(std::endian::native == std::endian::little, "block frames are little-endian");

template <typename T>
void Store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

constexpr size_t kHeaderChecksumOffset = 40;

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

uint64_t HeaderRegionSize(uint64_t alignment) { return AlignUp(kBlockHeaderSize, alignment); }

uint64_t EncodedSize(uint64_t payload_length, uint64_t alignment) {
  return AlignUp(HeaderRegionSize(alignment) + payload_length, alignment);
}

uint64_t BlockChecksum(std::span<const uint8_t> payload) {
  return Hash64(payload.data(), payload.size(), 0);
}

absl::Status EncodeHeader(uint64_t key, uint64_t payload_length, uint64_t checksum,
                          uint64_t alignment, std::span<uint8_t> out) {
  if (!IsPowerOfTwo(alignment) || alignment > (1ull << 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat("block codec: alignment ", alignment, " is not a power of two <= 2^31"));
  }
  const uint64_t region = HeaderRegionSize(alignment);
  if (out.size() < region) {
    return absl::InvalidArgumentError(absl::StrCat("block codec: header of key ", Hex(key),
                                                   " needs ", region, " bytes, buffer has ",
                                                   out.size()));
  }
  uint8_t* p = out.data();
  std::memset(p, 0, region);
  Store<uint32_t>(p + 0, kBlockMagic);
  Store<uint16_t>(p + 4, kBlockVersion);
  Store<uint32_t>(p + 8, static_cast<uint32_t>(region));
  Store<uint64_t>(p + 16, key);
  Store<uint64_t>(p + 24, payload_length);
  Store<uint64_t>(p + 32, checksum);
  Store<uint64_t>(p + kHeaderChecksumOffset, Hash64(p, kHeaderChecksumOffset, 0));
  return absl::OkStatus();
}

absl::Status EncodeFrame(uint64_t key, std::span<const uint8_t> payload, uint64_t alignment,
                         std::span<uint8_t> out) {
  if (!IsPowerOfTwo(alignment)) {
    return absl::InvalidArgumentError(
        absl::StrCat("block codec: alignment ", alignment, " is not a power of two"));
  }
  const uint64_t size = EncodedSize(payload.size(), alignment);
  if (out.size() < size) {
    return absl::InvalidArgumentError(absl::StrCat("block codec: frame of key ", Hex(key),
                                                   " needs ", size, " bytes, buffer has ",
                                                   out.size()));
  }
  const uint64_t region = HeaderRegionSize(alignment);
  absl::Status s = EncodeHeader(key, payload.size(), BlockChecksum(payload), alignment, out);
  if (!s.ok()) return s;
  if (!payload.empty()) std::memcpy(out.data() + region, payload.data(), payload.size());
  std::memset(out.data() + region + payload.size(), 0, size - region - payload.size());
  return absl::OkStatus();
}

absl::StatusOr<BlockHeader> DecodeHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kBlockHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("block header truncated: ", bytes.size(), " bytes, need ", kBlockHeaderSize));
  }
  const uint8_t* p = bytes.data();
  const auto magic = Load<uint32_t>(p + 0);
  if (magic != kBlockMagic) {
    return absl::DataLossError(
        absl::StrFormat("block header: bad magic 0x%08x (want 0x%08x)", magic, kBlockMagic));
  }
  const auto stored = Load<uint64_t>(p + kHeaderChecksumOffset);
  const uint64_t actual = Hash64(p, kHeaderChecksumOffset, 0);
  if (stored != actual) {
    return absl::DataLossError(absl::StrCat("block header checksum mismatch: expected ",
                                            Hex(stored), ", actual ", Hex(actual)));
  }
  const auto version = Load<uint16_t>(p + 4);
  if (version != kBlockVersion) {
    return absl::DataLossError(
        absl::StrCat("block header: unknown version ", version, " (want ", kBlockVersion, ")"));
  }
  BlockHeader header;
  header.payload_offset = Load<uint32_t>(p + 8);
  header.key = Load<uint64_t>(p + 16);
  header.payload_length = Load<uint64_t>(p + 24);
  header.checksum = Load<uint64_t>(p + 32);
  if (header.payload_offset < kBlockHeaderSize) {
    return absl::DataLossError(absl::StrCat("block header of key ", Hex(header.key),
                                            ": payload offset ", header.payload_offset,
                                            " is inside the header"));
  }
  return header;
}

absl::StatusOr<std::span<const uint8_t>> Verify(uint64_t key, std::span<const uint8_t> frame) {
  absl::StatusOr<BlockHeader> decoded = DecodeHeader(frame);
  if (!decoded.ok()) {
    return absl::DataLossError(
        absl::StrCat("block ", Hex(key), ": ", std::string(decoded.status().message())));
  }
  const BlockHeader& h = *decoded;
  if (h.key != key) {
    return absl::DataLossError(
        absl::StrCat("block ", Hex(key), ": frame holds key ", Hex(h.key), " instead"));
  }
  if (h.payload_offset > frame.size() || h.payload_length > frame.size() - h.payload_offset) {
    return absl::DataLossError(absl::StrCat("block ", Hex(key), ": frame truncated: payload of ",
                                            h.payload_length, " bytes at offset ", h.payload_offset,
                                            ", frame has ", frame.size()));
  }
  std::span<const uint8_t> payload = frame.subspan(h.payload_offset, h.payload_length);
  const uint64_t actual = BlockChecksum(payload);
  if (actual != h.checksum) {
    return absl::DataLossError(absl::StrCat("block ", Hex(key), ": checksum mismatch: expected ",
                                            Hex(h.checksum), ", actual ", Hex(actual)));
  }
  return payload;
}

}  // namespace crescent::kvstore
