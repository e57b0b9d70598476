#include "kernels/cpu/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/fp16.h"

namespace crescent::kernels {
namespace {

// Smallest half not below v (v >= 0, finite): scales rounded this way never shrink, so the
// quantized range always covers the input.
uint16_t F16RoundUp(float v) {
  uint16_t h = F32ToF16(v);
  if (F16ToF32(h) < v) ++h;
  return h;
}

int RoundToInt(float v) { return static_cast<int>(std::lround(v)); }

// ---- Dequantizers ----------------------------------------------------------------------------

void DequantQ4_0(const BlockQ4_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = F16ToF32(b[i].d);
    for (int l = 0; l < kQK / 2; ++l) {
      y[l] = d * static_cast<float>((b[i].qs[l] & 0x0F) - 8);
      y[l + kQK / 2] = d * static_cast<float>((b[i].qs[l] >> 4) - 8);
    }
  }
}

void DequantQ4_1(const BlockQ4_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = F16ToF32(b[i].d), m = F16ToF32(b[i].m);
    for (int l = 0; l < kQK / 2; ++l) {
      y[l] = d * static_cast<float>(b[i].qs[l] & 0x0F) + m;
      y[l + kQK / 2] = d * static_cast<float>(b[i].qs[l] >> 4) + m;
    }
  }
}

void DequantQ8_0(const BlockQ8_0* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = F16ToF32(b[i].d);
    for (int l = 0; l < kQK; ++l) y[l] = d * static_cast<float>(b[i].qs[l]);
  }
}

void DequantQ8_1(const BlockQ8_1* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = F16ToF32(b[i].d);
    for (int l = 0; l < kQK; ++l) y[l] = d * static_cast<float>(b[i].qs[l]);
  }
}

void DequantQ4K(const BlockQ4K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(b[i].d), dmin = F16ToF32(b[i].dmin);
    uint8_t sc[8], m[8];
    UnpackScalesK4(b[i].scales, sc, m);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      const float d_lo = d * sc[2 * c], m_lo = dmin * m[2 * c];
      const float d_hi = d * sc[2 * c + 1], m_hi = dmin * m[2 * c + 1];
      for (int l = 0; l < 32; ++l) y[l] = d_lo * static_cast<float>(q[l] & 0x0F) - m_lo;
      for (int l = 0; l < 32; ++l) y[32 + l] = d_hi * static_cast<float>(q[l] >> 4) - m_hi;
      y += 64;
    }
  }
}

void DequantQ5K(const BlockQ5K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(b[i].d), dmin = F16ToF32(b[i].dmin);
    uint8_t sc[8], m[8];
    UnpackScalesK4(b[i].scales, sc, m);
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b[i].qs + 32 * c;
      const int lo_bit = 2 * c, hi_bit = 2 * c + 1;
      const float d_lo = d * sc[lo_bit], m_lo = dmin * m[lo_bit];
      const float d_hi = d * sc[hi_bit], m_hi = dmin * m[hi_bit];
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] & 0x0F) | (((b[i].qh[l] >> lo_bit) & 1) << 4);
        y[l] = d_lo * static_cast<float>(v) - m_lo;
      }
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] >> 4) | (((b[i].qh[l] >> hi_bit) & 1) << 4);
        y[32 + l] = d_hi * static_cast<float>(v) - m_hi;
      }
      y += 64;
    }
  }
}

void DequantQ6K(const BlockQ6K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = F16ToF32(b[i].d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int q0 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        const int s = l / 16;
        y[l] = d * static_cast<float>(sc[s + 0] * q0);
        y[l + 32] = d * static_cast<float>(sc[s + 2] * q1);
        y[l + 64] = d * static_cast<float>(sc[s + 4] * q2);
        y[l + 96] = d * static_cast<float>(sc[s + 6] * q3);
      }
      y += 128;
    }
  }
}

void DequantQ8K(const BlockQ8K* b, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQKK) {
    for (int l = 0; l < kQKK; ++l) y[l] = b[i].d * static_cast<float>(b[i].qs[l]);
  }
}

// ---- Quantizers ------------------------------------------------------------------------------

