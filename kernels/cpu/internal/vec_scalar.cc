// Portable versions of the vector primitives, and the per-ISA table lookup.
#include <bit>
#include <cmath>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal/vec_internal.h"

namespace crescent::kernels::internal {

// No a * b + c below may become one fused multiply-add: that would change the last bits on
// machines that have it (clang contracts by default; GCC does when FMA is enabled).
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

double PortableExpScalar(double x) {
  if (!(x > -708.0)) return 0.0;  // below the normal range, -inf and NaN.
  if (x > 0.0) x = 0.0;
  using K = PortableExpConstants;
  const double* c = K::c;
  const double kd = (x * K::kLog2e + K::kRound) - K::kRound;
  const double r = (x - kd * K::kLn2Hi) - kd * K::kLn2Lo;  // |r| <= ln2 / 2
  // Taylor series to degree 12 (remainder below 2e-16 relative on |r| <= ln2 / 2), evaluated by
  // Estrin's scheme: a shallow tree instead of Horner's 24-deep chain of dependent operations.
  const double r2 = r * r;
  const double r4 = r2 * r2;
  const double r8 = r4 * r4;
  const double p01 = 1.0 + r;
  const double p23 = c[2] + c[3] * r;
  const double p45 = c[4] + c[5] * r;
  const double p67 = c[6] + c[7] * r;
  const double p89 = c[8] + c[9] * r;
  const double p1011 = c[10] + c[11] * r;
  const double p03 = p01 + r2 * p23;
  const double p47 = p45 + r2 * p67;
  const double p811 = p89 + r2 * p1011;
  const double p812 = p811 + r4 * c[12];
  const double p07 = p03 + r4 * p47;
  const double p = p07 + r8 * p812;
  const auto k = static_cast<int64_t>(kd);  // in [-1022, 0]
  return p * std::bit_cast<double>(static_cast<uint64_t>(k + 1023) << 52);
}

#if !defined(__clang__) && defined(__GNUC__)
#pragma GCC pop_options
#endif

namespace {

void PortableExpLoop(const float* x, int64_t n, double shift, double scale, double* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = PortableExpScalar((static_cast<double>(x[i]) - shift) * scale);
  }
}

void F16ToF32Scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(src[i]);
}
void F32ToF16Scalar(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToF16(src[i]);
}
void BF16ToF32Scalar(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToF32(src[i]);
}
void F32ToBF16Scalar(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = F32ToBF16(src[i]);
}

float ExpShiftSumScalar(const float* x, float* out, int64_t n, float shift) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::exp(x[i] - shift);
    sum += out[i];
  }
  return sum;
}

float MaxScalar(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

int64_t ArgMaxScalar(const float* x, int64_t n) {
  const float m = MaxScalar(x, n);
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] == m) return i;
  }
  return 0;  // n == 0, or only NaNs
}

void ScaleScalar(const float* x, float s, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s;
}

void AxpbyScalar(const float* a, float ca, const float* b, float cb, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * ca + b[i] * cb;
}

void SiluMulScalar(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

float SumSquaresScalar(const float* x, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

void ScoresF16Scalar(const float* q, int nr, int hd, const uint16_t* k, size_t k_stride, int nt,
                     float* out, int out_stride) {
  for (int t = 0; t < nt; ++t) {
    const uint16_t* kt = k + t * k_stride;
    for (int r = 0; r < nr; ++r) {
      float s = 0;
      for (int j = 0; j < hd; ++j) s += q[r * hd + j] * F16ToF32(kt[j]);
      out[r * out_stride + t] = s;
    }
  }
}

void AccumF16Scalar(const float* p, int p_stride, int nr, const uint16_t* v, size_t v_stride,
                    int nt, int hd, float* acc) {
  for (int t = 0; t < nt; ++t) {
    const uint16_t* vt = v + t * v_stride;
    for (int r = 0; r < nr; ++r) {
      const float pr = p[r * p_stride + t];
      for (int j = 0; j < hd; ++j) acc[r * hd + j] += pr * F16ToF32(vt[j]);
    }
  }
}

}  // namespace

const VecKernels& VecKernelsScalar() {
  static const VecKernels k = {.f16_to_f32 = F16ToF32Scalar,
                               .f32_to_f16 = F32ToF16Scalar,
                               .bf16_to_f32 = BF16ToF32Scalar,
                               .f32_to_bf16 = F32ToBF16Scalar,
                               .exp_shift_sum = ExpShiftSumScalar,
                               .max = MaxScalar,
                               .argmax = ArgMaxScalar,
                               .scale = ScaleScalar,
                               .axpby = AxpbyScalar,
                               .silu_mul = SiluMulScalar,
                               .sum_squares = SumSquaresScalar,
                               .portable_exp = PortableExpLoop,
                               .scores_f16 = ScoresF16Scalar,
                               .accum_f16 = AccumF16Scalar};
  return k;
}

const VecKernels& ActiveVecKernels() {
#if defined(CRESCENT_KERNELS_X86)
  switch (ActiveIsa()) {
    case Isa::kAvx512Vnni:
      return VecKernelsAvx512();
    case Isa::kAvx2:
      return VecKernelsAvx2();
    case Isa::kScalar:
      break;
  }
#endif
  return VecKernelsScalar();
}

}  // namespace crescent::kernels::internal
