#include "bench/replay/plot.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::bench {
namespace {

using ::testing::HasSubstr;

TEST(PlotTest, RendersSeriesAxesAndEscapedText) {
  PlotSeries s{"a<b", {{0, 0}, {1, 2}, {2, 4}}};
  const std::string svg = RenderSvgPlot({"T & U", "x", "y"}, {s});
  EXPECT_THAT(svg, HasSubstr("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_THAT(svg, HasSubstr("T &amp; U"));
  EXPECT_THAT(svg, HasSubstr("a&lt;b"));
  EXPECT_THAT(svg, HasSubstr("<path d=\"M"));
  EXPECT_THAT(svg, HasSubstr("</svg>"));
  // Empty input still gives a valid document.
  EXPECT_THAT(RenderSvgPlot({"empty", "x", "y"}, {}), HasSubstr("</svg>"));
}

TEST(PlotTest, CdfIsAStaircaseToOne) {
  PlotSeries cdf = CdfSeries("c", {3, 1, 2}, 10);
  ASSERT_EQ(cdf.points.size(), 6u);
  EXPECT_DOUBLE_EQ(cdf.points.front().first, 10);
  EXPECT_DOUBLE_EQ(cdf.points.front().second, 0);
  EXPECT_DOUBLE_EQ(cdf.points.back().first, 30);
  EXPECT_DOUBLE_EQ(cdf.points.back().second, 1);
}

TEST(PlotTest, ReplayPlotsNamesFiles) {
  RequestRecord r;
  r.first_token_s = 0.1;
  r.end_s = 2.5;
  r.gaps_s = {0.1, 0.2};
  r.output_tokens = 3;
  r.outcome = Outcome::kOk;
  auto plots = ReplayPlots({r});
  EXPECT_EQ(plots.size(), 5u);
  EXPECT_TRUE(plots.count("ttft_cdf.svg"));
  EXPECT_TRUE(plots.count("tbt_cdf.svg"));
  EXPECT_TRUE(plots.count("latency_over_time.svg"));
  EXPECT_TRUE(plots.count("throughput_over_time.svg"));
  EXPECT_THAT(plots["throughput_over_time.svg"], HasSubstr("<path"));
}

}  // namespace
}  // namespace crescent::bench
