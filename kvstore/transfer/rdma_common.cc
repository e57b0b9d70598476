#include "kvstore/transfer/rdma_common.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"

namespace crescent::kvstore::rdma {
namespace {

constexpr uint32_t kSegmentInfoMagic = 0x49535243;  // "CRSI"
constexpr uint32_t kConnInfoMagic = 0x49435243;     // "CRCI"
constexpr uint16_t kVersion = 1;
constexpr size_t kSegmentInfoSize = 46;
constexpr size_t kConnInfoSize = 42;

class Writer {
 public:
  explicit Writer(size_t size) { out_.reserve(size); }
  template <typename T>
  void Put(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void PutGid(const Gid& gid) {
    out_.append(reinterpret_cast<const char*>(gid.data()), gid.size());
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  T Get() {
    T v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      v = static_cast<T>(v | (static_cast<T>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i)));
    }
    pos_ += sizeof(T);
    return v;
  }
  Gid GetGid() {
    Gid gid;
    std::memcpy(gid.data(), in_.data() + pos_, gid.size());
    pos_ += gid.size();
    return gid;
  }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

absl::Status CheckHeader(std::string_view blob, size_t size, uint32_t magic, const char* what) {
  if (blob.size() != size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is ", blob.size(), " bytes, expected ", size));
  }
  Reader r(blob);
  if (uint32_t m = r.Get<uint32_t>(); m != magic) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has magic 0x", absl::Hex(m)));
  }
  if (uint16_t v = r.Get<uint16_t>(); v != kVersion) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has unsupported version ", v));
  }
  return absl::OkStatus();
}

absl::Status CheckMtuAndPort(uint8_t mtu, uint8_t port, const char* what) {
  if (mtu < IBV_MTU_256 || mtu > IBV_MTU_4096) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has an invalid mtu code ", mtu));
  }
  if (port == 0) return absl::InvalidArgumentError(absl::StrCat(what, " has port 0"));
  return absl::OkStatus();
}

bool IsZero(const Gid& gid) {
  return std::all_of(gid.begin(), gid.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

// SegmentInfo: 0 magic u32, 4 version u16, 6 lid u16, 8 port u8, 9 mtu u8, 10 gid[16],
// 26 rkey u32, 30 addr u64, 38 length u64.
std::string SerializeSegmentInfo(const SegmentInfo& info) {
  Writer w(kSegmentInfoSize);
  w.Put<uint32_t>(kSegmentInfoMagic);
  w.Put<uint16_t>(kVersion);
  w.Put<uint16_t>(info.lid);
  w.Put<uint8_t>(info.port);
  w.Put<uint8_t>(info.mtu);
  w.PutGid(info.gid);
  w.Put<uint32_t>(info.rkey);
  w.Put<uint64_t>(info.addr);
  w.Put<uint64_t>(info.length);
  return w.Take();
}

absl::StatusOr<SegmentInfo> ParseSegmentInfo(std::string_view blob) {
  if (absl::Status s = CheckHeader(blob, kSegmentInfoSize, kSegmentInfoMagic, "rdma segment info");
      !s.ok()) {
    return s;
  }
  Reader r(blob.substr(6));
  SegmentInfo info;
  info.lid = r.Get<uint16_t>();
  info.port = r.Get<uint8_t>();
  info.mtu = r.Get<uint8_t>();
  info.gid = r.GetGid();
  info.rkey = r.Get<uint32_t>();
  info.addr = r.Get<uint64_t>();
  info.length = r.Get<uint64_t>();
  if (absl::Status s = CheckMtuAndPort(info.mtu, info.port, "rdma segment info"); !s.ok()) return s;
  if (info.length > UINT64_MAX - info.addr) {
    return absl::InvalidArgumentError(absl::StrCat("rdma segment info: addr 0x",
                                                   absl::Hex(info.addr), " + length ", info.length,
                                                   " overflows"));
  }
  return info;
}

// ConnInfo: 0 magic u32, 4 version u16, 6 lid u16, 8 port u8, 9 mtu u8, 10 gid[16],
// 26 qp_num u32, 30 psn u32, 34 connection_id u64.
std::string SerializeConnInfo(const ConnInfo& info) {
  Writer w(kConnInfoSize);
  w.Put<uint32_t>(kConnInfoMagic);
  w.Put<uint16_t>(kVersion);
  w.Put<uint16_t>(info.lid);
  w.Put<uint8_t>(info.port);
  w.Put<uint8_t>(info.mtu);
  w.PutGid(info.gid);
  w.Put<uint32_t>(info.qp_num);
  w.Put<uint32_t>(info.psn);
  w.Put<uint64_t>(info.connection_id);
  return w.Take();
}

absl::StatusOr<ConnInfo> ParseConnInfo(std::string_view blob) {
  if (absl::Status s = CheckHeader(blob, kConnInfoSize, kConnInfoMagic, "rdma connection info");
      !s.ok()) {
    return s;
  }
  Reader r(blob.substr(6));
  ConnInfo info;
  info.lid = r.Get<uint16_t>();
  info.port = r.Get<uint8_t>();
  info.mtu = r.Get<uint8_t>();
  info.gid = r.GetGid();
  info.qp_num = r.Get<uint32_t>();
  info.psn = r.Get<uint32_t>();
  info.connection_id = r.Get<uint64_t>();
  if (absl::Status s = CheckMtuAndPort(info.mtu, info.port, "rdma connection info"); !s.ok()) {
    return s;
  }
  if (info.qp_num == 0 || info.qp_num > 0xffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("rdma connection info: qp number ", info.qp_num, " is not a 24-bit QPN"));
  }
  if (info.psn > 0xffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("rdma connection info: psn ", info.psn, " exceeds 24 bits"));
  }
  return info;
}

