#include "bench/sim/capacity_search.h"

#include <cmath>

#include "src/common/status.h"

namespace crescent::bench::sim {

absl::StatusOr<CapacityResult> FindCapacity(
    const std::function<absl::StatusOr<double>(double)>& attainment, double target,
    int iterations) {
  constexpr double kMin = 1.0 / 64, kMax = 64.0;
  CapacityResult result;
  auto eval = [&](double m) -> absl::StatusOr<double> {
    ++result.runs;
    return attainment(m);
  };
  double lo = 0.0, lo_att = 0.0, hi = 0.0;
  CRESCENT_ASSIGN_OR_RETURN(double a, eval(1.0));
  if (a >= target) {
    lo = 1.0;
    lo_att = a;
    for (double m = 2.0; m <= kMax; m *= 2) {
      CRESCENT_ASSIGN_OR_RETURN(a, eval(m));
      if (a < target) {
        hi = m;
        break;
      }
      lo = m;
      lo_att = a;
    }
    if (hi == 0.0) {
      result.rate_multiplier = lo;
      result.attainment = lo_att;
      return result;
    }
  } else {
    hi = 1.0;
    for (double m = 0.5; m >= kMin; m /= 2) {
      CRESCENT_ASSIGN_OR_RETURN(a, eval(m));
      if (a >= target) {
        lo = m;
        lo_att = a;
        break;
      }
      hi = m;
    }
    if (lo == 0.0) return result;  // not even at 1/64 of the trace's rate
  }
  for (int i = 0; i < iterations; ++i) {
    const double mid = std::sqrt(lo * hi);
    CRESCENT_ASSIGN_OR_RETURN(a, eval(mid));
    if (a >= target) {
      lo = mid;
      lo_att = a;
    } else {
      hi = mid;
    }
  }
  result.rate_multiplier = lo;
  result.attainment = lo_att;
  return result;
}

}  // namespace crescent::bench::sim
