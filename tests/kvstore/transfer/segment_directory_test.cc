#include "kvstore/transfer/segment_directory.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace crescent::kvstore {
namespace {

SegmentDescriptor Named(const std::string& name, uint64_t length) {
  SegmentDescriptor d;
  d.name = name;
  d.length = length;
  return d;
}

TEST(InMemorySegmentDirectoryTest, PublishLookupUnpublish) {
  InMemorySegmentDirectory dir;
  ASSERT_TRUE(dir.Publish(Named("a/x", 10)).ok());
  absl::StatusOr<SegmentDescriptor> d = dir.Lookup("a/x");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->length, 10u);
  EXPECT_EQ(dir.Publish(Named("a/x", 11)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(dir.Lookup("a/x")->length, 10u);  // never overwritten
  ASSERT_TRUE(dir.Unpublish("a/x").ok());
  EXPECT_EQ(dir.Lookup("a/x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(dir.Unpublish("a/x").code(), absl::StatusCode::kNotFound);
}

TEST(InMemorySegmentDirectoryTest, RejectsBadNames) {
  InMemorySegmentDirectory dir;
  EXPECT_EQ(dir.Publish(Named("", 1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dir.Publish(Named("x y", 1)).code(), absl::StatusCode::kInvalidArgument);
}

TEST(InMemorySegmentDirectoryTest, ConcurrentPublishersAndReaders) {
  InMemorySegmentDirectory dir;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&dir, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string name = absl::StrCat("node-", t, "/seg", i);
        ASSERT_TRUE(dir.Publish(Named(name, i + 1)).ok());
        ASSERT_EQ(dir.Lookup(name)->length, static_cast<uint64_t>(i + 1));
        if (i % 2 == 0) {
          ASSERT_TRUE(dir.Unpublish(name).ok());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    for (int i = 0; i < 200; ++i) {
      EXPECT_EQ(dir.Lookup(absl::StrCat("node-", t, "/seg", i)).ok(), i % 2 == 1);
    }
  }
}

}  // namespace
}  // namespace crescent::kvstore
