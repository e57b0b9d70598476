#include "src/engine/kv_cache.h"

#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::engine {

absl::Status KvCache::CheckConfig(const KvCacheConfig& config) {
  if (config.n_layers <= 0 || config.n_kv_heads <= 0 || config.head_dim <= 0 ||
      config.block_tokens <= 0 || config.num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache config needs positive n_layers, n_kv_heads, head_dim, block_tokens and "
        "num_blocks; got ",
        config.n_layers, ", ", config.n_kv_heads, ", ", config.head_dim, ", ",
        config.block_tokens, ", ", config.num_blocks));
  }
  if (config.num_blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("num_blocks ", config.num_blocks, " too large"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::CreateInMemory(const KvCacheConfig& config,
                                                                 void* data) {
  CRESCENT_RETURN_IF_ERROR(CheckConfig(config));
  if (data == nullptr || reinterpret_cast<uintptr_t>(data) % 64 != 0) {
    return absl::InvalidArgumentError("KV cache memory must be non-null and 64-byte aligned");
  }
  std::memset(data, 0, MemoryBytes(config));
  return std::unique_ptr<KvCache>(new KvCache(config, static_cast<uint8_t*>(data), nullptr));
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheConfig& config) {
  CRESCENT_RETURN_IF_ERROR(CheckConfig(config));
  const size_t bytes = MemoryBytes(config);
  auto buffer = kernels::HugePageBuffer::Create(bytes);
  if (!buffer.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes for ",
                                                     config.num_blocks,
                                                     " KV blocks: ", buffer.status().message()));
  }
  // The mapping reads as zeros already; writing them commits the memory now rather than in
  // page faults during the first forward passes.
  auto* data = static_cast<uint8_t*>((*buffer)->data());
  std::memset(data, 0, bytes);
  return std::unique_ptr<KvCache>(new KvCache(config, data, *std::move(buffer)));
}

namespace {
std::atomic<uint64_t> next_cache_id{1};
}  // namespace

KvCache::KvCache(const KvCacheConfig& config, uint8_t* data,
                 std::unique_ptr<kernels::HugePageBuffer> owned)
    : config_(config),
      id_(next_cache_id.fetch_add(1, std::memory_order_relaxed)),
      page_bytes_(config.PageBytes()),
      block_bytes_(config.BlockBytes()),
      owned_(std::move(owned)),
      data_(data),
      ref_counts_(config.num_blocks, 0) {
  free_.reserve(config.num_blocks);
  for (int64_t i = config.num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<BlockId>(i));
}

KvCache::BlockId KvCache::Allocate() {
  if (free_.empty()) return -1;
  BlockId id = free_.back();
  free_.pop_back();
  ref_counts_[id] = 1;
  return id;
}

absl::Status KvCache::GrowTable(int64_t positions, std::vector<BlockId>* table) {
  const int bt = config_.block_tokens;
  const int64_t need = (positions + bt - 1) / bt;
  while (static_cast<int64_t>(table->size()) < need) {
    BlockId b = Allocate();
    if (b < 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV cache full: ", positions, " positions need ", need, " blocks of ", bt,
          " tokens, the cache has ", config_.num_blocks, " in all"));
    }
    table->push_back(b);
  }
  return absl::OkStatus();
}

void KvCache::Ref(BlockId id) { ++ref_counts_[id]; }

void KvCache::Unref(BlockId id) {
  if (--ref_counts_[id] == 0) free_.push_back(id);
}

}  // namespace crescent::engine
