// kvstore_bench: KV master operation rates and end-to-end pool throughput.
//
//   kvstore_bench [--keys N] [--pool-mib M]
//
// Prints, in one run:
//   1. master ops/s on an in-process MasterState (put = PutStart + PutEnd, get, exists);
//   2. the same through gRPC on loopback (MasterServer), with batches of 1 and of 64 keys;
//   3. pool put/get throughput of 64 KiB blocks, PoolClient -> three in-process storage nodes,
//      over tcp and over shm (batches of 64 blocks).
// Figures depend on the machine and its load; compare runs on the same machine only.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kvstore/client/pool_client.h"
#include "bench/kvstore/master_ops.h"
#include "kvstore/master/master_state.h"
#include "kvstore/server/master_server.h"
#include "kvstore/server/storage_server.h"
#include "proto/kvstore.grpc.pb.h"
#include "src/common/logging.h"

namespace crescent::kvstore {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void Die(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "kvstore_bench: %s: %s\n", what, std::string(s.ToString()).c_str());
  std::exit(1);
}

void BenchMasterGrpc(size_t keys) {
  server::MasterServerOptions options;
  options.listen = "127.0.0.1:0";
  auto master = server::MasterServer::Start(options);
  if (!master.ok()) Die(master.status(), "MasterServer");
  auto stub = v1::KvMaster::NewStub(
      grpc::CreateChannel((*master)->address(), grpc::InsecureChannelCredentials()));
  auto call_ok = [](const grpc::Status& s, const char* what) {
    if (!s.ok()) Die(absl::InternalError(s.error_message()), what);
  };
  for (int n = 0; n < 3; ++n) {
    const std::string id = "n" + std::to_string(n);
    grpc::ClientContext c1, c2;
    v1::RegisterNodeRequest reg;
    reg.set_node_id(id);
    reg.set_endpoint(id);
    v1::RegisterNodeResponse reg_r;
    call_ok(stub->RegisterNode(&c1, reg, &reg_r), "RegisterNode");
    v1::MountSegmentRequest mount;
    mount.set_node_id(id);
    mount.set_segment(id + "/dram");
    mount.set_capacity_bytes(1ull << 40);
    v1::MountSegmentResponse mount_r;
    call_ok(stub->MountSegment(&c2, mount, &mount_r), "MountSegment");
  }
  std::printf("master through gRPC (loopback, one client thread):\n");
  uint64_t next_key = 1;
  for (size_t batch : {size_t{1}, size_t{64}}) {
    const size_t rounds = std::max<size_t>(1, (batch == 1 ? keys / 8 : keys) / batch);
    const uint64_t first = next_key;
    auto t0 = Clock::now();
    for (size_t r = 0; r < rounds; ++r) {
      v1::PutStartRequest start;
      start.set_replica_count(1);
      v1::PutEndRequest end;
      for (size_t i = 0; i < batch; ++i) {
        auto* item = start.add_items();
        item->set_key(next_key);
        item->set_size(65536);
        auto* e = end.add_items();
        e->set_key(next_key);
        e->set_checksum(next_key);
        ++next_key;
      }
      grpc::ClientContext c1, c2;
      v1::PutStartResponse started;
      call_ok(stub->BatchPutStart(&c1, start, &started), "BatchPutStart");
      v1::PutEndResponse ended;
      call_ok(stub->BatchPutEnd(&c2, end, &ended), "BatchPutEnd");
    }
    const double put_s = Seconds(t0);
    t0 = Clock::now();
    uint64_t key = first;
    for (size_t r = 0; r < rounds; ++r) {
      v1::KeysRequest get;
      for (size_t i = 0; i < batch; ++i) get.add_keys(key++);
      grpc::ClientContext c;
      v1::GetResponse got;
      call_ok(stub->BatchGet(&c, get, &got), "BatchGet");
    }
    const double get_s = Seconds(t0);
    const double n = static_cast<double>(rounds * batch);
    std::printf(
        "  batch %2zu: put %9.0f keys/s (%7.0f round trips/s), get %9.0f keys/s "
        "(%7.0f RPC/s)\n",
        batch, n / put_s, 2 * rounds / put_s, n / get_s, rounds / get_s);
  }
}

