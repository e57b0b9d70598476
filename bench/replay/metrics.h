// Replay metrics: what is measured per request (RequestRecord) and the summary computed from
// them (percentiles, throughput, SLO attainment, goodput, cache hit ratio, rejections).
// Pure functions of their inputs.
#ifndef CRESCENT_BENCH_REPLAY_METRICS_H_
#define CRESCENT_BENCH_REPLAY_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "bench/common/latency.h"

namespace crescent::bench {

enum class Outcome {
  kOk,        // HTTP 200 and a complete stream.
  kRejected,  // HTTP 429.
  kFailed,    // Anything else: other statuses, connection errors, timeouts, broken streams.
};
const char* OutcomeName(Outcome outcome);

// One replayed request. Times are seconds since the start of the replay.
struct RequestRecord {
  int64_t index = 0;            // Position in the replayed trace.
  double scheduled_s = 0;       // When it was due to be sent.
  double sent_s = 0;            // When it was sent (after connecting).
  double first_token_s = -1;    // First chunk with text; -1 if none.
  double end_s = -1;            // Last byte of the response; -1 if it never ended.
  std::vector<double> gaps_s;   // Between consecutive chunks with text.
  int64_t prompt_tokens = 0;    // As sent (token mode) or as reported (text mode).
  int64_t max_tokens = 0;       // Output tokens asked for.
  int64_t output_tokens = 0;    // usage.completion_tokens, else the chunks with text.
  int64_t cached_tokens = 0;    // usage.prompt_tokens_details.cached_tokens.
  bool usage_reported = false;  // The stream ended with a usage chunk.
  int http_status = 0;          // 0: no response.
  Outcome outcome = Outcome::kFailed;
  std::string error;  // Empty when kOk.

  // Time to first token from the scheduled send time (so that client-side queueing counts), or
  // -1 when there was no token.
  double ttft_s() const { return first_token_s < 0 ? -1 : first_token_s - scheduled_s; }
  // End-to-end latency from the scheduled send time; -1 if it never ended.
  double e2e_s() const { return end_s < 0 ? -1 : end_s - scheduled_s; }
};

struct Slo {
  double ttft_s = 0;  // <= 0: not checked.
  double tbt_s = 0;   // Checked against WorstTenthMean of the gaps; <= 0: not checked.
};

// True when `record` is kOk and meets both SLOs.
bool MeetsSlo(const RequestRecord& record, const Slo& slo);

struct LatencyStats {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
  int64_t count = 0;
};
LatencyStats ComputeStats(const std::vector<double>& values);

struct Summary {
  int64_t requests = 0;
  int64_t ok = 0;
  int64_t rejected = 0;
  int64_t failed = 0;
  double duration_s = 0;       // First scheduled send to last response end.
  LatencyStats ttft_s;         // Over kOk requests.
  LatencyStats tbt_s;          // Over every gap of every kOk request.
  LatencyStats tbt_worst10_s;  // Over kOk requests' WorstTenthMean (requests with gaps).
  LatencyStats e2e_s;
  double request_throughput = 0;  // kOk requests / duration.
  double output_throughput = 0;   // Output tokens of kOk requests / duration.
  int64_t prompt_tokens = 0;      // Of kOk requests.
  int64_t cached_tokens = 0;
  int64_t output_tokens = 0;
  double hit_ratio = 0;              // cached_tokens / prompt_tokens over kOk requests.
  double ideal_hit_ratio = 0;        // The prompts' ideal (infinite prefix cache), in tokens.
  double trace_ideal_hit_ratio = 0;  // The replayed subset's, in the trace's blocks.
  Slo slo;
  double slo_attainment = 0;  // Requests meeting the SLOs / all requests (rejections count).
  double goodput = 0;         // Requests meeting the SLOs / duration.
  double rejection_rate = 0;  // rejected / requests.
};

// Summarizes `records`; the ideal ratios are copied in as given.
Summary Summarize(const std::vector<RequestRecord>& records, const Slo& slo, double ideal_hit_ratio,
                  double trace_ideal_hit_ratio);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_METRICS_H_
