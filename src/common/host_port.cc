#include "src/common/host_port.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace crescent {

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address, absl::string_view what) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be host:port, got '", address, "'"));
  };
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon + 1 == address.size()) return bad();
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return bad();
  uint32_t port = 0;
  for (char c : address.substr(colon + 1)) {
    if (c < '0' || c > '9') return bad();
    port = port * 10 + static_cast<uint32_t>(c - '0');
    if (port > 65535) return bad();
  }
  return HostPort{std::string(host), static_cast<uint16_t>(port)};
}

bool IsWildcardHost(absl::string_view host) {
  return host.empty() || host == "0.0.0.0" || host == "::";
}

std::string AdvertisedHost(absl::string_view listen_host, absl::string_view advertise_host) {
  if (!advertise_host.empty()) return std::string(advertise_host);
  if (!IsWildcardHost(listen_host)) return std::string(listen_host);
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

std::string JoinHostPort(absl::string_view host, uint16_t port) {
  if (host.find(':') != absl::string_view::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

}  // namespace crescent
