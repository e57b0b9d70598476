// Fake prefill and decode nodes for the Conductor's tests: real gRPC services on loopback in the
// test process, whose behaviour each test scripts (fail, block until cancelled, die mid-stream).
#ifndef CRESCENT_TESTS_CONDUCTOR_SERVICE_FAKE_NODES_H_
#define CRESCENT_TESTS_CONDUCTOR_SERVICE_FAKE_NODES_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "proto/cluster.grpc.pb.h"

namespace crescent::conductor::service::fakes {

namespace v1 = cluster::v1;

// Waits up to 10 s for `pred`.
template <typename Pred>
bool Eventually(Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// Fails its first calls while the shared counter is positive (so that whichever prefill node is
// asked first fails), else answers with `first_token`; optionally blocks until cancelled.
class FakePrefill final : public v1::PrefillNode::Service {
 public:
  grpc::Status Prefill(grpc::ServerContext* context, const v1::PrefillRequest* request,
                       v1::PrefillResponse* response) override {
    {
      absl::MutexLock lock(&mu);
      requests.push_back(*request);
    }
    calls.fetch_add(1);
    if (fail_first != nullptr && fail_first->fetch_sub(1) > 0) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake prefill node is down");
    }
    if (response_error != 0) {
      response->mutable_status()->set_code(response_error);
      response->mutable_status()->set_message("fake prefill error");
      return grpc::Status::OK;
    }
    if (block_until_cancelled) {
      while (!context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      saw_cancel.store(true);
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    response->mutable_first_token()->set_token(first_token);
    response->set_prompt_tokens(request->prompt_size());
    response->set_cached_tokens(cached_tokens);
    response->set_transfer_seconds(0.001);
    return grpc::Status::OK;
  }
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest*,
                      v1::CancelResponse*) override {
    return grpc::Status::OK;
  }

  std::atomic<int>* fail_first = nullptr;
  int response_error = 0;
  bool block_until_cancelled = false;
  int32_t first_token = 100;
  int64_t cached_tokens = 0;
  std::atomic<int> calls{0};
  std::atomic<bool> saw_cancel{false};
  absl::Mutex mu;
  std::vector<v1::PrefillRequest> requests ABSL_GUARDED_BY(mu);
};

class FakeDecode final : public v1::DecodeNode::Service {
 public:
  grpc::Status Reserve(grpc::ServerContext*, const v1::ReserveRequest* request,
                       v1::ReserveResponse* response) override {
    absl::MutexLock lock(&mu);
    reserves.push_back(*request);
    v1::KvTarget* t = response->mutable_target();
    t->set_segment("seg-d");
    t->set_transfer_endpoint("127.0.0.1:1");
    t->add_block_offsets(0);
    t->add_block_offsets(4096);
    t->set_block_bytes(4096);
    t->set_reservation_id(77 + reserves.size());
    return grpc::Status::OK;
  }
  grpc::Status Release(grpc::ServerContext*, const v1::ReleaseRequest* request,
                       v1::ReleaseResponse*) override {
    absl::MutexLock lock(&mu);
    releases.push_back(request->reservation_id());
    return grpc::Status::OK;
  }
  grpc::Status Decode(grpc::ServerContext* context, const v1::DecodeRequest* request,
                      grpc::ServerWriter<v1::DecodeEvent>* writer) override {
    {
      absl::MutexLock lock(&mu);
      decodes.push_back(*request);
    }
    started.store(true);
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (fail_after >= 0 && static_cast<int>(i) == fail_after) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake decode node died");
      }
      v1::DecodeEvent event;
      event.mutable_token()->set_token(tokens[i]);
      if (!writer->Write(event)) break;
    }
    if (block_until_cancelled) {
      while (!context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      saw_cancel.store(true);
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    v1::DecodeEvent event;
    event.mutable_finish()->set_reason(finish_reason);
    event.mutable_finish()->set_generated_tokens(static_cast<int64_t>(tokens.size()) + 1);
    writer->Write(event);
    return grpc::Status::OK;
  }

  std::vector<int32_t> tokens = {101, 102, 103};
  std::string finish_reason = "length";
  int fail_after = -1;  // >= 0: fail with UNAVAILABLE before token i
  bool block_until_cancelled = false;
  std::atomic<bool> started{false};
  std::atomic<bool> saw_cancel{false};
  absl::Mutex mu;
  std::vector<v1::ReserveRequest> reserves ABSL_GUARDED_BY(mu);
  std::vector<uint64_t> releases ABSL_GUARDED_BY(mu);
  std::vector<v1::DecodeRequest> decodes ABSL_GUARDED_BY(mu);
};

// A gRPC server on 127.0.0.1 serving one fake.
struct FakeServer {
  explicit FakeServer(grpc::Service* service) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service);
    server = builder.BuildAndStart();
    endpoint = "127.0.0.1:" + std::to_string(port);
  }
  ~FakeServer() { Kill(); }
  void Kill() {
    if (server != nullptr) {
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(50));
      server.reset();
    }
  }
  std::unique_ptr<grpc::Server> server;
  std::string endpoint;
};

}  // namespace crescent::conductor::service::fakes

#endif  // CRESCENT_TESTS_CONDUCTOR_SERVICE_FAKE_NODES_H_
