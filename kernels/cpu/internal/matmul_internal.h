// Private to kernels/cpu: the quantized-activation formats the matmul kernels consume and the
// per-ISA kernel entry points. Not part of the library's API.
#ifndef CRESCENT_KERNELS_CPU_INTERNAL_MATMUL_INTERNAL_H_
#define CRESCENT_KERNELS_CPU_INTERNAL_MATMUL_INTERNAL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/types.h"

namespace crescent::kernels::internal {

// One activation super-block of 256 values for the K-quant kernels: like ggml's Q8_K, plus the
// sums over each 32 values that Q4_K/Q5_K's mins need, laid out so that qs starts a cache line.
struct alignas(64) XBlockK {
  int8_t qs[256];      // value = d * qs.
  int16_t bsum16[16];  // sum of qs[16j .. 16j+15].
  int16_t bsum32[8];   // sum of qs[32j .. 32j+31].
  float d;
};
static_assert(sizeof(XBlockK) == 320);

// A group of activations for the SIMD kernels: 8 blocks of 32 values (weights Q4_0, Q4_1,
// Q8_0) or one super-block of 256 (Q4_K, Q5_K, Q6_K), "lane-interleaved": in q[k], the 4 bytes
// of 32-bit lane j belong to block j (K-quants: to one sub-block), so that 8 vpdpbusd over
// k = 0..7 leave each block's whole dot product in its own lane and the float scaling is done
// once per 8 blocks. Which 4 values of a block sit in q[k] follows how the weight decoder
// unpacks its type (see QuantizeRowsGrouped in matmul.cc).
struct alignas(64) XGroup8 {
  int8_t q[8][32];
  int32_t bias[2][8];  // start values of the integer dots, per lane (Q6_K: one set per half).
  float scale[8];      // x's scale per lane.
  float aux[8];        // Q4_1: scale * sum(q) per block; Q4_K / Q5_K: scale * sum(q) over the
                       // lane's sub-block (the partner of the mins).
};
static_assert(sizeof(XGroup8) == 384);

// For Q4_0 / Q4_1 weights, XGroup8::q[kQ4Slot[k]] holds the values the decoders call k (the AVX-512
// decoder produces them in zmm pairs (0, 2), (1, 3), (4, 6), (5, 7), so they are stored in that
// order). Other types store k in q[k].
inline constexpr int kQ4Slot[8] = {0, 2, 1, 3, 4, 6, 5, 7};

// The activations x (m rows of k values), prepared for one weight type and ISA family. Only the
// members of that layout are set. Not owning: points into a per-thread workspace and into x.
struct QuantizedX {
  GgmlType wtype = GgmlType::kF32;
  int64_t m = 0;
  int64_t k = 0;
  int64_t nb = 0;  // blocks (32 or 256 values) per row.

  // Natural layouts, for the scalar kernels.
  // Q4_0 / Q4_1 / Q8_0 weights: 8-bit blocks of 32, row i at offset i * nb (blocks).
  const int8_t* qs = nullptr;  // [m][nb][32]; value = d * qs.
  const float* d = nullptr;    // [m][nb]
  const float* ds = nullptr;   // [m][nb] d * sum(qs): the partner of Q4_1's mins.
  // Q4_K / Q5_K / Q6_K weights.
  const XBlockK* xk = nullptr;  // [m][nb]

  // Grouped layout, for the SIMD kernels (quantized weight types).
  const XGroup8* xg = nullptr;  // [m][ng]
  int64_t ng = 0;               // groups per row.

