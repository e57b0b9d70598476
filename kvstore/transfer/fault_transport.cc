#include "kvstore/transfer/fault_transport.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

FaultTransport::FaultTransport(std::unique_ptr<Transport> inner, const FaultOptions& options)
    : inner_(std::move(inner)), options_(options), rng_(options.seed) {
  timer_thread_ = std::thread([this] { TimerLoop(); });
}

FaultTransport::~FaultTransport() { Shutdown(); }

void FaultTransport::SetOptions(const FaultOptions& options) {
  MutexLock lock(&mu_);
  options_ = options;
  rng_.seed(options.seed);
  operations_since_options_ = 0;
}

FaultCounters FaultTransport::counters() const {
  MutexLock lock(&mu_);
  return counters_;
}

absl::Status FaultTransport::RegisterLocalSegment(const LocalSegment& segment,
                                                  SegmentDescriptor* descriptor) {
  return inner_->RegisterLocalSegment(segment, descriptor);
}

absl::Status FaultTransport::UnregisterLocalSegment(std::string_view name) {
  return inner_->UnregisterLocalSegment(name);
}

absl::StatusOr<std::shared_ptr<RemoteSegment>> FaultTransport::OpenSegment(
    const SegmentDescriptor& descriptor) {
  return inner_->OpenSegment(descriptor);
}

void FaultTransport::Notify(RemoteSegment* target, std::string payload, TransferCallback done) {
  inner_->Notify(target, std::move(payload), std::move(done));
}

void FaultTransport::Schedule(std::chrono::milliseconds after, Timer timer) {
  {
    MutexLock lock(&mu_);
    if (!shut_down_) {
      timers_.emplace(std::chrono::steady_clock::now() + after, std::move(timer));
      cv_.SignalAll();
      return;
    }
  }
  std::move(timer)(/*cancelled=*/true);
}

void FaultTransport::TimerLoop() {
  for (;;) {
    Timer timer;
    {
      MutexLock lock(&mu_);
      for (;;) {
        if (shut_down_) return;
        if (timers_.empty()) {
          cv_.Wait(&mu_);
          continue;
        }
        const auto first = timers_.begin()->first;
        if (std::chrono::steady_clock::now() >= first) break;
        cv_.WaitUntil(&mu_, first);
      }
      timer = std::move(timers_.begin()->second);
      timers_.erase(timers_.begin());
    }
    std::move(timer)(/*cancelled=*/false);
  }
}

void FaultTransport::Shutdown() {
  std::multimap<std::chrono::steady_clock::time_point, Timer> pending;
  {
    MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    pending.swap(timers_);
  }
  cv_.SignalAll();
  if (timer_thread_.joinable()) timer_thread_.join();
  for (auto& [when, timer] : pending) std::move(timer)(/*cancelled=*/true);
  inner_->Shutdown();
}

void FaultTransport::Submit(const TransportOp& op, TransferCallback done) {
  bool fail = false, drop = false, corrupt = false, delay = false;
  std::vector<uint64_t> positions;
  FaultOptions options;
  {
    MutexLock lock(&mu_);
    options = options_;
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    const double r_fail = uniform(rng_), r_drop = uniform(rng_), r_corrupt = uniform(rng_),
                 r_delay = uniform(rng_);
    ++counters_.operations;
    const uint64_t index = operations_since_options_++;
    fail = (options.fail_after >= 0 && index >= static_cast<uint64_t>(options.fail_after)) ||
           r_fail < options.fail_probability;
    drop = !fail && r_drop < options.drop_probability;
    corrupt = !fail && !drop && op.length > 0 && r_corrupt < options.corrupt_probability;
    delay = !fail && !drop && r_delay < options.delay_probability;
    if (corrupt) {
      // Distinct positions: inverting one byte twice would undo the fault.
      std::uniform_int_distribution<uint64_t> pos(0, op.length - 1);
      const uint64_t want = std::min<uint64_t>(std::max(options.corrupt_bytes, 1), op.length);
      std::set<uint64_t> chosen;
      while (chosen.size() < want) chosen.insert(pos(rng_));
      positions.assign(chosen.begin(), chosen.end());
    }
    counters_.failed += fail;
    counters_.dropped += drop;
    counters_.corrupted += corrupt;
    counters_.delayed += delay;
  }
  if (fail) {
    std::move(done)(
        absl::UnavailableError(absl::StrCat("fault injection: ", std::string(TransferOpName(op.op)),
                                            " of ", op.length, " bytes failed")));
    return;
  }
  if (drop) {
    const uint64_t length = op.length;
    Schedule(options.drop_timeout, [done = std::move(done), length](bool) mutable {
      std::move(done)(absl::DeadlineExceededError(
          absl::StrCat("fault injection: transfer of ", length, " bytes dropped")));
    });
    return;
  }

  // The operation to run, with corruption wired in.
  TransportOp run = op;
  TransferCallback finish = std::move(done);
  if (corrupt && op.op == TransferOp::kWrite) {
    auto copy = std::make_shared<std::vector<uint8_t>>(
        static_cast<const uint8_t*>(op.local_addr),
        static_cast<const uint8_t*>(op.local_addr) + op.length);
    for (uint64_t p : positions) (*copy)[p] ^= 0xff;
    run.local_addr = copy->data();
    finish = [copy, inner = std::move(finish)](absl::Status s) mutable {
      std::move(inner)(std::move(s));
    };
  } else if (corrupt) {
    auto* local = static_cast<uint8_t*>(op.local_addr);
    finish = [local, positions, inner = std::move(finish)](absl::Status s) mutable {
      if (s.ok()) {
        for (uint64_t p : positions) local[p] ^= 0xff;
      }
      std::move(inner)(std::move(s));
    };
  }
  if (delay) {
    Schedule(options.delay, [this, run, finish = std::move(finish)](bool cancelled) mutable {
      if (cancelled) {
        std::move(finish)(absl::CancelledError("fault injection: transport shut down"));
        return;
      }
      inner_->Submit(run, std::move(finish));
    });
    return;
  }
  inner_->Submit(run, std::move(finish));
}

}  // namespace crescent::kvstore
