#include "kvstore/tier/fault_tier.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::kvstore {

FaultTier::FaultTier(std::unique_ptr<StorageTier> inner, const FaultTierOptions& options)
    : inner_(std::move(inner)), options_(options), rng_(options.seed) {}

void FaultTier::SetOptions(const FaultTierOptions& options) {
  MutexLock lock(&mu_);
  options_ = options;
  rng_.seed(options.seed);
  operations_since_options_ = 0;
}

FaultTierCounters FaultTier::counters() const {
  MutexLock lock(&mu_);
  return counters_;
}

FaultTier::Decision FaultTier::Decide(bool write) {
  MutexLock lock(&mu_);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double fail_draw = uniform(rng_);
  const double corrupt_draw = uniform(rng_);
  const double delay_draw = uniform(rng_);
  const uint64_t corrupt_seed = rng_();
  ++counters_.operations;
  const uint64_t n = ++operations_since_options_;  // 1-based index of this operation.
  Decision d;
  const bool may_fail = write ? options_.fail_writes : options_.fail_reads;
  if (may_fail) {
    d.fail = (options_.fail_after >= 0 && n > static_cast<uint64_t>(options_.fail_after)) ||
             (options_.fail_every > 0 && n % static_cast<uint64_t>(options_.fail_every) == 0) ||
             fail_draw < options_.fail_probability;
  }
  if (d.fail) {
    ++counters_.failed;
    return d;
  }
  d.corrupt = corrupt_draw <
              (write ? options_.corrupt_write_probability : options_.corrupt_read_probability);
  d.corrupt_seed = corrupt_seed;
  if (d.corrupt) ++(write ? counters_.corrupted_writes : counters_.corrupted_reads);
  d.delay = delay_draw < options_.delay_probability;
  if (d.delay) ++counters_.delayed;
  return d;
}

void FaultTier::Corrupt(std::span<uint8_t> bytes, int n, uint64_t seed) {
  if (bytes.empty()) return;
  std::mt19937_64 rng(seed);
  for (int i = 0; i < n; ++i) bytes[rng() % bytes.size()] ^= 0xff;
}

absl::Status FaultTier::InjectedError(bool write, size_t index, uint64_t offset,
                                      uint64_t length) const {
  int err;
  {
    MutexLock lock(&mu_);
    err = options_.fail_errno;
  }
  return Annotate(ErrnoToStatus(err, absl::StrCat(std::string(name()),
                                                  ": injected fault: ", write ? "write" : "read",
                                                  " of ", length, " bytes at offset ", offset)),
                  absl::StrCat("request ", index));
}

absl::Status FaultTier::WriteBatch(std::span<const WriteRequest> requests) {
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::Status s = CheckRange(requests[i].offset, requests[i].data.size());
    if (!s.ok()) return Annotate(s, absl::StrCat("request ", i));
  }
  int corrupt_bytes;
  std::chrono::microseconds pause;
  {
    MutexLock lock(&mu_);
    corrupt_bytes = options_.corrupt_bytes;
    pause = options_.delay;
  }
  absl::Status first_error;
  bool delay = false;
  std::vector<WriteRequest> passed;
  std::vector<std::vector<uint8_t>> corrupted_copies;
  corrupted_copies.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const WriteRequest& r = requests[i];
    const Decision d = Decide(/*write=*/true);
    if (d.fail) {
      if (first_error.ok()) first_error = InjectedError(true, i, r.offset, r.data.size());
      continue;
    }
    delay |= d.delay;
    if (d.corrupt) {
      corrupted_copies.emplace_back(r.data.begin(), r.data.end());
      Corrupt(corrupted_copies.back(), corrupt_bytes, d.corrupt_seed);
      passed.push_back(WriteRequest{r.offset, corrupted_copies.back()});
    } else {
      passed.push_back(r);
    }
  }
  if (delay) std::this_thread::sleep_for(pause);
  absl::Status inner = passed.empty() ? absl::OkStatus() : inner_->WriteBatch(passed);
  return first_error.ok() ? inner : first_error;
}

absl::Status FaultTier::ReadBatch(std::span<const ReadRequest> requests) {
  for (size_t i = 0; i < requests.size(); ++i) {
    absl::Status s = CheckRange(requests[i].offset, requests[i].out.size());
    if (!s.ok()) return Annotate(s, absl::StrCat("request ", i));
  }
  absl::Status first_error;
  bool delay = false;
  std::vector<ReadRequest> passed;
  std::vector<std::pair<std::span<uint8_t>, uint64_t>> to_corrupt;
  for (size_t i = 0; i < requests.size(); ++i) {
    const ReadRequest& r = requests[i];
    const Decision d = Decide(/*write=*/false);
    if (d.fail) {
      if (first_error.ok()) first_error = InjectedError(false, i, r.offset, r.out.size());
      continue;
    }
    delay |= d.delay;
    if (d.corrupt) to_corrupt.emplace_back(r.out, d.corrupt_seed);
    passed.push_back(r);
  }
  int corrupt_bytes;
  std::chrono::microseconds pause;
  {
    MutexLock lock(&mu_);
    corrupt_bytes = options_.corrupt_bytes;
    pause = options_.delay;
  }
  if (delay) std::this_thread::sleep_for(pause);
  absl::Status inner = passed.empty() ? absl::OkStatus() : inner_->ReadBatch(passed);
  if (inner.ok()) {
    for (auto& [bytes, seed] : to_corrupt) Corrupt(bytes, corrupt_bytes, seed);
  }
  return first_error.ok() ? inner : first_error;
}

}  // namespace crescent::kvstore
