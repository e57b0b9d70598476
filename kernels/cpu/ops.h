// Row operations of a transformer layer, single-threaded (callers parallelize over rows),
// vectorized for ActiveIsa() where it matters. All thread-safe; none allocates on the heap.
// Unless stated otherwise, in and out may be the same buffer.
#ifndef CRESCENT_KERNELS_CPU_OPS_H_
#define CRESCENT_KERNELS_CPU_OPS_H_

#include <cstdint>

#include "kernels/cpu/types.h"

namespace crescent::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; w == nullptr means all ones. REQUIRES: n > 0.
void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* out);

enum class RopeMode {
  kNormal,  // rotates adjacent pairs (x[2i], x[2i+1]): GGUF llama-family models.
  kNeox,    // rotates (x[i], x[i + rot_dim/2]): NeoX / Qwen2 style.
};

// Rotary position embedding, in place, for one token's heads: x is [n_heads][head_dim]. Pair i
// (i < rot_dim/2) turns by angle pos * freq_scale * freq_base^(-2i/rot_dim) (computed in
// double); dimensions from rot_dim on are left as they are.
// REQUIRES: rot_dim even, 0 < rot_dim <= head_dim <= 1024.
void Rope(float* x, int n_heads, int head_dim, int rot_dim, int64_t pos, float freq_base,
          float freq_scale, RopeMode mode);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
void SwiGLU(const float* gate, const float* up, float* out, int64_t n);

// Softmax in place over x[0..n): stable (subtracts the max); entries of -inf become 0.
// REQUIRES: n > 0 and at least one entry > -inf.
void Softmax(float* x, int64_t n);

// The lowest index of the largest element of x[0..n) (greedy sampling over logits). NaNs are
// skipped; 0 when n == 0 or every element is NaN.
int64_t ArgMax(const float* x, int64_t n);

// e^x in double, the same bits on every ISA and every platform with IEEE doubles: no libm, no
// fused multiply-add (the sampler weighs tokens with it, so that a seed gives the same tokens
// everywhere). 0 for x <= -708 (below the normal range), -inf and NaN; 1 for x >= 0 (callers
// pass x <= 0). Relative error below 1e-15.
double PortableExp(double x);

// out[i] = PortableExp((static_cast<double>(x[i]) - shift) * scale) for i < n, bit for bit,
// vectorized for ActiveIsa() (the sampler's weights over a whole vocabulary).
void PortableExpScaled(const float* x, int64_t n, double shift, double scale, double* out);

// out[i] = a[i] + b[i].
void Add(const float* a, const float* b, float* out, int64_t n);

// Decodes one row of a tensor (an embedding lookup): out[0..n) from `row`, encoded as `type`.
// REQUIRES: CanDequantize(type) (quants.h), n % block_size == 0.
void GetRow(GgmlType type, const void* row, int64_t n, float* out);

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_OPS_H_
