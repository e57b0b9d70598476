#include "kvstore/tier/ssd_tier.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "src/common/logging.h"
#include "src/common/mutex.h"
#include "src/common/status.h"

namespace crescent::kvstore {
namespace {

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

absl::StatusOr<AlignedBuffer> AllocateAligned(uint64_t length, uint64_t alignment) {
  void* p = nullptr;
  const int rc = posix_memalign(&p, std::max<uint64_t>(alignment, sizeof(void*)),
                                std::max<uint64_t>(length, 1));
  if (rc != 0) return ErrnoToStatus(rc, absl::StrCat("allocating a ", length, "-byte buffer"));
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// One contiguous I/O of a batch: a request or a max_io_bytes slice of one.
struct Piece {
  size_t request = 0;   // Index of the request it belongs to.
  uint64_t offset = 0;  // File offset.
  uint8_t* buffer = nullptr;
  uint64_t length = 0;
  uint64_t done = 0;  // Bytes transferred so far.
};

class SsdTierImpl final : public SsdTier {
 public:
  SsdTierImpl(const SsdTierOptions& options, int fd, bool direct_io)
      : options_(options),
        name_(absl::StrCat("ssd:", options.path)),
        fd_(fd),
        direct_io_(direct_io) {}

  ~SsdTierImpl() override {
    for (io_uring& ring : rings_) io_uring_queue_exit(&ring);
    close(fd_);
  }

  // Sets up the io_uring pool; on failure the tier serves I/O with pread/pwrite.
  absl::Status InitEngine() {
    if (options_.engine == SsdTierOptions::IoEngine::kPread) return absl::OkStatus();
    rings_.resize(options_.rings);
    for (int i = 0; i < options_.rings; ++i) {
      // COOP_TASKRUN: completions are processed when we enter the kernel to wait anyway,
      // without an interrupt per completion (Linux 5.19+; older kernels say EINVAL).
      int rc = io_uring_queue_init(options_.queue_depth, &rings_[i], IORING_SETUP_COOP_TASKRUN);
      if (rc == -EINVAL) rc = io_uring_queue_init(options_.queue_depth, &rings_[i], 0);
      if (rc < 0) {
        rings_.resize(i);
        for (io_uring& ring : rings_) io_uring_queue_exit(&ring);
        rings_.clear();
        return ErrnoToStatus(-rc, "io_uring_queue_init");
      }
    }
    {
      MutexLock lock(&mu_);
      for (int i = 0; i < options_.rings; ++i) free_rings_.push_back(i);
      live_rings_ = options_.rings;
    }
    // Some sandboxes allow the setup but fail every operation: probe one read.
    auto probe = AllocateAligned(options_.alignment, options_.alignment);
    if (!probe.ok()) return probe.status();
    std::vector<Piece> pieces = {Piece{0, 0, probe->get(), options_.alignment, 0}};
    bool broken = false;
    absl::Status status = RunRing(&rings_[0], /*write=*/false, pieces, &broken);
    if (!status.ok()) {
      for (io_uring& ring : rings_) io_uring_queue_exit(&ring);
      rings_.clear();
      MutexLock lock(&mu_);
      free_rings_.clear();
      live_rings_ = 0;
      return Annotate(status, "probe read through io_uring");
    }
    return absl::OkStatus();
  }

  std::string_view name() const override { return name_; }
  uint64_t capacity() const override { return options_.capacity; }
  uint64_t alignment() const override { return options_.alignment; }
  bool direct_io() const override { return direct_io_; }
  std::string_view engine_name() const override { return rings_.empty() ? "pread" : "io_uring"; }
  int queue_depth() const override { return rings_.empty() ? 1 : options_.queue_depth; }
  const std::string& path() const override { return options_.path; }

  absl::Status WriteBatch(std::span<const WriteRequest> requests) override {
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::Status s = CheckRange(requests[i].offset, requests[i].data.size());
      if (!s.ok()) return Annotate(s, absl::StrCat("request ", i));
    }
    std::vector<Piece> pieces;
    std::vector<AlignedBuffer> bounces;
    for (size_t i = 0; i < requests.size(); ++i) {
      const WriteRequest& r = requests[i];
      if (r.data.empty()) continue;
      // The kernel only reads from the buffer; the const_cast never leads to a write.
      auto* buffer = const_cast<uint8_t*>(r.data.data());
      if (NeedsBounce(buffer)) {
        CRESCENT_ASSIGN_OR_RETURN(AlignedBuffer bounce,
                                  AllocateAligned(r.data.size(), options_.alignment));
        std::memcpy(bounce.get(), r.data.data(), r.data.size());
        buffer = bounce.get();
        bounces.push_back(std::move(bounce));
      }
      AddPieces(i, r.offset, buffer, r.data.size(), &pieces);
    }
    return Run(/*write=*/true, pieces);
  }

  absl::Status ReadBatch(std::span<const ReadRequest> requests) override {
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::Status s = CheckRange(requests[i].offset, requests[i].out.size());
      if (!s.ok()) return Annotate(s, absl::StrCat("request ", i));
    }
    std::vector<Piece> pieces;
    struct CopyOut {
      size_t request;
      AlignedBuffer bounce;
    };
    std::vector<CopyOut> copies;
    for (size_t i = 0; i < requests.size(); ++i) {
      const ReadRequest& r = requests[i];
      if (r.out.empty()) continue;
      uint8_t* buffer = r.out.data();
      if (NeedsBounce(buffer)) {
        CRESCENT_ASSIGN_OR_RETURN(AlignedBuffer bounce,
                                  AllocateAligned(r.out.size(), options_.alignment));
        buffer = bounce.get();
        copies.push_back(CopyOut{i, std::move(bounce)});
      }
      AddPieces(i, r.offset, buffer, r.out.size(), &pieces);
    }
    absl::Status status = Run(/*write=*/false, pieces);
    for (CopyOut& c : copies) {
      std::memcpy(requests[c.request].out.data(), c.bounce.get(), requests[c.request].out.size());
    }
    return status;
  }

