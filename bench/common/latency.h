// Latency statistics shared by crescent-bench's replay (measured) and sim (simulated) reports,
// so both define a percentile and Mooncake's TBT the same way. Pure.
#ifndef CRESCENT_BENCH_COMMON_LATENCY_H_
#define CRESCENT_BENCH_COMMON_LATENCY_H_

#include <vector>

namespace crescent::bench {

// The p-th percentile (p in [0, 100], clamped) by linear interpolation between closest ranks, as
// numpy.percentile does by default. 0 for an empty input.
double Percentile(std::vector<double> values, double p);

// Mooncake's TBT for one request: the mean of its worst ceil(10%) inter-token gaps (so at least
// one gap, and 11 gaps count their worst 2). 0 when there are no gaps.
double WorstTenthMean(std::vector<double> gaps);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_COMMON_LATENCY_H_
