#include "bench/common/cpu_time.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace crescent::bench {

absl::StatusOr<CpuTimes> ParseProcStat(absl::string_view text) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.empty() || fields[0] != "cpu") continue;
    // cpu user nice system idle iowait irq softirq steal [guest guest_nice]
    constexpr size_t kThroughSteal = 9;
    if (fields.size() < kThroughSteal) {
      return absl::InvalidArgumentError(absl::StrCat("/proc/stat: the cpu line has ",
                                                     fields.size() - 1,
                                                     " columns, need at least 8 (through steal)"));
    }
    uint64_t v[kThroughSteal] = {};
    for (size_t i = 1; i < kThroughSteal; ++i) {
      if (!absl::SimpleAtoi(fields[i], &v[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("/proc/stat: cpu column ", i, " is not a count: '", fields[i], "'"));
      }
    }
    CpuTimes t;
    for (size_t i = 1; i < kThroughSteal; ++i) t.total += v[i];
    t.idle = v[4] + v[5];
    t.steal = v[8];
    return t;
  }
  return absl::InvalidArgumentError("/proc/stat: no aggregate 'cpu' line");
}

absl::StatusOr<CpuTimes> SampleCpuTimes() {
  std::ifstream in("/proc/stat");
  if (!in) return absl::UnavailableError("cannot read /proc/stat");
  std::stringstream text;
  text << in.rdbuf();
  return ParseProcStat(text.str());
}

double StealFraction(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total) return 0;
  const double steal = after.steal >= before.steal ? after.steal - before.steal : 0;
  return steal / static_cast<double>(after.total - before.total);
}

}  // namespace crescent::bench
