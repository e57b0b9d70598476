#include "kvstore/transfer/sys_check.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::kvstore {

absl::Status SysError(int err, const char* call, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  base = base != nullptr ? base + 1 : file;
  return ErrnoToStatus(err, absl::StrCat(call, " at ", base, ":", line));
}

absl::Status CheckVerbsResult(int rc, const char* call, const char* file, int line) {
  if (rc == 0) return absl::OkStatus();
  // Verbs calls return the errno value itself; a few older providers return -1 and set errno.
  const int err = rc > 0 ? rc : (errno != 0 ? errno : EIO);
  return SysError(err, call, file, line);
}

}  // namespace crescent::kvstore
