// Block hash chain (DESIGN.md "Data formats"): the name of a block of KV in every node's prefix
// cache and in the pool.
//
//   seed   = xxh3_64(model fingerprint, salt)
//   h[0]   = xxh3_64(seed, 0, tokens of block 0)   (as little-endian u64 / i32 bytes)
//   h[i]   = xxh3_64(seed, h[i-1], tokens of block i)
//
// Only full blocks are hashed. The value depends on nothing but the model fingerprint, the salt,
// block_tokens and the tokens: it is the same in every process, on every host, after restarts.
#ifndef CRESCENT_SRC_ENGINE_BLOCK_HASH_H_
#define CRESCENT_SRC_ENGINE_BLOCK_HASH_H_

#include <cstdint>
#include <span>
#include <vector>

namespace crescent::engine {

// The chain's seed for a model (LoadedModel::fingerprint) and a tenant salt (0 = shared).
uint64_t BlockHashSeed(uint64_t model_fingerprint, uint64_t salt);

// Hash of one block given its predecessor's hash (0 for the first block).
// REQUIRES: block.size() == block_tokens of the cluster.
uint64_t ChainBlockHash(uint64_t seed, uint64_t previous, std::span<const int32_t> block);

// Hashes of the full blocks of `tokens`: tokens.size() / block_tokens values.
// REQUIRES: block_tokens > 0. Pure, thread-safe.
std::vector<uint64_t> BlockHashes(uint64_t seed, std::span<const int32_t> tokens,
                                  int block_tokens);

}  // namespace crescent::engine

#endif  // CRESCENT_SRC_ENGINE_BLOCK_HASH_H_
