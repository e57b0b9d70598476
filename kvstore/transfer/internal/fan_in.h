// FanIn: the shared state of one transfer split into parts that complete on any thread.
#ifndef CRESCENT_KVSTORE_TRANSFER_INTERNAL_FAN_IN_H_
#define CRESCENT_KVSTORE_TRANSFER_INTERNAL_FAN_IN_H_

#include <atomic>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "kvstore/transfer/transport.h"
#include "src/common/mutex.h"

namespace crescent::kvstore::internal {

// Runs `done` once, when the last of `parts` (> 0) Finish calls arrives, with the first error
// reported, or OK. Thread-safe; held through a shared_ptr by every part in flight.
class FanIn {
 public:
  FanIn(int parts, TransferCallback done) : remaining_(parts), done_(std::move(done)) {}
  FanIn(const FanIn&) = delete;
  FanIn& operator=(const FanIn&) = delete;

  // Exactly once per part. The status is moved in and the final one moved out, never shared
  // between threads (see clone_status.h).
  void Finish(absl::Status s) {
    {
      MutexLock lock(&mu_);
      if (!s.ok() && status_.ok()) status_ = std::move(s);
    }
    // acq_rel: the part that finishes last sees every other part's writes.
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      absl::Status final_status;
      {
        MutexLock lock(&mu_);
        final_status = std::move(status_);
      }
      std::move(done_)(std::move(final_status));
    }
  }

 private:
  std::atomic<int> remaining_;
  Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  TransferCallback done_;
};

}  // namespace crescent::kvstore::internal

#endif  // CRESCENT_KVSTORE_TRANSFER_INTERNAL_FAN_IN_H_
