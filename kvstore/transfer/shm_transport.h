// ShmTransport: transfers between processes on one host through shared memory.
//
// A segment that should be reachable this way lives in a memfd (SharedMemory::Create); its
// descriptor carries /proc/<pid>/fd/<fd> and the memfd's inode. A same-host peer opens that path,
// checks the inode and size, and maps the segment; from then on a transfer is a memcpy between
// the peer's own buffer and the mapping. The owner's CPU never takes part, and a crashed owner
// leaves its pages mapped (and valid) in the peer until the peer closes the segment.
//
// Copies up to `inline_copy_bytes` run on the submitting thread; larger ones are cut into
// `chunk_bytes` pieces that `copy_threads` workers copy in parallel.
#ifndef CRESCENT_KVSTORE_TRANSFER_SHM_TRANSPORT_H_
#define CRESCENT_KVSTORE_TRANSFER_SHM_TRANSPORT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/transfer/transport.h"
#include "src/common/mutex.h"

namespace crescent::kvstore {

// A memfd-backed, MAP_SHARED mapping of `length` bytes, zero-filled. Move-only; unmaps and closes
// on destruction.
class SharedMemory {
 public:
  // Creates the memfd (named `name` for /proc/<pid>/maps readers) and maps it. Errors: the failed
  // call's status (memfd_create, ftruncate, mmap); InvalidArgument for length 0.
  static absl::StatusOr<SharedMemory> Create(std::string_view name, uint64_t length);

  SharedMemory() = default;
  SharedMemory(SharedMemory&& other) noexcept;
  SharedMemory& operator=(SharedMemory&& other) noexcept;
  ~SharedMemory();

  void* data() const { return data_; }
  uint64_t length() const { return length_; }
  int fd() const { return fd_; }

 private:
  void Reset();

  int fd_ = -1;
  void* data_ = nullptr;
  uint64_t length_ = 0;
};

struct ShmTransportOptions {
  int copy_threads = 2;  // 0: every copy on the submitting thread
  uint64_t inline_copy_bytes = 256ull << 10;
  uint64_t chunk_bytes = 4ull << 20;
  // Chunks at least this large are copied with non-temporal (streaming) stores: the destination
  // is not read back by this CPU soon, and skipping the read-for-ownership of every destination
  // line saves a third of the memory traffic. 0: always memcpy.
  uint64_t streaming_copy_bytes = 1ull << 20;
};

// Copies n bytes with non-temporal stores where the CPU has them (x86-64: SSE2, always present),
// ending with a store fence so the data is globally visible when it returns; memcpy elsewhere.
// Exposed for tests and benchmarks. REQUIRES: the ranges do not overlap.
void StreamingCopy(void* dst, const void* src, size_t n);

class ShmTransport final : public Transport {
 public:
  static absl::StatusOr<std::unique_ptr<ShmTransport>> Create(const ShmTransportOptions& options);
  ~ShmTransport() override;

  ShmTransport(const ShmTransport&) = delete;
  ShmTransport& operator=(const ShmTransport&) = delete;

  std::string_view name() const override { return "shm"; }

  // Fills shm_path / shm_inode when segment.memfd >= 0; leaves them empty otherwise.
  absl::Status RegisterLocalSegment(const LocalSegment& segment,
                                    SegmentDescriptor* descriptor) override;
  absl::Status UnregisterLocalSegment(std::string_view name) override;
  // Unavailable unless the descriptor names this host and a shm path. Errors from open / fstat /
  // mmap; FailedPrecondition when the inode or size does not match the descriptor.
  absl::StatusOr<std::shared_ptr<RemoteSegment>> OpenSegment(
      const SegmentDescriptor& descriptor) override;
  void Submit(const TransportOp& op, TransferCallback done) override;
  void Shutdown() override;

 private:
  struct CopyJob;  // one Submit's remaining chunks and callback
  struct Chunk {
    uint8_t* dst;
    const uint8_t* src;
    uint64_t length;
    std::shared_ptr<CopyJob> job;
  };

  explicit ShmTransport(const ShmTransportOptions& options);
  void WorkerLoop();

  const ShmTransportOptions options_;
  std::vector<std::thread> workers_;

  Mutex mu_;
  CondVar cv_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Chunk> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> registered_ ABSL_GUARDED_BY(mu_);
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_SHM_TRANSPORT_H_
