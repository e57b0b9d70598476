#include "bench/replay/replay_command.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/replay/client.h"
#include "bench/replay/metrics.h"
#include "bench/replay/plot.h"
#include "bench/replay/prompt_builder.h"
#include "bench/replay/report.h"
#include "bench/replay/synthetic.h"
#include "bench/replay/trace.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"

namespace crescent::bench {
namespace {

using json = nlohmann::json;

struct ReplayFlags {
  std::string trace_path;
  bool strict = false;
  int trace_block_tokens = 512;
  bool synthetic = false;
  SyntheticOptions syn;
  std::string syn_arrival = "poisson";
  SubsetOptions subset;
  double time_scale = 1.0;
  PromptOptions prompt{.max_context = 8192};
  int64_t block_tokens = 0;  // > 0 overrides length_scale.
  ClientOptions client;
  std::string mode = "tokens";
  bool no_ignore_eos = false;
  double slo_ttft_ms = 0;
  double slo_tbt_ms = 0;
  std::string out_dir;
  std::string label;
  std::string write_trace;
  bool no_progress = false;
  bool dry_run = false;
};

absl::Status WriteFile(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return ErrnoToStatus(errno, absl::StrCat("creating ", path.string()));
  out << contents;
  out.close();
  if (!out) return ErrnoToStatus(errno, absl::StrCat("writing ", path.string()));
  return absl::OkStatus();
}

void DrawProgress(int64_t done, int64_t total, int64_t in_flight, double elapsed) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : kWidth;
  std::string bar(static_cast<size_t>(filled), '=');
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r[%s] %lld/%lld done, %lld in flight, %.1f s ", bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total),
               static_cast<long long>(in_flight), elapsed);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

absl::StatusOr<Trace> LoadTrace(const ReplayFlags& f) {
  if (f.synthetic == !f.trace_path.empty()) {
    return absl::InvalidArgumentError("give exactly one of --trace PATH and --synthetic");
  }
  if (f.synthetic) {
    SyntheticOptions syn = f.syn;
    if (f.syn_arrival == "poisson") {
      syn.arrival = ArrivalProcess::kPoisson;
    } else if (f.syn_arrival == "bursty") {
      syn.arrival = ArrivalProcess::kBursty;
    } else {
      return absl::InvalidArgumentError("--syn-arrival must be poisson or bursty");
    }
    syn.block_tokens = f.trace_block_tokens;
    return GenerateSyntheticTrace(syn);
  }
  std::vector<TraceIssue> issues;
  CRESCENT_ASSIGN_OR_RETURN(
      Trace trace,
      ReadTraceFile(f.trace_path, {.strict = f.strict, .block_tokens = f.trace_block_tokens},
                    &issues));
  for (const TraceIssue& issue : issues) {
    std::cerr << f.trace_path << ":" << issue.line << ": skipped malformed line: " << issue.message
              << "\n";
  }
  if (!issues.empty()) {
    std::cerr << f.trace_path << ": " << issues.size()
              << " malformed line(s) skipped (--strict makes them fatal)\n";
  }
  return trace;
}

json ConfigJson(const ReplayFlags& f, const PromptBuilder& builder, size_t requests) {
  return {{"trace", f.synthetic ? std::string("synthetic") : f.trace_path},
          {"start", f.subset.start},
          {"limit", f.subset.limit},
          {"sample", f.subset.sample},
          {"requests", requests},
          {"time_scale", f.time_scale},
          {"trace_block_tokens", f.trace_block_tokens},
          {"block_tokens", builder.block_tokens()},
          {"length_scale", f.prompt.length_scale},
          {"output_scale", f.prompt.output_scale},
          {"max_output_tokens", f.prompt.max_output_tokens},
          {"max_context", f.prompt.max_context},
          {"seed", f.prompt.seed},
          {"endpoint", f.client.endpoint},
          {"model", f.client.model},
          {"mode", f.mode},
          {"ignore_eos", f.client.ignore_eos}};
}

absl::Status RunReplay(ReplayFlags f) {
  CRESCENT_ASSIGN_OR_RETURN(Trace full, LoadTrace(f));
  if (!(f.time_scale > 0)) return absl::InvalidArgumentError("--time-scale must be > 0");
  Trace trace = SelectSubset(full, f.subset);
  ScaleTime(trace, f.time_scale);
  if (trace.requests.empty()) return absl::InvalidArgumentError("no requests to replay");
  if (!f.write_trace.empty())
    CRESCENT_RETURN_IF_ERROR(WriteFile(f.write_trace, TraceToJsonl(trace)));
  if (f.block_tokens > 0) {
    f.prompt.length_scale = static_cast<double>(f.block_tokens) / trace.block_tokens;
  }
  CRESCENT_ASSIGN_OR_RETURN(PromptBuilder builder,
                            PromptBuilder::Create(f.prompt, trace.block_tokens));
  if (f.mode == "tokens") {
    f.client.mode = PromptMode::kTokens;
  } else if (f.mode == "text") {
    f.client.mode = PromptMode::kText;
  } else if (f.mode == "chat") {
    f.client.mode = PromptMode::kChat;
  } else {
    return absl::InvalidArgumentError("--mode must be tokens, text or chat");
  }
  f.client.ignore_eos = !f.no_ignore_eos;

  std::vector<BuiltPrompt> prompts;
  std::vector<ReplayItem> items;
  prompts.reserve(trace.requests.size());
  for (const TraceRequest& r : trace.requests) prompts.push_back(builder.Build(r));
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ReplayItem item;
    item.send_at_s = static_cast<double>(trace.requests[i].timestamp_ms) / 1e3;
    item.max_tokens = prompts[i].max_tokens;
    item.tokens = prompts[i].tokens;
    if (f.client.mode != PromptMode::kTokens) item.text = PromptBuilder::TokensToText(item.tokens);
    prompt_tokens += static_cast<int64_t>(item.tokens.size());
    items.push_back(std::move(item));
  }
  const double ideal = IdealTokenHitRatio(prompts);
  const double trace_ideal = IdealBlockHitRatio(trace);
  std::cerr << absl::StrFormat(
      "replaying %d requests over %.1f s: %d prompt tokens (blocks of %d), ideal hit ratio %.1f%% "
      "(trace blocks %.1f%%)\n",
      items.size(), items.back().send_at_s, prompt_tokens, builder.block_tokens(), ideal * 100,
      trace_ideal * 100);
  if (f.dry_run) return absl::OkStatus();

