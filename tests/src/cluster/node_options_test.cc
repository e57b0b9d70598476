#include "src/cluster/node_options.h"

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace crescent::cluster {
namespace {

NodeOptions Complete() {
  NodeOptions o;
  o.model_path = "m.gguf";
  o.node_id = "decode-0";
  o.conductor_address = "127.0.0.1:50060";
  o.kv_master_address = "127.0.0.1:50051";
  return o;
}

TEST(NodeOptionsTest, DefaultsWithTheRequiredFieldsAreValid) {
  EXPECT_TRUE(ValidateNodeOptions(Complete()).ok());
  NodeOptions o = Complete();
  o.metrics_port = -1;  // no metrics server
  o.kv_cache_bytes = int64_t{1} << 20;
  EXPECT_TRUE(ValidateNodeOptions(o).ok());
}

TEST(NodeOptionsTest, EachBadFieldIsNamedByItsFlag) {
  struct Case {
    std::function<void(NodeOptions*)> spoil;
    std::string flag;
  };
  const std::vector<Case> cases = {
      {[](NodeOptions* o) { o->model_path.clear(); }, "--model"},
      {[](NodeOptions* o) { o->node_id.clear(); }, "--node-id"},
      {[](NodeOptions* o) { o->conductor_address.clear(); }, "--conductor"},
      {[](NodeOptions* o) { o->kv_master_address.clear(); }, "--kv-master"},
      {[](NodeOptions* o) { o->kv_cache_bytes = (int64_t{1} << 20) - 1; }, "--kv-cache-mb"},
      {[](NodeOptions* o) { o->threads = -1; }, "--threads"},
      {[](NodeOptions* o) { o->backend = "gpu"; }, "--backend"},
      {[](NodeOptions* o) { o->max_step_tokens = 0; }, "--max-step-tokens"},
      {[](NodeOptions* o) { o->block_tokens = 0; }, "--block-tokens"},
      {[](NodeOptions* o) { o->metrics_port = 65536; }, "--metrics-port"},
      {[](NodeOptions* o) { o->metrics_port = -2; }, "--metrics-port"},
      {[](NodeOptions* o) { o->heartbeat_interval = std::chrono::milliseconds(0); }, "heartbeat"},
  };
  for (const Case& c : cases) {
    NodeOptions o = Complete();
    c.spoil(&o);
    const absl::Status s = ValidateNodeOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.flag;
    EXPECT_NE(s.message().find(c.flag), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace crescent::cluster
