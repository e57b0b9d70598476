#include "kvstore/transfer/shm_transport.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "kvstore/transfer/sys_check.h"
#include "kvstore/transfer/tcp_protocol.h"
#include "src/common/mutex.h"
#include "src/common/status.h"

namespace crescent::kvstore {
namespace {

// A peer's segment mapped into this process.
class ShmRemoteSegment final : public RemoteSegment {
 public:
  ShmRemoteSegment(SegmentDescriptor descriptor, uint8_t* base)
      : RemoteSegment(std::move(descriptor)), base_(base) {}
  ~ShmRemoteSegment() override { ::munmap(base_, descriptor().length); }
  uint8_t* base() const { return base_; }

 private:
  uint8_t* const base_;
};

}  // namespace

void StreamingCopy(void* dst, const void* src, size_t n) {
#if defined(__x86_64__)
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  // Head: up to the destination's next 64-byte boundary, so that every streaming store fills
  // whole cache lines.
  const size_t head =
      std::min(n, static_cast<size_t>((64 - (reinterpret_cast<uintptr_t>(d) & 63)) & 63));
  std::memcpy(d, s, head);
  d += head;
  s += head;
  n -= head;
  for (; n >= 64; n -= 64, d += 64, s += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
  }
  std::memcpy(d, s, n);
  _mm_sfence();  // streaming stores are weakly ordered: make them visible before returning
#else
  std::memcpy(dst, src, n);
#endif
}

// ------------------------------------------------------------------------------------------------
// SharedMemory.

absl::StatusOr<SharedMemory> SharedMemory::Create(std::string_view name, uint64_t length) {
  if (length == 0) return absl::InvalidArgumentError("shared memory of length 0");
  const std::string memfd_name = absl::StrCat("crescent:", std::string(name)).substr(0, 249);
  SharedMemory shm;
  CRESCENT_ASSIGN_OR_RETURN(int64_t fd,
                            CRESCENT_SYS(::memfd_create(memfd_name.c_str(), MFD_CLOEXEC)));
  shm.fd_ = static_cast<int>(fd);
  CRESCENT_RETURN_IF_ERROR(CRESCENT_SYS(::ftruncate(shm.fd_, static_cast<off_t>(length))).status());
  CRESCENT_ASSIGN_OR_RETURN(
      shm.data_,
      CRESCENT_SYS_PTR(::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, shm.fd_, 0),
                       MAP_FAILED));
  shm.length_ = length;
#if defined(MADV_HUGEPAGE)
  // Best effort: segments hold KV caches that decode reads scattered pages of on every step.
  // Shared memory gets huge pages only where /sys/kernel/mm/transparent_hugepage/shmem_enabled
  // is `advise` or `always` (docs/operations.md).
  (void)::madvise(shm.data_, length, MADV_HUGEPAGE);
#endif
  return shm;
}

