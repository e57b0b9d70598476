#include "kvstore/client/pool_client.h"

#include <grpcpp/grpcpp.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kvstore/client/grpc_segment_directory.h"
#include "kvstore/master/master_service.h"
#include "kvstore/master/master_state.h"
#include "src/common/hash.h"
#include "src/common/logging.h"
#include "src/common/status.h"

namespace crescent::kvstore::client {
namespace {

using master::FromGrpcStatus;
using master::KeyHex;

absl::Status FromKeyStatus(const v1::KeyStatus& s) {
  if (s.code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
}

std::string Where(const v1::Replica& r) {
  return absl::StrCat(r.segment(), "@", r.offset(), " on node ", r.node_id());
}

}  // namespace

absl::StatusOr<std::unique_ptr<PoolClient>> PoolClient::Create(const PoolClientOptions& options) {
  if (options.replica_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("replica_count must be >= 1, got ", options.replica_count));
  }
  std::vector<std::string> transports;
  std::vector<std::string> order;
  if (options.transport == "tcp") {
    transports = {"tcp"};
    order = {"tcp"};
  } else if (options.transport == "shm") {
    transports = {"shm", "tcp"};
    order = {"shm"};
  } else if (options.transport == "auto") {
    transports = {"shm", "tcp"};
  } else {
    return absl::InvalidArgumentError("unknown transport '" + options.transport +
                                      "' (want tcp, shm or auto)");
  }
  std::unique_ptr<PoolClient> client(new PoolClient(options));
  client->transport_order_ = std::move(order);
  if (options.engine != nullptr) {
    client->engine_ = options.engine;
  } else {
    client->own_directory_ =
        GrpcSegmentDirectory::Create(options.master_address, options.rpc_timeout);
    TransferEngineOptions engine_options;
    engine_options.transports = transports;
    engine_options.tcp.serve = false;  // A pure client owns no segments.
    CRESCENT_ASSIGN_OR_RETURN(client->own_engine_,
                              TransferEngine::Create(engine_options, client->own_directory_.get()));
    client->engine_ = client->own_engine_.get();
  }
  client->channel_ =
      grpc::CreateChannel(options.master_address, grpc::InsecureChannelCredentials());
  client->master_ = v1::KvMaster::NewStub(client->channel_);
  return client;
}

PoolClient::~PoolClient() {
  absl::MutexLock lock(&mu_);
  for (const auto& [name, handle] : segments_) (void)engine_->CloseSegment(handle);
  segments_.clear();
}

void PoolClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
}

absl::StatusOr<SegmentHandle> PoolClient::OpenCached(const std::string& segment) {
  {
    absl::MutexLock lock(&mu_);
    auto it = segments_.find(segment);
    if (it != segments_.end()) return it->second;
  }
  // Opened outside the lock: it is an RPC (directory lookup) plus a transport handshake.
  CRESCENT_ASSIGN_OR_RETURN(SegmentHandle handle, engine_->OpenSegment(segment, transport_order_));
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = segments_.emplace(segment, handle);
  if (!inserted) (void)engine_->CloseSegment(handle);  // Another thread won the race.
  return it->second;
}

void PoolClient::ForgetSegment(const std::string& segment) {
  absl::MutexLock lock(&mu_);
  auto it = segments_.find(segment);
  if (it == segments_.end()) return;
  (void)engine_->CloseSegment(it->second);
  segments_.erase(it);
}

v1::KvStorageNode::Stub* PoolClient::StorageStub(const std::string& endpoint) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<v1::KvStorageNode::Stub>& stub = storage_[endpoint];
  if (stub == nullptr) {
    stub = v1::KvStorageNode::NewStub(
        grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials()));
  }
  return stub.get();
}

