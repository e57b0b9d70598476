// `crescent prefill-node`: a prefill node of the disaggregated cluster (prefill_node/).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "prefill_node/prefill_node.h"
#include "src/cli/command.h"
#include "src/cli/node_command.h"
#include "src/common/memory_size.h"

namespace crescent::cli {
namespace {

constexpr NodeRole kPrefillRole = {
    .command = "prefill-node",
    .service = "PrefillNode",
    .work = "prefills",
    .kv_cache_mb_help = "KV cache memory in MiB",
    .max_step_tokens_help = "token budget of one engine step (the prefill chunk size)",
    .transport_help = "KV transfer: auto (shm, rdma, tcp), tcp, shm (shm, tcp) or rdma (rdma, tcp)",
};

struct PrefillNodeFlags {
  NodeFlags node;
  int64_t pool_dram_mb = 256;
  bool no_profile = false;
};

int RunPrefillNode(const PrefillNodeFlags& f) {
  if (absl::Status s = ValidateNodeFlags(f.node); !s.ok()) {
    return BadNodeFlag(kPrefillRole, s.message());
  }
  if (absl::Status s = CheckMemoryMb("--pool-dram-mb", f.pool_dram_mb, 0, "; 0 = none"); !s.ok()) {
    return BadNodeFlag(kPrefillRole, s.message());
  }
  if (!prefill_node::TransportOrder(f.node.transport).ok()) {
    return BadNodeFlag(
        kPrefillRole, "--transport must be auto, tcp, shm or rdma, got '" + f.node.transport + "'");
  }

  prefill_node::PrefillNodeOptions o;
  ApplyNodeFlags(f.node, &o);
  o.pool_dram_bytes = static_cast<uint64_t>(f.pool_dram_mb) << 20;
  o.measure_profile = !f.no_profile;
  return RunNodeUntilStopped(kPrefillRole, f.node.drain_timeout_s,
                             [&o] { return prefill_node::PrefillNode::Start(o); });
}

}  // namespace

void AddPrefillNodeCommands(CLI::App& app, std::vector<Command>* commands) {
  auto flags = std::make_shared<PrefillNodeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "prefill-node",
      "prefill node of the disaggregated cluster: computes prompts' KV into decode nodes");
  cmd->alias("prefill");  // DESIGN.md's name for the role
  AddNodeFlags(cmd, kPrefillRole, &flags->node);
  cmd->add_option("--pool-dram-mb", flags->pool_dram_mb,
                  "DRAM this node contributes to the KV pool in MiB (0: none)")
      ->capture_default_str();
  cmd->add_flag("--no-profile", flags->no_profile,
                "skip the startup cost measurement (the Conductor then uses its defaults)");
  commands->push_back({cmd, [flags] { return RunPrefillNode(*flags); }});
}

}  // namespace crescent::cli
