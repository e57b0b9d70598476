// `crescent decode-node`: a decode node of the disaggregated cluster (decode_node/).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "decode_node/decode_node.h"
#include "src/cli/command.h"
#include "src/cli/node_command.h"

namespace crescent::cli {
namespace {

constexpr NodeRole kDecodeRole = {
    .command = "decode-node",
    .service = "DecodeNode",
    .work = "decodes",
    .kv_cache_mb_help = "KV cache memory in MiB (a shared segment prefill nodes write into)",
    .max_step_tokens_help = "token budget of one engine step",
    .transport_help =
        "how peers reach the KV cache: auto (shm, rdma, tcp), tcp (rdma, tcp), shm, rdma",
};

struct DecodeNodeFlags {
  NodeFlags node;
  int max_running = 64;
  int speculative_tokens = 0;
  double speculative_draft_cost = engine::EngineOptions{}.speculative_draft_cost;
  int64_t reserve_timeout_ms = 30000;
  bool no_profile = false;
};

int RunDecodeNode(const DecodeNodeFlags& f) {
  if (absl::Status s = ValidateNodeFlags(f.node); !s.ok()) {
    return BadNodeFlag(kDecodeRole, s.message());
  }
  if (f.max_running < 1) return BadNodeFlag(kDecodeRole, "--max-running must be at least 1");
  if (f.speculative_tokens < 0 || f.speculative_tokens > 64) {
    return BadNodeFlag(kDecodeRole, "--speculative-tokens must be in [0, 64]");
  }
  if (!(f.speculative_draft_cost >= 0 && f.speculative_draft_cost < 1)) {
    return BadNodeFlag(kDecodeRole, "--speculative-draft-cost must be in [0, 1)");
  }
  if (f.reserve_timeout_ms < 1) {
    return BadNodeFlag(kDecodeRole, "--reserve-timeout-ms must be at least 1");
  }
  if (!decode_node::TransportsFor(f.node.transport).ok()) {
    return BadNodeFlag(
        kDecodeRole, "--transport must be auto, tcp, shm or rdma, got '" + f.node.transport + "'");
  }

  decode_node::DecodeNodeOptions o;
  ApplyNodeFlags(f.node, &o);
  o.max_running = f.max_running;
  o.speculative_tokens = f.speculative_tokens;
  o.speculative_draft_cost = f.speculative_draft_cost;
  o.reserve_timeout_ms = f.reserve_timeout_ms;
  o.measure_profile = !f.no_profile;
  return RunNodeUntilStopped(kDecodeRole, f.node.drain_timeout_s,
                             [&o] { return decode_node::DecodeNode::Start(o); });
}

}  // namespace

void AddDecodeNodeCommands(CLI::App& app, std::vector<Command>* commands) {
  auto flags = std::make_shared<DecodeNodeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "decode-node",
      "decode node of the disaggregated cluster: reserves KV pages, decodes, streams tokens");
  cmd->alias("decode");  // DESIGN.md's name for the role
  AddNodeFlags(cmd, kDecodeRole, &flags->node);
  cmd->add_option("--max-running", flags->max_running, "sequences in the running batch at most")
      ->capture_default_str();
  cmd->add_option(
         "--speculative-tokens", flags->speculative_tokens,
         "speculative decoding: draft tokens a step for greedy requests, by prompt lookup (0: off)")
      ->capture_default_str();
  cmd->add_option("--speculative-draft-cost", flags->speculative_draft_cost,
                  "one position's arithmetic as a fraction of a one-token decode step, in "
                  "[0, 1): a sequence gets the drafts its record of confirmed drafts pays for "
                  "while the step stays memory-bound (0: every proposed draft)")
      ->capture_default_str();
  cmd->add_option("--reserve-timeout-ms", flags->reserve_timeout_ms,
                  "a KV reservation whose Decode has not started by then is released (default "
                  "and upper bound of the Conductor's timeout)")
      ->capture_default_str();
  cmd->add_flag("--no-profile", flags->no_profile,
                "skip the startup decode-step measurement (the Conductor then uses its defaults)");
  commands->push_back({cmd, [flags] { return RunDecodeNode(*flags); }});
}

}  // namespace crescent::cli