void BenchPool(const std::string& transport, size_t pool_mib) {
  server::MasterServerOptions options;
  options.listen = "127.0.0.1:0";
  auto master = server::MasterServer::Start(options);
  if (!master.ok()) Die(master.status(), "MasterServer");
  std::vector<std::unique_ptr<server::StorageServer>> nodes;
  const uint64_t per_node = (static_cast<uint64_t>(pool_mib) << 20) / 3 + (8 << 20);
  for (int n = 0; n < 3; ++n) {
    server::StorageServerOptions so;
    so.master_address = (*master)->address();
    so.node_id = transport + std::to_string(n);
    so.dram_bytes = per_node;
    so.transport = transport;
    auto node = server::StorageServer::Start(so);
    if (!node.ok()) Die(node.status(), "StorageServer");
    nodes.push_back(*std::move(node));
  }
  client::PoolClientOptions co;
  co.master_address = (*master)->address();
  co.transport = transport;
  auto pool = client::PoolClient::Create(co);
  if (!pool.ok()) Die(pool.status(), "PoolClient");

  constexpr size_t kBlock = 64 << 10;
  constexpr size_t kBatch = 64;
  const size_t blocks = (pool_mib << 20) / kBlock / kBatch * kBatch;
  std::vector<std::byte> data(kBatch * kBlock);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i * 131 + 7);
  std::vector<std::byte> out(kBatch * kBlock);
  auto t0 = Clock::now();
  for (size_t b = 0; b < blocks; b += kBatch) {
    std::vector<uint64_t> keys;
    std::vector<std::span<const std::byte>> spans;
    for (size_t i = 0; i < kBatch; ++i) {
      keys.push_back(1 + b + i);
      // Distinct bytes per block: stamp the key into the block's first word.
      std::memcpy(data.data() + i * kBlock, &keys.back(), 8);
      spans.emplace_back(data.data() + i * kBlock, kBlock);
    }
    auto put = (*pool)->BatchPut(keys, spans);
    if (!put.ok()) Die(put.status(), "BatchPut");
    for (const absl::Status& s : *put) {
      if (!s.ok()) Die(s, "BatchPut key");
    }
  }
  const double put_s = Seconds(t0);
  t0 = Clock::now();
  for (size_t b = 0; b < blocks; b += kBatch) {
    std::vector<uint64_t> keys;
    std::vector<std::span<std::byte>> spans;
    for (size_t i = 0; i < kBatch; ++i) {
      keys.push_back(1 + b + i);
      spans.emplace_back(out.data() + i * kBlock, kBlock);
    }
    auto got = (*pool)->BatchGet(keys, spans);
    if (!got.ok()) Die(got.status(), "BatchGet");
    for (const auto& g : *got) {
      if (!g.ok()) Die(g.status(), "BatchGet key");
    }
  }
  const double get_s = Seconds(t0);
  const double mib = static_cast<double>(blocks * kBlock) / (1 << 20);
  std::printf("  %-3s: put %8.1f MiB/s (%7.0f blocks/s), get %8.1f MiB/s (%7.0f blocks/s)\n",
              transport.c_str(), mib / put_s, blocks / put_s, mib / get_s, blocks / get_s);
}

}  // namespace
}  // namespace crescent::kvstore

int main(int argc, char** argv) {
  size_t keys = 100000;
  size_t pool_mib = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--keys") == 0) keys = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--pool-mib") == 0) {
      pool_mib = std::strtoull(argv[i + 1], nullptr, 10);
    }
  }
  crescent::SetLogLevel("warn");
  crescent::kvstore::PrintMasterStateOps(keys);
  crescent::kvstore::BenchMasterGrpc(keys / 10);
  std::printf(
      "pool, 64 KiB blocks in batches of 64, checksummed, 3 in-process nodes, "
      "%zu MiB:\n",
      pool_mib);
  crescent::kvstore::BenchPool("tcp", pool_mib);
  crescent::kvstore::BenchPool("shm", pool_mib);
  return 0;
}