  absl::Status Sync() override {
    if (fdatasync(fd_) != 0) return ErrnoToStatus(errno, absl::StrCat("fdatasync ", name_));
    return absl::OkStatus();
  }

 private:
  bool NeedsBounce(const uint8_t* buffer) const {
    return direct_io_ && reinterpret_cast<uintptr_t>(buffer) % options_.alignment != 0;
  }

  void AddPieces(size_t request, uint64_t offset, uint8_t* buffer, uint64_t length,
                 std::vector<Piece>* pieces) const {
    const uint64_t step = options_.max_io_bytes & ~(options_.alignment - 1);
    for (uint64_t at = 0; at < length; at += step) {
      pieces->push_back(Piece{request, offset + at, buffer + at, std::min(step, length - at), 0});
    }
  }

  absl::Status IoError(bool write, const Piece& p, int err) const {
    return Annotate(ErrnoToStatus(err, absl::StrCat(name_, ": ", write ? "write" : "read", " of ",
                                                    p.length, " bytes at offset ", p.offset)),
                    absl::StrCat("request ", p.request));
  }

  absl::Status Run(bool write, std::vector<Piece>& pieces) {
    if (pieces.empty()) return absl::OkStatus();
    // Nothing to overlap with one I/O (or a queue depth of 1), and the synchronous call is
    // cheaper: an async O_DIRECT write completes through a kernel workqueue hop, which halves
    // queue-depth-1 write throughput on ext4 when CPUs are busy (see tier_bench).
    if (rings_.empty() || pieces.size() == 1 || options_.queue_depth == 1) {
      return RunPread(write, pieces);
    }
    const int index = AcquireRing();
    if (index < 0) return RunPread(write, pieces);  // Every ring failed; see RunRing.
    bool broken = false;
    absl::Status status = RunRing(&rings_[index], write, pieces, &broken);
    ReleaseRing(index, broken);
    return status;
  }

