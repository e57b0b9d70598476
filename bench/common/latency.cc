#include "bench/common/latency.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

namespace crescent::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

double WorstTenthMean(std::vector<double> gaps) {
  if (gaps.empty()) return 0;
  const size_t k = (gaps.size() + 9) / 10;
  const auto end = gaps.begin() + static_cast<std::ptrdiff_t>(k);
  std::partial_sort(gaps.begin(), end, gaps.end(), std::greater<double>());
  return std::accumulate(gaps.begin(), end, 0.0) / static_cast<double>(k);
}

}  // namespace crescent::bench
