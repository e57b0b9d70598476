#include "bench/sim/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace crescent::bench::sim {
namespace {

Percentiles Summary(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / static_cast<double>(v.size());
  p.p50 = Percentile(v, 50);
  p.p90 = Percentile(v, 90);
  p.p99 = Percentile(v, 99);
  return p;
}

nlohmann::json PercentilesJson(const Percentiles& p) {
  return {{"mean", p.mean}, {"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}};
}

}  // namespace

bool MeetsSlo(const RequestOutcome& o, const policy::Slo& slo) {
  return !o.rejected && o.ttft_s <= slo.ttft_s && WorstTenthMean(o.gaps_s) <= slo.tbt_s;
}

SimReport Summarize(const std::vector<RequestOutcome>& outcomes, const policy::Slo& slo,
                    double duration_s, double span_s) {
  SimReport r;
  r.requests = static_cast<int64_t>(outcomes.size());
  r.duration_s = duration_s;
  r.request_rate = span_s > 0 ? static_cast<double>(r.requests) / span_s : 0.0;
  std::vector<double> ttft, tbt, e2e;
  int64_t met = 0, met_tokens = 0, prompt = 0, cached = 0;
  for (const RequestOutcome& o : outcomes) {
    if (o.rejected) {
      ++r.rejected;
      ++r.rejected_by_reason[o.reject_reason];
      continue;
    }
    ++r.completed;
    ttft.push_back(o.ttft_s);
    e2e.push_back(o.e2e_s);
    tbt.insert(tbt.end(), o.gaps_s.begin(), o.gaps_s.end());
    prompt += o.prompt_tokens;
    cached += o.cached_tokens;
    r.prefilled_tokens += o.computed_tokens;
    if (MeetsSlo(o, slo)) {
      ++met;
      met_tokens += o.output_tokens;
    } else {
      r.wasted_prefill_tokens += o.computed_tokens;
    }
  }
  r.ttft_s = Summary(std::move(ttft));
  r.tbt_s = Summary(std::move(tbt));
  r.e2e_s = Summary(std::move(e2e));
  const double n = std::max<double>(1.0, static_cast<double>(r.requests));
  r.slo_attainment = static_cast<double>(met) / n;
  r.rejection_rate = static_cast<double>(r.rejected) / n;
  const double d = duration_s > 0 ? duration_s : 1.0;
  r.goodput_rps = static_cast<double>(met) / d;
  r.goodput_tokens_per_s = static_cast<double>(met_tokens) / d;
  r.cache_hit_ratio = prompt > 0 ? static_cast<double>(cached) / static_cast<double>(prompt) : 0.0;
  r.wasted_prefill_fraction =
      r.prefilled_tokens > 0
          ? static_cast<double>(r.wasted_prefill_tokens) / static_cast<double>(r.prefilled_tokens)
          : 0.0;
  return r;
}

nlohmann::json ReportToJson(const SimReport& r) {
  nlohmann::json j;
  j["policy"] = r.policy;
  j["mode"] = r.mode;
  j["early_rejection"] = r.early_rejection;
  j["time_scale"] = r.time_scale;
  j["request_rate"] = r.request_rate;
  j["requests"] = r.requests;
  j["completed"] = r.completed;
  j["rejected"] = r.rejected;
  j["rejected_by_reason"] = r.rejected_by_reason;
  j["ttft_s"] = PercentilesJson(r.ttft_s);
  j["tbt_s"] = PercentilesJson(r.tbt_s);
  j["e2e_s"] = PercentilesJson(r.e2e_s);
  j["slo_attainment"] = r.slo_attainment;
  j["goodput_rps"] = r.goodput_rps;
  j["goodput_tokens_per_s"] = r.goodput_tokens_per_s;
  j["cache_hit_ratio"] = r.cache_hit_ratio;
  j["rejection_rate"] = r.rejection_rate;
  j["prefilled_tokens"] = r.prefilled_tokens;
  j["wasted_prefill_tokens"] = r.wasted_prefill_tokens;
  j["wasted_prefill_fraction"] = r.wasted_prefill_fraction;
  j["duration_s"] = r.duration_s;
  j["wall_s"] = r.wall_s;
  return j;
}

std::string FormatTable(const std::vector<SimReport>& reports) {
  std::string out = absl::StrFormat("%-19s %-5s %-6s %7s %7s %7s %7s %7s %7s %6s %6s %6s %7s %9s\n",
                                    "policy", "rej", "mode", "ttft50", "ttft90", "ttft99", "tbt50",
                                    "tbt99", "e2e90", "slo%", "hit%", "rej%", "gput/s", "waste%");
  for (const SimReport& r : reports) {
    out += absl::StrFormat(
        "%-19s %-5s %-6s %7.2f %7.2f %7.2f %7.3f %7.3f %7.1f %6.1f %6.1f %6.1f %7.2f %9.1f\n",
        r.policy, r.early_rejection ? "early" : "none", r.mode == "colocated" ? "coloc" : "disagg",
        r.ttft_s.p50, r.ttft_s.p90, r.ttft_s.p99, r.tbt_s.p50, r.tbt_s.p99, r.e2e_s.p90,
        100 * r.slo_attainment, 100 * r.cache_hit_ratio, 100 * r.rejection_rate, r.goodput_rps,
        100 * r.wasted_prefill_fraction);
  }
  return out;
}

}  // namespace crescent::bench::sim
