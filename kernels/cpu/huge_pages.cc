#include "kernels/cpu/huge_pages.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace crescent::kernels {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

absl::StatusOr<std::unique_ptr<HugePageBuffer>> HugePageBuffer::Create(size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("HugePageBuffer of 0 bytes");
  const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  // One huge page more than needed, so that an aligned start exists inside the mapping.
  const size_t mapping_bytes = size + kHugePage;
  void* mapping =
      ::mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) {
    const int err = errno;
    return absl::ResourceExhaustedError(
        absl::StrCat("mmap of ", mapping_bytes, " bytes: ", std::strerror(err)));
  }
  const auto start = reinterpret_cast<uintptr_t>(mapping);
  void* data = reinterpret_cast<void*>((start + kHugePage - 1) / kHugePage * kHugePage);
#if defined(MADV_HUGEPAGE)
  (void)::madvise(data, size, MADV_HUGEPAGE);  // advice only: 4 KiB pages still work
#endif
  return std::unique_ptr<HugePageBuffer>(new HugePageBuffer(mapping, mapping_bytes, data, bytes));
}

HugePageBuffer::~HugePageBuffer() { ::munmap(mapping_, mapping_bytes_); }

}  // namespace crescent::kernels
