// SSD tier: a StorageTier over one preallocated file, read and written with O_DIRECT through
// io_uring where the system allows, with logged fallbacks to buffered I/O and to pread/pwrite.
//
// I/O path. Each batch takes one io_uring instance from a small pool (options.rings; a caller
// waits while all are busy) and keeps up to options.queue_depth requests in flight on it. A
// batch of a single I/O, or any batch when queue_depth is 1, is served with one synchronous
// pread/pwrite instead: nothing can overlap, and the synchronous call is cheaper.
// Requests longer than options.max_io_bytes are split so that one large block also spreads over
// the queue. Short transfers and EINTR/EAGAIN completions are resubmitted for the remainder.
// With O_DIRECT, user buffers whose address is not a multiple of alignment() go through aligned
// bounce buffers (one per such request, allocated for the call).
//
// Fallbacks, each decided once at open and logged as a warning:
//   - O_DIRECT: the file is opened with O_DIRECT and probed with one aligned read; if the open
//     or the probe fails with EINVAL (tmpfs, some overlay file systems) the file is reopened
//     buffered. direct_io() reports which. DirectIo::kRequire turns this into an error.
//   - io_uring: if io_uring_queue_init fails (seccomp in containers, io_uring_disabled) or a
//     probe read through the ring fails, requests are served with pread/pwrite, one at a time
//     per batch. engine_name() reports "io_uring" or "pread". IoEngine::kIoUring makes this an
//     error; IoEngine::kPread forces the fallback (tests, benchmarks).
#ifndef CRESCENT_KVSTORE_TIER_SSD_TIER_H_
#define CRESCENT_KVSTORE_TIER_SSD_TIER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kvstore/tier/storage_tier.h"

namespace crescent::kvstore {

struct SsdTierOptions {
  enum class DirectIo { kAuto, kRequire, kOff };
  enum class IoEngine { kAuto, kIoUring, kPread };

  std::string path;       // The file; created if missing. Its directory must exist.
  uint64_t capacity = 0;  // Bytes; a positive multiple of alignment.
  // true: existing contents are discarded (a fresh segment). false: existing contents are kept
  // (the file is grown or shrunk to capacity), so a reopened tier reads what was written.
  bool truncate = true;
  uint64_t alignment = 4096;  // Power of two; with O_DIRECT at least the device's block size.
  DirectIo direct_io = DirectIo::kAuto;
  IoEngine engine = IoEngine::kAuto;
  int queue_depth = 32;                // I/Os in flight per batch (1..4096).
  int rings = 2;                       // Batches that can run at once on io_uring (1..64).
  uint64_t max_io_bytes = 1ull << 20;  // Larger requests are split (rounded to alignment).
};

class SsdTier : public StorageTier {
 public:
  // Whether the file is open with O_DIRECT (false after the buffered fallback or kOff).
  virtual bool direct_io() const = 0;
  // "io_uring" or "pread".
  virtual std::string_view engine_name() const = 0;
  virtual int queue_depth() const = 0;
  virtual const std::string& path() const = 0;
};

// Opens (creating or truncating as options say) the file and reserves `capacity` bytes for it
// with fallocate (ftruncate where fallocate is unsupported). The file stays on disk when the
// tier is destroyed. Thread-safe as StorageTier says.
// Errors: InvalidArgument (bad options), the errno's code for open/fallocate/probe failures
// (e.g. ResourceExhausted for ENOSPC, PermissionDenied), FailedPrecondition when kRequire /
// kIoUring cannot be honoured.
absl::StatusOr<std::unique_ptr<SsdTier>> OpenSsdTier(const SsdTierOptions& options);

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TIER_SSD_TIER_H_
