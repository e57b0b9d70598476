// Block framing: how a pool block is laid out on a tier so that corruption is detected on read.
//
// A frame is
//   [header region: a 64-byte header, zero-padded to a multiple of the alignment]
//   [payload]
//   [zero padding to a multiple of the alignment]
// and the header holds, little-endian:
//   off  0  u32  magic "CKVB" (0x42564b43)
//   off  4  u16  version (1)
//   off  6  u16  reserved, 0
//   off  8  u32  payload offset (= header region size)
//   off 12  u32  reserved, 0
//   off 16  u64  key (the block hash)
//   off 24  u64  payload length in bytes
//   off 32  u64  XXH3-64 (seed 0) of the payload: the same value the KV master stores as the
//                replica checksum, so the two can be compared
//   off 40  u64  XXH3-64 (seed 0) of bytes [0, 40): a damaged header is caught before its
//                length or offset is trusted
//   off 48  16 bytes reserved, 0
// Verification failures are DataLoss: the caller treats the block as a miss and logs it; the
// bytes are never handed on.
#ifndef CRESCENT_KVSTORE_TIER_BLOCK_CODEC_H_
#define CRESCENT_KVSTORE_TIER_BLOCK_CODEC_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::kvstore {

inline constexpr uint32_t kBlockMagic = 0x42564b43;  // "CKVB" in little-endian bytes.
inline constexpr uint16_t kBlockVersion = 1;
inline constexpr uint64_t kBlockHeaderSize = 64;

struct BlockHeader {
  uint64_t key = 0;
  uint64_t payload_offset = 0;
  uint64_t payload_length = 0;
  uint64_t checksum = 0;  // XXH3-64 of the payload.
};

// Size of the header region for `alignment` (a power of two).
uint64_t HeaderRegionSize(uint64_t alignment);

// Bytes a frame of `payload_length` occupies on a tier of `alignment` (a power of two).
uint64_t EncodedSize(uint64_t payload_length, uint64_t alignment);

// XXH3-64 (seed 0) of a payload, as stored in headers and by the KV master.
uint64_t BlockChecksum(std::span<const uint8_t> payload);

// Writes the header region (header + zero padding) for a payload of `payload_length` bytes whose
// checksum is `checksum` into out[0, HeaderRegionSize(alignment)).
// Errors: InvalidArgument if `out` is shorter than the header region or alignment is not a
// power of two (or the header region would exceed 4 GiB).
absl::Status EncodeHeader(uint64_t key, uint64_t payload_length, uint64_t checksum,
                          uint64_t alignment, std::span<uint8_t> out);

// Writes a whole frame of `payload` into out[0, EncodedSize(payload.size(), alignment)),
// computing the checksum. Errors: InvalidArgument (out too short, bad alignment).
absl::Status EncodeFrame(uint64_t key, std::span<const uint8_t> payload, uint64_t alignment,
                         std::span<uint8_t> out);

// Parses and checks a header (magic, version, header checksum) at the start of `bytes`.
// Errors: DataLoss naming what is wrong (truncated, bad magic, unknown version, header checksum
// mismatch, payload offset below the header size).
absl::StatusOr<BlockHeader> DecodeHeader(std::span<const uint8_t> bytes);

// Checks that `frame` holds the block `key`: a valid header, the expected key, the whole payload
// present, and its checksum equal to the header's. Returns the payload (a view into `frame`).
// Errors: DataLoss naming the key and, on a checksum mismatch, the expected and actual values;
// also for a wrong key, bad magic/version/header checksum, or a truncated frame.
absl::StatusOr<std::span<const uint8_t>> Verify(uint64_t key, std::span<const uint8_t> frame);

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TIER_BLOCK_CODEC_H_
