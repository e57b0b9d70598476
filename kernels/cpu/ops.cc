#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/internal/vec_internal.h"
#include "kernels/cpu/quants.h"

namespace crescent::kernels {

void RmsNorm(const float* x, const float* w, int64_t n, float eps, float* out) {
  const float ss = internal::ActiveVecKernels().sum_squares(x, n);
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  if (w == nullptr) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale;
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
  }
}

namespace {

// The cos/sin table of the last (pos, base, scale, rot_dim) this thread used: a layer's Q and
// K, and every layer of a step, share it.
struct RopeTable {
  int64_t pos = -1;
  float base = 0;
  float scale = 0;
  int rot_dim = 0;
  float cos[512];
  float sin[512];
};

const RopeTable& GetRopeTable(int64_t pos, float base, float scale, int rot_dim) {
  thread_local RopeTable t;
  if (t.pos != pos || t.base != base || t.scale != scale || t.rot_dim != rot_dim) {
    const int half = rot_dim / 2;
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(static_cast<double>(base), -2.0 * i / rot_dim);
      const double theta = static_cast<double>(pos) * static_cast<double>(scale) * inv_freq;
      t.cos[i] = static_cast<float>(std::cos(theta));
      t.sin[i] = static_cast<float>(std::sin(theta));
    }
    t.pos = pos;
    t.base = base;
    t.scale = scale;
    t.rot_dim = rot_dim;
  }
  return t;
}

}  // namespace

void Rope(float* x, int n_heads, int head_dim, int rot_dim, int64_t pos, float freq_base,
          float freq_scale, RopeMode mode) {
  const RopeTable& t = GetRopeTable(pos, freq_base, freq_scale, rot_dim);
  const int half = rot_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    if (mode == RopeMode::kNormal) {
      for (int i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * t.cos[i] - b * t.sin[i];
        v[2 * i + 1] = a * t.sin[i] + b * t.cos[i];
      }
    } else {
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * t.cos[i] - b * t.sin[i];
        v[i + half] = a * t.sin[i] + b * t.cos[i];
      }
    }
  }
}

void SwiGLU(const float* gate, const float* up, float* out, int64_t n) {
  internal::ActiveVecKernels().silu_mul(gate, up, out, n);
}

void Softmax(float* x, int64_t n) {
  const internal::VecKernels& vk = internal::ActiveVecKernels();
  const float sum = vk.exp_shift_sum(x, x, n, vk.max(x, n));
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

int64_t ArgMax(const float* x, int64_t n) { return internal::ActiveVecKernels().argmax(x, n); }

double PortableExp(double x) { return internal::PortableExpScalar(x); }

void PortableExpScaled(const float* x, int64_t n, double shift, double scale, double* out) {
  internal::ActiveVecKernels().portable_exp(x, n, shift, scale, out);
}

void Add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void GetRow(GgmlType type, const void* row, int64_t n, float* out) {
  DequantizeRow(type, row, out, n);
}

}  // namespace crescent::kernels
