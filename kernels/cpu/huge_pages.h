// HugePageBuffer: anonymous memory the kernel is asked to back with transparent huge pages
// (2 MiB on x86-64), for weights that are streamed from memory on every decode step. With
// 4 KiB pages, a step over a 100 MB model takes ~25k TLB misses (each a two-dimensional page
// walk inside a VM), and the hardware prefetchers stop at every 4 KiB boundary.
#ifndef CRESCENT_KERNELS_CPU_HUGE_PAGES_H_
#define CRESCENT_KERNELS_CPU_HUGE_PAGES_H_

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"

namespace crescent::kernels {

class HugePageBuffer {
 public:
  // Maps `bytes` (> 0) of zeroed, writable memory aligned to 2 MiB and advises huge pages
  // (MADV_HUGEPAGE; the advice is best effort: a kernel without THP gives 4 KiB pages).
  // Errors: InvalidArgument for bytes == 0; ResourceExhausted when the mapping fails.
  static absl::StatusOr<std::unique_ptr<HugePageBuffer>> Create(size_t bytes);
  ~HugePageBuffer();

  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  HugePageBuffer(void* mapping, size_t mapping_bytes, void* data, size_t size)
      : mapping_(mapping), mapping_bytes_(mapping_bytes), data_(data), size_(size) {}

  void* mapping_;
  size_t mapping_bytes_;
  void* data_;
  size_t size_;
};

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_HUGE_PAGES_H_
