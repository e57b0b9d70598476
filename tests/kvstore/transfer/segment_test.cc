#include "kvstore/transfer/segment.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::kvstore {
namespace {

using ::testing::HasSubstr;

SegmentDescriptor Sample() {
  SegmentDescriptor d;
  d.name = "node-a/kv0";
  d.length = (1ull << 40) + 3;
  d.host_id = "host/boot";
  d.tcp_endpoint = "10.0.0.1:7000";
  d.tcp_segment_id = 0xfedcba9876543210ull;
  d.shm_path = "/proc/12/fd/7";
  d.shm_inode = 99;
  d.rdma_info = std::string("\0\1\2\xff binary", 11);
  return d;
}

TEST(SegmentTest, DescriptorRoundTrip) {
  const SegmentDescriptor d = Sample();
  absl::StatusOr<SegmentDescriptor> back = ParseSegmentDescriptor(SerializeSegmentDescriptor(d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, d);
}

TEST(SegmentTest, MinimalDescriptorParses) {
  absl::StatusOr<SegmentDescriptor> d =
      ParseSegmentDescriptor(R"({"name":"a/b","length":5,"future_field":[1,2]})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name, "a/b");
  EXPECT_EQ(d->length, 5u);
  EXPECT_TRUE(d->tcp_endpoint.empty());
  EXPECT_TRUE(d->rdma_info.empty());
}

TEST(SegmentTest, ParseErrorsNameTheField) {
  EXPECT_THAT(std::string(ParseSegmentDescriptor("not json").status().message()),
              HasSubstr("not a JSON object"));
  EXPECT_THAT(std::string(ParseSegmentDescriptor(R"({"length":5})").status().message()),
              HasSubstr("'name'"));
  EXPECT_THAT(std::string(ParseSegmentDescriptor(R"({"name":"a","length":-5})").status().message()),
              HasSubstr("'length'"));
  EXPECT_THAT(
      std::string(
          ParseSegmentDescriptor(R"({"name":"a","length":5,"rdma_info":"@@"})").status().message()),
      HasSubstr("base64"));
  EXPECT_EQ(ParseSegmentDescriptor(R"({"name":"bad name","length":5})").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SegmentTest, NameValidation) {
  EXPECT_TRUE(ValidateSegmentName("node-a/kv0").ok());
  EXPECT_TRUE(ValidateSegmentName("prefill_3:dram.0").ok());
  EXPECT_FALSE(ValidateSegmentName("").ok());
  EXPECT_FALSE(ValidateSegmentName("/abs").ok());
  EXPECT_FALSE(ValidateSegmentName(std::string(256, 'a')).ok());
  EXPECT_TRUE(ValidateSegmentName(std::string(255, 'a')).ok());
  absl::Status s = ValidateSegmentName("a b");
  EXPECT_THAT(std::string(s.message()), HasSubstr("byte 1"));
}

TEST(SegmentTest, HostIdIsStableAndNamesTheBoot) {
  const std::string& id = LocalHostId();
  EXPECT_EQ(&id, &LocalHostId());
  EXPECT_NE(id.find('/'), std::string::npos);
  EXPECT_GT(id.size(), 30u);  // hostname, '/', a 36-character boot id
}

}  // namespace
}  // namespace crescent::kvstore
