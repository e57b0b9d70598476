#include "src/server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "src/common/logging.h"

namespace crescent::server {
namespace {

void AtomicAdd(std::atomic<double>& target, double delta) {
  double old = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(old, old + delta, std::memory_order_relaxed)) {
  }
}

// Shortest text that reads back as the same double; Prometheus spellings for the specials.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, result.ptr);
}

void AppendEscaped(std::string& out, std::string_view s, bool escape_quote) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// Renders sorted labels as a="x",b="y" (without braces); the key that identifies a series.
std::string LabelKey(const Labels& labels) {
  Labels sorted = labels;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (const auto& [name, value] : sorted) {
    if (!out.empty()) out += ',';
    out += name;
    out += "=\"";
    AppendEscaped(out, value, /*escape_quote=*/true);
    out += '"';
  }
  return out;
}

void AppendSample(std::string& out, std::string_view name, std::string_view suffix,
                  std::string_view key, std::string_view extra_label, double value) {
  out += name;
  out += suffix;
  if (!key.empty() || !extra_label.empty()) {
    out += '{';
    out += key;
    if (!key.empty() && !extra_label.empty()) out += ',';
    out += extra_label;
    out += '}';
  }
  out += ' ';
  out += FormatValue(value);
  out += '\n';
}

}  // namespace

void Counter::Increment(double delta) {
  if (!(delta >= 0)) return;
  AtomicAdd(value_, delta);
}

void AddGrowth(Counter* counter, int64_t total, int64_t* published) {
  if (total > *published) counter->Increment(static_cast<double>(total - *published));
  *published = total;
}

void Gauge::Add(double delta) { AtomicAdd(value_, delta); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // First bound >= value ("le" is inclusive); NaN lands in +Inf.
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  if (std::isnan(value)) i = bounds_.size();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, value);
}

MetricsRegistry::Family* MetricsRegistry::FindOrAddFamily(std::string_view name,
                                                          std::string_view help, Type type,
                                                          const std::vector<double>& bounds) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    Family family;
    family.type = type;
    family.help = std::string(help);
    family.bounds = bounds;
    it = families_.emplace(std::string(name), std::move(family)).first;
    return &it->second;
  }
  if (it->second.type != type || (type == Type::kHistogram && it->second.bounds != bounds)) {
    CRESCENT_LOG(error, "metric {} re-registered with another type or buckets; not exported", name);
    return nullptr;
  }
  return &it->second;
}

Counter* MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     const Labels& labels) {
  absl::MutexLock lock(&mu_);
  Family* family = FindOrAddFamily(name, help, Type::kCounter, {});
  if (family == nullptr) {
    detached_counters_.push_back(std::make_unique<Counter>());
    return detached_counters_.back().get();
  }
  auto& slot = family->counters[LabelKey(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 const Labels& labels) {
  absl::MutexLock lock(&mu_);
  Family* family = FindOrAddFamily(name, help, Type::kGauge, {});
  if (family == nullptr) {
    detached_gauges_.push_back(std::make_unique<Gauge>());
    return detached_gauges_.back().get();
  }
  auto& slot = family->gauges[LabelKey(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         const std::vector<double>& bounds, const Labels& labels) {
  absl::MutexLock lock(&mu_);
  Family* family = FindOrAddFamily(name, help, Type::kHistogram, bounds);
  if (family == nullptr) {
    detached_histograms_.push_back(std::make_unique<Histogram>(bounds));
    return detached_histograms_.back().get();
  }
  auto& slot = family->histograms[LabelKey(labels)];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return slot.get();
}

std::string MetricsRegistry::RenderText() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    out += "# HELP ";
    out += name;
    out += ' ';
    AppendEscaped(out, family.help, /*escape_quote=*/false);
    out += "\n# TYPE ";
    out += name;
    switch (family.type) {
      case Type::kCounter:
        out += " counter\n";
        for (const auto& [key, counter] : family.counters) {
          AppendSample(out, name, "", key, "", counter->Value());
        }
        break;
      case Type::kGauge:
        out += " gauge\n";
        for (const auto& [key, gauge] : family.gauges) {
          AppendSample(out, name, "", key, "", gauge->Value());
        }
        break;
      case Type::kHistogram:
        out += " histogram\n";
        for (const auto& [key, histogram] : family.histograms) {
          uint64_t cumulative = 0;
          const auto& bounds = histogram->bounds();
          for (size_t i = 0; i <= bounds.size(); ++i) {
            cumulative += histogram->BucketCount(i);
            double le = i < bounds.size() ? bounds[i] : INFINITY;
            AppendSample(out, name, "_bucket", key, "le=\"" + FormatValue(le) + "\"",
                         static_cast<double>(cumulative));
          }
          AppendSample(out, name, "_sum", key, "", histogram->Sum());
          AppendSample(out, name, "_count", key, "", static_cast<double>(histogram->Count()));
        }
        break;
    }
  }
  return out;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}

ServerMetrics::ServerMetrics(MetricsRegistry* r)
    : registry(r),
      time_to_first_token_seconds(r->GetHistogram("crescent:time_to_first_token_seconds",
                                                  "Time to first token in seconds.",
                                                  LatencyBuckets())),
      inter_token_latency_seconds(r->GetHistogram("crescent:inter_token_latency_seconds",
                                                  "Time between streamed pieces in seconds.",
                                                  LatencyBuckets())),
      e2e_request_latency_seconds(r->GetHistogram("crescent:e2e_request_latency_seconds",
                                                  "End-to-end request latency in seconds.",
                                                  LatencyBuckets())),
      request_queue_time_seconds(r->GetHistogram("crescent:request_queue_time_seconds",
                                                 "Time requests waited before being scheduled.",
                                                 LatencyBuckets())),
      num_requests_running(
          r->GetGauge("crescent:num_requests_running", "Requests being generated now.")),
      num_requests_waiting(
          r->GetGauge("crescent:num_requests_waiting", "Requests waiting to be scheduled.")),
      kv_cache_usage_perc(r->GetGauge("crescent:kv_cache_usage_perc",
                                      "Fraction of KV cache blocks in use (0 to 1).")),
      prefix_cache_queries(r->GetCounter("crescent:prefix_cache_queries_total",
                                         "Prompt tokens looked up in the prefix cache.")),
      prefix_cache_hits(r->GetCounter("crescent:prefix_cache_hits_total",
                                      "Prompt tokens found in the prefix cache.")),
      prompt_tokens_total(
          r->GetCounter("crescent:prompt_tokens_total", "Prompt tokens processed.")),
      generation_tokens_total(
          r->GetCounter("crescent:generation_tokens_total", "Tokens generated.")),
      num_preemptions_total(
          r->GetCounter("crescent:num_preemptions_total", "Requests preempted by the engine.")),
      spec_decode_draft_tokens(r->GetCounter("crescent:spec_decode_num_draft_tokens_total",
                                             "Speculative draft tokens checked.")),
      spec_decode_accepted_tokens(r->GetCounter("crescent:spec_decode_num_accepted_tokens_total",
                                                "Speculative draft tokens confirmed.")) {}

Counter* ServerMetrics::RequestSuccess(std::string_view finished_reason) {
  return registry->GetCounter("crescent:request_success_total", "Finished requests by reason.",
                              {{"finished_reason", std::string(finished_reason)}});
}

}  // namespace crescent::server
