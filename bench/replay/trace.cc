#include "bench/replay/trace.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"

namespace crescent::bench {
namespace {

using json = nlohmann::json;

// Parses one line into *out; returns an empty string on success, else what is wrong.
std::string ParseLine(std::string_view line, int block_tokens, TraceRequest* out) {
  json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "not valid JSON";
  if (!j.is_object()) return "not a JSON object";
  auto get_int = [&](const char* key, int64_t* value) -> std::string {
    auto it = j.find(key);
    if (it == j.end()) return absl::StrCat("'", key, "' is missing");
    if (it->is_number_integer()) {
      *value = it->get<int64_t>();
    } else if (it->is_number_float() && it->get<double>() == static_cast<int64_t>(*it)) {
      *value = static_cast<int64_t>(it->get<double>());
    } else {
      return absl::StrCat("'", key, "' must be an integer");
    }
    if (*value < 0) return absl::StrCat("'", key, "' must not be negative");
    return "";
  };
  std::string err;
  if (!(err = get_int("timestamp", &out->timestamp_ms)).empty()) return err;
  if (!(err = get_int("input_length", &out->input_length)).empty()) return err;
  if (!(err = get_int("output_length", &out->output_length)).empty()) return err;
  auto ids = j.find("hash_ids");
  if (ids == j.end()) return "'hash_ids' is missing";
  if (!ids->is_array()) return "'hash_ids' must be an array";
  out->hash_ids.clear();
  out->hash_ids.reserve(ids->size());
  for (const auto& id : *ids) {
    if (!id.is_number_integer()) return "'hash_ids' must hold integers";
    out->hash_ids.push_back(id.get<int64_t>());
  }
  const int64_t needed = (out->input_length + block_tokens - 1) / block_tokens;
  if (static_cast<int64_t>(out->hash_ids.size()) > needed) {
    return absl::StrCat("'hash_ids' has ", out->hash_ids.size(), " blocks but input_length ",
                        out->input_length, " needs only ", needed);
  }
  return "";
}

}  // namespace

absl::StatusOr<Trace> ParseTrace(std::string_view text, const TraceParseOptions& options,
                                 std::vector<TraceIssue>* issues) {
  if (options.block_tokens < 1) return absl::InvalidArgumentError("block_tokens must be >= 1");
  Trace trace;
  trace.block_tokens = options.block_tokens;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    TraceRequest request;
    request.line = line_no;
    std::string err = ParseLine(line, options.block_tokens, &request);
    if (!err.empty()) {
      if (options.strict) {
        return absl::InvalidArgumentError(absl::StrCat("trace line ", line_no, ": ", err));
      }
      if (issues != nullptr) issues->push_back({line_no, std::move(err)});
      continue;
    }
    trace.requests.push_back(std::move(request));
  }
  std::stable_sort(
      trace.requests.begin(), trace.requests.end(),
      [](const TraceRequest& a, const TraceRequest& b) { return a.timestamp_ms < b.timestamp_ms; });
  return trace;
}

absl::StatusOr<Trace> ReadTraceFile(const std::string& path, const TraceParseOptions& options,
                                    std::vector<TraceIssue>* issues) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoToStatus(errno, absl::StrCat("opening trace ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return ErrnoToStatus(errno, absl::StrCat("reading trace ", path));
  absl::StatusOr<Trace> trace = ParseTrace(buffer.str(), options, issues);
  if (!trace.ok()) return Annotate(trace.status(), path);
  return trace;
}

std::string TraceToJsonl(const Trace& trace) {
  std::string out;
  for (const TraceRequest& r : trace.requests) {
    json j = {{"timestamp", r.timestamp_ms},
              {"input_length", r.input_length},
              {"output_length", r.output_length},
              {"hash_ids", r.hash_ids}};
    absl::StrAppend(&out, j.dump(), "\n");
  }
  return out;
}

Trace SelectSubset(const Trace& trace, const SubsetOptions& options) {
  Trace out;
  out.block_tokens = trace.block_tokens;
  const int64_t n = static_cast<int64_t>(trace.requests.size());
  const int64_t begin = std::clamp<int64_t>(options.start, 0, n);
  int64_t end = n;
  if (options.limit >= 0) end = std::min(n, begin + options.limit);
  const int64_t count = end - begin;
  if (options.sample > 0 && options.sample < count) {
    for (int64_t k = 0; k < options.sample; ++k) {
      out.requests.push_back(trace.requests[begin + k * count / options.sample]);
    }
  } else {
    out.requests.assign(trace.requests.begin() + begin, trace.requests.begin() + end);
  }
  if (!out.requests.empty()) {
    const int64_t t0 = out.requests.front().timestamp_ms;
    for (TraceRequest& r : out.requests) r.timestamp_ms -= t0;
  }
  return out;
}

void ScaleTime(Trace& trace, double factor) {
  for (TraceRequest& r : trace.requests) {
    r.timestamp_ms = static_cast<int64_t>(static_cast<double>(r.timestamp_ms) * factor + 0.5);
  }
}

double IdealBlockHitRatio(const Trace& trace) {
  std::unordered_set<int64_t> seen;
  int64_t total = 0;
  int64_t hits = 0;
  for (const TraceRequest& r : trace.requests) {
    total += static_cast<int64_t>(r.hash_ids.size());
    for (int64_t id : r.hash_ids) {
      if (!seen.count(id)) break;
      ++hits;
    }
    seen.insert(r.hash_ids.begin(), r.hash_ids.end());
  }
  return total == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(total);
}

}  // namespace crescent::bench
