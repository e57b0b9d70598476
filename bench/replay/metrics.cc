#include "bench/replay/metrics.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

namespace crescent::bench {

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kRejected:
      return "rejected";
    case Outcome::kFailed:
      return "failed";
  }
  return "failed";
}

bool MeetsSlo(const RequestRecord& record, const Slo& slo) {
  if (record.outcome != Outcome::kOk) return false;
  if (slo.ttft_s > 0 && !(record.ttft_s() >= 0 && record.ttft_s() <= slo.ttft_s)) return false;
  if (slo.tbt_s > 0 && WorstTenthMean(record.gaps_s) > slo.tbt_s) return false;
  return true;
}

LatencyStats ComputeStats(const std::vector<double>& values) {
  LatencyStats s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  s.p50 = Percentile(values, 50);
  s.p90 = Percentile(values, 90);
  s.p99 = Percentile(values, 99);
  s.max = *std::max_element(values.begin(), values.end());
  return s;
}

Summary Summarize(const std::vector<RequestRecord>& records, const Slo& slo, double ideal_hit_ratio,
                  double trace_ideal_hit_ratio) {
  Summary s;
  s.slo = slo;
  s.ideal_hit_ratio = ideal_hit_ratio;
  s.trace_ideal_hit_ratio = trace_ideal_hit_ratio;
  s.requests = static_cast<int64_t>(records.size());
  std::vector<double> ttft, gaps, worst, e2e;
  double first = 0, last = 0;
  bool any = false;
  int64_t good = 0;
  for (const RequestRecord& r : records) {
    if (!any || r.scheduled_s < first) first = r.scheduled_s;
    last = std::max(last, std::max(r.end_s, r.scheduled_s));
    any = true;
    if (MeetsSlo(r, slo)) ++good;
    switch (r.outcome) {
      case Outcome::kRejected:
        ++s.rejected;
        continue;
      case Outcome::kFailed:
        ++s.failed;
        continue;
      case Outcome::kOk:
        break;
    }
    ++s.ok;
    if (r.ttft_s() >= 0) ttft.push_back(r.ttft_s());
    gaps.insert(gaps.end(), r.gaps_s.begin(), r.gaps_s.end());
    if (!r.gaps_s.empty()) worst.push_back(WorstTenthMean(r.gaps_s));
    if (r.e2e_s() >= 0) e2e.push_back(r.e2e_s());
    s.prompt_tokens += r.prompt_tokens;
    s.cached_tokens += r.cached_tokens;
    s.output_tokens += r.output_tokens;
  }
  s.duration_s = any ? last - first : 0;
  s.ttft_s = ComputeStats(ttft);
  s.tbt_s = ComputeStats(gaps);
  s.tbt_worst10_s = ComputeStats(worst);
  s.e2e_s = ComputeStats(e2e);
  if (s.duration_s > 0) {
    s.request_throughput = static_cast<double>(s.ok) / s.duration_s;
    s.output_throughput = static_cast<double>(s.output_tokens) / s.duration_s;
    s.goodput = static_cast<double>(good) / s.duration_s;
  }
  if (s.prompt_tokens > 0) {
    s.hit_ratio = static_cast<double>(s.cached_tokens) / static_cast<double>(s.prompt_tokens);
  }
  if (s.requests > 0) {
    s.slo_attainment = static_cast<double>(good) / static_cast<double>(s.requests);
    s.rejection_rate = static_cast<double>(s.rejected) / static_cast<double>(s.requests);
  }
  return s;
}

}  // namespace crescent::bench