std::vector<absl::Status> PoolClient::RunTransfers(std::span<const TransferRequest> requests) {
  std::vector<absl::Status> out(requests.size());
  if (requests.empty()) return out;
  BatchId batch = engine_->AllocateBatch(requests.size());
  absl::Status submitted = engine_->SubmitTransfer(batch, requests);
  if (!submitted.ok()) {
    (void)engine_->FreeBatch(batch);
    for (absl::Status& s : out) s = submitted;
    return out;
  }
  // Wait until nothing is pending: a request still in flight could write into the caller's
  // buffer after we returned. Transports bound every request (tcp io_timeout), so this ends.
  while (absl::IsDeadlineExceeded(engine_->Wait(batch, std::chrono::seconds(30)))) {
    absl::StatusOr<std::vector<RequestStatus>> st = engine_->GetBatchStatus(batch);
    if (!st.ok()) break;
    bool pending = false;
    for (const RequestStatus& r : *st) pending |= r.state == TransferState::kPending;
    if (!pending) break;
    CRESCENT_LOG(warn, "pool client: transfers still pending after 30 s; waiting");
  }
  absl::StatusOr<std::vector<RequestStatus>> statuses = engine_->GetBatchStatus(batch);
  for (size_t i = 0; i < out.size(); ++i) {
    if (!statuses.ok()) {
      out[i] = statuses.status();
    } else if ((*statuses)[i].state == TransferState::kDone) {
      out[i] = absl::OkStatus();
    } else {
      out[i] = (*statuses)[i].status.ok() ? absl::UnavailableError("transfer did not complete")
                                          : (*statuses)[i].status;
    }
  }
  (void)engine_->FreeBatch(batch);
  return out;
}

absl::StatusOr<std::vector<bool>> PoolClient::BatchExists(std::span<const uint64_t> keys) {
  v1::KeysRequest request;
  for (uint64_t k : keys) request.add_keys(k);
  v1::ExistsResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  CRESCENT_RETURN_IF_ERROR(FromGrpcStatus(master_->BatchExists(&context, request, &response)));
  if (static_cast<size_t>(response.exists_size()) != keys.size()) {
    return absl::InternalError("master answered BatchExists with the wrong number of keys");
  }
  return std::vector<bool>(response.exists().begin(), response.exists().end());
}

absl::StatusOr<size_t> PoolClient::LongestPrefix(std::span<const uint64_t> hashes) {
  v1::KeysRequest request;
  for (uint64_t k : hashes) request.add_keys(k);
  v1::LongestPrefixResponse response;
  grpc::ClientContext context;
  SetDeadline(&context);
  CRESCENT_RETURN_IF_ERROR(FromGrpcStatus(master_->LongestPrefix(&context, request, &response)));
  return static_cast<size_t>(response.length());
}

