// Token prompts for tests that drive an engine on the tiny model (tests/testing/tiny_model.h).
#ifndef CRESCENT_TESTS_TESTING_PROMPTS_H_
#define CRESCENT_TESTS_TESTING_PROMPTS_H_

#include <cstdint>
#include <vector>

namespace crescent::testing {

// A prompt of n tokens, the same for the same seed, within the tiny model's byte tokens
// [32, 232): distinct seeds give unrelated prompts (no shared prefix to hit a cache by chance).
inline std::vector<int32_t> MakePrompt(int n, int seed) {
  std::vector<int32_t> p;
  uint32_t x = 2654435761u * static_cast<uint32_t>(seed + 1);
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    p.push_back(static_cast<int32_t>(32 + (x >> 24) % 200));
  }
  return p;
}

}  // namespace crescent::testing

#endif  // CRESCENT_TESTS_TESTING_PROMPTS_H_
