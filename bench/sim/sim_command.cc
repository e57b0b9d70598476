#include "bench/sim/sim_command.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/sim/capacity_search.h"
#include "bench/sim/profile.h"
#include "bench/sim/profile_command.h"
#include "bench/sim/report.h"
#include "bench/sim/simulator.h"
#include "bench/sim/trace.h"
#include "conductor/policy/cost_model.h"
#include "conductor/policy/prefill_selector.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"

namespace crescent::bench {
namespace {

namespace policy = ::crescent::conductor::policy;

struct SimOptions {
  std::string trace;
  std::string policy = "all";
  std::string early_rejection = "both";  // on, off, both
  std::string mode = "disaggregated";    // disaggregated, colocated, both
  std::string profile;
  std::string write_profile;
  std::string json_out;
  bool capacity_search = false;
  double target_attainment = 0.9;
  int search_iterations = 6;
  int limit = 0;
  sim::SimConfig config;
};

absl::StatusOr<std::vector<policy::PrefillPolicy>> Policies(const std::string& name) {
  if (name == "all") return policy::AllPrefillPolicies();
  CRESCENT_ASSIGN_OR_RETURN(policy::PrefillPolicy p, policy::ParsePrefillPolicy(name));
  return std::vector<policy::PrefillPolicy>{p};
}

absl::StatusOr<std::vector<bool>> OnOff(const std::string& v, const char* flag) {
  if (v == "on") return std::vector<bool>{true};
  if (v == "off") return std::vector<bool>{false};
  if (v == "both") return std::vector<bool>{false, true};
  return absl::InvalidArgumentError(absl::StrFormat("%s wants on, off or both, got '%s'", flag, v));
}

absl::StatusOr<std::vector<bool>> Modes(const std::string& v) {
  if (v == "disaggregated") return std::vector<bool>{false};
  if (v == "colocated") return std::vector<bool>{true};
  if (v == "both") return std::vector<bool>{false, true};
  return absl::InvalidArgumentError(
      absl::StrFormat("--mode wants disaggregated, colocated or both, got '%s'", v));
}

absl::Status RunSim(const SimOptions& o) {
  policy::CostProfile profile = sim::DefaultCostProfile();
  std::string profile_name(sim::DefaultCostProfileDescription());
  if (!o.profile.empty()) {
    CRESCENT_ASSIGN_OR_RETURN(profile, sim::LoadCostProfile(o.profile));
    profile_name = o.profile;
  }
  if (!o.write_profile.empty()) {
    std::ofstream out(o.write_profile);
    out << sim::CostProfileToJson(profile, profile_name) << "\n";
    if (!out) return absl::InternalError("writing " + o.write_profile);
    std::printf("wrote %s\n", o.write_profile.c_str());
    if (o.trace.empty()) return absl::OkStatus();
  }
  if (o.trace.empty()) return absl::InvalidArgumentError("--trace PATH is required");
  CRESCENT_ASSIGN_OR_RETURN(policy::CostModel cost, policy::CostModel::Fit(profile));
  CRESCENT_ASSIGN_OR_RETURN(std::vector<sim::TraceRequest> trace, sim::ReadTrace(o.trace));
  if (o.limit > 0 && static_cast<size_t>(o.limit) < trace.size()) trace.resize(o.limit);
  CRESCENT_ASSIGN_OR_RETURN(auto policies, Policies(o.policy));
  CRESCENT_ASSIGN_OR_RETURN(auto rejections, OnOff(o.early_rejection, "--early-rejection"));
  CRESCENT_ASSIGN_OR_RETURN(auto modes, Modes(o.mode));

  const auto& pc = cost.prefill_coefficients();
  const auto& dc = cost.decode_coefficients();
  std::printf(
      "cost model (%s):\n  prefill(n, c) = %.4g + %.4g n + %.4g n (c + n/2) s\n"
      "  decode_step(b, k) = %.4g + %.4g b + %.4g k s\n  transfer = %.3g GB/s, block %d tokens "
      "= %.1f MiB\n",
      profile_name.c_str(), pc[0], pc[1], pc[2], dc[0], dc[1], dc[2],
      cost.bandwidth_bytes_per_s() / 1e9, cost.block_tokens(),
      static_cast<double>(cost.block_bytes()) / (1 << 20));
  const sim::SimConfig& c = o.config;
  std::printf(
      "cluster: %d prefill + %d decode instances (colocated: %d), local cache %lld blocks, pool "
      "%lld blocks, KV %lld blocks per decode instance; SLO TTFT %.1f s, TBT %.3f s; %zu "
      "requests, time scale %.3g\n\n",
      c.prefill_instances, c.decode_instances, c.prefill_instances + c.decode_instances,
      static_cast<long long>(c.local_cache_blocks), static_cast<long long>(c.pool_blocks),
      static_cast<long long>(c.kv_blocks_per_instance), c.slo.ttft_s, c.slo.tbt_s, trace.size(),
      c.time_scale);

  nlohmann::json all = nlohmann::json::array();
  if (!o.capacity_search) {
    std::vector<sim::SimReport> reports;
    for (bool colocated : modes) {
      for (policy::PrefillPolicy p : policies) {
        for (bool er : rejections) {
          sim::SimConfig config = o.config;
          config.policy = p;
          config.early_rejection = er;
          config.colocated = colocated;
          CRESCENT_ASSIGN_OR_RETURN(sim::SimResult r, sim::Simulate(trace, cost, config));
          reports.push_back(r.report);
          all.push_back(sim::ReportToJson(r.report));
        }
      }
    }
    std::printf("%s", sim::FormatTable(reports).c_str());
    std::printf(
        "(times in s; slo%% = requests meeting both SLOs; hit%% = prompt tokens reused; "
        "gput/s = SLO-meeting requests per s; waste%% = prefilled tokens of requests "
        "that missed an SLO)\n");
  } else {
    const double base_rate =
        static_cast<double>(trace.size()) /
        std::max(1e-9, (trace.back().timestamp_ms - trace.front().timestamp_ms) / 1000.0);
    std::printf(
        "capacity search: highest rate with SLO attainment >= %.0f%% (trace rate %.2f "
        "req/s = 1x)\n",
        100 * o.target_attainment, base_rate);
    std::printf("%-19s %-5s %-6s %9s %9s %9s %5s\n", "policy", "rej", "mode", "rate_x", "req/s",
                "slo%", "runs");
    for (bool colocated : modes) {
      for (policy::PrefillPolicy p : policies) {
        for (bool er : rejections) {
          sim::SimConfig config = o.config;
          config.policy = p;
          config.early_rejection = er;
          config.colocated = colocated;
          auto attainment = [&](double m) -> absl::StatusOr<double> {
            sim::SimConfig scaled = config;
            scaled.time_scale = 1.0 / m;
            CRESCENT_ASSIGN_OR_RETURN(sim::SimResult r, sim::Simulate(trace, cost, scaled));
            return r.report.slo_attainment;
          };
          CRESCENT_ASSIGN_OR_RETURN(
              sim::CapacityResult cap,
              sim::FindCapacity(attainment, o.target_attainment, o.search_iterations));
          std::printf("%-19s %-5s %-6s %9.3f %9.2f %9.1f %5d\n",
                      std::string(policy::PrefillPolicyName(p)).c_str(), er ? "early" : "none",
                      colocated ? "coloc" : "disagg", cap.rate_multiplier,
                      cap.rate_multiplier * base_rate, 100 * cap.attainment, cap.runs);
          std::fflush(stdout);
          all.push_back({{"policy", policy::PrefillPolicyName(p)},
                         {"early_rejection", er},
                         {"mode", colocated ? "colocated" : "disaggregated"},
                         {"rate_multiplier", cap.rate_multiplier},
                         {"request_rate", cap.rate_multiplier * base_rate},
                         {"slo_attainment", cap.attainment}});
        }
      }
    }
  }
  if (!o.json_out.empty()) {
    std::ofstream out(o.json_out);
    out << all.dump(2) << "\n";
    if (!out) return absl::InternalError("writing " + o.json_out);
    std::printf("wrote %s\n", o.json_out.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

void AddSimCommands(CLI::App& app, int* exit_code) {
  AddProfileCommand(app, exit_code);
  auto o = std::make_shared<SimOptions>();
  CLI::App* cmd = app.add_subcommand(
      "sim", "Discrete-event cluster simulator running the Conductor's policy on a trace");
  cmd->add_option("--trace", o->trace, "Mooncake-format JSONL trace");
  cmd->add_option("--policy", o->policy,
                  "random|round_robin|least_loaded|local_cache_aware|global_cache_aware|all")
      ->capture_default_str();
  cmd->add_option("--early-rejection", o->early_rejection, "on|off|both")->capture_default_str();
  cmd->add_option("--mode", o->mode, "disaggregated|colocated|both")->capture_default_str();
  cmd->add_option("--prefill", o->config.prefill_instances, "prefill instances")
      ->capture_default_str();
  cmd->add_option("--decode", o->config.decode_instances, "decode instances")
      ->capture_default_str();
  cmd->add_option("--ttft-slo", o->config.slo.ttft_s, "TTFT SLO, s")->capture_default_str();
  cmd->add_option("--tbt-slo", o->config.slo.tbt_s, "TBT SLO, s")->capture_default_str();
  cmd->add_option("--time-scale", o->config.time_scale,
                  "arrival = timestamp x scale (< 1 = faster)")
      ->capture_default_str();
  cmd->add_option("--local-cache-blocks", o->config.local_cache_blocks,
                  "prefix cache per prefill instance, blocks")
      ->capture_default_str();
  cmd->add_option("--pool-blocks", o->config.pool_blocks, "global KV pool, blocks")
      ->capture_default_str();
  cmd->add_option("--kv-blocks", o->config.kv_blocks_per_instance,
                  "KV capacity per decode instance, blocks")
      ->capture_default_str();
  cmd->add_option("--chunk-tokens", o->config.chunk_tokens, "colocated prefill chunk, tokens")
      ->capture_default_str();
  cmd->add_option("--seed", o->config.seed, "seed of the random policy")->capture_default_str();
  cmd->add_option("--limit", o->limit, "use only the first N requests");
  cmd->add_option("--profile", o->profile, "cost profile JSON (default: built-in)");
  cmd->add_option("--write-profile", o->write_profile,
                  "write the cost profile in use (default: built-in) as JSON to this path");
  cmd->add_option("--json", o->json_out, "write the reports as JSON to this path");
  cmd->add_flag("--capacity-search", o->capacity_search,
                "find each policy's highest request rate at the target SLO attainment");
  cmd->add_option("--target-attainment", o->target_attainment, "for --capacity-search")
      ->capture_default_str();
  cmd->add_option("--search-iterations", o->search_iterations, "bisection steps")
      ->capture_default_str();
  cmd->callback([o, exit_code] {
    const absl::Status s = RunSim(*o);
    if (!s.ok()) {
      std::fprintf(stderr, "crescent-bench sim: %s\n", std::string(s.message()).c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace crescent::bench