absl::StatusOr<std::vector<absl::Status>> PoolClient::BatchPut(
    std::span<const uint64_t> keys, std::span<const std::span<const std::byte>> buffers) {
  if (keys.size() != buffers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("BatchPut: ", keys.size(), " keys but ", buffers.size(), " buffers"));
  }
  std::vector<absl::Status> results(keys.size());
  v1::PutStartRequest start;
  start.set_replica_count(options_.replica_count);
  std::vector<size_t> asked;  // Index of each request item in keys.
  for (size_t i = 0; i < keys.size(); ++i) {
    if (buffers[i].empty()) {
      results[i] = absl::InvalidArgumentError("empty buffer for key " + KeyHex(keys[i]));
      continue;
    }
    v1::PutStartRequest::Item* item = start.add_items();
    item->set_key(keys[i]);
    item->set_size(buffers[i].size());
    asked.push_back(i);
  }
  if (asked.empty()) return results;
  v1::PutStartResponse started;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    CRESCENT_RETURN_IF_ERROR(FromGrpcStatus(master_->BatchPutStart(&context, start, &started)));
  }
  if (static_cast<size_t>(started.items_size()) != asked.size()) {
    return absl::InternalError("master answered BatchPutStart with the wrong number of items");
  }

  // Writes: DRAM replicas in one transfer batch, SSD replicas through their storage node.
  std::vector<TransferRequest> requests;
  std::vector<std::pair<size_t, const v1::Replica*>> request_owner;  // (key index, replica)
  std::vector<bool> reserved(keys.size(), false);
  for (size_t j = 0; j < asked.size(); ++j) {
    const size_t i = asked[j];
    const v1::PutStartResponse::Item& item = started.items(j);
    results[i] = FromKeyStatus(item.status());
    if (!results[i].ok()) continue;
    reserved[i] = true;
    for (const v1::Replica& r : item.replicas()) {
      if (r.tier() == v1::TIER_SSD) {
        v1::WriteBlockRequest write;
        write.set_segment(r.segment());
        write.set_offset(r.offset());
        write.set_data(buffers[i].data(), buffers[i].size());
        v1::WriteBlockResponse written;
        grpc::ClientContext context;
        SetDeadline(&context);
        absl::Status s =
            FromGrpcStatus(StorageStub(r.endpoint())->WriteBlock(&context, write, &written));
        if (!s.ok()) {
          ++replica_failures_;
          if (results[i].ok()) {
            results[i] = absl::Status(s.code(), "writing " + Where(r) + ": " + s.ToString());
          }
        }
        continue;
      }
      absl::StatusOr<SegmentHandle> handle = OpenCached(r.segment());
      if (!handle.ok()) {
        ++replica_failures_;
        if (results[i].ok()) {
          results[i] =
              absl::UnavailableError("opening " + Where(r) + ": " + handle.status().ToString());
        }
        continue;
      }
      // The transfer engine takes a mutable pointer for both directions; a write only reads it.
      requests.push_back(TransferRequest{TransferOp::kWrite,
                                         const_cast<std::byte*>(buffers[i].data()), *handle,
                                         r.offset(), buffers[i].size()});
      request_owner.emplace_back(i, &r);
    }
  }
  std::vector<absl::Status> done = RunTransfers(requests);
  for (size_t k = 0; k < done.size(); ++k) {
    if (done[k].ok()) continue;
    const auto& [i, r] = request_owner[k];
    ++replica_failures_;
    ForgetSegment(r->segment());
    if (results[i].ok()) {
      results[i] = absl::Status(done[k].code(), "writing " + Where(*r) + ": " + done[k].ToString());
    }
  }

  // Commit what was written in full; revoke the rest.
  v1::PutEndRequest end;
  std::vector<size_t> ending;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!reserved[i]) continue;
    if (results[i].ok()) {
      v1::PutEndRequest::Item* item = end.add_items();
      item->set_key(keys[i]);
      item->set_checksum(Hash64(buffers[i].data(), buffers[i].size()));
      ending.push_back(i);
    } else {
      v1::PutRevokeRequest revoke;
      revoke.set_key(keys[i]);
      v1::PutRevokeResponse revoked;
      grpc::ClientContext context;
      SetDeadline(&context);
      absl::Status s = FromGrpcStatus(master_->PutRevoke(&context, revoke, &revoked));
      if (!s.ok()) {
        // The master revokes it anyway when the put times out.
        CRESCENT_LOG(warn, "pool client: PutRevoke({}) failed: {}", KeyHex(keys[i]), s.ToString());
      }
    }
  }
  if (!ending.empty()) {
    v1::PutEndResponse ended;
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Status s = FromGrpcStatus(master_->BatchPutEnd(&context, end, &ended));
    for (size_t j = 0; j < ending.size(); ++j) {
      if (!s.ok()) {
        results[ending[j]] = s;  // Uncommitted; the master revokes at the put timeout.
      } else if (j < static_cast<size_t>(ended.statuses_size())) {
        results[ending[j]] = FromKeyStatus(ended.statuses(j));
      } else {
        results[ending[j]] = absl::InternalError("master answered BatchPutEnd short");
      }
    }
  }
  return results;
}

