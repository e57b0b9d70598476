// Loopback test of the KV master's gRPC edge: a real server on 127.0.0.1 and a real stub.
#include "kvstore/master/master_service.h"

#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "src/common/clock.h"

namespace crescent::kvstore::master {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

class MasterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MasterConfig config;
    config.lease_ns = 5 * kSecond;
    auto service = MasterService::Create(config, &clock_);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::KvMaster::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                      grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  grpc::Status AddNode(const std::string& id, uint64_t dram) {
    grpc::ClientContext c1;
    v1::RegisterNodeRequest reg;
    reg.set_node_id(id);
    reg.set_endpoint("tcp://" + id);
    v1::RegisterNodeResponse reg_out;
    grpc::Status s = stub_->RegisterNode(&c1, reg, &reg_out);
    if (!s.ok()) return s;
    grpc::ClientContext c2;
    v1::MountSegmentRequest mount;
    mount.set_node_id(id);
    mount.set_segment(id + "/dram");
    mount.set_tier(v1::TIER_DRAM);
    mount.set_capacity_bytes(dram);
    v1::MountSegmentResponse mount_out;
    return stub_->MountSegment(&c2, mount, &mount_out);
  }

  ManualClock clock_{100 * kSecond};
  std::unique_ptr<MasterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::KvMaster::Stub> stub_;
};

TEST_F(MasterServiceTest, PutThenGetOverLoopback) {
  ASSERT_TRUE(AddNode("n1", 1 << 20).ok());
  ASSERT_TRUE(AddNode("n2", 1 << 20).ok());

  v1::PutStartRequest start;
  start.set_replica_count(2);
  for (uint64_t key : {0xa1ULL, 0xa2ULL, 0xa1ULL}) {
    auto* item = start.add_items();
    item->set_key(key);
    item->set_size(4096);
  }
  v1::PutStartResponse started;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->BatchPutStart(&ctx, start, &started).ok());
  }
  ASSERT_EQ(started.items_size(), 3);
  EXPECT_EQ(started.items(0).status().code(), 0);
  ASSERT_EQ(started.items(0).replicas_size(), 2);
  EXPECT_NE(started.items(0).replicas(0).node_id(), started.items(0).replicas(1).node_id());
  EXPECT_EQ(started.items(2).status().code(), static_cast<int>(absl::StatusCode::kAlreadyExists));
  EXPECT_NE(started.items(2).status().message().find("00000000000000a1"), std::string::npos);

  v1::KeysRequest keys;
  keys.add_keys(0xa1);
  keys.add_keys(0xa2);
  {
    grpc::ClientContext ctx;
    v1::LongestPrefixResponse prefix;
    ASSERT_TRUE(stub_->LongestPrefix(&ctx, keys, &prefix).ok());
    EXPECT_EQ(prefix.length(), 0u);  // Pending blocks are invisible.
  }

  v1::PutEndRequest end;
  auto* e = end.add_items();
  e->set_key(0xa1);
  e->set_checksum(0x1234);
  {
    grpc::ClientContext ctx;
    v1::PutEndResponse ended;
    ASSERT_TRUE(stub_->BatchPutEnd(&ctx, end, &ended).ok());
    ASSERT_EQ(ended.statuses_size(), 1);
    EXPECT_EQ(ended.statuses(0).code(), 0);
  }

  clock_.AdvanceSeconds(1);
  v1::GetResponse got;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->BatchGet(&ctx, keys, &got).ok());
  }
  ASSERT_EQ(got.items_size(), 2);
  EXPECT_EQ(got.items(0).status().code(), 0);
  ASSERT_EQ(got.items(0).replicas_size(), 2);
  EXPECT_EQ(got.items(0).replicas(0).checksum(), 0x1234u);
  EXPECT_EQ(got.items(0).replicas(0).length(), 4096u);
  EXPECT_EQ(got.items(0).lease_expires_ns(), clock_.NowNanos() + 5 * kSecond);
  EXPECT_EQ(got.items(1).status().code(), static_cast<int>(absl::StatusCode::kNotFound));
  {
    grpc::ClientContext ctx;
    v1::ExistsResponse exists;
    ASSERT_TRUE(stub_->BatchExists(&ctx, keys, &exists).ok());
    ASSERT_EQ(exists.exists_size(), 2);
    EXPECT_TRUE(exists.exists(0));
    EXPECT_FALSE(exists.exists(1));
  }
}

TEST_F(MasterServiceTest, ErrorsKeepTheirCodesAcrossTheWire) {
  grpc::ClientContext ctx;
  v1::HeartbeatRequest beat;
  beat.set_node_id("ghost");
  v1::HeartbeatResponse out;
  grpc::Status s = stub_->Heartbeat(&ctx, beat, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("ghost"), std::string::npos);
  EXPECT_EQ(FromGrpcStatus(s).code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(AddNode("n1", 1 << 20).ok());
  EXPECT_EQ(AddNode("n1", 1 << 20).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  grpc::ClientContext ctx2;
  v1::PutRevokeRequest revoke;
  revoke.set_key(7);
  v1::PutRevokeResponse revoked;
  EXPECT_EQ(stub_->PutRevoke(&ctx2, revoke, &revoked).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace crescent::kvstore::master
