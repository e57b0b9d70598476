#include "kvstore/transfer/tcp_protocol.h"

#include <cstdint>
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::kvstore::tcp {
namespace {

using ::testing::HasSubstr;

TEST(TcpProtocolTest, RequestRoundTrip) {
  for (Opcode op :
       {Opcode::kWrite, Opcode::kRead, Opcode::kNotify, Opcode::kQuery, Opcode::kControl}) {
    RequestHeader h;
    h.opcode = op;
    h.flags = kFlagChecksum;
    h.request_id = 0x0102030405060708ull;
    h.segment_id = 0xfffffffffffffff1ull;
    h.offset = 0x1122334455667788ull;
    h.length = op == Opcode::kQuery ? 0 : 1000;
    h.checksum = 0xdeadbeefcafef00dull;
    uint8_t buf[kRequestHeaderSize];
    EncodeRequest(h, buf);
    absl::StatusOr<RequestHeader> back = DecodeRequest(buf);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->opcode, h.opcode);
    EXPECT_EQ(back->flags, h.flags);
    EXPECT_EQ(back->request_id, h.request_id);
    EXPECT_EQ(back->segment_id, h.segment_id);
    EXPECT_EQ(back->offset, h.offset);
    EXPECT_EQ(back->length, h.length);
    EXPECT_EQ(back->checksum, h.checksum);
  }
}

TEST(TcpProtocolTest, WireLayoutIsLittleEndian) {
  RequestHeader h;
  h.opcode = Opcode::kRead;
  h.request_id = 0x0102030405060708ull;
  uint8_t buf[kRequestHeaderSize];
  EncodeRequest(h, buf);
  EXPECT_EQ(buf[0], 0x58);  // 'X'
  EXPECT_EQ(buf[6], 2);
  EXPECT_EQ(buf[8], 0x08);
  EXPECT_EQ(buf[15], 0x01);
}

TEST(TcpProtocolTest, ReplyRoundTrip) {
  ReplyHeader h;
  h.opcode = Opcode::kQuery;
  h.code = absl::StatusCode::kOutOfRange;
  h.request_id = 7;
  h.length = 12;
  h.checksum = 9;
  h.value = 1ull << 50;
  uint8_t buf[kReplyHeaderSize];
  EncodeReply(h, buf);
  absl::StatusOr<ReplyHeader> back = DecodeReply(buf);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->opcode, h.opcode);
  EXPECT_EQ(back->code, h.code);
  EXPECT_EQ(back->request_id, h.request_id);
  EXPECT_EQ(back->length, h.length);
  EXPECT_EQ(back->checksum, h.checksum);
  EXPECT_EQ(back->value, h.value);
}

TEST(TcpProtocolTest, RejectsCorruptHeaders) {
  RequestHeader h;
  h.opcode = Opcode::kWrite;
  h.length = 16;
  uint8_t good[kRequestHeaderSize];
  EncodeRequest(h, good);
  uint8_t bad[kRequestHeaderSize];

  std::memcpy(bad, good, sizeof(bad));
  bad[0] ^= 1;
  EXPECT_THAT(std::string(DecodeRequest(bad).status().message()), HasSubstr("magic"));

  std::memcpy(bad, good, sizeof(bad));
  bad[4] = 9;
  EXPECT_THAT(std::string(DecodeRequest(bad).status().message()), HasSubstr("version"));

  std::memcpy(bad, good, sizeof(bad));
  bad[6] = 0;
  EXPECT_THAT(std::string(DecodeRequest(bad).status().message()), HasSubstr("opcode"));
  bad[6] = 6;
  EXPECT_THAT(std::string(DecodeRequest(bad).status().message()), HasSubstr("opcode"));

  std::memcpy(bad, good, sizeof(bad));
  bad[7] = 0x80;
  EXPECT_THAT(std::string(DecodeRequest(bad).status().message()), HasSubstr("flags"));

  uint8_t reply[kReplyHeaderSize] = {};
  EXPECT_FALSE(DecodeReply(reply).ok());
  ReplyHeader r;
  r.code = absl::StatusCode::kOk;
  EncodeReply(r, reply);
  reply[7] = 17;  // beyond absl's codes
  EXPECT_THAT(std::string(DecodeReply(reply).status().message()), HasSubstr("status code"));
}

TEST(TcpProtocolTest, LengthLimitsPerOpcode) {
  RequestHeader h;
  uint8_t buf[kRequestHeaderSize];
  h.opcode = Opcode::kWrite;
  h.length = kMaxDataFrameBytes;
  EncodeRequest(h, buf);
  EXPECT_TRUE(DecodeRequest(buf).ok());
  h.length = kMaxDataFrameBytes + 1;
  EncodeRequest(h, buf);
  EXPECT_THAT(std::string(DecodeRequest(buf).status().message()), HasSubstr("frame limit"));
  h.opcode = Opcode::kNotify;
  h.length = kMaxControlBytes + 1;
  EncodeRequest(h, buf);
  EXPECT_FALSE(DecodeRequest(buf).ok());
  h.opcode = Opcode::kQuery;
  h.length = 1;
  EncodeRequest(h, buf);
  EXPECT_FALSE(DecodeRequest(buf).ok());

  ReplyHeader r;
  r.opcode = Opcode::kQuery;  // a successful query reply carries no payload
  r.length = 1;
  uint8_t rbuf[kReplyHeaderSize];
  EncodeReply(r, rbuf);
  EXPECT_FALSE(DecodeReply(rbuf).ok());
  r.code = absl::StatusCode::kNotFound;  // error replies carry a message
  EncodeReply(r, rbuf);
  EXPECT_TRUE(DecodeReply(rbuf).ok());
}

TEST(TcpProtocolTest, BoundsCheck) {
  EXPECT_TRUE(CheckBounds(0, 0, 0).ok());
  EXPECT_TRUE(CheckBounds(0, 100, 100).ok());
  EXPECT_TRUE(CheckBounds(100, 0, 100).ok());
  EXPECT_TRUE(CheckBounds(37, 63, 100).ok());
  EXPECT_EQ(CheckBounds(37, 64, 100).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckBounds(101, 0, 100).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckBounds(UINT64_MAX - 1, 16, 100).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckBounds(16, UINT64_MAX - 1, 100).code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(CheckBounds(90, 20, 100).message()),
              HasSubstr("[90, 90 + 20) is outside the segment of 100 bytes"));
}

}  // namespace
}  // namespace crescent::kvstore::tcp
