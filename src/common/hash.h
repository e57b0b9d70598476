// Hashing: xxHash's XXH3, the one hash for block chains, checksums and shard picking.
#ifndef CRESCENT_SRC_COMMON_HASH_H_
#define CRESCENT_SRC_COMMON_HASH_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace crescent {

// XXH3-64 of `len` bytes at `data` with `seed`. Deterministic across processes and hosts.
uint64_t Hash64(const void* data, size_t len, uint64_t seed = 0);
inline uint64_t Hash64(std::string_view s, uint64_t seed = 0) {
  return Hash64(s.data(), s.size(), seed);
}

// Incremental XXH3-64 over several pieces; the result equals Hash64 of their concatenation.
class Hasher {
 public:
  explicit Hasher(uint64_t seed = 0);
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Update(const void* data, size_t len);
  void UpdateU64(uint64_t v) { Update(&v, sizeof(v)); }
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t, kept opaque so that xxhash.h stays out of this header.
};

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_HASH_H_
