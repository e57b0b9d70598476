// Status helpers: Crescent's one error model is absl::Status / absl::StatusOr<T>.
//
//   CRESCENT_RETURN_IF_ERROR(expr);            // returns expr's Status if it is not OK
//   CRESCENT_ASSIGN_OR_RETURN(auto x, expr);   // x = *expr, or returns expr.status()
//
// Codes mirror gRPC's: convert only at a service edge (gRPC) or the HTTP edge (OpenAI JSON).
#ifndef CRESCENT_SRC_COMMON_STATUS_H_
#define CRESCENT_SRC_COMMON_STATUS_H_

#include <cerrno>
#include <cstring>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define CRESCENT_STATUS_CONCAT_INNER_(a, b) a##b
#define CRESCENT_STATUS_CONCAT_(a, b) CRESCENT_STATUS_CONCAT_INNER_(a, b)

#define CRESCENT_RETURN_IF_ERROR(expr)                  \
  do {                                                  \
    ::absl::Status crescent_status_ = (expr);           \
    if (!crescent_status_.ok()) return crescent_status_; \
  } while (0)

#define CRESCENT_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return std::move(tmp).status();        \
  lhs = std::move(tmp).value()

#define CRESCENT_ASSIGN_OR_RETURN(lhs, expr) \
  CRESCENT_ASSIGN_OR_RETURN_IMPL_(CRESCENT_STATUS_CONCAT_(crescent_statusor_, __LINE__), lhs, expr)

namespace crescent {

// Returns a Status for a failed system call: `what` names the call and its object, errno
// supplies the reason and picks the code (ENOENT -> NotFound, EACCES -> PermissionDenied, ...).
absl::Status ErrnoToStatus(int err, std::string_view what);

// Prepends context to a non-OK status ("loading model: <original message>"), keeping its code.
absl::Status Annotate(const absl::Status& status, std::string_view context);

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_STATUS_H_
