// SegmentDirectory: resolves a segment name to its descriptor. The KV master serves one over
// gRPC; InMemorySegmentDirectory serves the engines of one process (tests, `crescent serve`).
#ifndef CRESCENT_KVSTORE_TRANSFER_SEGMENT_DIRECTORY_H_
#define CRESCENT_KVSTORE_TRANSFER_SEGMENT_DIRECTORY_H_

#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/transfer/segment.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

// Implementations are thread-safe.
class SegmentDirectory {
 public:
  virtual ~SegmentDirectory() = default;

  // Makes `descriptor` resolvable by its name. Errors: InvalidArgument for a bad name,
  // AlreadyExists when the name is taken (two owners of one name is a bug, never overwritten).
  virtual absl::Status Publish(const SegmentDescriptor& descriptor) = 0;

  // Returns the descriptor published under `name`; NotFound if there is none.
  virtual absl::StatusOr<SegmentDescriptor> Lookup(std::string_view name) = 0;

  // Removes `name`. NotFound if it was not published.
  virtual absl::Status Unpublish(std::string_view name) = 0;
};

// A map in this process's memory.
class InMemorySegmentDirectory final : public SegmentDirectory {
 public:
  absl::Status Publish(const SegmentDescriptor& descriptor) override;
  absl::StatusOr<SegmentDescriptor> Lookup(std::string_view name) override;
  absl::Status Unpublish(std::string_view name) override;

 private:
  Mutex mu_;
  std::map<std::string, SegmentDescriptor, std::less<>> segments_ ABSL_GUARDED_BY(mu_);
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_SEGMENT_DIRECTORY_H_
