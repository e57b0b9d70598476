// Replay reports: the summary as JSON (what `replay compare` reads back), per-request records
// as CSV, a readable table, and a side-by-side comparison of several reports.
#ifndef CRESCENT_BENCH_REPLAY_REPORT_H_
#define CRESCENT_BENCH_REPLAY_REPORT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/replay/metrics.h"
#include "nlohmann/json.hpp"

namespace crescent::bench {

// {"version": 1, "label": ..., "config": config, "summary": {...}}. Latencies in seconds.
nlohmann::json ReportToJson(const Summary& summary, const std::string& label,
                            const nlohmann::json& config);

// A report read back: its label and summary. Errors: InvalidArgument naming the missing or
// mistyped field.
struct LoadedReport {
  std::string label;
  Summary summary;
};
absl::StatusOr<LoadedReport> ReportFromJson(const nlohmann::json& report);
// Reads a report file. Errors: those of ReportFromJson, or the file's I/O / JSON error.
absl::StatusOr<LoadedReport> ReadReportFile(const std::string& path);

// One line per record, with a header: index,scheduled_s,sent_s,ttft_s,e2e_s,tbt_worst10_s,
// gaps,prompt_tokens,max_tokens,output_tokens,cached_tokens,http_status,outcome,error.
std::string RecordsToCsv(const std::vector<RequestRecord>& records);

// The readable table printed at the end of a replay (latencies in ms).
std::string FormatSummaryTable(const Summary& summary);

// Reports side by side, one column each, one metric per row.
std::string FormatComparison(const std::vector<LoadedReport>& reports);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_REPORT_H_
