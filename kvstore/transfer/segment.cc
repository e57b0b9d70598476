#include "kvstore/transfer/segment.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"

namespace crescent::kvstore {
namespace {

constexpr size_t kMaxSegmentNameLength = 255;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '/' || c == ':' || c == '-';
}

std::string ComputeHostId() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  std::string boot_id;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::getline(in, boot_id);
  return absl::StrCat(host, "/", boot_id);
}

}  // namespace

absl::Status ValidateSegmentName(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("segment name is empty");
  if (name.size() > kMaxSegmentNameLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment name is ", name.size(), " bytes long; the limit is ", kMaxSegmentNameLength));
  }
  if (name.front() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("segment name '", std::string(name), "' starts with '/'"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i])) {
      return absl::InvalidArgumentError(absl::StrCat("segment name '",
                                                     absl::CEscape(std::string(name)),
                                                     "' has a disallowed character at byte ", i));
    }
  }
  return absl::OkStatus();
}

std::string SerializeSegmentDescriptor(const SegmentDescriptor& d) {
  nlohmann::json j = {
      {"name", d.name},
      {"length", d.length},
      {"host_id", d.host_id},
      {"tcp_endpoint", d.tcp_endpoint},
      {"tcp_segment_id", d.tcp_segment_id},
      {"shm_path", d.shm_path},
      {"shm_inode", d.shm_inode},
      {"rdma_info", absl::Base64Escape(d.rdma_info)},
  };
  return j.dump();
}

absl::StatusOr<SegmentDescriptor> ParseSegmentDescriptor(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("segment descriptor is not a JSON object");
  }
  SegmentDescriptor d;
  auto get_string = [&](const char* key, std::string* out, bool required) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end()) {
      return required ? absl::InvalidArgumentError(
                            absl::StrCat("segment descriptor lacks field '", key, "'"))
                      : absl::OkStatus();
    }
    if (!it->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment descriptor field '", key, "' is not a string"));
    }
    *out = it->get<std::string>();
    return absl::OkStatus();
  };
  auto get_u64 = [&](const char* key, uint64_t* out, bool required) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end()) {
      return required ? absl::InvalidArgumentError(
                            absl::StrCat("segment descriptor lacks field '", key, "'"))
                      : absl::OkStatus();
    }
    if (!it->is_number_unsigned()) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment descriptor field '", key, "' is not an unsigned integer"));
    }
    *out = it->get<uint64_t>();
    return absl::OkStatus();
  };
  CRESCENT_RETURN_IF_ERROR(get_string("name", &d.name, true));
  CRESCENT_RETURN_IF_ERROR(get_u64("length", &d.length, true));
  CRESCENT_RETURN_IF_ERROR(get_string("host_id", &d.host_id, false));
  CRESCENT_RETURN_IF_ERROR(get_string("tcp_endpoint", &d.tcp_endpoint, false));
  CRESCENT_RETURN_IF_ERROR(get_u64("tcp_segment_id", &d.tcp_segment_id, false));
  CRESCENT_RETURN_IF_ERROR(get_string("shm_path", &d.shm_path, false));
  CRESCENT_RETURN_IF_ERROR(get_u64("shm_inode", &d.shm_inode, false));
  std::string rdma_b64;
  CRESCENT_RETURN_IF_ERROR(get_string("rdma_info", &rdma_b64, false));
  if (!absl::Base64Unescape(rdma_b64, &d.rdma_info)) {
    return absl::InvalidArgumentError("segment descriptor field 'rdma_info' is not base64");
  }
  CRESCENT_RETURN_IF_ERROR(ValidateSegmentName(d.name));
  return d;
}

const std::string& LocalHostId() {
  static const std::string* id = new std::string(ComputeHostId());
  return *id;
}

}  // namespace crescent::kvstore
