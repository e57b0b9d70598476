#include "bench/sim/trace.h"

#include <algorithm>
#include <cerrno>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"

namespace crescent::bench::sim {
namespace {

absl::Status LineError(int line_number, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("trace line ", line_number, ": ", std::string(what)));
}

}  // namespace

absl::StatusOr<TraceRequest> ParseTraceLine(std::string_view line, int line_number) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    return LineError(line_number, absl::StrCat("not JSON (", e.what(), ")"));
  }
  if (!j.is_object()) return LineError(line_number, "not a JSON object");
  TraceRequest r;
  auto number = [&](const char* key, bool integer, double* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) {
      return LineError(line_number, absl::StrCat("missing number '", key, "'"));
    }
    if (integer && !it->is_number_integer()) {
      return LineError(line_number, absl::StrCat("'", key, "' is not an integer"));
    }
    *out = it->get<double>();
    if (*out < 0) return LineError(line_number, absl::StrCat("'", key, "' is negative"));
    return absl::OkStatus();
  };
  double v = 0;
  CRESCENT_RETURN_IF_ERROR(number("timestamp", false, &v));
  r.timestamp_ms = v;
  CRESCENT_RETURN_IF_ERROR(number("input_length", true, &v));
  r.input_length = static_cast<int64_t>(v);
  CRESCENT_RETURN_IF_ERROR(number("output_length", true, &v));
  r.output_length = static_cast<int64_t>(v);
  auto ids = j.find("hash_ids");
  if (ids != j.end()) {
    if (!ids->is_array()) return LineError(line_number, "'hash_ids' is not an array");
    for (const auto& id : *ids) {
      if (!id.is_number_unsigned()) {
        return LineError(line_number,
                         "'hash_ids' holds a value that is not a non-negative integer");
      }
      r.hash_ids.push_back(id.get<uint64_t>());
    }
  }
  return r;
}

absl::StatusOr<std::vector<TraceRequest>> ReadTrace(const std::string& path, bool skip_malformed,
                                                    int* skipped) {
  std::ifstream in(path);
  if (!in) return ErrnoToStatus(errno, absl::StrCat("opening trace ", path));
  std::vector<TraceRequest> out;
  std::string line;
  int line_number = 0;
  int bad = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto r = ParseTraceLine(line, line_number);
    if (!r.ok()) {
      if (!skip_malformed) return Annotate(r.status(), path);
      ++bad;
      continue;
    }
    out.push_back(*std::move(r));
  }
  if (skipped != nullptr) *skipped = bad;
  if (out.empty())
    return absl::InvalidArgumentError(absl::StrCat("trace ", path, " has no requests"));
  std::stable_sort(out.begin(), out.end(), [](const TraceRequest& a, const TraceRequest& b) {
    return a.timestamp_ms < b.timestamp_ms;
  });
  return out;
}

}  // namespace crescent::bench::sim
