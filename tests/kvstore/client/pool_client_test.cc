// PoolClient against an in-process master (MasterServer) and in-process storage nodes
// (StorageServer), over tcp and shm.
#include "kvstore/client/pool_client.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/server/master_server.h"
#include "kvstore/server/storage_server.h"

namespace crescent::kvstore::client {
namespace {

using server::MasterServer;
using server::MasterServerOptions;
using server::StorageServer;
using server::StorageServerOptions;

std::vector<std::byte> Block(uint64_t key, size_t size) {
  std::vector<std::byte> out(size);
  std::mt19937_64 rng(key);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, size - i));
  }
  return out;
}

class PoolClientTest : public ::testing::TestWithParam<std::string> {
 protected:
  void StartMaster(master::MasterConfig config = {}) {
    MasterServerOptions options;
    options.listen = "127.0.0.1:0";
    options.config = config;
    options.tick_interval = std::chrono::milliseconds(20);
    auto m = MasterServer::Start(options);
    ASSERT_TRUE(m.ok()) << m.status();
    master_ = *std::move(m);
  }

  StorageServer* StartNode(const std::string& id, uint64_t dram, uint64_t ssd = 0) {
    StorageServerOptions options;
    options.master_address = master_->address();
    options.node_id = id;
    options.dram_bytes = dram;
    options.transport = GetParam();
    options.heartbeat_interval = std::chrono::milliseconds(50);
    if (ssd > 0) {
      options.ssd_path = dir_ + "/" + id + ".ssd";
      options.ssd_bytes = ssd;
    }
    auto n = StorageServer::Start(options);
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok()) return nullptr;
    nodes_.push_back(*std::move(n));
    return nodes_.back().get();
  }

  std::unique_ptr<PoolClient> Client(int replicas = 1) {
    PoolClientOptions options;
    options.master_address = master_->address();
    options.transport = GetParam();
    options.replica_count = replicas;
    auto c = PoolClient::Create(options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  void SetUp() override {
    dir_ = ::testing::TempDir() + "/pool_client_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    nodes_.clear();
    master_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Puts blocks for keys [first, first+n) of sizes from `size_of`; returns the statuses.
  static std::vector<absl::Status> Put(PoolClient& client, uint64_t first, size_t n, size_t size) {
    std::vector<uint64_t> keys;
    std::vector<std::vector<std::byte>> data;
    std::vector<std::span<const std::byte>> spans;
    for (size_t i = 0; i < n; ++i) {
      keys.push_back(first + i);
      data.push_back(Block(first + i, size + ((first + i) % 7) * 8));
    }
    for (auto& d : data) spans.emplace_back(d);
    auto put = client.BatchPut(keys, spans);
    EXPECT_TRUE(put.ok()) << put.status();
    return put.ok() ? *put : std::vector<absl::Status>();
  }

  // Gets keys [first, first+n); every hit must hold exactly the bytes put. Returns hit count.
  static size_t GetAndCheck(PoolClient& client, uint64_t first, size_t n, size_t size,
                            std::vector<absl::StatusCode>* codes = nullptr) {
    std::vector<uint64_t> keys;
    std::vector<std::vector<std::byte>> buffers(n, std::vector<std::byte>(size + 64));
    std::vector<std::span<std::byte>> spans;
    for (size_t i = 0; i < n; ++i) keys.push_back(first + i);
    for (auto& b : buffers) spans.emplace_back(b);
    auto got = client.BatchGet(keys, spans);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) return 0;
    size_t hits = 0;
    for (size_t i = 0; i < n; ++i) {
      if (codes != nullptr) codes->push_back((*got)[i].status().code());
      if (!(*got)[i].ok()) continue;
      const std::vector<std::byte> want = Block(first + i, size + ((first + i) % 7) * 8);
      EXPECT_EQ(*(*got)[i], want.size());
      EXPECT_EQ(std::memcmp(buffers[i].data(), want.data(), want.size()), 0)
          << "wrong bytes for key " << first + i;
      ++hits;
    }
    return hits;
  }

  std::string dir_;
  std::unique_ptr<MasterServer> master_;
  std::vector<std::unique_ptr<StorageServer>> nodes_;
};

TEST_P(PoolClientTest, PutThenGetReturnsTheSameBytes) {
  StartMaster();
  ASSERT_NE(StartNode("n0", 8 << 20), nullptr);
  ASSERT_NE(StartNode("n1", 8 << 20), nullptr);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  for (const absl::Status& s : Put(*client, 1000, 300, 4096)) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(GetAndCheck(*client, 1000, 300, 4096), 300u);
  EXPECT_EQ(client->stats().dram_reads, 300u);
  EXPECT_EQ(client->stats().checksum_mismatches, 0u);
  // The segments were reached over the transport asked for.
  auto handle = client->engine()->OpenSegment("n0/dram", {GetParam()});
  ASSERT_TRUE(handle.ok()) << handle.status();
  EXPECT_EQ(*client->engine()->SegmentTransport(*handle), GetParam());

  std::vector<uint64_t> keys = {1000, 1001, 5, 1002};
  auto exists = client->BatchExists(keys);
  ASSERT_TRUE(exists.ok()) << exists.status();
  EXPECT_THAT(*exists, ::testing::ElementsAre(true, true, false, true));
  auto prefix = client->LongestPrefix(keys);
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(*prefix, 2u);

  // A second put of a committed key is AlreadyExists and leaves the bytes alone.
  auto again = Put(*client, 1000, 1, 4096);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].code(), absl::StatusCode::kAlreadyExists);
}

