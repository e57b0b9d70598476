#include "bench/replay/report.h"

#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/status.h"

namespace crescent::bench {
namespace {

using json = nlohmann::json;

json StatsToJson(const LatencyStats& s) {
  return {{"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90},
          {"p99", s.p99},   {"max", s.max}, {"count", s.count}};
}

// Reads the field `key` of `j` into *out, or returns what is wrong.
template <typename T>
absl::Status Get(const json& j, const char* key, T* out, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !(it->is_number() || it->is_boolean())) {
    return absl::InvalidArgumentError(
        absl::StrCat("report: ", where, key, " missing or not a number"));
  }
  *out = it->get<T>();
  return absl::OkStatus();
}

absl::Status StatsFromJson(const json& j, const char* key, LatencyStats* s) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("report: summary.", key, " missing"));
  }
  const std::string where = absl::StrCat("summary.", key, ".");
  CRESCENT_RETURN_IF_ERROR(Get(*it, "mean", &s->mean, where));
  CRESCENT_RETURN_IF_ERROR(Get(*it, "p50", &s->p50, where));
  CRESCENT_RETURN_IF_ERROR(Get(*it, "p90", &s->p90, where));
  CRESCENT_RETURN_IF_ERROR(Get(*it, "p99", &s->p99, where));
  CRESCENT_RETURN_IF_ERROR(Get(*it, "max", &s->max, where));
  CRESCENT_RETURN_IF_ERROR(Get(*it, "count", &s->count, where));
  return absl::OkStatus();
}

std::string Ms(double seconds) { return absl::StrFormat("%.1f", seconds * 1e3); }
std::string Pct(double ratio) { return absl::StrFormat("%.1f%%", ratio * 100); }

struct Row {
  std::string name;
  std::function<std::string(const Summary&)> value;
};

std::vector<Row> Rows() {
  std::vector<Row> rows = {
      {"requests", [](const Summary& s) { return absl::StrCat(s.requests); }},
      {"ok / rejected / failed",
       [](const Summary& s) { return absl::StrCat(s.ok, " / ", s.rejected, " / ", s.failed); }},
      {"duration (s)", [](const Summary& s) { return absl::StrFormat("%.2f", s.duration_s); }},
  };
  auto add_stats = [&](const std::string& name, LatencyStats Summary::*field) {
    rows.push_back({name + " p50/p90/p99 (ms)", [field](const Summary& s) {
                      const LatencyStats& l = s.*field;
                      return absl::StrCat(Ms(l.p50), " / ", Ms(l.p90), " / ", Ms(l.p99));
                    }});
  };
  add_stats("TTFT", &Summary::ttft_s);
  add_stats("TBT", &Summary::tbt_s);
  add_stats("TBT worst-10%", &Summary::tbt_worst10_s);
  add_stats("E2E", &Summary::e2e_s);
  rows.push_back({"throughput (req/s)",
                  [](const Summary& s) { return absl::StrFormat("%.3f", s.request_throughput); }});
  rows.push_back({"output (tok/s)",
                  [](const Summary& s) { return absl::StrFormat("%.1f", s.output_throughput); }});
  rows.push_back({"prompt / cached / output tok", [](const Summary& s) {
                    return absl::StrCat(s.prompt_tokens, " / ", s.cached_tokens, " / ",
                                        s.output_tokens);
                  }});
  rows.push_back({"cache hit ratio", [](const Summary& s) { return Pct(s.hit_ratio); }});
  rows.push_back(
      {"ideal hit ratio (prompts)", [](const Summary& s) { return Pct(s.ideal_hit_ratio); }});
  rows.push_back(
      {"ideal hit ratio (trace)", [](const Summary& s) { return Pct(s.trace_ideal_hit_ratio); }});
  rows.push_back({"SLO TTFT / TBT (ms)", [](const Summary& s) {
                    auto f = [](double v) { return v > 0 ? Ms(v) : std::string("-"); };
                    return absl::StrCat(f(s.slo.ttft_s), " / ", f(s.slo.tbt_s));
                  }});
  rows.push_back({"SLO attainment", [](const Summary& s) { return Pct(s.slo_attainment); }});
  rows.push_back(
      {"goodput (req/s)", [](const Summary& s) { return absl::StrFormat("%.3f", s.goodput); }});
  rows.push_back({"rejection rate", [](const Summary& s) { return Pct(s.rejection_rate); }});
  return rows;
}

}  // namespace

json ReportToJson(const Summary& s, const std::string& label, const json& config) {
  json summary = {{"requests", s.requests},
                  {"ok", s.ok},
                  {"rejected", s.rejected},
                  {"failed", s.failed},
                  {"duration_s", s.duration_s},
                  {"ttft_s", StatsToJson(s.ttft_s)},
                  {"tbt_s", StatsToJson(s.tbt_s)},
                  {"tbt_worst10_s", StatsToJson(s.tbt_worst10_s)},
                  {"e2e_s", StatsToJson(s.e2e_s)},
                  {"request_throughput", s.request_throughput},
                  {"output_throughput", s.output_throughput},
                  {"prompt_tokens", s.prompt_tokens},
                  {"cached_tokens", s.cached_tokens},
                  {"output_tokens", s.output_tokens},
                  {"hit_ratio", s.hit_ratio},
                  {"ideal_hit_ratio", s.ideal_hit_ratio},
                  {"trace_ideal_hit_ratio", s.trace_ideal_hit_ratio},
                  {"slo_ttft_s", s.slo.ttft_s},
                  {"slo_tbt_s", s.slo.tbt_s},
                  {"slo_attainment", s.slo_attainment},
                  {"goodput", s.goodput},
                  {"rejection_rate", s.rejection_rate}};
  return {{"version", 1}, {"label", label}, {"config", config}, {"summary", summary}};
}

