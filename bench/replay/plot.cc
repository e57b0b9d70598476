#include "bench/replay/plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace crescent::bench {
namespace {

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over `span`.
double TickStep(double span, int target) {
  if (!(span > 0)) return 1;
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
}

std::string TickLabel(double v, double step) {
  if (std::abs(v) < step * 1e-9) return "0";
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step))));
  return absl::StrFormat("%.*f", decimals, v);
}

}  // namespace

std::string RenderSvgPlot(const PlotOptions& o, const std::vector<PlotSeries>& series) {
  static constexpr std::array<const char*, 8> kColors = {
      "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const PlotSeries& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (y0 >= 0) y0 = 0;
  if (x0 > 0 && x0 < (x1 - x0) * 0.25) x0 = 0;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double left = 70, right = 20, top = 40, bottom = 55;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };

  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      o.width, o.height, o.width, o.height);
  absl::StrAppendFormat(
      &svg, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">%s</text>\n",
      o.width / 2.0, Escape(o.title));
  // Grid and ticks.
  const double xs = TickStep(x1 - x0, 8), ys = TickStep(y1 - y0, 6);
  for (double x = std::ceil(x0 / xs) * xs; x <= x1 + xs * 1e-9; x += xs) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                          px(x), top, px(x), top + ph, px(x), top + ph + 16, TickLabel(x, xs));
  }
  for (double y = std::ceil(y0 / ys) * ys; y <= y1 + ys * 1e-9; y += ys) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                          left, py(y), left + pw, py(y), left - 6, py(y) + 4, TickLabel(y, ys));
  }
  absl::StrAppendFormat(&svg,
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                        "stroke=\"#333\"/>\n",
                        left, top, pw, ph);
  absl::StrAppendFormat(&svg, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                        left + pw / 2, static_cast<double>(o.height) - 12, Escape(o.x_label));
  absl::StrAppendFormat(
      &svg, "<text transform=\"translate(16,%.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
      top + ph / 2, Escape(o.y_label));
  // Series first, then the legend on a translucent box over them (top right).
  for (size_t i = 0; i < series.size(); ++i) {
    const PlotSeries& s = series[i];
    const char* color = kColors[i % kColors.size()];
    if (s.markers) {
      for (const auto& [x, y] : s.points) {
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        absl::StrAppendFormat(&svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"%s\"/>\n",
                              px(x), py(y), color);
      }
    } else if (!s.points.empty()) {
      std::string path;
      for (const auto& [x, y] : s.points) {
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        absl::StrAppendFormat(&path, "%s%.1f,%.1f", path.empty() ? "M" : " L", px(x), py(y));
      }
      absl::StrAppendFormat(
          &svg, "<path d=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", path, color);
    }
  }
  if (!series.empty()) {
    size_t longest = 0;
    for (const PlotSeries& s : series) longest = std::max(longest, s.name.size());
    const double box_w = 28 + 7 * static_cast<double>(longest);
    const double box_x = left + pw - box_w - 4;
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                          "fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
                          box_x, top + 4, box_w, 16.0 * static_cast<double>(series.size()) + 6);
    for (size_t i = 0; i < series.size(); ++i) {
      const double ly = top + 18 + 16 * static_cast<double>(i);
      absl::StrAppendFormat(&svg,
                            "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                            "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                            box_x + 6, ly - 4, kColors[i % kColors.size()], box_x + 22, ly,
                            Escape(series[i].name));
    }
  }
  svg += "</svg>\n";
  return svg;
}

PlotSeries CdfSeries(const std::string& name, std::vector<double> values, double x_scale) {
  PlotSeries s;
  s.name = name;
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    s.points.emplace_back(values[i] * x_scale, static_cast<double>(i) / n);
    s.points.emplace_back(values[i] * x_scale, static_cast<double>(i + 1) / n);
  }
  return s;
}

std::map<std::string, std::string> ReplayPlots(const std::vector<RequestRecord>& records,
                                               double bucket_s) {
  std::vector<double> ttft, gaps, worst;
  PlotSeries ttft_time{"TTFT", {}, true}, e2e_time{"E2E", {}, true};
  double end = 0;
  for (const RequestRecord& r : records) {
    if (r.outcome != Outcome::kOk) continue;
    if (r.ttft_s() >= 0) {
      ttft.push_back(r.ttft_s());
      ttft_time.points.emplace_back(r.scheduled_s, r.ttft_s() * 1e3);
    }
    if (r.e2e_s() >= 0) e2e_time.points.emplace_back(r.scheduled_s, r.e2e_s() * 1e3);
    gaps.insert(gaps.end(), r.gaps_s.begin(), r.gaps_s.end());
    if (!r.gaps_s.empty()) worst.push_back(WorstTenthMean(r.gaps_s));
    end = std::max(end, r.end_s);
  }
  std::map<std::string, std::string> out;
  out["ttft_cdf.svg"] = RenderSvgPlot({"TTFT CDF", "TTFT (ms)", "fraction of requests"},
                                      {CdfSeries("TTFT", ttft, 1e3)});
  out["tbt_cdf.svg"] = RenderSvgPlot(
      {"TBT CDF", "time between tokens (ms)", "fraction"},
      {CdfSeries("every gap", gaps, 1e3), CdfSeries("worst-10% mean per request", worst, 1e3)});
  out["latency_over_time.svg"] = RenderSvgPlot(
      {"Latency by send time", "scheduled send time (s)", "latency (ms)"}, {ttft_time, e2e_time});
  // Throughput: completions and output tokens per bucket, tokens spread evenly over each
  // request's generation time.
  if (!(bucket_s > 0)) bucket_s = 1;
  const size_t buckets = static_cast<size_t>(std::ceil(end / bucket_s)) + 1;
  std::vector<double> tokens(buckets, 0), done(buckets, 0);
  for (const RequestRecord& r : records) {
    if (r.outcome != Outcome::kOk || r.end_s < 0) continue;
    done[static_cast<size_t>(r.end_s / bucket_s)] += 1;
    const double start = r.first_token_s >= 0 ? r.first_token_s : r.end_s;
    const double span = std::max(r.end_s - start, 1e-9);
    for (size_t b = static_cast<size_t>(start / bucket_s); b < buckets; ++b) {
      const double lo = std::max(start, static_cast<double>(b) * bucket_s);
      const double hi = std::min(r.end_s, static_cast<double>(b + 1) * bucket_s);
      if (hi < lo) break;
      tokens[b] += static_cast<double>(r.output_tokens) * (r.end_s > start ? (hi - lo) / span : 1);
      if (r.end_s <= start) break;
    }
  }
  PlotSeries tok{"output tokens/s", {}}, req{"completed requests/s", {}};
  for (size_t b = 0; b < buckets; ++b) {
    const double t = (static_cast<double>(b) + 0.5) * bucket_s;
    tok.points.emplace_back(t, tokens[b] / bucket_s);
    req.points.emplace_back(t, done[b] / bucket_s);
  }
  out["throughput_over_time.svg"] =
      RenderSvgPlot({"Output throughput", "time (s)", "tokens/s"}, {tok});
  out["requests_over_time.svg"] = RenderSvgPlot({"Completions", "time (s)", "requests/s"}, {req});
  return out;
}

}  // namespace crescent::bench
