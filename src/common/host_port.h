// HostPort: the "host:port" addresses the processes listen on and dial, parsed in one place so
// that every flag taking one accepts the same syntax and rejects it with the same message.
#ifndef CRESCENT_SRC_COMMON_HOST_PORT_H_
#define CRESCENT_SRC_COMMON_HOST_PORT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace crescent {

struct HostPort {
  std::string host;  // without the brackets an IPv6 host is written in
  uint16_t port = 0;
};

// Parses "host:port": a non-empty host ("[...]" around an IPv6 one, removed here) and a decimal
// port in [0, 65535] (0: any free port, for listen addresses). Errors: InvalidArgument
// "<what> must be host:port, got '<address>'", `what` naming the flag or option it came from.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address, absl::string_view what);

// "host:port", with brackets around a host that holds a ':' (IPv6): what ParseHostPort reads
// back.
std::string JoinHostPort(absl::string_view host, uint16_t port);

// The host others dial to reach a server bound to `listen_host`: `advertise_host` when given,
// else `listen_host`, except that a wildcard listen host (empty, "0.0.0.0", "::") is replaced
// by this machine's host name, the best guess without an advertised one.
std::string AdvertisedHost(absl::string_view listen_host, absl::string_view advertise_host);

// True for the hosts that name no single interface: "", "0.0.0.0", "::".
bool IsWildcardHost(absl::string_view host);

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_HOST_PORT_H_
