// Trace: the in-memory request trace that replay sends and the synthetic generator produces, and
// the reader for Mooncake-format JSONL traces:
//
//   {"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}
//
// hash_ids name the prompt's `block_tokens`-token blocks (512 in Mooncake's traces); equal ids
// mean equal block content, chained, so equal leading ids mean a shared prefix.
#ifndef CRESCENT_BENCH_REPLAY_TRACE_H_
#define CRESCENT_BENCH_REPLAY_TRACE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace crescent::bench {

struct TraceRequest {
  int64_t timestamp_ms = 0;   // Arrival, from the start of the trace.
  int64_t input_length = 0;   // Prompt tokens.
  int64_t output_length = 0;  // Tokens to generate.
  std::vector<int64_t> hash_ids;
  int64_t line = 0;  // 1-based line in the file it came from; 0 when generated.
};

struct Trace {
  int block_tokens = 512;              // Tokens per hash block.
  std::vector<TraceRequest> requests;  // In order of arrival (non-decreasing timestamp_ms).
};

struct TraceParseOptions {
  // True: the first malformed line fails the parse. False: it is skipped and reported.
  bool strict = false;
  int block_tokens = 512;
};

// One problem found while parsing, e.g. {7, "'input_length' must be a non-negative integer"}.
struct TraceIssue {
  int64_t line = 0;
  std::string message;
};

// Parses JSONL trace text. Blank lines are ignored. A line is malformed when it is not a JSON
// object, lacks an integer timestamp/input_length/output_length (>= 0) or an integer array
// hash_ids, or has more hash_ids than input_length needs blocks. Malformed lines are appended
// to *issues (may be null) and skipped, unless options.strict, when the parse fails with
// InvalidArgument naming the line. Requests are stably sorted by timestamp.
absl::StatusOr<Trace> ParseTrace(std::string_view text, const TraceParseOptions& options,
                                 std::vector<TraceIssue>* issues);

// Reads and parses a trace file. Errors: those of ParseTrace, NotFound etc. when it cannot be
// read.
absl::StatusOr<Trace> ReadTraceFile(const std::string& path, const TraceParseOptions& options,
                                    std::vector<TraceIssue>* issues);

// Renders a trace as JSONL (the inverse of ParseTrace).
std::string TraceToJsonl(const Trace& trace);

struct SubsetOptions {
  int64_t start = 0;   // Skip this many requests first.
  int64_t limit = -1;  // Then keep at most this many (-1: all).
  // Then, if > 0 and fewer than the remaining requests, keep this many spread evenly over them
  // (every k-th), which keeps the trace's arrival pattern and most of its prefix sharing.
  int64_t sample = 0;
};

// Returns the chosen requests, timestamps rebased so that the first one arrives at 0.
Trace SelectSubset(const Trace& trace, const SubsetOptions& options);

// Multiplies every arrival time by `factor` (0.5 = twice as fast). REQUIRES: factor > 0.
void ScaleTime(Trace& trace, double factor);

// The trace's ideal hit ratio: the share of all prompt blocks whose id appeared in an earlier
// request (an infinite prefix cache, requests in arrival order). Only a request's leading run of
// seen blocks counts, as a prefix cache can only reuse a prefix. 0 for an empty trace.
double IdealBlockHitRatio(const Trace& trace);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_TRACE_H_