SharedMemory::SharedMemory(SharedMemory&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      data_(std::exchange(other.data_, nullptr)),
      length_(std::exchange(other.length_, 0)) {}

SharedMemory& SharedMemory::operator=(SharedMemory&& other) noexcept {
  if (this != &other) {
    Reset();
    fd_ = std::exchange(other.fd_, -1);
    data_ = std::exchange(other.data_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

SharedMemory::~SharedMemory() { Reset(); }

void SharedMemory::Reset() {
  if (data_ != nullptr) ::munmap(data_, length_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  data_ = nullptr;
  length_ = 0;
}

// ------------------------------------------------------------------------------------------------
// ShmTransport.

struct ShmTransport::CopyJob {
  CopyJob(int chunks, TransferCallback callback) : remaining(chunks), done(std::move(callback)) {}
  std::atomic<int> remaining;
  TransferCallback done;
};

ShmTransport::ShmTransport(const ShmTransportOptions& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<ShmTransport>> ShmTransport::Create(
    const ShmTransportOptions& options) {
  if (options.copy_threads < 0 || options.copy_threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("shm copy_threads ", options.copy_threads, " is outside [0, 64]"));
  }
  if (options.chunk_bytes < 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("shm chunk_bytes ", options.chunk_bytes, " < 4096"));
  }
  auto transport = std::unique_ptr<ShmTransport>(new ShmTransport(options));
  for (int i = 0; i < options.copy_threads; ++i) {
    transport->workers_.emplace_back([t = transport.get()] { t->WorkerLoop(); });
  }
  return transport;
}

ShmTransport::~ShmTransport() { Shutdown(); }

void ShmTransport::Shutdown() {
  {
    MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  cv_.SignalAll();
  // Workers finish the chunks already queued (copies are bounded and cannot hang), then exit.
  for (std::thread& t : workers_) t.join();
}

absl::Status ShmTransport::RegisterLocalSegment(const LocalSegment& segment,
                                                SegmentDescriptor* descriptor) {
  MutexLock lock(&mu_);
  if (std::find(registered_.begin(), registered_.end(), segment.name) != registered_.end()) {
    return absl::AlreadyExistsError(
        absl::StrCat("segment '", segment.name, "' is already registered with shm"));
  }
  registered_.push_back(segment.name);
  if (segment.memfd < 0) return absl::OkStatus();  // plain memory: not shareable
  struct stat st {};
  CRESCENT_RETURN_IF_ERROR(CRESCENT_SYS(::fstat(segment.memfd, &st)).status());
  if (static_cast<uint64_t>(st.st_size) < segment.length) {
    return absl::InvalidArgumentError(absl::StrCat("segment '", segment.name, "': memfd holds ",
                                                   st.st_size, " bytes, the segment is ",
                                                   segment.length));
  }
  descriptor->shm_path = absl::StrCat("/proc/", ::getpid(), "/fd/", segment.memfd);
  descriptor->shm_inode = st.st_ino;
  return absl::OkStatus();
}

absl::Status ShmTransport::UnregisterLocalSegment(std::string_view name) {
  MutexLock lock(&mu_);
  auto it = std::find(registered_.begin(), registered_.end(), name);
  if (it == registered_.end()) {
    return absl::NotFoundError(
        absl::StrCat("segment '", std::string(name), "' is not registered with shm"));
  }
  registered_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<RemoteSegment>> ShmTransport::OpenSegment(
    const SegmentDescriptor& descriptor) {
  if (descriptor.shm_path.empty()) {
    return absl::UnavailableError(
        absl::StrCat("segment '", descriptor.name, "' is not in shared memory"));
  }
  if (descriptor.host_id != LocalHostId()) {
    return absl::UnavailableError(absl::StrCat("segment '", descriptor.name, "' lives on host ",
                                               descriptor.host_id, ", not this one"));
  }
  if (descriptor.length == 0) {
    return absl::InvalidArgumentError(absl::StrCat("segment '", descriptor.name, "' is empty"));
  }
  CRESCENT_ASSIGN_OR_RETURN(int64_t fd,
                            CRESCENT_SYS(::open(descriptor.shm_path.c_str(), O_RDWR | O_CLOEXEC)));
  struct stat st {};
  absl::Status status = CRESCENT_SYS(::fstat(static_cast<int>(fd), &st)).status();
  if (status.ok() && st.st_ino != descriptor.shm_inode) {
    status = absl::FailedPreconditionError(absl::StrCat(
        "segment '", descriptor.name, "': ", descriptor.shm_path, " is inode ", st.st_ino,
        ", the descriptor says ", descriptor.shm_inode, " (the owner is gone)"));
  } else if (status.ok() && static_cast<uint64_t>(st.st_size) < descriptor.length) {
    status = absl::FailedPreconditionError(
        absl::StrCat("segment '", descriptor.name, "': ", descriptor.shm_path, " holds ",
                     st.st_size, " bytes, the descriptor says ", descriptor.length));
  }
  void* base = nullptr;
  if (status.ok()) {
    absl::StatusOr<void*> mapped =
        CRESCENT_SYS_PTR(::mmap(nullptr, descriptor.length, PROT_READ | PROT_WRITE, MAP_SHARED,
                                static_cast<int>(fd), 0),
                         MAP_FAILED);
    if (mapped.ok()) {
      base = *mapped;
    } else {
      status = mapped.status();
    }
  }
  ::close(static_cast<int>(fd));  // the mapping keeps the memory alive
  CRESCENT_RETURN_IF_ERROR(
      Annotate(status, absl::StrCat("opening segment '", descriptor.name, "' over shm")));
  return std::make_shared<ShmRemoteSegment>(descriptor, static_cast<uint8_t*>(base));
}

void ShmTransport::Submit(const TransportOp& op, TransferCallback done) {
  auto* remote = static_cast<ShmRemoteSegment*>(op.target);
  if (absl::Status s = tcp::CheckBounds(op.target_offset, op.length, remote->descriptor().length);
      !s.ok()) {
    std::move(done)(s);
    return;
  }
  uint8_t* remote_ptr = remote->base() + op.target_offset;
  auto* local_ptr = static_cast<uint8_t*>(op.local_addr);
  uint8_t* dst = op.op == TransferOp::kWrite ? remote_ptr : local_ptr;
  const uint8_t* src = op.op == TransferOp::kWrite ? local_ptr : remote_ptr;
  if (op.length <= options_.inline_copy_bytes || workers_.empty()) {
    {
      MutexLock lock(&mu_);
      if (shut_down_) {
        std::move(done)(absl::CancelledError("shm transport is shut down"));
        return;
      }
    }
    // What the callback does next (a lock, an atomic, a notification's syscall) orders these
    // stores before anything that follows it.
    if (op.length > 0) std::memcpy(dst, src, op.length);
    std::move(done)(absl::OkStatus());
    return;
  }
  const uint64_t chunks = (op.length + options_.chunk_bytes - 1) / options_.chunk_bytes;
  auto job = std::make_shared<CopyJob>(static_cast<int>(chunks), std::move(done));
  {
    MutexLock lock(&mu_);
    if (shut_down_) {
      std::move(job->done)(absl::CancelledError("shm transport is shut down"));
      return;
    }
    for (uint64_t i = 0; i < chunks; ++i) {
      const uint64_t offset = i * options_.chunk_bytes;
      queue_.push_back(Chunk{dst + offset, src + offset,
                             std::min(options_.chunk_bytes, op.length - offset), job});
    }
  }
  cv_.SignalAll();
}

void ShmTransport::WorkerLoop() {
  for (;;) {
    Chunk chunk;
    {
      MutexLock lock(&mu_);
      while (!shut_down_ && queue_.empty()) cv_.Wait(&mu_);
      if (queue_.empty()) return;  // shut down and drained
      chunk = std::move(queue_.front());
      queue_.pop_front();
    }
    if (options_.streaming_copy_bytes > 0 && chunk.length >= options_.streaming_copy_bytes) {
      StreamingCopy(chunk.dst, chunk.src, chunk.length);
    } else {
      std::memcpy(chunk.dst, chunk.src, chunk.length);
    }
    // acq_rel: the worker that finishes the job sees every other worker's chunk as copied.
    if (chunk.job->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::move(chunk.job->done)(absl::OkStatus());
    }
  }
}

}  // namespace crescent::kvstore