std::vector<Slice> PlanSlices(uint64_t local_addr, uint64_t remote_addr, uint64_t length,
                              uint64_t max_slice) {
  std::vector<Slice> slices;
  if (length == 0 || max_slice == 0) return slices;
  max_slice = std::min<uint64_t>(max_slice, 1ull << 31);
  slices.reserve((length + max_slice - 1) / max_slice);
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min(max_slice, length - done);
    slices.push_back(Slice{local_addr + done, remote_addr + done, static_cast<uint32_t>(n)});
    done += n;
  }
  return slices;
}

absl::StatusOr<RemoteAddress> TranslateRemote(const SegmentInfo& segment, uint64_t offset,
                                              uint64_t length) {
  if (offset > segment.length || length > segment.length - offset) {
    return absl::OutOfRangeError(absl::StrCat("rdma range [", offset, ", ", offset, " + ", length,
                                              ") is outside the segment of ", segment.length,
                                              " bytes"));
  }
  return RemoteAddress{segment.addr + offset, segment.rkey};
}

absl::Status LocalRegionTable::Add(std::string name, uint64_t addr, uint64_t length,
                                   uint32_t lkey) {
  if (length == 0 || length > UINT64_MAX - addr) {
    return absl::InvalidArgumentError(
        absl::StrCat("region '", name, "' has a bad range (length ", length, ")"));
  }
  for (const auto& [start, region] : by_addr_) {
    if (region.name == name) {
      return absl::AlreadyExistsError(absl::StrCat("region '", name, "' is already registered"));
    }
  }
  auto next = by_addr_.lower_bound(addr);
  if (next != by_addr_.end() && next->first < addr + length) {
    return absl::InvalidArgumentError(
        absl::StrCat("region '", name, "' overlaps region '", next->second.name, "'"));
  }
  if (next != by_addr_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.length > addr) {
      return absl::InvalidArgumentError(
          absl::StrCat("region '", name, "' overlaps region '", prev->second.name, "'"));
    }
  }
  by_addr_.emplace(addr, Region{std::move(name), length, lkey});
  return absl::OkStatus();
}