absl::StatusOr<std::vector<absl::StatusOr<uint64_t>>> PoolClient::BatchGet(
    std::span<const uint64_t> keys, std::span<const std::span<std::byte>> buffers) {
  if (keys.size() != buffers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("BatchGet: ", keys.size(), " keys but ", buffers.size(), " buffers"));
  }
  std::vector<absl::StatusOr<uint64_t>> results(keys.size());
  if (keys.empty()) return results;
  v1::KeysRequest request;
  for (uint64_t k : keys) request.add_keys(k);
  v1::GetResponse response;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    CRESCENT_RETURN_IF_ERROR(FromGrpcStatus(master_->BatchGet(&context, request, &response)));
  }
  if (static_cast<size_t>(response.items_size()) != keys.size()) {
    return absl::InternalError("master answered BatchGet with the wrong number of items");
  }

  std::vector<bool> pending(keys.size(), false);
  std::vector<absl::Status> last_error(keys.size());
  size_t rounds = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const v1::GetResponse::Item& item = response.items(i);
    absl::Status s = FromKeyStatus(item.status());
    if (!s.ok()) {
      results[i] = s;
      continue;
    }
    if (item.replicas_size() == 0) {
      results[i] = absl::NotFoundError("no replica of key " + KeyHex(keys[i]));
      continue;
    }
    if (item.replicas(0).length() > buffers[i].size()) {
      results[i] = absl::InvalidArgumentError(
          absl::StrCat("buffer of ", buffers[i].size(), " bytes is smaller than key ",
                       KeyHex(keys[i]), " (", item.replicas(0).length(), " bytes)"));
      continue;
    }
    pending[i] = true;
    rounds = std::max(rounds, static_cast<size_t>(item.replicas_size()));
  }

  // Round r tries each unfinished key's r-th replica (DRAM replicas come first).
  auto verify = [&](size_t i, const v1::Replica& r) {
    const uint64_t sum = Hash64(buffers[i].data(), r.length());
    if (sum == r.checksum()) {
      results[i] = r.length();
      pending[i] = false;
      ++(r.tier() == v1::TIER_SSD ? ssd_reads_ : dram_reads_);
      return;
    }
    ++checksum_mismatches_;
    CRESCENT_LOG(error,
                 "pool client: checksum mismatch for key {} read from {} (got {:016x}, the "
                 "master recorded {:016x}); treating this replica as missing",
                 KeyHex(keys[i]), Where(r), sum, r.checksum());
    last_error[i] = absl::DataLossError("checksum mismatch for key " + KeyHex(keys[i]) +
                                        " read from " + Where(r));
  };
  for (size_t round = 0; round < rounds; ++round) {
    std::vector<TransferRequest> requests;
    std::vector<std::pair<size_t, const v1::Replica*>> request_owner;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!pending[i] || round >= static_cast<size_t>(response.items(i).replicas_size())) {
        continue;
      }
      const v1::Replica& r = response.items(i).replicas(static_cast<int>(round));
      if (r.tier() == v1::TIER_SSD) {
        v1::ReadBlockRequest read;
        read.set_segment(r.segment());
        read.set_offset(r.offset());
        read.set_length(r.length());
        read.set_checksum(r.checksum());
        v1::ReadBlockResponse data;
        grpc::ClientContext context;
        SetDeadline(&context);
        absl::Status s =
            FromGrpcStatus(StorageStub(r.endpoint())->ReadBlock(&context, read, &data));
        if (s.ok() && data.data().size() != r.length()) {
          s = absl::InternalError(
              absl::StrCat("ReadBlock returned ", data.data().size(), " bytes, want ", r.length()));
        }
        if (!s.ok()) {
          if (absl::IsDataLoss(s)) {
            ++checksum_mismatches_;
            CRESCENT_LOG(error, "pool client: key {} at {}: {}", KeyHex(keys[i]), Where(r),
                         s.ToString());
          } else {
            ++replica_failures_;
          }
          last_error[i] = s;
          continue;
        }
        std::memcpy(buffers[i].data(), data.data().data(), r.length());
        verify(i, r);
        continue;
      }
      absl::StatusOr<SegmentHandle> handle = OpenCached(r.segment());
      if (!handle.ok()) {
        ++replica_failures_;
        last_error[i] =
            absl::UnavailableError("opening " + Where(r) + ": " + handle.status().ToString());
        continue;
      }
      requests.push_back(
          TransferRequest{TransferOp::kRead, buffers[i].data(), *handle, r.offset(), r.length()});
      request_owner.emplace_back(i, &r);
    }
    std::vector<absl::Status> done = RunTransfers(requests);
    for (size_t k = 0; k < done.size(); ++k) {
      const auto& [i, r] = request_owner[k];
      if (done[k].ok()) {
        verify(i, *r);
        continue;
      }
      ++replica_failures_;
      ForgetSegment(r->segment());
      last_error[i] = absl::UnavailableError("reading " + Where(*r) + ": " + done[k].ToString());
    }
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (pending[i]) {
      results[i] =
          last_error[i].ok() ? absl::UnavailableError("no replica could be read") : last_error[i];
    }
  }
  return results;
}

PoolClientStats PoolClient::stats() const {
  PoolClientStats s;
  s.dram_reads = dram_reads_.load();
  s.ssd_reads = ssd_reads_.load();
  s.checksum_mismatches = checksum_mismatches_.load();
  s.replica_failures = replica_failures_.load();
  return s;
}

}  // namespace crescent::kvstore::client
