// SsdFile: the byte range of an SSD segment, addressed by the master's offsets, over the SSD tier
// (kvstore/tier/ssd_tier.h: a preallocated file, O_DIRECT + io_uring where the system allows).
// Blocks are stored raw at the master's offset. The master aligns ranges to 64 bytes while the
// tier works in 4 KiB units, so a write covering part of a 4 KiB page reads that page first
// (read-modify-write; writes are serialized so that neighbours sharing a page cannot race).
// Integrity comes from the master's XXH3-64 record, which every read is verified against
// (ReadVerified): a flipped bit on disk is a DataLoss, never wrong bytes.
#ifndef CRESCENT_KVSTORE_SERVER_SSD_FILE_H_
#define CRESCENT_KVSTORE_SERVER_SSD_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/tier/ssd_tier.h"

namespace crescent::kvstore::server {

// Thread-safe (positional I/O only).
class SsdFile {
 public:
  // Creates or truncates `path` and sizes it to `capacity` bytes (rounded up to 4 KiB; a
  // restarted node starts empty, as the master forgets its blocks). Errors: InvalidArgument
  // (capacity 0), the tier's open errors (naming the path).
  static absl::StatusOr<std::unique_ptr<SsdFile>> Open(std::string_view path, uint64_t capacity);
  ~SsdFile();

  // Writes `data` at `offset`, then reads it back and checks it (a write the device silently
  // dropped is caught here). Errors: OutOfRange, Internal (I/O), DataLoss (read-back differs).
  absl::Status Write(uint64_t offset, std::span<const std::byte> data);

  // Reads `out.size()` bytes at `offset` and checks their XXH3-64 against `checksum`.
  // Errors: OutOfRange, the tier's I/O error, DataLoss (checksum mismatch; `out` is then
  // garbage).
  absl::Status ReadVerified(uint64_t offset, std::span<std::byte> out, uint64_t checksum);

  uint64_t capacity() const { return capacity_; }
  const std::string& path() const { return path_; }
  // Whether the file is open with O_DIRECT, and "io_uring" or "pread" (see ssd_tier.h).
  bool direct_io() const { return tier_->direct_io(); }
  std::string_view engine_name() const { return tier_->engine_name(); }

 private:
  SsdFile(std::string path, std::unique_ptr<SsdTier> tier, uint64_t capacity)
      : path_(std::move(path)), tier_(std::move(tier)), capacity_(capacity) {}
  absl::Status CheckRange(uint64_t offset, uint64_t length) const;
  // Reads [offset, offset + out.size()) through the tier's aligned pages.
  absl::Status ReadUnaligned(uint64_t offset, std::span<std::byte> out);

  const std::string path_;
  const std::unique_ptr<SsdTier> tier_;
  const uint64_t capacity_;
  absl::Mutex write_mu_;  // Serializes read-modify-write of shared pages.
};

}  // namespace crescent::kvstore::server

#endif  // CRESCENT_KVSTORE_SERVER_SSD_FILE_H_