absl::Status LocalRegionTable::Remove(std::string_view name) {
  for (auto it = by_addr_.begin(); it != by_addr_.end(); ++it) {
    if (it->second.name == name) {
      by_addr_.erase(it);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(absl::StrCat("region '", std::string(name), "' is not registered"));
}

absl::StatusOr<uint32_t> LocalRegionTable::FindLkey(uint64_t addr, uint64_t length) const {
  auto it = by_addr_.upper_bound(addr);
  if (it != by_addr_.begin()) {
    --it;
    const uint64_t start = it->first;
    const uint64_t end = start + it->second.length;
    if (addr >= start && addr <= end && length <= end - addr) return it->second.lkey;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("local buffer 0x", absl::Hex(addr), " + ", length,
                   " is not inside one registered segment (rdma needs registered local memory)"));
}

std::string_view QpStateName(QpState state) {
  switch (state) {
    case QpState::kReset:
      return "RESET";
    case QpState::kInit:
      return "INIT";
    case QpState::kRtr:
      return "RTR";
    case QpState::kRts:
      return "RTS";
    case QpState::kError:
      return "ERROR";
  }
  return "?";
}

absl::StatusOr<QpState> NextQpState(QpState state, QpEvent event) {
  switch (event) {
    case QpEvent::kFatal:
      return QpState::kError;
    case QpEvent::kReset:
      return QpState::kReset;
    case QpEvent::kInit:
      if (state == QpState::kReset) return QpState::kInit;
      break;
    case QpEvent::kPeerInfo:
      if (state == QpState::kInit) return QpState::kRtr;
      break;
    case QpEvent::kReady:
      if (state == QpState::kRtr) return QpState::kRts;
      break;
  }
  static constexpr const char* kEventNames[] = {"init", "peer-info", "ready", "fatal", "reset"};
  return absl::FailedPreconditionError(
      absl::StrCat("queue pair in state ", std::string(QpStateName(state)), " cannot take event '",
                   kEventNames[static_cast<int>(event)], "'"));
}

ibv_qp_state ToVerbsState(QpState state) {
  switch (state) {
    case QpState::kReset:
      return IBV_QPS_RESET;
    case QpState::kInit:
      return IBV_QPS_INIT;
    case QpState::kRtr:
      return IBV_QPS_RTR;
    case QpState::kRts:
      return IBV_QPS_RTS;
    case QpState::kError:
      return IBV_QPS_ERR;
  }
  return IBV_QPS_ERR;
}

QpTransition InitTransition(uint8_t port) {
  QpTransition t;
  t.attr.qp_state = IBV_QPS_INIT;
  t.attr.pkey_index = 0;
  t.attr.port_num = port;
  t.attr.qp_access_flags = kRemoteAccess;
  t.mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
  return t;
}

QpTransition RtrTransition(const ConnInfo& remote, uint8_t local_port, uint8_t local_mtu,
                           int gid_index) {
  QpTransition t;
  t.attr.qp_state = IBV_QPS_RTR;
  t.attr.path_mtu = static_cast<ibv_mtu>(std::min(local_mtu, remote.mtu));
  t.attr.dest_qp_num = remote.qp_num;
  t.attr.rq_psn = remote.psn;
  t.attr.max_dest_rd_atomic = 16;
  t.attr.min_rnr_timer = 12;  // 0.64 ms
  t.attr.ah_attr.dlid = remote.lid;
  t.attr.ah_attr.sl = 0;
  t.attr.ah_attr.src_path_bits = 0;
  t.attr.ah_attr.port_num = local_port;
  if (!IsZero(remote.gid)) {
    t.attr.ah_attr.is_global = 1;
    std::memcpy(t.attr.ah_attr.grh.dgid.raw, remote.gid.data(), remote.gid.size());
    t.attr.ah_attr.grh.sgid_index = static_cast<uint8_t>(gid_index);
    t.attr.ah_attr.grh.hop_limit = 64;
    t.attr.ah_attr.grh.flow_label = 0;
    t.attr.ah_attr.grh.traffic_class = 0;
  }
  t.mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
           IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
  return t;
}

QpTransition RtsTransition(uint32_t local_psn) {
  QpTransition t;
  t.attr.qp_state = IBV_QPS_RTS;
  t.attr.sq_psn = local_psn;
  t.attr.timeout = 14;   // 4.096 us * 2^14 = 67 ms per attempt
  t.attr.retry_cnt = 7;  // then IBV_WC_RETRY_EXC_ERR
  t.attr.rnr_retry = 7;  // 7 = retry forever on receiver-not-ready (no receives are posted)
  t.attr.max_rd_atomic = 16;
  t.mask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
           IBV_QP_MAX_QP_RD_ATOMIC;
  return t;
}

absl::Status CompletionStatus(ibv_wc_status status, uint32_t vendor_err, std::string_view what) {
  if (status == IBV_WC_SUCCESS) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (status) {
    case IBV_WC_RETRY_EXC_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR:
    case IBV_WC_RESP_TIMEOUT_ERR:
      code = absl::StatusCode::kUnavailable;
      break;
    case IBV_WC_REM_ACCESS_ERR:
      code = absl::StatusCode::kPermissionDenied;
      break;
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_LOC_ACCESS_ERR:
      code = absl::StatusCode::kFailedPrecondition;
      break;
    case IBV_WC_REM_INV_REQ_ERR:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case IBV_WC_WR_FLUSH_ERR:
      code = absl::StatusCode::kAborted;
      break;
    default:
      break;
  }
  return absl::Status(
      code,
      absl::StrCat(std::string(what), ": work completion ", ibv_wc_status_str(status), " (status ",
                   static_cast<int>(status), ", vendor error 0x", absl::Hex(vendor_err), ")"));
}

std::chrono::microseconds PollBackoff::Next(int found) {
  if (found > 0) {
    empty_polls_ = 0;
    return std::chrono::microseconds(0);
  }
  ++empty_polls_;
  constexpr int kSpinPolls = 256;
  if (empty_polls_ <= kSpinPolls) return std::chrono::microseconds(0);
  return std::chrono::microseconds(std::min(100, 1 + (empty_polls_ - kSpinPolls) / 16));
}

uint32_t RandomPsn() {
  static thread_local std::mt19937 rng(std::random_device{}());
  return rng() & 0xffffff;
}

}  // namespace crescent::kvstore::rdma