  CRESCENT_ASSIGN_OR_RETURN(std::unique_ptr<ReplayClient> client, ReplayClient::Create(f.client));
  const bool progress = !f.no_progress && isatty(STDERR_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<RequestRecord> records =
      client->Run(items, [&](int64_t done, int64_t total, int64_t in_flight) {
        if (!progress) return;
        DrawProgress(done, total, in_flight,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      });
  const Slo slo{.ttft_s = f.slo_ttft_ms / 1e3, .tbt_s = f.slo_tbt_ms / 1e3};
  const Summary summary = Summarize(records, slo, ideal, trace_ideal);
  std::cout << FormatSummaryTable(summary);
  int shown = 0;
  for (const RequestRecord& r : records) {
    if (r.outcome == Outcome::kOk || shown >= 5) continue;
    std::cerr << "request " << r.index << " " << OutcomeName(r.outcome) << ": " << r.error << "\n";
    ++shown;
  }
  if (!f.out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(f.out_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("creating ", f.out_dir, ": ", ec.message()));
    const std::filesystem::path dir(f.out_dir);
    const std::string label = f.label.empty() ? dir.filename().string() : f.label;
    CRESCENT_RETURN_IF_ERROR(WriteFile(
        dir / "report.json",
        ReportToJson(summary, label, ConfigJson(f, builder, items.size())).dump(2) + "\n"));
    CRESCENT_RETURN_IF_ERROR(WriteFile(dir / "requests.csv", RecordsToCsv(records)));
    for (const auto& [name, svg] : ReplayPlots(records)) {
      CRESCENT_RETURN_IF_ERROR(WriteFile(dir / name, svg));
    }
    std::cerr << "wrote " << (dir / "report.json").string() << ", requests.csv and plots\n";
  }
  return absl::OkStatus();
}

absl::Status RunCompare(const std::vector<std::string>& paths) {
  std::vector<LoadedReport> reports;
  for (const std::string& path : paths) {
    CRESCENT_ASSIGN_OR_RETURN(LoadedReport report, ReadReportFile(path));
    reports.push_back(std::move(report));
  }
  std::cout << FormatComparison(reports);
  return absl::OkStatus();
}

int ToExit(const absl::Status& status) {
  if (status.ok()) return 0;
  std::cerr << "crescent-bench replay: " << status.message() << "\n";
  return 1;
}

}  // namespace

void AddReplayCommands(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<ReplayFlags>();
  CLI::App* replay = app.add_subcommand(
      "replay",
      "Replay a Mooncake-format trace (or a synthetic one) open-loop against an "
      "OpenAI-compatible endpoint and report latency, throughput, SLOs and cache hits");
  replay->require_subcommand(0, 1);
  // Trace.
  replay->add_option("--trace", f->trace_path, "Mooncake JSONL trace to replay");
  replay->add_flag("--strict", f->strict, "Fail on the first malformed trace line (default: skip)");
  replay
      ->add_option("--trace-block-tokens", f->trace_block_tokens,
                   "Tokens per hash block in the trace")
      ->capture_default_str();
  replay->add_option("--start", f->subset.start, "Skip the first N requests");
  replay->add_option("--limit", f->subset.limit, "Replay at most N requests (after --start)");
  replay->add_option("--sample", f->subset.sample,
                     "Keep N requests spread evenly over the selected range");
  replay
      ->add_option("--time-scale", f->time_scale,
                   "Multiply arrival times (0.1 = 10x faster arrivals)")
      ->capture_default_str();
  replay->add_option("--write-trace", f->write_trace, "Also write the replayed trace as JSONL");
  // Synthetic trace.
  replay->add_flag("--synthetic", f->synthetic, "Generate a synthetic trace instead of --trace");
  replay->add_option("--syn-requests", f->syn.num_requests, "Synthetic: requests")
      ->capture_default_str();
  replay->add_option("--syn-rate", f->syn.rate, "Synthetic: mean requests/s")
      ->capture_default_str();
  replay->add_option("--syn-arrival", f->syn_arrival, "Synthetic: poisson or bursty")
      ->capture_default_str();
  replay->add_option("--syn-burst", f->syn.burst_size, "Synthetic: requests per burst")
      ->capture_default_str();
  replay
      ->add_option("--syn-mean-input", f->syn.mean_input,
                   "Synthetic: mean input tokens (log-normal)")
      ->capture_default_str();
  replay
      ->add_option("--syn-cv-input", f->syn.cv_input,
                   "Synthetic: input length coefficient of variation")
      ->capture_default_str();
  replay->add_option("--syn-mean-output", f->syn.mean_output, "Synthetic: mean output tokens")
      ->capture_default_str();
  replay->add_option("--syn-groups", f->syn.num_groups, "Synthetic: shared-prefix groups")
      ->capture_default_str();
  replay
      ->add_option("--syn-prefix-blocks", f->syn.shared_prefix_blocks,
                   "Synthetic: blocks in each group's shared prefix")
      ->capture_default_str();
  replay
      ->add_option("--syn-followup", f->syn.followup_probability,
                   "Synthetic: probability that a request continues a session")
      ->capture_default_str();
  replay->add_option("--syn-seed", f->syn.seed, "Synthetic: random seed")->capture_default_str();
  // Prompts.
  replay
      ->add_option("--length-scale", f->prompt.length_scale,
                   "Multiply prompt and block lengths (1/32: 512-token blocks become 16)")
      ->capture_default_str();
  replay->add_option("--block-tokens", f->block_tokens,
                     "Tokens per block after scaling (sets --length-scale)");
  replay->add_option("--output-scale", f->prompt.output_scale, "Multiply output lengths")
      ->capture_default_str();
  replay->add_option("--max-output-tokens", f->prompt.max_output_tokens,
                     "Cap output lengths (0: none)");
  replay
      ->add_option("--max-context", f->prompt.max_context,
                   "Prompt + output must fit this (prompts are truncated); 0: no limit")
      ->capture_default_str();
  replay->add_option("--token-lo", f->prompt.token_lo, "Lowest token id used in prompts")
      ->capture_default_str();
  replay->add_option("--token-hi", f->prompt.token_hi, "Token ids used are below this")
      ->capture_default_str();
  replay->add_option("--seed", f->prompt.seed, "Changes every block's content (cold cache)");
  // Endpoint.
  replay->add_option("--endpoint", f->client.endpoint, "http://host:port of the server")
      ->capture_default_str();
  replay->add_option("--api-key", f->client.api_key, "Bearer token")->envname("OPENAI_API_KEY");
  replay->add_option("--model", f->client.model, "Model name to send");
  replay
      ->add_option("--mode", f->mode,
                   "tokens (prompt as token ids), text (words), chat (/v1/chat/completions)")
      ->capture_default_str();
  replay->add_flag("--no-ignore-eos", f->no_ignore_eos, "Do not send ignore_eos");
  replay->add_option("--temperature", f->client.temperature, "Sampling temperature")
      ->capture_default_str();
  replay->add_option("--timeout", f->client.request_timeout_s, "Per-request timeout (s)")
      ->capture_default_str();
  replay->add_option("--connect-timeout", f->client.connect_timeout_s, "Connect timeout (s)")
      ->capture_default_str();
  // Report.
  replay->add_option("--slo-ttft-ms", f->slo_ttft_ms, "TTFT SLO in ms (0: none)");
  replay->add_option("--slo-tbt-ms", f->slo_tbt_ms,
                     "TBT SLO in ms, on each request's worst-10% gap mean (0: none)");
  replay->add_option("--out", f->out_dir, "Directory for report.json, requests.csv and SVG plots");
  replay->add_option("--label", f->label,
                     "Name of this run in report.json (default: --out's name)");
  replay->add_flag("--no-progress", f->no_progress, "No progress bar on stderr");
  replay->add_flag("--dry-run", f->dry_run, "Build the prompts and print the ideal hit ratio only");

  auto paths = std::make_shared<std::vector<std::string>>();
  CLI::App* compare = replay->add_subcommand("compare", "Print replay reports side by side");
  compare->add_option("reports", *paths, "report.json files")->required()->check(CLI::ExistingFile);
  replay->callback([f, paths, compare, exit_code] {
    *exit_code = ToExit(compare->parsed() ? RunCompare(*paths) : RunReplay(*f));
  });
}

}  // namespace crescent::bench
