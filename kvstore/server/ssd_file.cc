#include "kvstore/server/ssd_file.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "src/common/hash.h"
#include "src/common/status.h"

namespace crescent::kvstore::server {
namespace {

std::span<uint8_t> AsU8(std::span<std::byte> s) {
  return {reinterpret_cast<uint8_t*>(s.data()), s.size()};
}

}  // namespace

absl::StatusOr<std::unique_ptr<SsdFile>> SsdFile::Open(std::string_view path, uint64_t capacity) {
  if (capacity == 0) return absl::InvalidArgumentError("SSD capacity must be > 0");
  SsdTierOptions options;
  options.path = std::string(path);
  options.capacity = AlignUp(capacity, options.alignment);
  options.truncate = true;
  absl::StatusOr<std::unique_ptr<SsdTier>> tier = OpenSsdTier(options);
  if (!tier.ok()) {
    return absl::Status(tier.status().code(),
                        absl::StrCat("opening SSD segment file ", std::string(path), ": ",
                                     tier.status().ToString()));
  }
  return std::unique_ptr<SsdFile>(new SsdFile(std::string(path), *std::move(tier), capacity));
}

SsdFile::~SsdFile() = default;

absl::Status SsdFile::CheckRange(uint64_t offset, uint64_t length) const {
  if (offset > capacity_ || length > capacity_ - offset) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", +", length,
                                              ") is beyond the SSD segment (", capacity_,
                                              " bytes) in ", path_));
  }
  return absl::OkStatus();
}

absl::Status SsdFile::ReadUnaligned(uint64_t offset, std::span<std::byte> out) {
  const uint64_t a = tier_->alignment();
  const uint64_t start = offset & ~(a - 1);
  const uint64_t end = AlignUp(offset + out.size(), a);
  if (start == offset && end == offset + out.size()) return tier_->Read(offset, AsU8(out));
  std::vector<std::byte> pages(end - start);
  CRESCENT_RETURN_IF_ERROR(tier_->Read(start, AsU8(pages)));
  std::memcpy(out.data(), pages.data() + (offset - start), out.size());
  return absl::OkStatus();
}

absl::Status SsdFile::Write(uint64_t offset, std::span<const std::byte> data) {
  CRESCENT_RETURN_IF_ERROR(CheckRange(offset, data.size()));
  if (data.empty()) return absl::OkStatus();
  const uint64_t a = tier_->alignment();
  const uint64_t start = offset & ~(a - 1);
  const uint64_t end = AlignUp(offset + data.size(), a);
  std::vector<std::byte> pages(end - start);
  {
    absl::MutexLock lock(&write_mu_);
    // Partial first/last pages keep the neighbours' bytes.
    if (start < offset) {
      CRESCENT_RETURN_IF_ERROR(tier_->Read(start, AsU8(std::span(pages).first(a))));
    }
    if (end > offset + data.size() && (end - a > start || start == offset)) {
      CRESCENT_RETURN_IF_ERROR(tier_->Read(end - a, AsU8(std::span(pages).last(a))));
    }
    std::memcpy(pages.data() + (offset - start), data.data(), data.size());
    CRESCENT_RETURN_IF_ERROR(tier_->Write(
        start,
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(pages.data()), pages.size())));
  }
  std::vector<std::byte> back(data.size());
  CRESCENT_RETURN_IF_ERROR(ReadUnaligned(offset, back));
  if (std::memcmp(back.data(), data.data(), data.size()) != 0) {
    return absl::DataLossError(absl::StrCat("read-back of ", data.size(), " bytes at ", offset,
                                            " in ", path_, " differs from what was written"));
  }
  return absl::OkStatus();
}

absl::Status SsdFile::ReadVerified(uint64_t offset, std::span<std::byte> out, uint64_t checksum) {
  CRESCENT_RETURN_IF_ERROR(CheckRange(offset, out.size()));
  CRESCENT_RETURN_IF_ERROR(ReadUnaligned(offset, out));
  const uint64_t sum = Hash64(out.data(), out.size());
  if (sum != checksum) {
    return absl::DataLossError(
        absl::StrFormat("checksum mismatch for %d bytes at offset %d in %s: got %016x, want %016x",
                        out.size(), offset, path_, sum, checksum));
  }
  return absl::OkStatus();
}

}  // namespace crescent::kvstore::server
