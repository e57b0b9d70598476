#include "bench/kvstore/master_ops.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvstore/master/master_state.h"

namespace crescent::kvstore {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void Die(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "master ops: %s: %s\n", what, std::string(s.ToString()).c_str());
  std::exit(1);
}

}  // namespace

void PrintMasterStateOps(size_t keys) {
  auto state = master::MasterState::Create({});
  if (!state.ok()) Die(state.status(), "MasterState");
  master::MasterState& m = **state;
  int64_t now = 1;
  for (int n = 0; n < 3; ++n) {
    const std::string id = "n" + std::to_string(n);
    (void)m.RegisterNode(id, id, now);
    (void)m.MountSegment(id, id + "/dram", master::Tier::kDram, 1ull << 40, now);
  }
  auto t0 = Clock::now();
  for (size_t k = 1; k <= keys; ++k) {
    if (!m.PutStart(k, 65536, 1, now).ok()) Die(absl::InternalError("put"), "PutStart");
    if (!m.PutEnd(k, k, now).ok()) Die(absl::InternalError("put"), "PutEnd");
  }
  const double put_s = Seconds(t0);
  t0 = Clock::now();
  for (size_t k = 1; k <= keys; ++k) {
    if (!m.Get(k, ++now).ok()) Die(absl::InternalError("get"), "Get");
  }
  const double get_s = Seconds(t0);
  std::vector<uint64_t> batch(64);
  t0 = Clock::now();
  size_t exists = 0;
  for (size_t k = 1; k + 64 <= keys; k += 64) {
    for (size_t i = 0; i < 64; ++i) batch[i] = k + i;
    exists += m.BatchExists(batch, now).size();
  }
  const double exists_s = Seconds(t0);
  std::printf("master state (in-process, %zu keys):\n", keys);
  std::printf("  put (PutStart+PutEnd)   %10.0f ops/s\n", keys / put_s);
  std::printf("  get (lease)             %10.0f ops/s\n", keys / get_s);
  std::printf("  exists (batches of 64)  %10.0f keys/s\n", exists / exists_s);
}

}  // namespace crescent::kvstore
