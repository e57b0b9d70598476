#include "kvstore/transfer/sys_check.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::kvstore {
namespace {

using ::testing::HasSubstr;

TEST(SysCheckTest, SuccessReturnsTheResult) {
  absl::StatusOr<int64_t> pid = CRESCENT_SYS(::getpid());
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_EQ(*pid, ::getpid());
}

TEST(SysCheckTest, FailureNamesCallFileLineAndReason) {
  absl::StatusOr<int64_t> r = CRESCENT_SYS(::close(-1));
  ASSERT_FALSE(r.ok());
  const std::string message(r.status().message());
  EXPECT_THAT(message, HasSubstr("::close(-1)"));
  EXPECT_THAT(message, HasSubstr("sys_check_test.cc:"));
  EXPECT_THAT(message, HasSubstr("Bad file descriptor"));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("/")));  // the file's directory is dropped
}

TEST(SysCheckTest, CodeFollowsErrno) {
  absl::StatusOr<int64_t> r = CRESCENT_SYS(::access("/nonexistent/crescent", F_OK));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST(SysCheckTest, RetriesEintr) {
  int calls = 0;
  absl::StatusOr<int64_t> r = CheckedSyscall(
      [&]() -> int {
        if (++calls < 3) {
          errno = EINTR;
          return -1;
        }
        return 42;
      },
      "fake()", __FILE__, __LINE__);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, 42);
  EXPECT_EQ(calls, 3);
}

TEST(SysCheckTest, PointerCallFailure) {
  absl::StatusOr<void*> p = CRESCENT_SYS_PTR(
      ::mmap(nullptr, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), MAP_FAILED);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("::mmap("));
}

TEST(SysCheckTest, VerbsStyleResults) {
  EXPECT_TRUE(CRESCENT_VERBS(0).ok());
  absl::Status s = CRESCENT_VERBS(EINVAL);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("EINVAL"));
  errno = ENOMEM;
  EXPECT_EQ(CRESCENT_VERBS(-1).code(), absl::StatusCode::kResourceExhausted);
  auto null_call = []() -> int* {
    errno = EACCES;
    return nullptr;
  };
  absl::StatusOr<int*> p = CRESCENT_VERBS_PTR(null_call());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace crescent::kvstore
