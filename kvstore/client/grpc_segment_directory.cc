#include "kvstore/client/grpc_segment_directory.h"

#include <grpcpp/grpcpp.h>

#include "kvstore/master/master_service.h"
#include "kvstore/transfer/segment.h"

namespace crescent::kvstore::client {

using master::FromGrpcStatus;
using master::ToGrpcStatus;

grpc::Status SegmentDirectoryService::Publish(grpc::ServerContext* /*context*/,
                                              const v1::PublishSegmentRequest* request,
                                              v1::PublishSegmentResponse* /*response*/) {
  absl::StatusOr<SegmentDescriptor> descriptor = ParseSegmentDescriptor(request->descriptor_json());
  if (!descriptor.ok()) return ToGrpcStatus(descriptor.status());
  if (descriptor->name != request->name()) {
    return ToGrpcStatus(absl::InvalidArgumentError("segment name '" + request->name() +
                                                   "' differs from the descriptor's '" +
                                                   descriptor->name + "'"));
  }
  return ToGrpcStatus(directory_.Publish(*descriptor));
}

grpc::Status SegmentDirectoryService::Lookup(grpc::ServerContext* /*context*/,
                                             const v1::LookupSegmentRequest* request,
                                             v1::LookupSegmentResponse* response) {
  absl::StatusOr<SegmentDescriptor> descriptor = directory_.Lookup(request->name());
  if (!descriptor.ok()) return ToGrpcStatus(descriptor.status());
  response->set_descriptor_json(SerializeSegmentDescriptor(*descriptor));
  return grpc::Status::OK;
}

grpc::Status SegmentDirectoryService::Unpublish(grpc::ServerContext* /*context*/,
                                                const v1::UnpublishSegmentRequest* request,
                                                v1::UnpublishSegmentResponse* /*response*/) {
  return ToGrpcStatus(directory_.Unpublish(request->name()));
}

std::unique_ptr<GrpcSegmentDirectory> GrpcSegmentDirectory::Create(
    std::string_view address, std::chrono::milliseconds timeout) {
  auto channel = grpc::CreateChannel(std::string(address), grpc::InsecureChannelCredentials());
  return std::unique_ptr<GrpcSegmentDirectory>(
      new GrpcSegmentDirectory(v1::KvSegmentDirectory::NewStub(channel), timeout));
}

absl::Status GrpcSegmentDirectory::Publish(const SegmentDescriptor& descriptor) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  v1::PublishSegmentRequest request;
  request.set_name(descriptor.name);
  request.set_descriptor_json(SerializeSegmentDescriptor(descriptor));
  v1::PublishSegmentResponse response;
  return FromGrpcStatus(stub_->Publish(&context, request, &response));
}

absl::StatusOr<SegmentDescriptor> GrpcSegmentDirectory::Lookup(std::string_view name) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  v1::LookupSegmentRequest request;
  request.set_name(std::string(name));
  v1::LookupSegmentResponse response;
  absl::Status status = FromGrpcStatus(stub_->Lookup(&context, request, &response));
  if (!status.ok()) return status;
  return ParseSegmentDescriptor(response.descriptor_json());
}

absl::Status GrpcSegmentDirectory::Unpublish(std::string_view name) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  v1::UnpublishSegmentRequest request;
  request.set_name(std::string(name));
  v1::UnpublishSegmentResponse response;
  return FromGrpcStatus(stub_->Unpublish(&context, request, &response));
}

}  // namespace crescent::kvstore::client
