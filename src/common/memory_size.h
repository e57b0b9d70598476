// Memory sizes given in MiB on command lines (--kv-cache-mb, --pool-dram-mb), checked in one
// place so that every such flag has the same bound and the same message.
#ifndef CRESCENT_SRC_COMMON_MEMORY_SIZE_H_
#define CRESCENT_SRC_COMMON_MEMORY_SIZE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace crescent {

// The most a memory-size flag in MiB accepts (16 TiB): its value in bytes stays far inside
// int64_t.
inline constexpr int64_t kMaxMemoryMb = int64_t{1} << 24;

// OK when `value_mb` lies in [min_mb, kMaxMemoryMb]; else InvalidArgument "<flag> must be in
// [<min_mb>, 16777216] (MiB<note>), got <value_mb>". `note` says what a special value means,
// e.g. "; 0 = none". REQUIRES: 0 <= min_mb <= kMaxMemoryMb.
inline absl::Status CheckMemoryMb(absl::string_view flag, int64_t value_mb, int64_t min_mb,
                                  absl::string_view note = "") {
  if (value_mb >= min_mb && value_mb <= kMaxMemoryMb) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(flag, " must be in [", min_mb, ", ", kMaxMemoryMb,
                                                 "] (MiB", note, "), got ", value_mb));
}

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_MEMORY_SIZE_H_
