// Capacity search: the highest request rate (the trace's arrivals compressed by a factor) a
// configuration serves at a target SLO attainment, found by bracketing then bisection.
#ifndef CRESCENT_BENCH_SIM_CAPACITY_SEARCH_H_
#define CRESCENT_BENCH_SIM_CAPACITY_SEARCH_H_

#include <functional>

#include "absl/status/statusor.h"

namespace crescent::bench::sim {

struct CapacityResult {
  double rate_multiplier = 0.0;  // highest passing multiple of the trace's rate (0: none)
  double attainment = 0.0;       // attainment at that multiplier
  int runs = 0;                  // evaluations made
};

// `attainment(m)` returns the SLO attainment with arrivals m times as fast as the trace.
// Brackets by doubling/halving from 1 within [1/64, 64], then bisects `iterations` times
// (geometrically). Assumes attainment falls as m grows. Errors: whatever `attainment` returns.
absl::StatusOr<CapacityResult> FindCapacity(
    const std::function<absl::StatusOr<double>(double)>& attainment, double target, int iterations);

}  // namespace crescent::bench::sim

#endif  // CRESCENT_BENCH_SIM_CAPACITY_SEARCH_H_
