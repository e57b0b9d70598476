#include "src/engine/block_hash.h"

#include <bit>
#include <cstring>

#include "src/common/hash.h"

namespace crescent::engine {
namespace {

// The hash input is a byte string of little-endian fields; x86-64 and aarch64 (the targets)
// are little-endian, so the in-memory representation is the wire one.
static_assert(std::endian::native == std::endian::little, "block hashes assume little-endian");

}  // namespace

uint64_t BlockHashSeed(uint64_t model_fingerprint, uint64_t salt) {
  uint64_t words[2] = {model_fingerprint, salt};
  return Hash64(words, sizeof(words), 0);
}

uint64_t ChainBlockHash(uint64_t seed, uint64_t previous, std::span<const int32_t> block) {
  // One contiguous buffer and one XXH3 call (equal to hashing the pieces incrementally):
  // seed, previous, then the token ids.
  thread_local std::vector<uint8_t> buffer;
  const size_t token_bytes = block.size() * sizeof(int32_t);
  buffer.resize(2 * sizeof(uint64_t) + token_bytes);
  std::memcpy(buffer.data(), &seed, sizeof(seed));
  std::memcpy(buffer.data() + sizeof(seed), &previous, sizeof(previous));
  if (token_bytes > 0) {
    std::memcpy(buffer.data() + 2 * sizeof(uint64_t), block.data(), token_bytes);
  }
  return Hash64(buffer.data(), buffer.size(), 0);
}

std::vector<uint64_t> BlockHashes(uint64_t seed, std::span<const int32_t> tokens,
                                  int block_tokens) {
  std::vector<uint64_t> hashes;
  const size_t n = tokens.size() / static_cast<size_t>(block_tokens);
  hashes.reserve(n);
  uint64_t previous = 0;
  for (size_t i = 0; i < n; ++i) {
    previous = ChainBlockHash(seed, previous, tokens.subspan(i * block_tokens, block_tokens));
    hashes.push_back(previous);
  }
  return hashes;
}

}  // namespace crescent::engine
