// MetricsRegistry: a small thread-safe registry of counters, gauges and histograms with labels,
// rendered in the Prometheus text exposition format (version 0.0.4) for GET /metrics.
//
//   MetricsRegistry registry;
//   Counter* c = registry.GetCounter("crescent:request_success_total", "Finished requests.",
//                                    {{"finished_reason", "stop"}});
//   c->Increment();
//   std::string text = registry.RenderText();
//
// ServerMetrics pre-registers the metric names Crescent exposes (vLLM's, prefixed "crescent:").
#ifndef CRESCENT_SRC_SERVER_METRICS_H_
#define CRESCENT_SRC_SERVER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace crescent::server {

// Label name -> value. Order does not matter; rendering sorts by name.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value. Thread-safe, lock-free.
class Counter {
 public:
  // REQUIRES: delta >= 0 (negative deltas are ignored).
  void Increment(double delta = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Adds to `counter` what the cumulative count `total` (an engine's, say) gained since
// `*published` was recorded, and records `total` there. A total that went down adds nothing.
void AddGrowth(Counter* counter, int64_t total, int64_t* published);

// A value that goes up and down. Thread-safe, lock-free.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets (upper bounds, inclusive), plus their sum and count.
// Thread-safe, lock-free; a concurrent render may see a count and a sum from slightly different
// moments.
class Histogram {
 public:
  // REQUIRES: `bounds` strictly increasing and finite; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative count of bucket i (i == bounds().size() is the +Inf overflow bucket).
  uint64_t BucketCount(size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Owns every metric; pointers it returns stay valid for its lifetime. Thread-safe.
class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Return the metric `name` with `labels`, creating it (and its family, with `help`) on first
  // use; later calls with the same name and labels return the same object. A name already
  // registered as another type, or a histogram asked for with other bounds, gets a detached
  // metric that works but is never rendered (and an error is logged). REQUIRES: `name` matches
  // [a-zA-Z_:][a-zA-Z0-9_:]*, label names match [a-zA-Z_][a-zA-Z0-9_]*.
  Counter* GetCounter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge* GetGauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram* GetHistogram(std::string_view name, std::string_view help,
                          const std::vector<double>& bounds, const Labels& labels = {});

  // The Prometheus text format: families sorted by name, each with # HELP and # TYPE lines,
  // label values escaped (\\, \", \n), histograms as cumulative _bucket{le=...}, _sum, _count.
  std::string RenderText() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;  // Histograms only.
    // Keyed by the rendered, sorted label set ("a=\"x\",b=\"y\"").
    std::map<std::string, std::unique_ptr<Counter>> counters;
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };

  // Returns the family, creating it; nullptr if it exists with another type or bounds.
  Family* FindOrAddFamily(std::string_view name, std::string_view help, Type type,
                          const std::vector<double>& bounds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family, std::less<>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Counter>> detached_counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Gauge>> detached_gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Histogram>> detached_histograms_ ABSL_GUARDED_BY(mu_);
};

// Default latency buckets in seconds (vLLM's TTFT buckets widened a little).
std::vector<double> LatencyBuckets();

// The metrics the server records and the engine updates, registered in `registry`. The server
// records the latency histograms and request_success_total; the engine sets the gauges and the
// token / cache / preemption counters through these pointers.
struct ServerMetrics {
  explicit ServerMetrics(MetricsRegistry* registry);

  MetricsRegistry* registry;
  Histogram* time_to_first_token_seconds;
  Histogram* inter_token_latency_seconds;
  Histogram* e2e_request_latency_seconds;
  Histogram* request_queue_time_seconds;
  Gauge* num_requests_running;
  Gauge* num_requests_waiting;
  Gauge* kv_cache_usage_perc;
  Counter* prefix_cache_queries;
  Counter* prefix_cache_hits;
  Counter* prompt_tokens_total;
  Counter* generation_tokens_total;
  Counter* num_preemptions_total;
  Counter* spec_decode_draft_tokens;     // speculative drafts checked
  Counter* spec_decode_accepted_tokens;  // of which confirmed

  // crescent:request_success_total{finished_reason=...} ("stop", "length", "abort", "error").
  Counter* RequestSuccess(std::string_view finished_reason);
};

}  // namespace crescent::server

#endif  // CRESCENT_SRC_SERVER_METRICS_H_