void QuantQ4_0(const float* x, BlockQ4_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0, max = 0;  // max: the value of largest magnitude, with its sign.
    for (int l = 0; l < kQK; ++l) {
      if (std::fabs(x[l]) > amax) {
        amax = std::fabs(x[l]);
        max = x[l];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = F32ToF16(d);
    for (int l = 0; l < kQK / 2; ++l) {
      const int q0 = std::min(15, static_cast<int>(x[l] * id + 8.5f));
      const int q1 = std::min(15, static_cast<int>(x[l + kQK / 2] * id + 8.5f));
      b[i].qs[l] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void QuantQ4_1(const float* x, BlockQ4_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min = x[0], max = x[0];
    for (int l = 1; l < kQK; ++l) {
      min = std::min(min, x[l]);
      max = std::max(max, x[l]);
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = F32ToF16(d);
    b[i].m = F32ToF16(min);
    for (int l = 0; l < kQK / 2; ++l) {
      const int q0 = std::min(15, static_cast<int>((x[l] - min) * id + 0.5f));
      const int q1 = std::min(15, static_cast<int>((x[l + kQK / 2] - min) * id + 0.5f));
      b[i].qs[l] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// Shared by Q8_0 and Q8_1: returns sum(qs).
int Quant8Block(const float* x, int8_t* qs, float* d_out) {
  float amax = 0;
  for (int l = 0; l < kQK; ++l) amax = std::max(amax, std::fabs(x[l]));
  const float d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  int sum = 0;
  for (int l = 0; l < kQK; ++l) {
    qs[l] = static_cast<int8_t>(RoundToInt(x[l] * id));
    sum += qs[l];
  }
  *d_out = d;
  return sum;
}

void QuantQ8_0(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float d;
    Quant8Block(x, b[i].qs, &d);
    b[i].d = F32ToF16(d);
  }
}

void QuantQ8_1(const float* x, BlockQ8_1* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float d;
    const int sum = Quant8Block(x, b[i].qs, &d);
    b[i].d = F32ToF16(d);
    b[i].s = F32ToF16(d * static_cast<float>(sum));
  }
}

void QuantQ8K(const float* x, BlockQ8K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float amax = 0;
    for (int l = 0; l < kQKK; ++l) amax = std::max(amax, std::fabs(x[l]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    b[i].d = d;
    for (int l = 0; l < kQKK; ++l) b[i].qs[l] = static_cast<int8_t>(RoundToInt(x[l] * id));
    for (int j = 0; j < kQKK / 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b[i].qs[16 * j + l];
      b[i].bsums[j] = static_cast<int16_t>(sum);
    }
  }
}

// Q4_K / Q5_K: per sub-block of 32, an unsigned code q in [0, levels] with value
// d*sc*q - dmin*m. Mins are rounded up and scales then sized so that [-dmin*m, -dmin*m +
// levels*d*sc] covers the sub-block, hence every value is within half a step of its input.
void QuantKAsymmetric(const float* x, int levels, uint16_t* d_out, uint16_t* dmin_out,
                      uint8_t scales[12], uint8_t q[kQKK]) {
  float mins[8], maxs[8];
  float max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float mn = 0, mx = 0;  // mn <= 0 <= mx: the min is stored as a non-negative offset.
    for (int l = 0; l < 32; ++l) {
      mn = std::min(mn, x[32 * j + l]);
      mx = std::max(mx, x[32 * j + l]);
    }
    mins[j] = -mn;
    maxs[j] = mx;
    max_min = std::max(max_min, mins[j]);
  }
  const uint16_t dmin_h = F16RoundUp(max_min / 63.0f);
  const float dmin = F16ToF32(dmin_h);
  uint8_t m[8], sc[8];
  float eff_min[8], need[8];
  float max_need = 0;
  for (int j = 0; j < 8; ++j) {
    const int mj = dmin > 0 ? std::min(63, static_cast<int>(std::ceil(mins[j] / dmin))) : 0;
    m[j] = static_cast<uint8_t>(mj);
    eff_min[j] = dmin * static_cast<float>(mj);
    need[j] = (maxs[j] + eff_min[j]) / static_cast<float>(levels);
    max_need = std::max(max_need, need[j]);
  }
  const uint16_t d_h = F16RoundUp(max_need / 63.0f);
  const float d = F16ToF32(d_h);
  for (int j = 0; j < 8; ++j) {
    const int sj = d > 0 ? std::min(63, static_cast<int>(std::ceil(need[j] / d))) : 0;
    sc[j] = static_cast<uint8_t>(sj);
    const float step = d * static_cast<float>(sj);
    const float inv = step > 0 ? 1.0f / step : 0.0f;
    for (int l = 0; l < 32; ++l) {
      const int v = RoundToInt((x[32 * j + l] + eff_min[j]) * inv);
      q[32 * j + l] = static_cast<uint8_t>(std::clamp(v, 0, levels));
    }
  }
  *d_out = d_h;
  *dmin_out = dmin_h;
  PackScalesK4(sc, m, scales);
}

void QuantQ4K(const float* x, BlockQ4K* b, int64_t nb) {
  uint8_t q[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    QuantKAsymmetric(x, 15, &b[i].d, &b[i].dmin, b[i].scales, q);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        b[i].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
      }
    }
  }
}

void QuantQ5K(const float* x, BlockQ5K* b, int64_t nb) {
  uint8_t q[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    QuantKAsymmetric(x, 31, &b[i].d, &b[i].dmin, b[i].scales, q);
    std::memset(b[i].qh, 0, sizeof(b[i].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b[i].qs[32 * c + l] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
        b[i].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

void QuantQ6K(const float* x, BlockQ6K* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float need[16];
    float max_need = 0;
    for (int j = 0; j < 16; ++j) {
      float amax = 0;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * j + l]));
      need[j] = amax / 31.0f;  // codes -31..31 of the available -32..31.
      max_need = std::max(max_need, need[j]);
    }
    const uint16_t d_h = F16RoundUp(max_need / 127.0f);
    const float d = F16ToF32(d_h);
    uint8_t q[kQKK];
    for (int j = 0; j < 16; ++j) {
      const int sj = d > 0 ? std::min(127, static_cast<int>(std::ceil(need[j] / d))) : 0;
      b[i].scales[j] = static_cast<int8_t>(sj);
      const float step = d * static_cast<float>(sj);
      const float inv = step > 0 ? 1.0f / step : 0.0f;
      for (int l = 0; l < 16; ++l) {
        const int v = std::clamp(RoundToInt(x[16 * j + l] * inv), -32, 31);
        q[16 * j + l] = static_cast<uint8_t>(v + 32);
      }
    }
    b[i].d = d_h;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int q0 = qq[l], q1 = qq[l + 32], q2 = qq[l + 64], q3 = qq[l + 96];
        b[i].ql[64 * h + l] = static_cast<uint8_t>((q0 & 0x0F) | ((q2 & 0x0F) << 4));
        b[i].ql[64 * h + l + 32] = static_cast<uint8_t>((q1 & 0x0F) | ((q3 & 0x0F) << 4));
        b[i].qh[32 * h + l] = static_cast<uint8_t>((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) |
                                                   ((q3 >> 4) << 6));
      }
    }
  }
}

}  // namespace

