#include "kvstore/transfer/segment_directory.h"

#include "absl/strings/str_cat.h"
#include "src/common/mutex.h"
#include "src/common/status.h"

namespace crescent::kvstore {

absl::Status InMemorySegmentDirectory::Publish(const SegmentDescriptor& descriptor) {
  CRESCENT_RETURN_IF_ERROR(ValidateSegmentName(descriptor.name));
  MutexLock lock(&mu_);
  auto [it, inserted] = segments_.emplace(descriptor.name, descriptor);
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("segment '", descriptor.name, "' is already published"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SegmentDescriptor> InMemorySegmentDirectory::Lookup(std::string_view name) {
  MutexLock lock(&mu_);
  auto it = segments_.find(name);
  if (it == segments_.end()) {
    return absl::NotFoundError(absl::StrCat("segment '", std::string(name), "' is not published"));
  }
  return it->second;
}

absl::Status InMemorySegmentDirectory::Unpublish(std::string_view name) {
  MutexLock lock(&mu_);
  auto it = segments_.find(name);
  if (it == segments_.end()) {
    return absl::NotFoundError(absl::StrCat("segment '", std::string(name), "' is not published"));
  }
  segments_.erase(it);
  return absl::OkStatus();
}

}  // namespace crescent::kvstore