  // F32 / F16 / BF16 weights: x itself.
  const float* xf = nullptr;  // [m][k]
};

// Fills rows [row_begin, row_end) of the grouped layout x.xg (x.ng groups per row) from the f32
// activations `src` (k values per row) for weights of type x.wtype.
using QuantizeGroupedFn = void (*)(const float* src, int64_t row_begin, int64_t row_end,
                                   const QuantizedX& x);
#if defined(CRESCENT_KERNELS_X86)
void QuantizeGroupedAvx2(const float* src, int64_t row_begin, int64_t row_end, const QuantizedX& x);
void QuantizeGroupedAvx512(const float* src, int64_t row_begin, int64_t row_end,
                           const QuantizedX& x);
#endif

// Computes y[i][n] for every i < x.m and n in [row_begin, row_end). y has w.rows columns.
using GemmFn = void (*)(const MatrixView& w, const QuantizedX& x, float* y, int64_t row_begin,
                        int64_t row_end);

// Work items [0, n) shared by threads through one word, claim = (back << 32) | front: items
// [front, back) are not claimed yet. The owner claims [*i0, *i1) from the front, a quarter, an
// eighth... of what is left (1 / owner_divisor, at least owner_min), which keeps its walk in
// order with few atomic operations; a helper claims helper_take items from the back. False when
// none is left. The claims only divide the items: their inputs are published before the
// threads start and their outputs read after all finish, so relaxed order suffices.
inline bool ClaimFromEnds(std::atomic<uint64_t>& claim, bool owner, int64_t owner_min,
                          int64_t owner_divisor, int64_t helper_take, int64_t* i0, int64_t* i1) {
  uint64_t v = claim.load(std::memory_order_relaxed);
  for (;;) {
    const int64_t front = static_cast<int64_t>(v & 0xffffffffu);
    const int64_t back = static_cast<int64_t>(v >> 32);
    if (front >= back) return false;
    const int64_t left = back - front;
    uint64_t next;
    if (owner) {
      const int64_t n = std::min(left, std::max(owner_min, left / owner_divisor));
      *i0 = front;
      *i1 = front + n;
      next = (static_cast<uint64_t>(back) << 32) | static_cast<uint64_t>(front + n);
    } else {
      const int64_t n = std::min(left, helper_take);
      *i0 = back - n;
      *i1 = back;
      next = (static_cast<uint64_t>(back - n) << 32) | static_cast<uint64_t>(front);
    }
    if (claim.compare_exchange_weak(v, next, std::memory_order_relaxed,
                                    std::memory_order_relaxed)) {
      return true;
    }
  }
}

// Batch-1 rows that threads share (MatMulShared). The rows [begin, end) of one matrix are
// walked as kB1Parts contiguous parts in lockstep, as the batch-1 kernel walks any range (one
// iteration: the next row of every part). The thread the rows were given to claims iterations
// from the front; a thread done with its own rows claims them from the back, so that a thread
// slowed by its memory traffic or its vCPU does not keep the others waiting at the end of the
// matmul. The rows after the parts (fewer than kB1Parts) are the owner's alone.
inline constexpr int kB1Parts = 4;
struct alignas(64) B1Rows {
  int64_t begin = 0, end = 0;
  // (back << 32) | front: iterations [front, back) are not claimed yet.
  std::atomic<uint64_t> claim{0};

  // Gives rows [b, e) out afresh. Not thread-safe: call before the threads start on them.
  void Reset(int64_t b, int64_t e) {
    begin = b;
    end = e;
    const int64_t part = (e - b) / kB1Parts;
    // Fewer than 2 iterations: not worth sharing, the owner computes them whole.
    claim.store(part >= 2 ? static_cast<uint64_t>(part) << 32 : 0, std::memory_order_relaxed);
  }
};

// For x.m == 1 and a kGroup8 matrix w: computes the rows of `rows` this thread claims until
// none is left; `owner` claims from the front and then computes the rows after the parts,
// others claim from the back. Every row comes out the same bits as from GemmFn, whoever
// computes it.
using GemmB1SharedFn = void (*)(const MatrixView& w, const QuantizedX& x, float* y, B1Rows* rows,
                                bool owner);

// PrefetchDuringNextMatMul's ranges for the calling thread while it computes a batch-1 kRows16
// matmul: the kernel calls SidePrefetchPanel() before each panel, which prefetches the next of
// them (nothing when the thread has none).
void SidePrefetchPanel();

void GemmScalar(const MatrixView& w, const QuantizedX& x, float* y, int64_t row_begin,
                int64_t row_end);
#if defined(CRESCENT_KERNELS_X86)
void GemmAvx2(const MatrixView& w, const QuantizedX& x, float* y, int64_t row_begin,
              int64_t row_end);
void GemmAvx512(const MatrixView& w, const QuantizedX& x, float* y, int64_t row_begin,
                int64_t row_end);
void GemmB1SharedAvx512(const MatrixView& w, const QuantizedX& x, float* y, B1Rows* rows,
                        bool owner);
#endif

}  // namespace crescent::kernels::internal

#endif  // CRESCENT_KERNELS_CPU_INTERNAL_MATMUL_INTERNAL_H_
