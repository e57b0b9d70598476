#include "kvstore/server/master_server.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/server/storage_server.h"

namespace crescent::kvstore::server {
namespace {

using ::testing::HasSubstr;

MasterServerOptions AnyPort() {
  MasterServerOptions o;
  o.listen = "127.0.0.1:0";
  return o;
}

TEST(MasterServerTest, ListensOnAFreePortWhenAskedForPortZero) {
  auto master = MasterServer::Start(AnyPort());
  ASSERT_TRUE(master.ok()) << master.status();
  EXPECT_THAT((*master)->address(), HasSubstr("127.0.0.1:"));
  EXPECT_NE((*master)->address(), "127.0.0.1:0");
}

// gRPC's default (SO_REUSEPORT) would let the second server bind the port too and the kernel
// would split new connections between the two: clients of one service would reach the other.
TEST(MasterServerTest, APortAlreadyListenedOnIsAFailedStartNotASharedPort) {
  auto first = MasterServer::Start(AnyPort());
  ASSERT_TRUE(first.ok()) << first.status();
  MasterServerOptions same;
  same.listen = (*first)->address();
  auto second = MasterServer::Start(same);
  ASSERT_FALSE(second.ok()) << "a second master listens on " << same.listen;
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(same.listen));
}

// The shape of the clash `crescent up` once hit: a node's storage server binding a port another
// Crescent gRPC server already listens on.
TEST(StorageServerTest, CannotListenOnAPortAnotherServerHolds) {
  auto master = MasterServer::Start(AnyPort());
  ASSERT_TRUE(master.ok()) << master.status();
  StorageServerOptions o;
  o.master_address = (*master)->address();
  o.node_id = "storage-0";
  o.dram_bytes = 1 << 20;
  o.transport = "tcp";
  o.rpc_listen = (*master)->address();
  auto storage = StorageServer::Start(o);
  ASSERT_FALSE(storage.ok()) << "a storage server shares " << o.rpc_listen << " with the master";
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(storage.status().message(), HasSubstr("cannot listen on " + o.rpc_listen));
}

}  // namespace
}  // namespace crescent::kvstore::server
