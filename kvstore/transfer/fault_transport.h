// FaultTransport: wraps a Transport and injects faults into its transfers, for tests.
//
// Per operation (each Submit), in this order, with a seeded RNG so that a run is reproducible
// for a given order of submissions:
//   fail_after  - the first `fail_after` operations (counted from construction or the last
//                 SetOptions) pass; every later one fails at once with Unavailable, without
//                 touching memory (a peer that died).
//   fail        - with fail_probability: fails at once with Unavailable, memory untouched.
//   drop        - with drop_probability: not performed; completes with DeadlineExceeded after
//                 drop_timeout (a lost message whose timeout fired).
//   corrupt     - with corrupt_probability: performed, then `corrupt_bytes` bytes at random
//                 positions of the destination are inverted (xor 0xff); completes OK (silent
//                 corruption, for checksum tests). A write is corrupted in flight: the wrapper
//                 sends a corrupted copy, the caller's buffer is never modified.
//   delay       - with delay_probability: performed only after `delay`.
// Four random draws are made per operation whatever the probabilities, so changing one
// probability does not shift the others' choices. Notify, registration and opening pass through
// unchanged.
#ifndef CRESCENT_KVSTORE_TRANSFER_FAULT_TRANSPORT_H_
#define CRESCENT_KVSTORE_TRANSFER_FAULT_TRANSPORT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "kvstore/transfer/transport.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

struct FaultOptions {
  uint64_t seed = 1;
  int64_t fail_after = -1;  // -1: never
  double fail_probability = 0;
  double drop_probability = 0;
  std::chrono::milliseconds drop_timeout{0};
  double corrupt_probability = 0;
  int corrupt_bytes = 1;
  double delay_probability = 0;
  std::chrono::milliseconds delay{0};
};

struct FaultCounters {
  uint64_t operations = 0;  // Submit calls seen
  uint64_t failed = 0;      // by fail_after or fail_probability
  uint64_t dropped = 0;
  uint64_t corrupted = 0;
  uint64_t delayed = 0;
};

class FaultTransport final : public Transport {
 public:
  FaultTransport(std::unique_ptr<Transport> inner, const FaultOptions& options);
  ~FaultTransport() override;

  FaultTransport(const FaultTransport&) = delete;
  FaultTransport& operator=(const FaultTransport&) = delete;

  // The inner transport's name: the engine and its callers see the transport being wrapped.
  std::string_view name() const override { return inner_->name(); }

  // Replaces the options for operations submitted from now on, reseeds the RNG and restarts the
  // fail_after count (the counters keep counting). Thread-safe.
  void SetOptions(const FaultOptions& options);
  FaultCounters counters() const;

  absl::Status RegisterLocalSegment(const LocalSegment& segment,
                                    SegmentDescriptor* descriptor) override;
  absl::Status UnregisterLocalSegment(std::string_view name) override;
  absl::StatusOr<std::shared_ptr<RemoteSegment>> OpenSegment(
      const SegmentDescriptor& descriptor) override;
  void Submit(const TransportOp& op, TransferCallback done) override;
  void Notify(RemoteSegment* target, std::string payload, TransferCallback done) override;
  // Runs the callbacks of dropped operations at once (DeadlineExceeded) and delayed ones with
  // Cancelled, then shuts the inner transport down.
  void Shutdown() override;

  Transport* inner() const { return inner_.get(); }

 private:
  using Timer = absl::AnyInvocable<void(bool cancelled) &&>;
  void Schedule(std::chrono::milliseconds after, Timer timer);
  void TimerLoop();

  const std::unique_ptr<Transport> inner_;

  mutable Mutex mu_;
  CondVar cv_;
  FaultOptions options_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  FaultCounters counters_ ABSL_GUARDED_BY(mu_);
  uint64_t operations_since_options_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::multimap<std::chrono::steady_clock::time_point, Timer> timers_ ABSL_GUARDED_BY(mu_);
  std::thread timer_thread_;
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_FAULT_TRANSPORT_H_