absl::StatusOr<LoadedReport> ReportFromJson(const json& report) {
  if (!report.is_object()) return absl::InvalidArgumentError("report: not a JSON object");
  LoadedReport out;
  if (auto it = report.find("label"); it != report.end() && it->is_string()) {
    out.label = it->get<std::string>();
  }
  auto it = report.find("summary");
  if (it == report.end() || !it->is_object()) {
    return absl::InvalidArgumentError("report: 'summary' missing");
  }
  const json& j = *it;
  Summary& s = out.summary;
  const std::string w = "summary.";
  CRESCENT_RETURN_IF_ERROR(Get(j, "requests", &s.requests, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "ok", &s.ok, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "rejected", &s.rejected, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "failed", &s.failed, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "duration_s", &s.duration_s, w));
  CRESCENT_RETURN_IF_ERROR(StatsFromJson(j, "ttft_s", &s.ttft_s));
  CRESCENT_RETURN_IF_ERROR(StatsFromJson(j, "tbt_s", &s.tbt_s));
  CRESCENT_RETURN_IF_ERROR(StatsFromJson(j, "tbt_worst10_s", &s.tbt_worst10_s));
  CRESCENT_RETURN_IF_ERROR(StatsFromJson(j, "e2e_s", &s.e2e_s));
  CRESCENT_RETURN_IF_ERROR(Get(j, "request_throughput", &s.request_throughput, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "output_throughput", &s.output_throughput, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "prompt_tokens", &s.prompt_tokens, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "cached_tokens", &s.cached_tokens, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "output_tokens", &s.output_tokens, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "hit_ratio", &s.hit_ratio, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "ideal_hit_ratio", &s.ideal_hit_ratio, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "trace_ideal_hit_ratio", &s.trace_ideal_hit_ratio, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "slo_ttft_s", &s.slo.ttft_s, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "slo_tbt_s", &s.slo.tbt_s, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "slo_attainment", &s.slo_attainment, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "goodput", &s.goodput, w));
  CRESCENT_RETURN_IF_ERROR(Get(j, "rejection_rate", &s.rejection_rate, w));
  return out;
}

absl::StatusOr<LoadedReport> ReadReportFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return ErrnoToStatus(errno, absl::StrCat("opening report ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  json j = json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  absl::StatusOr<LoadedReport> report = ReportFromJson(j);
  if (!report.ok()) return Annotate(report.status(), path);
  if (report->label.empty()) report->label = path;
  return report;
}

std::string RecordsToCsv(const std::vector<RequestRecord>& records) {
  std::string out =
      "index,scheduled_s,sent_s,ttft_s,e2e_s,tbt_worst10_s,gaps,prompt_tokens,max_tokens,"
      "output_tokens,cached_tokens,http_status,outcome,error\n";
  for (const RequestRecord& r : records) {
    std::string error = r.error;
    for (char& c : error) {
      if (c == '"' || c == '\n' || c == '\r') c = '\'';
    }
    absl::StrAppendFormat(&out, "%d,%.6f,%.6f,%.6f,%.6f,%.6f,%d,%d,%d,%d,%d,%d,%s,\"%s\"\n",
                          r.index, r.scheduled_s, r.sent_s, r.ttft_s(), r.e2e_s(),
                          WorstTenthMean(r.gaps_s), r.gaps_s.size(), r.prompt_tokens, r.max_tokens,
                          r.output_tokens, r.cached_tokens, r.http_status, OutcomeName(r.outcome),
                          error);
  }
  return out;
}

std::string FormatSummaryTable(const Summary& summary) {
  return FormatComparison({LoadedReport{"", summary}});
}

std::string FormatComparison(const std::vector<LoadedReport>& reports) {
  std::vector<Row> rows = Rows();
  size_t name_width = 0;
  for (const Row& row : rows) name_width = std::max(name_width, row.name.size());
  std::vector<std::vector<std::string>> cells(rows.size());
  std::vector<size_t> widths;
  for (const LoadedReport& r : reports) widths.push_back(r.label.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t c = 0; c < reports.size(); ++c) {
      cells[i].push_back(rows[i].value(reports[c].summary));
      widths[c] = std::max(widths[c], cells[i][c].size());
    }
  }
  std::string out;
  bool labels = false;
  for (const LoadedReport& r : reports) labels |= !r.label.empty();
  if (labels) {
    absl::StrAppend(&out, std::string(name_width, ' '));
    for (size_t c = 0; c < reports.size(); ++c) {
      absl::StrAppend(&out, "  ", std::string(widths[c] - reports[c].label.size(), ' '),
                      reports[c].label);
    }
    absl::StrAppend(&out, "\n");
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    absl::StrAppend(&out, rows[i].name, std::string(name_width - rows[i].name.size(), ' '));
    for (size_t c = 0; c < reports.size(); ++c) {
      absl::StrAppend(&out, "  ", std::string(widths[c] - cells[i][c].size(), ' '), cells[i][c]);
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace crescent::bench
