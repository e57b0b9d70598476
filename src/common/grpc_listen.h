// AddExclusiveListeningPort: how every Crescent gRPC server listens. Header-only; include it only
// from targets that link gRPC (through crescent_proto).
#ifndef CRESCENT_SRC_COMMON_GRPC_LISTEN_H_
#define CRESCENT_SRC_COMMON_GRPC_LISTEN_H_

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <string>

namespace crescent {

// Adds an insecure listening port for `address` ("host:port"; port 0: any free port, written to
// *selected_port by BuildAndStart, which leaves it 0 when the bind fails) with SO_REUSEPORT off.
// gRPC turns SO_REUSEPORT on by default, so that a second server of the same user can bind a port
// already listened on and the kernel then splits new connections between the two: a client meant
// for one service reaches the other and gets UNIMPLEMENTED. With it off, a port taken is a failed
// start ("cannot listen on ...") rather than traffic quietly split.
inline void AddExclusiveListeningPort(grpc::ServerBuilder& builder, const std::string& address,
                                      int* selected_port) {
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), selected_port);
}

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_GRPC_LISTEN_H_
