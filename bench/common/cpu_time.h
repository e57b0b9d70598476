// The CPU time the kernel accounted to the whole machine, from /proc/stat: on a virtual machine
// its "steal" column is the time the hypervisor ran other guests on our virtual CPUs while we had
// work for them. The CPU benchmarks print the steal share of their timed runs, because a decode
// step waits for the slowest of its threads, and a thread that loses its CPU for a millisecond
// holds the whole step up: a figure measured under steal says more about the host than the code.
#ifndef CRESCENT_BENCH_COMMON_CPU_TIME_H_
#define CRESCENT_BENCH_COMMON_CPU_TIME_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace crescent::bench {

// Totals over all CPUs, in clock ticks.
struct CpuTimes {
  uint64_t total = 0;  // every column of the "cpu" line but guest time (already in user).
  uint64_t idle = 0;   // idle + iowait
  uint64_t steal = 0;
};

// Parses the aggregate "cpu" line of /proc/stat's text. InvalidArgument, naming what is wrong,
// when there is no such line or it has fewer than the 8 columns up to steal.
absl::StatusOr<CpuTimes> ParseProcStat(absl::string_view text);

// ParseProcStat of this machine's /proc/stat; Unavailable where it cannot be read.
absl::StatusOr<CpuTimes> SampleCpuTimes();

// The share of the CPU time between two samples that was stolen, in [0, 1]; 0 when no time
// passed. REQUIRES: `after` was sampled after `before`.
double StealFraction(const CpuTimes& before, const CpuTimes& after);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_COMMON_CPU_TIME_H_