void UnpackScalesK4(const uint8_t packed[12], uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = packed[j] & 63;
    m[j] = packed[j + 4] & 63;
    sc[j + 4] = static_cast<uint8_t>((packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4));
    m[j + 4] = static_cast<uint8_t>((packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4));
  }
}

void PackScalesK4(const uint8_t sc[8], const uint8_t m[8], uint8_t packed[12]) {
  for (int j = 0; j < 4; ++j) {
    packed[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    packed[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    packed[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
  }
}

bool CanDequantize(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ8_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
    case GgmlType::kQ8_K:
      return true;
    default:
      return false;
  }
}

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  const int64_t nb32 = n / kQK, nbk = n / kQKK;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16:
      F16ToF32Row(static_cast<const uint16_t*>(src), dst, n);
      return;
    case GgmlType::kBF16:
      BF16ToF32Row(static_cast<const uint16_t*>(src), dst, n);
      return;
    case GgmlType::kQ4_0:
      DequantQ4_0(static_cast<const BlockQ4_0*>(src), dst, nb32);
      return;
    case GgmlType::kQ4_1:
      DequantQ4_1(static_cast<const BlockQ4_1*>(src), dst, nb32);
      return;
    case GgmlType::kQ8_0:
      DequantQ8_0(static_cast<const BlockQ8_0*>(src), dst, nb32);
      return;
    case GgmlType::kQ8_1:
      DequantQ8_1(static_cast<const BlockQ8_1*>(src), dst, nb32);
      return;
    case GgmlType::kQ4_K:
      DequantQ4K(static_cast<const BlockQ4K*>(src), dst, nbk);
      return;
    case GgmlType::kQ5_K:
      DequantQ5K(static_cast<const BlockQ5K*>(src), dst, nbk);
      return;
    case GgmlType::kQ6_K:
      DequantQ6K(static_cast<const BlockQ6K*>(src), dst, nbk);
      return;
    case GgmlType::kQ8_K:
      DequantQ8K(static_cast<const BlockQ8K*>(src), dst, nbk);
      return;
    default:
      return;
  }
}

bool QuantizeRow(GgmlType type, const float* src, void* dst, int64_t n) {
  const int64_t nb32 = n / kQK, nbk = n / kQKK;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return true;
    case GgmlType::kF16:
      F32ToF16Row(src, static_cast<uint16_t*>(dst), n);
      return true;
    case GgmlType::kBF16:
      F32ToBF16Row(src, static_cast<uint16_t*>(dst), n);
      return true;
    case GgmlType::kQ4_0:
      QuantQ4_0(src, static_cast<BlockQ4_0*>(dst), nb32);
      return true;
    case GgmlType::kQ4_1:
      QuantQ4_1(src, static_cast<BlockQ4_1*>(dst), nb32);
      return true;
    case GgmlType::kQ8_0:
      QuantQ8_0(src, static_cast<BlockQ8_0*>(dst), nb32);
      return true;
    case GgmlType::kQ8_1:
      QuantQ8_1(src, static_cast<BlockQ8_1*>(dst), nb32);
      return true;
    case GgmlType::kQ8_K:
      QuantQ8K(src, static_cast<BlockQ8K*>(dst), nbk);
      return true;
    case GgmlType::kQ4_K:
      QuantQ4K(src, static_cast<BlockQ4K*>(dst), nbk);
      return true;
    case GgmlType::kQ5_K:
      QuantQ5K(src, static_cast<BlockQ5K*>(dst), nbk);
      return true;
    case GgmlType::kQ6_K:
      QuantQ6K(src, static_cast<BlockQ6K*>(dst), nbk);
      return true;
    default:
      return false;
  }
}

}  // namespace crescent::kernels
