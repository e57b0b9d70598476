// The rdma transport's device-dependent half cannot run without an RDMA NIC (or soft-RoCE); what
// can be checked anywhere is that it reports the absence clearly instead of failing obscurely.
#include "kvstore/transfer/rdma_transport.h"

#include <infiniband/verbs.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/tcp_transport.h"
#include "kvstore/transfer/transfer_engine.h"

namespace crescent::kvstore {
namespace {

using ::testing::HasSubstr;

bool HasRdmaDevice() {
  int count = 0;
  ibv_device** list = ibv_get_device_list(&count);
  if (list != nullptr) ibv_free_device_list(list);
  return count > 0;
}

TEST(RdmaTransportTest, WithoutADeviceReportsUnavailable) {
  if (HasRdmaDevice()) GTEST_SKIP() << "this machine has an RDMA device";
  TcpTransportOptions tcp_options;
  auto tcp = TcpTransport::Create(tcp_options);
  ASSERT_TRUE(tcp.ok());
  auto rdma = RdmaTransport::Create(RdmaTransportOptions(), tcp->get());
  ASSERT_FALSE(rdma.ok());
  EXPECT_EQ(rdma.status().code(), absl::StatusCode::kUnavailable) << rdma.status();
  EXPECT_THAT(std::string(rdma.status().message()), HasSubstr("rdma unavailable"));
}

TEST(RdmaTransportTest, NeedsAControlChannel) {
  EXPECT_EQ(RdmaTransport::Create(RdmaTransportOptions(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RdmaTransportTest, EngineFallsBackWithoutADevice) {
  if (HasRdmaDevice()) GTEST_SKIP() << "this machine has an RDMA device";
  InMemorySegmentDirectory directory;
  auto engine = TransferEngine::Create(TransferEngineOptions(), &directory);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_THAT((*engine)->transport_names(), ::testing::ElementsAre("shm", "tcp"));
}

}  // namespace
}  // namespace crescent::kvstore
