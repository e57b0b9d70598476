#include "kvstore/transfer/rdma_common.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::kvstore::rdma {
namespace {

using ::testing::HasSubstr;

Gid SampleGid() {
  Gid g{};
  for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<uint8_t>(0xf0 + i);
  return g;
}

TEST(RdmaCommonTest, SegmentInfoRoundTrip) {
  SegmentInfo info;
  info.gid = SampleGid();
  info.lid = 0x1234;
  info.port = 2;
  info.mtu = IBV_MTU_4096;
  info.addr = 0x7f0012345000ull;
  info.length = 1ull << 33;
  info.rkey = 0xdeadbeef;
  const std::string blob = SerializeSegmentInfo(info);
  EXPECT_EQ(blob.size(), 46u);
  absl::StatusOr<SegmentInfo> back = ParseSegmentInfo(blob);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, info);
}

TEST(RdmaCommonTest, SegmentInfoRejectsDamage) {
  SegmentInfo info;
  info.length = 10;
  std::string blob = SerializeSegmentInfo(info);
  EXPECT_THAT(std::string(ParseSegmentInfo(blob.substr(1)).status().message()),
              HasSubstr("bytes, expected 46"));
  std::string bad = blob;
  bad[0] ^= 1;
  EXPECT_THAT(std::string(ParseSegmentInfo(bad).status().message()), HasSubstr("magic"));
  bad = blob;
  bad[4] = 2;
  EXPECT_THAT(std::string(ParseSegmentInfo(bad).status().message()), HasSubstr("version"));
  bad = blob;
  bad[9] = 9;  // mtu code
  EXPECT_THAT(std::string(ParseSegmentInfo(bad).status().message()), HasSubstr("mtu"));
  bad = blob;
  bad[8] = 0;  // port
  EXPECT_THAT(std::string(ParseSegmentInfo(bad).status().message()), HasSubstr("port 0"));
  info.addr = UINT64_MAX - 5;
  EXPECT_THAT(std::string(ParseSegmentInfo(SerializeSegmentInfo(info)).status().message()),
              HasSubstr("overflows"));
}

TEST(RdmaCommonTest, ConnInfoRoundTripAndLimits) {
  ConnInfo info;
  info.connection_id = 0x0123456789abcdefull;
  info.gid = SampleGid();
  info.lid = 7;
  info.port = 1;
  info.mtu = IBV_MTU_1024;
  info.qp_num = 0xabcdef;
  info.psn = 0x123456;
  absl::StatusOr<ConnInfo> back = ParseConnInfo(SerializeConnInfo(info));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, info);

  ConnInfo bad = info;
  bad.qp_num = 0x1000000;
  EXPECT_THAT(std::string(ParseConnInfo(SerializeConnInfo(bad)).status().message()),
              HasSubstr("24-bit"));
  bad = info;
  bad.qp_num = 0;
  EXPECT_FALSE(ParseConnInfo(SerializeConnInfo(bad)).ok());
  bad = info;
  bad.psn = 0x1000000;
  EXPECT_THAT(std::string(ParseConnInfo(SerializeConnInfo(bad)).status().message()),
              HasSubstr("psn"));
  // A segment blob is not a connection blob.
  EXPECT_FALSE(ParseConnInfo(SerializeSegmentInfo(SegmentInfo())).ok());
}

TEST(RdmaCommonTest, PlanSlicesCoversTheRangeExactly) {
  EXPECT_TRUE(PlanSlices(0, 0, 0, 4096).empty());
  std::vector<Slice> one = PlanSlices(100, 900, 10, 4096);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], (Slice{100, 900, 10}));
  for (uint64_t length :
       std::initializer_list<uint64_t>{1ull, 4095ull, 4096ull, 4097ull, 3 * 4096ull + 1}) {
    std::vector<Slice> slices = PlanSlices(1000, 5000, length, 4096);
    EXPECT_EQ(slices.size(), (length + 4095) / 4096);
    uint64_t covered = 0;
    for (const Slice& s : slices) {
      EXPECT_EQ(s.local_addr, 1000 + covered);
      EXPECT_EQ(s.remote_addr, 5000 + covered);
      EXPECT_GT(s.length, 0u);
      EXPECT_LE(s.length, 4096u);
      covered += s.length;
    }
    EXPECT_EQ(covered, length);
  }
  // A work request's length is 32-bit: huge slices are capped at 2 GiB.
  std::vector<Slice> big = PlanSlices(0, 0, 5ull << 30, UINT64_MAX);
  ASSERT_EQ(big.size(), 3u);
  EXPECT_EQ(big[0].length, 1u << 31);
  EXPECT_EQ(big[2].length, 1u << 30);
}

