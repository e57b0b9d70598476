// The segment directory over gRPC: SegmentDirectoryService serves an InMemorySegmentDirectory
// (the KV master runs it beside KvMaster), GrpcSegmentDirectory is the SegmentDirectory every
// other process's TransferEngine uses to publish and resolve segment names through it.
#ifndef CRESCENT_KVSTORE_CLIENT_GRPC_SEGMENT_DIRECTORY_H_
#define CRESCENT_KVSTORE_CLIENT_GRPC_SEGMENT_DIRECTORY_H_

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kvstore/transfer/segment_directory.h"
#include "proto/kvstore.grpc.pb.h"

namespace crescent::kvstore::client {

// gRPC service KvSegmentDirectory over an in-process directory. Thread-safe.
class SegmentDirectoryService final : public v1::KvSegmentDirectory::Service {
 public:
  grpc::Status Publish(grpc::ServerContext* context, const v1::PublishSegmentRequest* request,
                       v1::PublishSegmentResponse* response) override;
  grpc::Status Lookup(grpc::ServerContext* context, const v1::LookupSegmentRequest* request,
                      v1::LookupSegmentResponse* response) override;
  grpc::Status Unpublish(grpc::ServerContext* context, const v1::UnpublishSegmentRequest* request,
                         v1::UnpublishSegmentResponse* response) override;

 private:
  InMemorySegmentDirectory directory_;
};

// A SegmentDirectory whose entries live in a remote SegmentDirectoryService. Every call is one
// RPC with `timeout`; transport failures come back as the RPC's status (Unavailable,
// DeadlineExceeded). Thread-safe.
class GrpcSegmentDirectory final : public SegmentDirectory {
 public:
  // `address` is "host:port". Connects lazily; never fails for an unreachable address.
  static std::unique_ptr<GrpcSegmentDirectory> Create(
      std::string_view address, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  absl::Status Publish(const SegmentDescriptor& descriptor) override;
  absl::StatusOr<SegmentDescriptor> Lookup(std::string_view name) override;
  absl::Status Unpublish(std::string_view name) override;

 private:
  GrpcSegmentDirectory(std::unique_ptr<v1::KvSegmentDirectory::Stub> stub,
                       std::chrono::milliseconds timeout)
      : stub_(std::move(stub)), timeout_(timeout) {}

  std::unique_ptr<v1::KvSegmentDirectory::Stub> stub_;
  const std::chrono::milliseconds timeout_;
};

}  // namespace crescent::kvstore::client

#endif  // CRESCENT_KVSTORE_CLIENT_GRPC_SEGMENT_DIRECTORY_H_
