// Clock: time as an interface, so that policy code takes time in instead of reading it.
// Production code uses RealClock; tests and the simulator use ManualClock.
#ifndef CRESCENT_SRC_COMMON_CLOCK_H_
#define CRESCENT_SRC_COMMON_CLOCK_H_

#include <atomic>
#include <cstdint>

namespace crescent {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time in nanoseconds since an arbitrary epoch. Thread-safe.
  virtual int64_t NowNanos() const = 0;
  double NowSeconds() const { return static_cast<double>(NowNanos()) * 1e-9; }
};

// Monotonic wall time (CLOCK_MONOTONIC). Thread-safe.
class RealClock final : public Clock {
 public:
  int64_t NowNanos() const override;
  // A shared instance; never destroyed.
  static const RealClock* Get();
};

// Time that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_nanos = 0) : now_(start_nanos) {}
  int64_t NowNanos() const override { return now_.load(std::memory_order_acquire); }
  void AdvanceNanos(int64_t delta) { now_.fetch_add(delta, std::memory_order_acq_rel); }
  void AdvanceSeconds(double seconds) { AdvanceNanos(static_cast<int64_t>(seconds * 1e9)); }
  void SetNanos(int64_t t) { now_.store(t, std::memory_order_release); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_CLOCK_H_
