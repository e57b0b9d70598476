#include "kvstore/transfer/transport.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace crescent::kvstore {

std::string_view TransferOpName(TransferOp op) {
  switch (op) {
    case TransferOp::kRead:
      return "read";
    case TransferOp::kWrite:
      return "write";
  }
  return "unknown";
}

void Transport::Notify(RemoteSegment* target, std::string payload, TransferCallback done) {
  std::move(done)(absl::UnimplementedError(
      absl::StrCat("transport ", std::string(name()), " does not deliver notifications")));
}

}  // namespace crescent::kvstore
