// CloneStatus: a copy of a Status that shares nothing with the original.
//
// Copies of an absl::Status share one reference-counted representation, and the count is
// maintained partly inside the precompiled abseil library, where ThreadSanitizer cannot see it:
// a copy handed to another thread and freed there looks like a race on the message. Statuses that
// cross threads in this library are therefore moved, or cloned when one status must reach
// several owners.
#ifndef CRESCENT_KVSTORE_TRANSFER_INTERNAL_CLONE_STATUS_H_
#define CRESCENT_KVSTORE_TRANSFER_INTERNAL_CLONE_STATUS_H_

#include "absl/status/status.h"

namespace crescent::kvstore::internal {

// Same code and message; payloads are not carried (this library sets none).
inline absl::Status CloneStatus(const absl::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(status.code(), status.message());
}

}  // namespace crescent::kvstore::internal

#endif  // CRESCENT_KVSTORE_TRANSFER_INTERNAL_CLONE_STATUS_H_