  absl::Status RunPread(bool write, std::vector<Piece>& pieces) {
    absl::Status first_error;
    size_t first_error_request = SIZE_MAX;
    for (Piece& p : pieces) {
      while (p.done < p.length) {
        const ssize_t n = write ? pwrite(fd_, p.buffer + p.done, p.length - p.done,
                                         static_cast<off_t>(p.offset + p.done))
                                : pread(fd_, p.buffer + p.done, p.length - p.done,
                                        static_cast<off_t>(p.offset + p.done));
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        const int err = n < 0 ? errno : (n == 0 ? EIO : 0);  // 0 bytes: the file shrank.
        if (err != 0) {
          if (p.request < first_error_request) {
            first_error = IoError(write, p, err);
            first_error_request = p.request;
          }
          break;
        }
        p.done += static_cast<uint64_t>(n);
      }
    }
    return first_error;
  }

  // Runs the pieces on `ring`. Sets *broken when the ring itself failed (submit error): it may
  // still hold prepared entries, so it must not be used again.
  absl::Status RunRing(io_uring* ring, bool write, std::vector<Piece>& pieces, bool* broken) {
    std::deque<size_t> pending;
    for (size_t i = 0; i < pieces.size(); ++i) pending.push_back(i);
    absl::Status first_error;
    size_t first_error_request = SIZE_MAX;
    size_t in_flight = 0;
    while (!pending.empty() || in_flight > 0) {
      while (!pending.empty() && in_flight < static_cast<size_t>(options_.queue_depth)) {
        io_uring_sqe* sqe = io_uring_get_sqe(ring);
        if (sqe == nullptr) break;
        const size_t i = pending.front();
        pending.pop_front();
        Piece& p = pieces[i];
        if (write) {
          io_uring_prep_write(sqe, fd_, p.buffer + p.done, static_cast<unsigned>(p.length - p.done),
                              p.offset + p.done);
        } else {
          io_uring_prep_read(sqe, fd_, p.buffer + p.done, static_cast<unsigned>(p.length - p.done),
                             p.offset + p.done);
        }
        io_uring_sqe_set_data64(sqe, i);
        ++in_flight;
      }
      int rc = io_uring_submit_and_wait(ring, 1);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        // The ring itself failed; requests already submitted may still complete, so wait for
        // them before the caller's buffers can go away.
        first_error = ErrnoToStatus(-rc, absl::StrCat(name_, ": io_uring_submit"));
        DrainAfterFailure(ring);
        *broken = true;
        return first_error;
      }
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(ring, &cqe) == 0 && cqe != nullptr) {
        const size_t i = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(ring, cqe);
        --in_flight;
        Piece& p = pieces[i];
        if (res == -EINTR || res == -EAGAIN) {
          pending.push_back(i);
          continue;
        }
        const int err = res < 0 ? -res : (res == 0 ? EIO : 0);
        if (err != 0) {
          if (p.request < first_error_request) {
            first_error = IoError(write, p, err);
            first_error_request = p.request;
          }
          continue;
        }
        p.done += static_cast<uint64_t>(res);
        if (p.done < p.length) pending.push_back(i);
      }
    }
    return first_error;
  }

  // After a failed submit: reaps completions until none arrive for a second, so that the
  // kernel is done with the caller's buffers. Rare: the ring was probed at open.
  void DrainAfterFailure(io_uring* ring) {
    __kernel_timespec ts{};
    ts.tv_sec = 1;
    io_uring_cqe* cqe = nullptr;
    while (io_uring_wait_cqe_timeout(ring, &cqe, &ts) == 0) io_uring_cqe_seen(ring, cqe);
  }

  // Returns a ring index owned by the caller until ReleaseRing, waiting while all are busy;
  // -1 when every ring has been retired as broken.
  int AcquireRing() {
    MutexLock lock(&mu_);
    while (!RingAvailable()) ring_freed_.Wait(&mu_);
    if (free_rings_.empty()) return -1;
    const int index = free_rings_.back();
    free_rings_.pop_back();
    return index;
  }

  void ReleaseRing(int index, bool broken) {
    MutexLock lock(&mu_);
    if (broken) {
      --live_rings_;
      CRESCENT_LOG(error, "{}: io_uring ring {} failed and is retired ({} left{})", name_, index,
                   live_rings_, live_rings_ == 0 ? "; using pread/pwrite" : "");
    } else {
      free_rings_.push_back(index);
    }
    // Waiters re-check RingAvailable: a ring back, or none left (they fall back to pread).
    ring_freed_.SignalAll();
  }

  bool RingAvailable() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !free_rings_.empty() || live_rings_ == 0;
  }

  const SsdTierOptions options_;
  const std::string name_;
  const int fd_;
  const bool direct_io_;
  std::vector<io_uring> rings_;  // Fixed after InitEngine; each used by one batch at a time.
  Mutex mu_;                     // TSan-visible (src/common/mutex.h), unlike absl::Mutex here.
  CondVar ring_freed_;           // Signalled by ReleaseRing.
  std::vector<int> free_rings_ ABSL_GUARDED_BY(mu_);
  int live_rings_ ABSL_GUARDED_BY(mu_) = 0;  // Rings not retired.
};

