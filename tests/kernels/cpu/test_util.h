// Helpers shared by the CPU kernel tests: the instruction-set levels to loop over, random data,
// and a reference decoder written element by element from the GGUF block layouts (deliberately
// in a different shape from the library's loop-based decoders).
#ifndef CRESCENT_TESTS_KERNELS_CPU_TEST_UTIL_H_
#define CRESCENT_TESTS_KERNELS_CPU_TEST_UTIL_H_

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/types.h"

namespace crescent::kernels::testing {

// Every level this machine can run, lowest first.
inline std::vector<Isa> AvailableIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni}) {
    if (isa <= DetectIsa()) out.push_back(isa);
  }
  return out;
}

// Forces an ISA for the lifetime of the object.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) { SetIsaForTesting(isa); }
  ~ScopedIsa() { ClearIsaForTesting(); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;
};

inline std::vector<float> RandomFloats(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

inline float HalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

// Six-bit scale and min j (0..7) of a Q4_K / Q5_K block's 12-byte field.
inline void Scale6(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Value e of a row encoded as `type`, decoded straight from the layout.
inline double RefValue(GgmlType type, const uint8_t* row, int64_t e) {
  switch (type) {
    case GgmlType::kF32: {
      float v;
      std::memcpy(&v, row + 4 * e, 4);
      return v;
    }
    case GgmlType::kF16:
      return HalfAt(row + 2 * e);
    case GgmlType::kBF16: {
      uint16_t h;
      std::memcpy(&h, row + 2 * e, 2);
      return BF16ToF32(h);
    }
    case GgmlType::kQ4_0: {
      const uint8_t* b = row + (e / 32) * 18;
      const int l = static_cast<int>(e % 32);
      const int nib = l < 16 ? (b[2 + l] & 15) : (b[2 + l - 16] >> 4);
      return HalfAt(b) * (nib - 8);
    }
    case GgmlType::kQ4_1: {
      const uint8_t* b = row + (e / 32) * 20;
      const int l = static_cast<int>(e % 32);
      const int nib = l < 16 ? (b[4 + l] & 15) : (b[4 + l - 16] >> 4);
      return static_cast<double>(HalfAt(b)) * nib + HalfAt(b + 2);
    }
    case GgmlType::kQ8_0: {
      const uint8_t* b = row + (e / 32) * 34;
      return static_cast<double>(HalfAt(b)) * static_cast<int8_t>(b[2 + e % 32]);
    }
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K: {
      const bool five = type == GgmlType::kQ5_K;
      const uint8_t* b = row + (e / 256) * (five ? 176 : 144);
      const int l = static_cast<int>(e % 256), sub = l / 32;
      const uint8_t byte = b[(five ? 48 : 16) + (sub / 2) * 32 + l % 32];
      int q = sub % 2 ? byte >> 4 : byte & 15;
      if (five) q |= ((b[16 + l % 32] >> sub) & 1) << 4;
      int sc, m;
      Scale6(b + 4, sub, &sc, &m);
      return static_cast<double>(HalfAt(b)) * sc * q - static_cast<double>(HalfAt(b + 2)) * m;
    }
    case GgmlType::kQ6_K: {
      const uint8_t* b = row + (e / 256) * 210;
      const int l = static_cast<int>(e % 256), half = l / 128, k = (l % 128) / 32, i = l % 32;
      const int low = (b[64 * half + i + 32 * (k & 1)] >> (4 * (k >> 1))) & 15;
      const int high = (b[128 + 32 * half + i] >> (2 * k)) & 3;
      const int sc = static_cast<int8_t>(b[192 + l / 16]);
      return static_cast<double>(HalfAt(b + 208)) * sc * ((low | (high << 4)) - 32);
    }
    default:
      return 0;
  }
}

}  // namespace crescent::kernels::testing

#endif  // CRESCENT_TESTS_KERNELS_CPU_TEST_UTIL_H_
