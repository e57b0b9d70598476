// Portable matmul kernels: the same integer arithmetic as the SIMD versions, one output at a
// time. The reference the vector kernels are tested against, and the fallback for old CPUs.
#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal/matmul_internal.h"
#include "kernels/cpu/quants.h"

namespace crescent::kernels::internal {
namespace {

float DotQ4_0(const BlockQ4_0* w, const QuantizedX& x, int64_t i) {
  const int8_t* xq = x.qs + i * x.nb * kQK;
  const float* xd = x.d + i * x.nb;
  float sum = 0;
  for (int64_t b = 0; b < x.nb; ++b, xq += kQK) {
    int dot = 0;
    for (int l = 0; l < kQK / 2; ++l) {
      dot += ((w[b].qs[l] & 0x0F) - 8) * xq[l] + ((w[b].qs[l] >> 4) - 8) * xq[l + kQK / 2];
    }
    sum += F16ToF32(w[b].d) * xd[b] * static_cast<float>(dot);
  }
  return sum;
}

float DotQ4_1(const BlockQ4_1* w, const QuantizedX& x, int64_t i) {
  const int8_t* xq = x.qs + i * x.nb * kQK;
  const float* xd = x.d + i * x.nb;
  const float* xs = x.ds + i * x.nb;
  float sum = 0;
  for (int64_t b = 0; b < x.nb; ++b, xq += kQK) {
    int dot = 0;
    for (int l = 0; l < kQK / 2; ++l) {
      dot += (w[b].qs[l] & 0x0F) * xq[l] + (w[b].qs[l] >> 4) * xq[l + kQK / 2];
    }
    sum += F16ToF32(w[b].d) * xd[b] * static_cast<float>(dot) + F16ToF32(w[b].m) * xs[b];
  }
  return sum;
}

float DotQ8_0(const BlockQ8_0* w, const QuantizedX& x, int64_t i) {
  const int8_t* xq = x.qs + i * x.nb * kQK;
  const float* xd = x.d + i * x.nb;
  float sum = 0;
  for (int64_t b = 0; b < x.nb; ++b, xq += kQK) {
    int dot = 0;
    for (int l = 0; l < kQK; ++l) dot += w[b].qs[l] * xq[l];
    sum += F16ToF32(w[b].d) * xd[b] * static_cast<float>(dot);
  }
  return sum;
}

float DotQ4K(const BlockQ4K* w, const QuantizedX& x, int64_t i) {
  const XBlockK* xb = x.xk + i * x.nb;
  float sum = 0;
  for (int64_t b = 0; b < x.nb; ++b) {
    uint8_t sc[8], mn[8];
    UnpackScalesK4(w[b].scales, sc, mn);
    int dot = 0, min_dot = 0;
    for (int j = 0; j < 8; ++j) {
      const uint8_t* q = w[b].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      int sub = 0;
      for (int l = 0; l < 32; ++l) sub += ((q[l] >> shift) & 0x0F) * xb[b].qs[32 * j + l];
      dot += sc[j] * sub;
      min_dot += mn[j] * xb[b].bsum32[j];
    }
    sum += xb[b].d * (F16ToF32(w[b].d) * static_cast<float>(dot) -
                      F16ToF32(w[b].dmin) * static_cast<float>(min_dot));
  }
  return sum;
}

float DotQ5K(const BlockQ5K* w, const QuantizedX& x, int64_t i) {
  const XBlockK* xb = x.xk + i * x.nb;
  float sum = 0;
  for (int64_t b = 0; b < x.nb; ++b) {
    uint8_t sc[8], mn[8];
    UnpackScalesK4(w[b].scales, sc, mn);
    int dot = 0, min_dot = 0;
    for (int j = 0; j < 8; ++j) {
      const uint8_t* q = w[b].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      int sub = 0;
      for (int l = 0; l < 32; ++l) {
        const int v = ((q[l] >> shift) & 0x0F) | (((w[b].qh[l] >> j) & 1) << 4);
        sub += v * xb[b].qs[32 * j + l];
      }
      dot += sc[j] * sub;
      min_dot += mn[j] * xb[b].bsum32[j];
    }
    sum += xb[b].d * (F16ToF32(w[b].d) * static_cast<float>(dot) -
                      F16ToF32(w[b].dmin) * static_cast<float>(min_dot));
  }
  return sum;
}

float DotQ6K(const BlockQ6K* w, const QuantizedX& x, int64_t i) {
  const XBlockK* xb = x.xk + i * x.nb;
  float sum = 0;
  for (int64_t b = 0; b < x.nb; ++b) {
    int dot = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[b].ql + 64 * h;
      const uint8_t* qh = w[b].qh + 32 * h;
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const int low = (ql[l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0x0F;
          const int v = (low | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
          const int e = 128 * h + 32 * k + l;
          dot += w[b].scales[e / 16] * v * xb[b].qs[e];
        }
      }
    }
    sum += xb[b].d * F16ToF32(w[b].d) * static_cast<float>(dot);
  }
  return sum;
}

template <typename LoadFn>
float DotFloat(const uint8_t* row, const float* x, int64_t k, LoadFn load) {
  float sum = 0;
  for (int64_t j = 0; j < k; ++j) sum += load(row, j) * x[j];
  return sum;
}

float DotF(GgmlType type, const uint8_t* row, const float* x, int64_t k) {
  switch (type) {
    case GgmlType::kF32:
      return DotFloat(row, x, k, [](const uint8_t* r, int64_t j) {
        float v;
        std::memcpy(&v, r + 4 * j, 4);
        return v;
      });
    case GgmlType::kF16:
      return DotFloat(row, x, k, [](const uint8_t* r, int64_t j) {
        uint16_t h;
        std::memcpy(&h, r + 2 * j, 2);
        return F16ToF32(h);
      });
    default:
      return DotFloat(row, x, k, [](const uint8_t* r, int64_t j) {
        uint16_t h;
        std::memcpy(&h, r + 2 * j, 2);
        return BF16ToF32(h);
      });
  }
}

}  // namespace

void GemmScalar(const MatrixView& w, const QuantizedX& x, float* y, int64_t row_begin,
                int64_t row_end) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t n = row_begin; n < row_end; ++n) {
    const uint8_t* row = base + static_cast<size_t>(n) * w.row_stride;
    for (int64_t i = 0; i < x.m; ++i) {
      float v = 0;
      switch (w.type) {
        case GgmlType::kQ4_0:
          v = DotQ4_0(reinterpret_cast<const BlockQ4_0*>(row), x, i);
          break;
        case GgmlType::kQ4_1:
          v = DotQ4_1(reinterpret_cast<const BlockQ4_1*>(row), x, i);
          break;
        case GgmlType::kQ8_0:
          v = DotQ8_0(reinterpret_cast<const BlockQ8_0*>(row), x, i);
          break;
        case GgmlType::kQ4_K:
          v = DotQ4K(reinterpret_cast<const BlockQ4K*>(row), x, i);
          break;
        case GgmlType::kQ5_K:
          v = DotQ5K(reinterpret_cast<const BlockQ5K*>(row), x, i);
          break;
        case GgmlType::kQ6_K:
          v = DotQ6K(reinterpret_cast<const BlockQ6K*>(row), x, i);
          break;
        default:
          v = DotF(w.type, row, x.xf + i * x.k, x.k);
          break;
      }
      y[i * w.rows + n] = v;
    }
  }
}

}  // namespace crescent::kernels::internal
