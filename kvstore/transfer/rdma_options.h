// Options of the rdma transport, apart from rdma_transport.h so that users of the engine's
// options do not pull in <infiniband/verbs.h>.
#ifndef CRESCENT_KVSTORE_TRANSFER_RDMA_OPTIONS_H_
#define CRESCENT_KVSTORE_TRANSFER_RDMA_OPTIONS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace crescent::kvstore {

struct RdmaTransportOptions {
  std::string device_name;  // empty: the first device
  uint8_t port = 1;
  int gid_index = -1;  // -1: the first non-zero GID (RoCE) or none (InfiniBand LID routing)
  uint64_t max_slice_bytes = 1ull << 20;
  int qps_per_peer = 2;
  int max_outstanding_per_qp = 64;
  int cq_entries = 4096;
  std::chrono::milliseconds handshake_timeout{5000};
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_KVSTORE_TRANSFER_RDMA_OPTIONS_H_
