// A small SVG line-plot writer (axes, ticks, labels, legend) and the replay's plots built on it:
// TTFT and TBT CDFs, latency over time, throughput over time.
#ifndef CRESCENT_BENCH_REPLAY_PLOT_H_
#define CRESCENT_BENCH_REPLAY_PLOT_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bench/replay/metrics.h"

namespace crescent::bench {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in order.
  bool markers = false;                           // Dots instead of a line.
};

struct PlotOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  int width = 720;
  int height = 420;
};

// A self-contained SVG document. Axis ranges cover every point (y from 0 when all y >= 0);
// series get distinct colors. Text is XML-escaped. Empty series draw nothing.
std::string RenderSvgPlot(const PlotOptions& options, const std::vector<PlotSeries>& series);

// The empirical CDF of `values` (x: value * x_scale, y: fraction <= x, in [0, 1]).
PlotSeries CdfSeries(const std::string& name, std::vector<double> values, double x_scale = 1);

// The replay plots, file name -> SVG: ttft_cdf.svg, tbt_cdf.svg, latency_over_time.svg,
// throughput_over_time.svg (output tokens/s) and requests_over_time.svg (completions/s), per
// `bucket_s` window.
std::map<std::string, std::string> ReplayPlots(const std::vector<RequestRecord>& records,
                                               double bucket_s = 1.0);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_PLOT_H_
