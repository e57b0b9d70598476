// The tcp transport's wire format: fixed-size little-endian frame headers, and the server's
// checks on them. Pure functions; no I/O.
//
// Request:  [RequestHeader 48 bytes][payload: `length` bytes for kWrite, kNotify, kControl]
// Reply:    [ReplyHeader 40 bytes][payload: `length` bytes: data for kRead, the reply for
//           kControl, or an error message when code != OK]
// A connection carries requests in order and the server answers them in the same order, so the
// client matches replies to requests by position; request_id double-checks it.
#ifndef CRESCENT_KVSTORE_TRANSFER_TCP_PROTOCOL_H_
#define CRESCENT_KVSTORE_TRANSFER_TCP_PROTOCOL_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::kvstore::tcp {

inline constexpr uint32_t kRequestMagic = 0x51524358;  // "XCRQ" on the wire
inline constexpr uint32_t kReplyMagic = 0x50524358;    // "XCRP"
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kRequestHeaderSize = 48;
inline constexpr size_t kReplyHeaderSize = 40;

// Largest data payload of one frame (a slice); larger transfers are split by the client.
inline constexpr uint64_t kMaxDataFrameBytes = 64ull << 20;
// Largest notify / control payload and error message.
inline constexpr uint64_t kMaxControlBytes = 1ull << 20;

enum class Opcode : uint8_t {
  kWrite = 1,    // payload -> segment[offset, offset + length)
  kRead = 2,     // segment[offset, offset + length) -> reply payload
  kNotify = 3,   // payload -> the server's notification handler, for segment `segment_id`
  kQuery = 4,    // reply.value = the length of segment `segment_id`
  kControl = 5,  // payload -> control handler `segment_id` (the channel) -> reply payload
};

// Flag bits.
inline constexpr uint8_t kFlagChecksum = 1;  // checksum = Hash64(data) for the data that travels

struct RequestHeader {
  Opcode opcode = Opcode::kWrite;
  uint8_t flags = 0;
  uint64_t request_id = 0;
  uint64_t segment_id = 0;  // the channel for kControl
  uint64_t offset = 0;
  uint64_t length = 0;    // bytes of payload (write/notify/control) or wanted (read)
  uint64_t checksum = 0;  // of the write payload when kFlagChecksum
};

struct ReplyHeader {
  Opcode opcode = Opcode::kWrite;
  absl::StatusCode code = absl::StatusCode::kOk;
  uint64_t request_id = 0;
  uint64_t length = 0;    // bytes of payload that follow
  uint64_t checksum = 0;  // of read data when the request had kFlagChecksum
  uint64_t value = 0;     // kQuery: the segment's length
};

void EncodeRequest(const RequestHeader& header, uint8_t out[kRequestHeaderSize]);
void EncodeReply(const ReplyHeader& header, uint8_t out[kReplyHeaderSize]);

// Decode and check magic, version, opcode, flags, and that `length` fits the opcode's limit.
// InvalidArgument naming the bad field: the stream cannot be trusted after one.
absl::StatusOr<RequestHeader> DecodeRequest(const uint8_t in[kRequestHeaderSize]);
absl::StatusOr<ReplyHeader> DecodeReply(const uint8_t in[kReplyHeaderSize]);

// Checks [offset, offset + length) against a segment of `segment_length` bytes, without
// overflow. OutOfRange naming offset, length and segment length.
absl::Status CheckBounds(uint64_t offset, uint64_t length, uint64_t segment_length);

}  // namespace crescent::kvstore::tcp

#endif  // CRESCENT_KVSTORE_TRANSFER_TCP_PROTOCOL_H_
