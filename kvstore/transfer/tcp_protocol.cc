#include "kvstore/transfer/tcp_protocol.h"

#include "absl/strings/str_cat.h"

namespace crescent::kvstore::tcp {
namespace {

void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

bool KnownOpcode(uint8_t op) {
  return op >= static_cast<uint8_t>(Opcode::kWrite) && op <= static_cast<uint8_t>(Opcode::kControl);
}

// Limit on `length` per opcode: what a server may have to receive or send for one frame.
uint64_t MaxLength(Opcode op) {
  switch (op) {
    case Opcode::kWrite:
    case Opcode::kRead:
      return kMaxDataFrameBytes;
    case Opcode::kNotify:
    case Opcode::kControl:
      return kMaxControlBytes;
    case Opcode::kQuery:
      return 0;
  }
  return 0;
}

}  // namespace

// Layout (offsets in bytes):
//   request: 0 magic u32, 4 version u16, 6 opcode u8, 7 flags u8, 8 request_id, 16 segment_id,
//            24 offset, 32 length, 40 checksum
//   reply:   0 magic u32, 4 version u16, 6 opcode u8, 7 code u8, 8 request_id, 16 length,
//            24 checksum, 32 value
void EncodeRequest(const RequestHeader& h, uint8_t out[kRequestHeaderSize]) {
  Put32(out, kRequestMagic);
  Put16(out + 4, kVersion);
  out[6] = static_cast<uint8_t>(h.opcode);
  out[7] = h.flags;
  Put64(out + 8, h.request_id);
  Put64(out + 16, h.segment_id);
  Put64(out + 24, h.offset);
  Put64(out + 32, h.length);
  Put64(out + 40, h.checksum);
}

void EncodeReply(const ReplyHeader& h, uint8_t out[kReplyHeaderSize]) {
  Put32(out, kReplyMagic);
  Put16(out + 4, kVersion);
  out[6] = static_cast<uint8_t>(h.opcode);
  out[7] = static_cast<uint8_t>(h.code);
  Put64(out + 8, h.request_id);
  Put64(out + 16, h.length);
  Put64(out + 24, h.checksum);
  Put64(out + 32, h.value);
}

absl::StatusOr<RequestHeader> DecodeRequest(const uint8_t in[kRequestHeaderSize]) {
  if (uint32_t magic = Get32(in); magic != kRequestMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat("request magic 0x", absl::Hex(magic), " != 0x", absl::Hex(kRequestMagic)));
  }
  if (uint16_t version = Get16(in + 4); version != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("request protocol version ", version, " unsupported (want ", kVersion, ")"));
  }
  if (!KnownOpcode(in[6])) {
    return absl::InvalidArgumentError(absl::StrCat("unknown request opcode ", in[6]));
  }
  RequestHeader h;
  h.opcode = static_cast<Opcode>(in[6]);
  h.flags = in[7];
  if ((h.flags & ~kFlagChecksum) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("unknown request flags 0x", absl::Hex(h.flags)));
  }
  h.request_id = Get64(in + 8);
  h.segment_id = Get64(in + 16);
  h.offset = Get64(in + 24);
  h.length = Get64(in + 32);
  h.checksum = Get64(in + 40);
  if (h.length > MaxLength(h.opcode)) {
    return absl::InvalidArgumentError(absl::StrCat("request ", h.request_id, " length ", h.length,
                                                   " exceeds the frame limit ", MaxLength(h.opcode),
                                                   " for opcode ", in[6]));
  }
  return h;
}

absl::StatusOr<ReplyHeader> DecodeReply(const uint8_t in[kReplyHeaderSize]) {
  if (uint32_t magic = Get32(in); magic != kReplyMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat("reply magic 0x", absl::Hex(magic), " != 0x", absl::Hex(kReplyMagic)));
  }
  if (uint16_t version = Get16(in + 4); version != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("reply protocol version ", version, " unsupported (want ", kVersion, ")"));
  }
  if (!KnownOpcode(in[6])) {
    return absl::InvalidArgumentError(absl::StrCat("unknown reply opcode ", in[6]));
  }
  if (in[7] > static_cast<uint8_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown reply status code ", in[7]));
  }
  ReplyHeader h;
  h.opcode = static_cast<Opcode>(in[6]);
  h.code = static_cast<absl::StatusCode>(in[7]);
  h.request_id = Get64(in + 8);
  h.length = Get64(in + 16);
  h.checksum = Get64(in + 24);
  h.value = Get64(in + 32);
  const uint64_t limit = h.code == absl::StatusCode::kOk ? MaxLength(h.opcode) : kMaxControlBytes;
  if (h.length > limit) {
    return absl::InvalidArgumentError(absl::StrCat("reply to request ", h.request_id, " length ",
                                                   h.length, " exceeds the frame limit ", limit));
  }
  return h;
}

absl::Status CheckBounds(uint64_t offset, uint64_t length, uint64_t segment_length) {
  if (offset > segment_length || length > segment_length - offset) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", ", offset, " + ", length,
                                              ") is outside the segment of ", segment_length,
                                              " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace crescent::kvstore::tcp
