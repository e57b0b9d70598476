// The one checking helper for system calls and verbs calls in the transfer engine. A failed call
// becomes an absl::Status that names the call, the source file and line, and errno's text; the
// code comes from errno (ErrnoToStatus). Interrupted calls (EINTR) are retried.
//
//   CRESCENT_ASSIGN_OR_RETURN(int64_t n, CRESCENT_SYS(::read(fd, buf, len)));
//   CRESCENT_ASSIGN_OR_RETURN(void* p, CRESCENT_SYS_PTR(::mmap(...), MAP_FAILED));
//   CRESCENT_RETURN_IF_ERROR(CRESCENT_VERBS(ibv_modify_qp(qp, &attr, mask)));
//   CRESCENT_ASSIGN_OR_RETURN(ibv_pd* pd, CRESCENT_VERBS_PTR(ibv_alloc_pd(ctx)));
#ifndef CRESCENT_KVSTORE_TRANSFER_SYS_CHECK_H_
#define CRESCENT_KVSTORE_TRANSFER_SYS_CHECK_H_

#include <cerrno>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace crescent::kvstore {

// Returns the Status for a call that failed with `err`: "<call> at <file>:<line>: <strerror>".
// `file` may be a full path; only its last component is kept. REQUIRES: err != 0.
absl::Status SysError(int err, const char* call, const char* file, int line);

// Calls f() until it returns something other than -1 with errno EINTR. Returns its result, or
// SysError when it returned -1. Works for every call that reports failure as -1 + errno.
template <typename F>
absl::StatusOr<int64_t> CheckedSyscall(F&& f, const char* call, const char* file, int line) {
  for (;;) {
    const auto rc = f();
    if (rc != -1) return static_cast<int64_t>(rc);
    const int err = errno;
    if (err == EINTR) continue;
    return SysError(err, call, file, line);
  }
}

// For calls that return a pointer and report failure as `failure` (nullptr, MAP_FAILED) + errno.
template <typename F, typename P>
auto CheckedPointerCall(F&& f, P failure, const char* call, const char* file, int line)
    -> absl::StatusOr<decltype(f())> {
  for (;;) {
    auto p = f();
    if (p != failure) return p;
    const int err = errno;
    if (err == EINTR) continue;
    return SysError(err != 0 ? err : EIO, call, file, line);
  }
}

// For libibverbs calls that return 0 on success and an errno value (or -1 with errno) on failure.
absl::Status CheckVerbsResult(int rc, const char* call, const char* file, int line);

}  // namespace crescent::kvstore

#define CRESCENT_SYS(expr) \
  ::crescent::kvstore::CheckedSyscall([&] { return (expr); }, #expr, __FILE__, __LINE__)
#define CRESCENT_SYS_PTR(expr, failure)                                                     \
  ::crescent::kvstore::CheckedPointerCall([&] { return (expr); }, failure, #expr, __FILE__, \
                                          __LINE__)
#define CRESCENT_VERBS(expr) \
  ::crescent::kvstore::CheckVerbsResult((expr), #expr, __FILE__, __LINE__)
#define CRESCENT_VERBS_PTR(expr)                                                            \
  ::crescent::kvstore::CheckedPointerCall([&] { return (expr); }, nullptr, #expr, __FILE__, \
                                          __LINE__)

#endif  // CRESCENT_KVSTORE_TRANSFER_SYS_CHECK_H_