absl::Status CheckOptions(const SsdTierOptions& o) {
  if (o.path.empty()) return absl::InvalidArgumentError("ssd tier: empty path");
  if (!IsPowerOfTwo(o.alignment)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ssd tier ", o.path, ": alignment ", o.alignment, " is not a power of two"));
  }
  if (o.capacity == 0 || o.capacity % o.alignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ssd tier ", o.path, ": capacity ", o.capacity,
                                                   " is zero or not a multiple of the alignment ",
                                                   o.alignment));
  }
  if (o.queue_depth < 1 || o.queue_depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("ssd tier ", o.path, ": queue_depth ", o.queue_depth, " not in [1, 4096]"));
  }
  if (o.rings < 1 || o.rings > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("ssd tier ", o.path, ": rings ", o.rings, " not in [1, 64]"));
  }
  if (o.max_io_bytes < o.alignment || o.max_io_bytes > (1ull << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("ssd tier ", o.path, ": max_io_bytes ",
                                                   o.max_io_bytes,
                                                   " is below the alignment or above 1 GiB"));
  }
  return absl::OkStatus();
}

// Opens the file; returns the fd. `direct` is tried first when set and updated to what was used.
absl::StatusOr<int> OpenFile(const SsdTierOptions& o, bool* direct) {
  int flags = O_RDWR | O_CREAT | O_CLOEXEC;
  if (o.truncate) flags |= O_TRUNC;
  if (*direct) {
    const int fd = open(o.path.c_str(), flags | O_DIRECT, 0644);
    if (fd >= 0) return fd;
    if (errno != EINVAL || o.direct_io == SsdTierOptions::DirectIo::kRequire) {
      return ErrnoToStatus(errno, absl::StrCat("open ", o.path, " with O_DIRECT"));
    }
    CRESCENT_LOG(warn, "ssd tier {}: O_DIRECT refused by the file system; using buffered I/O",
                 o.path);
    *direct = false;
  }
  const int fd = open(o.path.c_str(), flags, 0644);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("open ", o.path));
  return fd;
}

