// The simulator's report: latency percentiles, SLO attainment, goodput, cache hit ratio,
// rejections and wasted prefill for one policy run, as JSON and as a table.
#ifndef CRESCENT_BENCH_SIM_REPORT_H_
#define CRESCENT_BENCH_SIM_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "conductor/policy/types.h"
#include "nlohmann/json.hpp"

#include "bench/common/latency.h"

namespace crescent::bench::sim {

namespace policy = ::crescent::conductor::policy;

// What happened to one request.
struct RequestOutcome {
  bool rejected = false;
  std::string reject_reason;   // policy::RejectReasonName
  double ttft_s = 0.0;         // arrival -> first token (prefill end)
  double e2e_s = 0.0;          // arrival -> last token
  std::vector<double> gaps_s;  // every inter-token gap after the first token
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;    // reused from a local cache or fetched from the pool
  int64_t computed_tokens = 0;  // prefilled
  int64_t output_tokens = 0;
};

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};

struct SimReport {
  std::string policy;  // e.g. "global_cache_aware"
  std::string mode;    // "disaggregated" or "colocated"
  bool early_rejection = false;
  double time_scale = 1.0;
  double request_rate = 0.0;  // requests per simulated second (trace span)
  int64_t requests = 0, completed = 0, rejected = 0;
  std::map<std::string, int64_t> rejected_by_reason;
  Percentiles ttft_s, tbt_s, e2e_s;   // tbt over every gap of every request
  double slo_attainment = 0.0;        // requests meeting both SLOs / all requests
  double goodput_rps = 0.0;           // requests meeting both SLOs per second
  double goodput_tokens_per_s = 0.0;  // their output tokens per second
  double cache_hit_ratio = 0.0;       // cached / prompt tokens over prefilled requests
  double rejection_rate = 0.0;
  int64_t prefilled_tokens = 0;
  int64_t wasted_prefill_tokens = 0;  // prefilled for requests that then missed an SLO
  double wasted_prefill_fraction = 0.0;
  double duration_s = 0.0;  // first arrival -> last event
  double wall_s = 0.0;      // how long the simulation itself took
};

// Percentile (p in [0, 100]) and WorstTenthMean (Mooncake's TBT) are bench/common/latency.h's,
// shared with replay's reports.
// Whether a completed request met both SLOs (its TBT being WorstTenthMean of its gaps).
bool MeetsSlo(const RequestOutcome& o, const policy::Slo& slo);

// Builds the report from per-request outcomes. duration_s and span_s (trace span, for the
// request rate) come from the simulator.
SimReport Summarize(const std::vector<RequestOutcome>& outcomes, const policy::Slo& slo,
                    double duration_s, double span_s);

nlohmann::json ReportToJson(const SimReport& r);
// A fixed-width table, one row per report.
std::string FormatTable(const std::vector<SimReport>& reports);

}  // namespace crescent::bench::sim

#endif  // CRESCENT_BENCH_SIM_REPORT_H_