TEST(RdmaCommonTest, TranslateRemote) {
  SegmentInfo seg;
  seg.addr = 0x10000;
  seg.length = 4096;
  seg.rkey = 42;
  absl::StatusOr<RemoteAddress> a = TranslateRemote(seg, 100, 200);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->addr, 0x10000u + 100);
  EXPECT_EQ(a->rkey, 42u);
  EXPECT_TRUE(TranslateRemote(seg, 0, 4096).ok());
  EXPECT_TRUE(TranslateRemote(seg, 4096, 0).ok());
  EXPECT_EQ(TranslateRemote(seg, 4000, 97).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(TranslateRemote(seg, UINT64_MAX, 2).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(RdmaCommonTest, LocalRegionTable) {
  LocalRegionTable table;
  ASSERT_TRUE(table.Add("a", 1000, 100, 11).ok());
  ASSERT_TRUE(table.Add("b", 2000, 100, 22).ok());
  ASSERT_TRUE(table.Add("c", 1100, 50, 33).ok());  // adjacent to a
  EXPECT_EQ(table.Add("a", 5000, 1, 1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(table.Add("d", 1050, 10, 1).code(), absl::StatusCode::kInvalidArgument);   // inside a
  EXPECT_EQ(table.Add("d", 1990, 20, 1).code(), absl::StatusCode::kInvalidArgument);   // into b
  EXPECT_EQ(table.Add("d", 900, 2000, 1).code(), absl::StatusCode::kInvalidArgument);  // covers
  EXPECT_EQ(table.Add("d", 10, 0, 1).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(*table.FindLkey(1000, 100), 11u);
  EXPECT_EQ(*table.FindLkey(1099, 1), 11u);
  EXPECT_EQ(*table.FindLkey(1100, 50), 33u);
  EXPECT_EQ(*table.FindLkey(2050, 0), 22u);
  // Spanning two regions needs two keys: refused.
  EXPECT_EQ(table.FindLkey(1090, 20).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table.FindLkey(999, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table.FindLkey(2099, 2).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(table.FindLkey(5, 1).status().message()), HasSubstr("registered"));

  ASSERT_TRUE(table.Remove("a").ok());
  EXPECT_FALSE(table.FindLkey(1000, 1).ok());
  EXPECT_EQ(table.Remove("a").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(table.size(), 2u);
}

TEST(RdmaCommonTest, QueuePairStateMachine) {
  // The path a connection takes.
  QpState s = QpState::kReset;
  s = *NextQpState(s, QpEvent::kInit);
  EXPECT_EQ(s, QpState::kInit);
  s = *NextQpState(s, QpEvent::kPeerInfo);
  EXPECT_EQ(s, QpState::kRtr);
  s = *NextQpState(s, QpEvent::kReady);
  EXPECT_EQ(s, QpState::kRts);
  EXPECT_EQ(*NextQpState(s, QpEvent::kFatal), QpState::kError);
  EXPECT_EQ(*NextQpState(QpState::kError, QpEvent::kReset), QpState::kReset);
  // Transitions verbs refuses.
  absl::StatusOr<QpState> bad = NextQpState(QpState::kReset, QpEvent::kPeerInfo);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("RESET"));
  EXPECT_FALSE(NextQpState(QpState::kInit, QpEvent::kReady).ok());
  EXPECT_FALSE(NextQpState(QpState::kRts, QpEvent::kInit).ok());
  EXPECT_FALSE(NextQpState(QpState::kError, QpEvent::kReady).ok());
  EXPECT_EQ(ToVerbsState(QpState::kRtr), IBV_QPS_RTR);
  EXPECT_EQ(ToVerbsState(QpState::kError), IBV_QPS_ERR);
}

TEST(RdmaCommonTest, TransitionAttributes) {
  QpTransition init = InitTransition(1);
  EXPECT_EQ(init.attr.qp_state, IBV_QPS_INIT);
  EXPECT_EQ(init.attr.port_num, 1);
  EXPECT_EQ(init.attr.qp_access_flags, kRemoteAccess);
  EXPECT_EQ(init.mask, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);

  ConnInfo remote;
  remote.qp_num = 0x99;
  remote.psn = 0x777;
  remote.lid = 5;
  remote.mtu = IBV_MTU_2048;
  QpTransition rtr = RtrTransition(remote, 1, IBV_MTU_4096, 3);
  EXPECT_EQ(rtr.attr.qp_state, IBV_QPS_RTR);
  EXPECT_EQ(rtr.attr.dest_qp_num, 0x99u);
  EXPECT_EQ(rtr.attr.rq_psn, 0x777u);
  EXPECT_EQ(rtr.attr.path_mtu, IBV_MTU_2048);  // the smaller of the two
  EXPECT_EQ(rtr.attr.ah_attr.dlid, 5);
  EXPECT_EQ(rtr.attr.ah_attr.is_global, 0);  // zero GID: InfiniBand LID routing
  EXPECT_TRUE(rtr.mask & IBV_QP_AV);
  EXPECT_TRUE(rtr.mask & IBV_QP_DEST_QPN);
  EXPECT_TRUE(rtr.mask & IBV_QP_RQ_PSN);

  remote.gid = SampleGid();  // RoCE: routed through the GRH
  rtr = RtrTransition(remote, 1, IBV_MTU_1024, 3);
  EXPECT_EQ(rtr.attr.path_mtu, IBV_MTU_1024);
  EXPECT_EQ(rtr.attr.ah_attr.is_global, 1);
  EXPECT_EQ(rtr.attr.ah_attr.grh.sgid_index, 3);
  EXPECT_EQ(rtr.attr.ah_attr.grh.dgid.raw[0], 0xf0);
  EXPECT_EQ(rtr.attr.ah_attr.grh.dgid.raw[15], 0xff);

  QpTransition rts = RtsTransition(0x4242);
  EXPECT_EQ(rts.attr.qp_state, IBV_QPS_RTS);
  EXPECT_EQ(rts.attr.sq_psn, 0x4242u);
  EXPECT_GT(rts.attr.retry_cnt, 0);
  EXPECT_TRUE(rts.mask & IBV_QP_SQ_PSN);
  EXPECT_TRUE(rts.mask & IBV_QP_MAX_QP_RD_ATOMIC);
}

TEST(RdmaCommonTest, CompletionStatusCodes) {
  EXPECT_TRUE(CompletionStatus(IBV_WC_SUCCESS, 0, "x").ok());
  EXPECT_EQ(CompletionStatus(IBV_WC_RETRY_EXC_ERR, 0, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CompletionStatus(IBV_WC_RNR_RETRY_EXC_ERR, 0, "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(CompletionStatus(IBV_WC_REM_ACCESS_ERR, 0, "x").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(CompletionStatus(IBV_WC_LOC_PROT_ERR, 0, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CompletionStatus(IBV_WC_WR_FLUSH_ERR, 0, "x").code(), absl::StatusCode::kAborted);
  EXPECT_EQ(CompletionStatus(IBV_WC_GENERAL_ERR, 0, "x").code(), absl::StatusCode::kInternal);
  absl::Status s = CompletionStatus(IBV_WC_REM_ACCESS_ERR, 0x51, "rdma write of 8 bytes");
  EXPECT_THAT(std::string(s.message()), HasSubstr("rdma write of 8 bytes"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("vendor error 0x51"));
}

TEST(RdmaCommonTest, PollBackoffSpinsThenSleepsAndResets) {
  PollBackoff backoff;
  for (int i = 0; i < 256; ++i) EXPECT_EQ(backoff.Next(0).count(), 0) << i;
  std::chrono::microseconds previous(0);
  for (int i = 0; i < 5000; ++i) {
    auto pause = backoff.Next(0);
    EXPECT_GE(pause, previous);
    EXPECT_LE(pause.count(), 100);
    previous = pause;
  }
  EXPECT_EQ(previous.count(), 100);
  EXPECT_EQ(backoff.Next(3).count(), 0);
  EXPECT_EQ(backoff.Next(0).count(), 0);  // spinning again after work arrived
}

TEST(RdmaCommonTest, RandomPsnIs24Bits) {
  for (int i = 0; i < 1000; ++i) EXPECT_LE(RandomPsn(), 0xffffffu);
}

}  // namespace
}  // namespace crescent::kvstore::rdma