absl::Status SizeFile(int fd, const SsdTierOptions& o) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return ErrnoToStatus(errno, absl::StrCat("fstat ", o.path));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > o.capacity) {
    if (ftruncate(fd, static_cast<off_t>(o.capacity)) != 0) {
      return ErrnoToStatus(errno, absl::StrCat("ftruncate ", o.path));
    }
    return absl::OkStatus();
  }
  int rc;
  do {
    rc = posix_fallocate(fd, 0, static_cast<off_t>(o.capacity));
  } while (rc == EINTR);
  if (rc == EOPNOTSUPP || rc == EINVAL) {
    if (ftruncate(fd, static_cast<off_t>(o.capacity)) != 0) {
      return ErrnoToStatus(errno, absl::StrCat("ftruncate ", o.path));
    }
    return absl::OkStatus();
  }
  if (rc != 0) {
    return ErrnoToStatus(rc, absl::StrCat("fallocate ", o.capacity, " bytes for ", o.path));
  }
  return absl::OkStatus();
}

// One aligned O_DIRECT read at offset 0; EINVAL means the file system or device rejects our
// alignment or direct I/O altogether.
absl::StatusOr<bool> ProbeDirect(int fd, const SsdTierOptions& o) {
  CRESCENT_ASSIGN_OR_RETURN(AlignedBuffer buffer, AllocateAligned(o.alignment, o.alignment));
  ssize_t n;
  do {
    n = pread(fd, buffer.get(), o.alignment, 0);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) return true;
  if (errno == EINVAL) return false;
  return ErrnoToStatus(errno, absl::StrCat("probe read of ", o.path));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SsdTier>> OpenSsdTier(const SsdTierOptions& options) {
  CRESCENT_RETURN_IF_ERROR(CheckOptions(options));
  using DirectIo = SsdTierOptions::DirectIo;
  bool direct = options.direct_io != DirectIo::kOff;
  if (direct && options.alignment < 512) {
    if (options.direct_io == DirectIo::kRequire) {
      return absl::FailedPreconditionError(
          absl::StrCat("ssd tier ", options.path,
                       ": O_DIRECT needs an alignment of at least 512, not ", options.alignment));
    }
    direct = false;
  }
  CRESCENT_ASSIGN_OR_RETURN(int fd, OpenFile(options, &direct));
  absl::Status sized = SizeFile(fd, options);
  if (!sized.ok()) {
    close(fd);
    return sized;
  }
  if (direct) {
    absl::StatusOr<bool> works = ProbeDirect(fd, options);
    if (!works.ok() || !*works) {
      close(fd);
      if (!works.ok()) return works.status();
      if (options.direct_io == DirectIo::kRequire) {
        return absl::FailedPreconditionError(
            absl::StrCat("ssd tier ", options.path,
                         ": O_DIRECT reads fail with EINVAL at alignment ", options.alignment));
      }
      CRESCENT_LOG(warn, "ssd tier {}: O_DIRECT reads fail; using buffered I/O", options.path);
      direct = false;
      SsdTierOptions reopen = options;
      reopen.truncate = false;  // Already truncated and sized above.
      CRESCENT_ASSIGN_OR_RETURN(fd, OpenFile(reopen, &direct));
    }
  }
  auto tier = std::make_unique<SsdTierImpl>(options, fd, direct);
  absl::Status engine = tier->InitEngine();
  if (!engine.ok()) {
    if (options.engine == SsdTierOptions::IoEngine::kIoUring) {
      return absl::FailedPreconditionError(
          absl::StrCat("ssd tier ", options.path, ": io_uring unavailable: ", engine.message()));
    }
    CRESCENT_LOG(warn, "ssd tier {}: io_uring unavailable ({}); using pread/pwrite", options.path,
                 std::string(engine.message()));
  }
  CRESCENT_LOG(info, "ssd tier {}: {} bytes, {} I/O, engine {}, queue depth {}", options.path,
               options.capacity, tier->direct_io() ? "O_DIRECT" : "buffered", tier->engine_name(),
               tier->queue_depth());
  return std::unique_ptr<SsdTier>(std::move(tier));
}

}  // namespace crescent::kvstore
