// FaultTier: wraps a StorageTier and injects faults into its requests, for tests (the tier
// counterpart of kvstore/transfer/fault_transport.h).
//
// Every request of a batch (and every Read/Write) is one operation, counted in submission
// order. Per operation, in this order:
//   fail_after  - the first `fail_after` operations (since construction or the last SetOptions)
//                 pass; every later one fails with the errno `fail_errno` (EIO: Internal), its
//                 range untouched (a dead disk).
//   fail_every  - every k-th operation (k = fail_every > 0) fails the same way (flaky media).
//   fail        - with fail_probability, fails the same way.
//   corrupt     - reads: with corrupt_read_probability, performed, then `corrupt_bytes` bytes at
//                 random positions of the output are inverted (xor 0xff); succeeds. Writes:
//                 with corrupt_write_probability, a corrupted copy is written (the caller's
//                 buffer is not modified), so later reads see the damage; succeeds.
//   delay       - with delay_probability, the batch sleeps `delay` before running.
// fail_reads / fail_writes choose which operations the three failure rules apply to. Three
// random draws are made per operation whatever the probabilities, so runs are reproducible for
// a given seed and order of operations. Validation errors (misaligned, out of range) are
// reported as the inner tier would, before any fault is drawn.
//
// Thread-safety: thread-safe; faults are decided under a mutex, I/O runs outside it.
#ifndef CRESCENT_KVSTORE_TIER_FAULT_TIER_H_
#define CRESCENT_KVSTORE_TIER_FAULT_TIER_H_

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>

#include "absl/base/thread_annotations.h"
#include "kvstore/tier/storage_tier.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

struct FaultTierOptions {
  uint64_t seed = 1;
  int64_t fail_after = -1;  // -1: never.
  int64_t fail_every = 0;   // 0: never.
  double fail_probability = 0;
  bool fail_reads = true;
  bool fail_writes = true;
  int fail_errno = EIO;
  double corrupt_read_probability = 0;
  double corrupt_write_probability = 0;
  int corrupt_bytes = 1;
  double delay_probability = 0;
  std::chrono::microseconds delay{0};
};

struct FaultTierCounters {
  uint64_t operations = 0;
  uint64_t failed = 0;
  uint64_t corrupted_reads = 0;
  uint64_t corrupted_writes = 0;
  uint64_t delayed = 0;  // Operations whose batch was delayed.
};

class FaultTier final : public StorageTier {
 public:
  FaultTier(std::unique_ptr<StorageTier> inner, const FaultTierOptions& options);

  FaultTier(const FaultTier&) = delete;
  FaultTier& operator=(const FaultTier&) = delete;

  // The inner tier's shape: callers see the tier being wrapped.
  std::string_view name() const override { return inner_->name(); }
  uint64_t capacity() const override { return inner_->capacity(); }
  uint64_t alignment() const override { return inner_->alignment(); }

  // Replaces the options for operations from now on, reseeds the RNG and restarts the
  // fail_after / fail_every counts (the counters keep counting).
  void SetOptions(const FaultTierOptions& options);
  FaultTierCounters counters() const;

  absl::Status WriteBatch(std::span<const WriteRequest> requests) override;
  absl::Status ReadBatch(std::span<const ReadRequest> requests) override;
  absl::Status Sync() override { return inner_->Sync(); }

  StorageTier* inner() const { return inner_.get(); }

 private:
  struct Decision {
    bool fail = false;
    bool corrupt = false;
    bool delay = false;
    uint64_t corrupt_seed = 0;
  };
  Decision Decide(bool write);
  // Inverts `n` bytes at positions drawn from `seed`.
  static void Corrupt(std::span<uint8_t> bytes, int n, uint64_t seed);
  absl::Status InjectedError(bool write, size_t index, uint64_t offset, uint64_t length) const;

  const std::unique_ptr<StorageTier> inner_;
  mutable Mutex mu_;
  FaultTierOptions options_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  FaultTierCounters counters_ ABSL_GUARDED_BY(mu_);
  uint64_t operations_since_options_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TIER_FAULT_TIER_H_