TEST_P(PoolClientTest, MissesAndTooSmallBuffers) {
  StartMaster();
  ASSERT_NE(StartNode("n0", 4 << 20), nullptr);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  Put(*client, 7, 1, 1024);
  std::vector<uint64_t> keys = {7, 8, 7};
  std::vector<std::byte> a(2048), b(2048), c(16);
  std::vector<std::span<std::byte>> spans = {a, b, c};
  auto got = client->BatchGet(keys, spans);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE((*got)[0].ok());
  EXPECT_EQ((*got)[1].status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*got)[2].status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::span<std::byte>> one = {a};
  EXPECT_FALSE(client->BatchGet(keys, one).ok());  // Sizes differ.
  std::vector<std::byte> empty;
  std::vector<std::span<const std::byte>> puts = {empty};
  std::vector<uint64_t> key = {9};
  auto put = client->BatchPut(key, puts);
  ASSERT_TRUE(put.ok());
  EXPECT_EQ((*put)[0].code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(PoolClientTest, FullPoolIsResourceExhaustedNotCorruption) {
  master::MasterConfig config;
  config.high_watermark = 1.0;  // No eviction: every stored block must stay readable.
  config.low_watermark = 0.99;
  StartMaster(config);
  ASSERT_NE(StartNode("n0", 1 << 20), nullptr);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  auto put = Put(*client, 1, 40, 64 << 10);  // 2.5 MiB into 1 MiB.
  size_t ok = 0, exhausted = 0;
  for (const absl::Status& s : put) {
    ok += s.ok();
    exhausted += absl::IsResourceExhausted(s);
  }
  EXPECT_GT(ok, 0u);
  EXPECT_GT(exhausted, 0u);
  EXPECT_EQ(ok + exhausted, put.size());
  EXPECT_EQ(GetAndCheck(*client, 1, 40, 64 << 10), ok);
}

TEST_P(PoolClientTest, SecondReplicaServesWhenANodeLeaves) {
  StartMaster();
  ASSERT_NE(StartNode("n0", 8 << 20), nullptr);
  ASSERT_NE(StartNode("n1", 8 << 20), nullptr);
  auto client = Client(/*replicas=*/2);
  ASSERT_NE(client, nullptr);
  for (const absl::Status& s : Put(*client, 50, 100, 2048)) EXPECT_TRUE(s.ok()) << s;
  nodes_[0]->Stop();
  EXPECT_EQ(GetAndCheck(*client, 50, 100, 2048), 100u);
  // With one node left, two replicas no longer fit.
  auto put = Put(*client, 500, 1, 2048);
  ASSERT_EQ(put.size(), 1u);
  EXPECT_EQ(put[0].code(), absl::StatusCode::kResourceExhausted);
}

TEST_P(PoolClientTest, CorruptedDramIsAMissNeverWrongBytes) {
  StartMaster();
  ASSERT_NE(StartNode("n0", 1 << 20), nullptr);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  for (const absl::Status& s : Put(*client, 1, 50, 4096)) EXPECT_TRUE(s.ok()) << s;

  // Overwrite the whole DRAM segment behind the master's back, through the transfer engine.
  std::vector<std::byte> garbage(1 << 20, std::byte{0x5a});
  TransferEngine* engine = client->engine();
  auto handle = engine->OpenSegment("n0/dram");
  ASSERT_TRUE(handle.ok()) << handle.status();
  BatchId batch = engine->AllocateBatch(1);
  TransferRequest write{TransferOp::kWrite, garbage.data(), *handle, 0, garbage.size()};
  ASSERT_TRUE(engine->SubmitTransfer(batch, {&write, 1}).ok());
  ASSERT_TRUE(engine->Wait(batch, std::chrono::seconds(10)).ok());
  ASSERT_TRUE(engine->FreeBatch(batch).ok());

  std::vector<absl::StatusCode> codes;
  EXPECT_EQ(GetAndCheck(*client, 1, 50, 4096, &codes), 0u);
  for (absl::StatusCode code : codes) EXPECT_EQ(code, absl::StatusCode::kDataLoss);
  EXPECT_EQ(client->stats().checksum_mismatches, 50u);
}

TEST_P(PoolClientTest, DramPressureSpillsToSsdAndComesBack) {
  master::MasterConfig config;
  config.high_watermark = 0.5;
  config.low_watermark = 0.25;
  config.promote_on_hit = false;  // Keep hits on SSD so that the test sees SSD reads.
  StartMaster(config);
  StorageServer* node = StartNode("n0", 1 << 20, 32 << 20);
  ASSERT_NE(node, nullptr);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  size_t stored = 0;
  for (int round = 0; round < 8; ++round) {
    for (const absl::Status& s : Put(*client, 100 + round * 16, 16, 32 << 10)) {
      EXPECT_TRUE(s.ok()) << s;
      stored += s.ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));  // Ticks demote.
  }
  EXPECT_EQ(stored, 128u);  // 4 MiB through 1 MiB of DRAM.
  EXPECT_EQ(GetAndCheck(*client, 100, 128, 32 << 10), 128u);
  EXPECT_GT(client->stats().ssd_reads, 0u);
  EXPECT_GT(node->moves_done(), 0u);
  EXPECT_EQ(node->moves_failed(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Transports, PoolClientTest, ::testing::Values("tcp", "shm"));

TEST(GrpcSegmentDirectoryTest, PublishLookupUnpublish) {
  MasterServerOptions options;
  options.listen = "127.0.0.1:0";
  auto master = MasterServer::Start(options);
  ASSERT_TRUE(master.ok()) << master.status();
  auto directory = GrpcSegmentDirectory::Create((*master)->address());
  SegmentDescriptor d;
  d.name = "a/b";
  d.length = 4096;
  d.host_id = "h";
  d.tcp_endpoint = "127.0.0.1:1";
  ASSERT_TRUE(directory->Publish(d).ok());
  EXPECT_EQ(directory->Publish(d).code(), absl::StatusCode::kAlreadyExists);
  auto found = directory->Lookup("a/b");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, d);
  EXPECT_EQ(directory->Lookup("a/c").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(directory->Unpublish("a/b").ok());
  EXPECT_EQ(directory->Unpublish("a/b").code(), absl::StatusCode::kNotFound);
  d.name = "bad name";
  EXPECT_EQ(directory->Publish(d).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::kvstore::client
