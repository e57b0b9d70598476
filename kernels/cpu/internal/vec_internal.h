// Private to kernels/cpu: per-ISA vector primitives behind ops, attention and the fp16 row
// converters. Not part of the library's API.
#ifndef CRESCENT_KERNELS_CPU_INTERNAL_VEC_INTERNAL_H_
#define CRESCENT_KERNELS_CPU_INTERNAL_VEC_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/cpu_features.h"

namespace crescent::kernels::internal {

struct VecKernels {
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n);
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*f32_to_bf16)(const float* src, uint16_t* dst, int64_t n);

  // out[i] = exp(x[i] - shift) for i < n (out may equal x); returns the sum of out. exp of
  // -inf is 0.
  float (*exp_shift_sum)(const float* x, float* out, int64_t n, float shift);
  // Largest x[i] (-inf for n == 0).
  float (*max)(const float* x, int64_t n);
  // The lowest i with x[i] equal to the largest number in x[0..n); NaNs are skipped. 0 when n
  // == 0 or every x[i] is NaN.
  int64_t (*argmax)(const float* x, int64_t n);
  // out[i] = x[i] * s; out may equal x.
  void (*scale)(const float* x, float s, float* out, int64_t n);
  // out[i] = a[i] * ca + b[i] * cb, the sum rounded once with the first product where the ISA
  // has FMA (the same operation for every i); out may equal a or b.
  void (*axpby)(const float* a, float ca, const float* b, float cb, float* out, int64_t n);
  // out[i] = silu(gate[i]) * up[i]; out may equal gate or up.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  // Sum of x[i]^2.
  float (*sum_squares)(const float* x, int64_t n);
  // out[i] = PortableExpScalar((static_cast<double>(x[i]) - shift) * scale), bit for bit.
  void (*portable_exp)(const float* x, int64_t n, double shift, double scale, double* out);

  // Attention pieces. q: nr rows of hd floats, contiguous. k: nt key rows of hd f16 values, row
  // t at k + t * k_stride (elements). out[r * out_stride + t] = q_r . k_t.
  void (*scores_f16)(const float* q, int nr, int hd, const uint16_t* k, size_t k_stride, int nt,
                     float* out, int out_stride);
  // acc[r * hd + j] += sum_t p[r * p_stride + t] * v_t[j], v_t at v + t * v_stride (elements).
  void (*accum_f16)(const float* p, int p_stride, int nr, const uint16_t* v, size_t v_stride,
                    int nt, int hd, float* acc);
};

// kernels::PortableExp (ops.h); the vector versions repeat its operations one for one, with
// these constants.
double PortableExpScalar(double x);
struct PortableExpConstants {
  static constexpr double kLog2e = 1.4426950408889634;
  // ln 2 split so that k * kLn2Hi is exact for |k| < 2^11 (fdlibm's constants).
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  // 1.5 * 2^52: adding it rounds to an integer.
  static constexpr double kRound = 6755399441055744.0;
  // Taylor coefficients: c[i] = 1 / i!.
  static constexpr double c[13] = {1.0,
                                   1.0,
                                   1.0 / 2.0,
                                   1.0 / 6.0,
                                   1.0 / 24.0,
                                   1.0 / 120.0,
                                   1.0 / 720.0,
                                   1.0 / 5040.0,
                                   1.0 / 40320.0,
                                   1.0 / 362880.0,
                                   1.0 / 3628800.0,
                                   1.0 / 39916800.0,
                                   1.0 / 479001600.0};
};

const VecKernels& VecKernelsScalar();
#if defined(CRESCENT_KERNELS_X86)
const VecKernels& VecKernelsAvx2();
const VecKernels& VecKernelsAvx512();
#endif

// The table for ActiveIsa().
const VecKernels& ActiveVecKernels();

}  // namespace crescent::kernels::internal

#endif  // CRESCENT_KERNELS_CPU_INTERNAL_VEC_INTERNAL_H_
