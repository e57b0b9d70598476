// StorageTier: the boundary between the KV pool and the memory or device that holds its bytes.
//
// A tier is a flat, fixed-size byte space [0, capacity()). Implementations: DRAM (dram_tier.h),
// an SSD file (ssd_tier.h), and a fault-injecting wrapper for tests (fault_tier.h). A tier knows
// nothing about blocks or keys: block_codec.h frames a block with its checksum and tier_copy.h
// moves framed blocks between tiers.
//
// Every offset and every length passed to a tier must be a multiple of alignment() (4096 for an
// SSD tier, so that O_DIRECT works; 1 for plain DRAM). Buffers may live anywhere: a tier that
// needs aligned memory copies through aligned bounce buffers itself.
//
// Thread-safety: every method may be called from any number of threads at once. Concurrent
// requests on disjoint ranges are independent; the caller must not write a range while another
// request reads or writes it (the KV master never hands out such ranges), otherwise the bytes
// read are unspecified.
#ifndef CRESCENT_KVSTORE_TIER_STORAGE_TIER_H_
#define CRESCENT_KVSTORE_TIER_STORAGE_TIER_H_

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"

namespace crescent::kvstore {

// One write: `data` goes to [offset, offset + data.size()).
struct WriteRequest {
  uint64_t offset = 0;
  std::span<const uint8_t> data;
};

// One read: [offset, offset + out.size()) is copied into `out`.
struct ReadRequest {
  uint64_t offset = 0;
  std::span<uint8_t> out;
};

class StorageTier {
 public:
  virtual ~StorageTier() = default;

  // Short name of the implementation and its medium, e.g. "dram" or "ssd:/data/kv.seg".
  virtual std::string_view name() const = 0;
  // Size of the byte space in bytes; a multiple of alignment().
  virtual uint64_t capacity() const = 0;
  // Offsets and lengths must be multiples of this (a power of two, >= 1).
  virtual uint64_t alignment() const = 0;

  // Performs every request, keeping as many in flight as the implementation allows (an SSD tier
  // keeps up to its queue depth outstanding). All requests are validated before any I/O starts.
  // Returns OK when all succeeded; otherwise the first error by request index, annotated with
  // that index. After an error, other requests of the batch may or may not have been performed;
  // read buffers of failed requests hold unspecified bytes.
  // Errors: InvalidArgument naming the offset/length when a request is misaligned or ends past
  // capacity(); the errno's code (ErrnoToStatus) for an I/O error; whatever a wrapper injects.
  virtual absl::Status WriteBatch(std::span<const WriteRequest> requests) = 0;
  virtual absl::Status ReadBatch(std::span<const ReadRequest> requests) = 0;

  // Makes completed writes durable (fdatasync for a file); a no-op for memory. Errors: I/O.
  virtual absl::Status Sync() { return absl::OkStatus(); }

  // Single-request forms of WriteBatch / ReadBatch, with the same contract.
  absl::Status Write(uint64_t offset, std::span<const uint8_t> data);
  absl::Status Read(uint64_t offset, std::span<uint8_t> out);

 protected:
  // Returns InvalidArgument naming the tier, offset and length unless [offset, offset + length)
  // lies within capacity() and both are multiples of alignment(). Zero-length requests pass.
  absl::Status CheckRange(uint64_t offset, uint64_t length) const;
};

// Rounds `n` up to a multiple of `alignment` (a power of two).
constexpr uint64_t AlignUp(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) & ~(alignment - 1);
}

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TIER_STORAGE_TIER_H_
