#include "kvstore/transfer/internal/fan_in.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace crescent::kvstore::internal {
namespace {

TEST(FanInTest, RunsDoneOnceAfterTheLastPart) {
  int calls = 0;
  std::optional<absl::Status> result;
  FanIn fan_in(3, [&](absl::Status s) {
    ++calls;
    result = std::move(s);
  });
  fan_in.Finish(absl::OkStatus());
  fan_in.Finish(absl::OkStatus());
  EXPECT_EQ(calls, 0);
  fan_in.Finish(absl::OkStatus());
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok());
}

TEST(FanInTest, KeepsTheFirstError) {
  std::optional<absl::Status> result;
  FanIn fan_in(4, [&](absl::Status s) { result = std::move(s); });
  fan_in.Finish(absl::OkStatus());
  fan_in.Finish(absl::UnavailableError("peer gone"));
  fan_in.Finish(absl::DataLossError("checksum"));
  EXPECT_FALSE(result.has_value());
  fan_in.Finish(absl::OkStatus());
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(result->message(), "peer gone");
}

TEST(FanInTest, PartsFinishingOnManyThreads) {
  constexpr int kThreads = 4;
  constexpr int kPartsPerThread = 500;
  std::atomic<int> calls{0};
  absl::Status result;
  std::vector<int> written(kThreads * kPartsPerThread, 0);
  auto fan_in = std::make_shared<FanIn>(kThreads * kPartsPerThread, [&](absl::Status s) {
    calls.fetch_add(1);
    result = std::move(s);
    // Every part's write is visible to whoever runs done.
    for (int w : written) ASSERT_EQ(w, 1);
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPartsPerThread; ++i) {
        const int part = t * kPartsPerThread + i;
        written[part] = 1;
        fan_in->Finish(part == 777 ? absl::InternalError("part 777") : absl::OkStatus());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(result.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(result.message(), "part 777");
}

}  // namespace
}  // namespace crescent::kvstore::internal
