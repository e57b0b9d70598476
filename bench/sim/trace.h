// A minimal reader for Mooncake-format traces (JSONL, one request per line:
// {"timestamp": ms, "input_length": n, "output_length": m, "hash_ids": [...]}), for the
// simulator. Block ids name 512-token blocks; equal leading ids mean a shared prefix.
#ifndef CRESCENT_BENCH_SIM_TRACE_H_
#define CRESCENT_BENCH_SIM_TRACE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace crescent::bench::sim {

struct TraceRequest {
  double timestamp_ms = 0.0;
  int64_t input_length = 0;
  int64_t output_length = 0;
  std::vector<uint64_t> hash_ids;
};

// Parses one line. Errors: InvalidArgument naming line_number and what is wrong (bad JSON, a
// missing or negative field, a non-integer hash id).
absl::StatusOr<TraceRequest> ParseTraceLine(std::string_view line, int line_number);

// Reads a whole trace, skipping blank lines. With skip_malformed, bad lines are counted in
// *skipped (may be null) instead of failing. Requests come back sorted by timestamp (stable).
// Errors: NotFound/PermissionDenied when the file cannot be opened, InvalidArgument for the
// first malformed line (unless skip_malformed) or an empty trace.
absl::StatusOr<std::vector<TraceRequest>> ReadTrace(const std::string& path,
                                                    bool skip_malformed = false,
                                                    int* skipped = nullptr);

}  // namespace crescent::bench::sim

#endif  // CRESCENT_BENCH_SIM_TRACE_H_
