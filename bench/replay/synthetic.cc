#include "bench/replay/synthetic.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <random>

namespace crescent::bench {
namespace {

// Log-normal with the given mean and coefficient of variation.
double LogNormal(std::mt19937_64& rng, double mean, double cv) {
  if (cv <= 0) return mean;
  const double sigma2 = std::log1p(cv * cv);
  const double mu = std::log(mean) - sigma2 / 2;
  std::normal_distribution<double> normal(mu, std::sqrt(sigma2));
  return std::exp(normal(rng));
}

int64_t DrawLength(std::mt19937_64& rng, double mean, double cv, int64_t lo, int64_t hi) {
  return std::clamp<int64_t>(std::llround(LogNormal(rng, mean, cv)), lo, hi);
}

struct Session {
  std::vector<int64_t> hash_ids;  // Blocks of prompt + output so far (full blocks only).
  int64_t length = 0;             // Tokens so far.
};

}  // namespace

absl::StatusOr<Trace> GenerateSyntheticTrace(const SyntheticOptions& o) {
  if (o.num_requests < 0) return absl::InvalidArgumentError("num_requests must be >= 0");
  if (!(o.rate > 0)) return absl::InvalidArgumentError("rate must be > 0");
  if (o.burst_size < 1) return absl::InvalidArgumentError("burst_size must be >= 1");
  if (o.block_tokens < 1) return absl::InvalidArgumentError("block_tokens must be >= 1");
  if (!(o.mean_input >= 1) || !(o.mean_output >= 1)) {
    return absl::InvalidArgumentError("mean input/output lengths must be >= 1");
  }
  if (o.min_input < 1 || o.max_input < o.min_input || o.min_output < 1 ||
      o.max_output < o.min_output) {
    return absl::InvalidArgumentError("length bounds must satisfy 1 <= min <= max");
  }
  if (o.num_groups < 0 || o.shared_prefix_blocks < 0) {
    return absl::InvalidArgumentError("num_groups and shared_prefix_blocks must be >= 0");
  }
  if (o.followup_probability < 0 || o.followup_probability > 1 || o.active_sessions < 1) {
    return absl::InvalidArgumentError(
        "followup_probability must be in [0, 1] and active_sessions >= 1");
  }
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Trace trace;
  trace.block_tokens = o.block_tokens;
  int64_t next_id = 0;
  // Group g's prefix blocks are ids [g * P, (g + 1) * P); fresh ids follow.
  next_id = static_cast<int64_t>(o.num_groups) * o.shared_prefix_blocks;
  std::deque<Session> sessions;
  double t = 0;
  const double burst_rate = o.arrival == ArrivalProcess::kBursty ? o.rate / o.burst_size : o.rate;
  std::exponential_distribution<double> gap(burst_rate);
  int in_burst = 0;
  for (int64_t i = 0; i < o.num_requests; ++i) {
    if (o.arrival == ArrivalProcess::kPoisson || in_burst == 0) t += i == 0 ? 0 : gap(rng);
    if (o.arrival == ArrivalProcess::kBursty) in_burst = (in_burst + 1) % o.burst_size;
    TraceRequest r;
    r.timestamp_ms = static_cast<int64_t>(t * 1000);
    r.output_length = DrawLength(rng, o.mean_output, o.cv_output, o.min_output, o.max_output);
    const int64_t fresh = DrawLength(rng, o.mean_input, o.cv_input, o.min_input, o.max_input);
    Session* session = nullptr;
    if (!sessions.empty() && uniform(rng) < o.followup_probability) {
      session = &sessions[std::uniform_int_distribution<size_t>(0, sessions.size() - 1)(rng)];
    }
    std::vector<int64_t> ids;
    int64_t prefix_tokens = 0;
    if (session != nullptr) {
      ids = session->hash_ids;
      prefix_tokens = static_cast<int64_t>(ids.size()) * o.block_tokens;
    } else if (o.num_groups > 0 && o.shared_prefix_blocks > 0) {
      const int64_t g = std::uniform_int_distribution<int64_t>(0, o.num_groups - 1)(rng);
      for (int b = 0; b < o.shared_prefix_blocks; ++b)
        ids.push_back(g * o.shared_prefix_blocks + b);
      prefix_tokens = static_cast<int64_t>(o.shared_prefix_blocks) * o.block_tokens;
    }
    r.input_length = std::min(prefix_tokens + fresh, std::max(o.max_input, prefix_tokens + 1));
    const int64_t blocks = (r.input_length + o.block_tokens - 1) / o.block_tokens;
    while (static_cast<int64_t>(ids.size()) < blocks) ids.push_back(next_id++);
    ids.resize(static_cast<size_t>(blocks));
    r.hash_ids = ids;
    // The session's next turn reuses this prompt's full blocks; the output and the rest become
    // new blocks of the next prompt.
    Session next;
    next.length = r.input_length + r.output_length;
    next.hash_ids.assign(ids.begin(), ids.begin() + r.input_length / o.block_tokens);
    if (session != nullptr) {
      *session = std::move(next);
    } else {
      sessions.push_back(std::move(next));
      if (static_cast<int>(sessions.size()) > o.active_sessions) sessions.pop_front();
    }
    trace.requests.push_back(std::move(r));
  }
  return trace;
}

}  // namespace crescent::bench
