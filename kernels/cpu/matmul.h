// Matrix multiplication against weights kept in their GGUF encoding.
//
// The weights stay quantized: activations are quantized once per call into the integer partner
// of the weight type (8-bit blocks of 32 for Q4_0/Q4_1/Q8_0, 8-bit super-blocks of 256 with
// partial sums for the K-quants) and the kernels take integer dot products (AVX-512 VNNI
// vpdpbusd, AVX2 maddubs/madd, or scalar code, chosen at run time from ActiveIsa()). F32, F16
// and BF16 weights take a float FMA path with x left in f32. With m > 1, each weight block read
// from memory is decoded once and applied to several rows of x.
#ifndef CRESCENT_KERNELS_CPU_MATMUL_H_
#define CRESCENT_KERNELS_CPU_MATMUL_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/types.h"
#include "src/common/thread_pool.h"

namespace crescent::kernels {

// A weight matrix: `rows` output features, each a row of `cols` input features (K) encoded as
// `type` and laid out as `layout`. Row r starts at data + r * row_stride. Not owning.
struct MatrixView {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  size_t row_stride = 0;  // bytes; >= RowBytes(type, cols).
  MatrixLayout layout = MatrixLayout::kGguf;
};

// True for the types that have a kGroup8 layout: Q4_1 and Q8_0.
bool Group8Supported(GgmlType type);

// True when `isa`'s kernels read kGroup8 rows directly (AVX-512 VNNI), i.e. when repacking
// speeds matmuls up rather than slowing them down.
bool Group8Native(Isa isa);

// Rewrites `rows` rows of `cols` values from the GGUF layout at `src` into the kGroup8 layout at
// `dst` (both row_stride bytes apart; bytes past RowBytes(type, cols) are copied as they are).
// REQUIRES: Group8Supported(type); cols % 32 == 0; row_stride >= RowBytes(type, cols); src and
// dst do not overlap.
void RepackRowsGroup8(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst);

// The inverse of RepackRowsGroup8, with the same contract.
void UnpackRowsGroup8(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst);

// True when a `type` matrix of `rows` rows has a kRows16 layout: Q4_1 or Q8_0 with rows a
// positive multiple of 16.
bool Rows16Supported(GgmlType type, int64_t rows);

// True when `isa`'s kernels read kRows16 matrices directly (AVX-512 VNNI).
bool Rows16Native(Isa isa);

// Rewrites `rows` rows of `cols` values from the GGUF layout at `src` into the kRows16 layout at
// `dst` (see MatrixLayout; rows' padding past RowBytes(type, cols) is kept). REQUIRES:
// Rows16Supported(type, rows); cols % 32 == 0; row_stride >= RowBytes(type, cols); src and dst
// do not overlap.
void RepackRowsRows16(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst);

// The inverse of RepackRowsRows16, with the same contract.
void UnpackRowsRows16(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst);

// A view of a contiguous matrix (row_stride = RowBytes(type, cols)).
inline MatrixView DenseMatrix(GgmlType type, int64_t rows, int64_t cols, const void* data) {
  return MatrixView{type, rows, cols, data, RowBytes(type, cols)};
}

// True for F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K.
bool MatMulSupports(GgmlType type);

// y[i][n] = sum_k x[i][k] * W[n][k] for i < m, n < w.rows: x is m x w.cols f32 row-major, y is
// m x w.rows f32 row-major. The rows of y are split into contiguous chunks, one per thread of
// `pool` (nullptr: the calling thread alone). Quantized weight types quantize x to 8 bits per
// block first, so y carries that error (relative ~0.4% of each block's largest |x| per term).
// Row i of y depends only on row i of x, bit for bit: the same whatever m, the row's place in x
// and the pool's size (for one ISA). The serving engine relies on it: a prompt's chunking and
// the other sequences of a batch must not change a token's result.
//
// Thread-safety: calls may run concurrently (each calling thread has its own scratch for the
// quantized x) as long as their y do not overlap; a pool serializes concurrent users itself.
// REQUIRES: MatMulSupports(w.type); w.cols % block_size(w.type) == 0; m >= 0; y does not
// overlap x or the weights; the weight data meets the alignment stated in quants.h; a kGroup8
// view has Group8Supported(w.type), a kRows16 view Rows16Supported(w.type, w.rows). Results are
// the same, bit for bit, for a kGroup8 view and the GGUF matrix it was repacked from. A kRows16
// view rounds in an order of its own where Rows16Native(ActiveIsa()) (within the same error
// bound; every row still the same bits for any m, row place and split), and otherwise gives the
// GGUF matrix's bits.
void MatMul(ThreadPool* pool, const MatrixView& w, const float* x, int64_t m, float* y);

// Several products that share x, in one parallel pass: ys[j] = MatMul(ws[j], x) for j < count.
// x is quantized once and the rows of all matrices are split into contiguous chunks across the
// pool, so e.g. a layer's Q, K and V projections (or gate and up) cost one pool wake-up instead
// of three (two). Same contract as MatMul for each j, plus REQUIRES: every ws[j] has the same type
// and cols; the ys[j] do not overlap each other.
void MatMulShared(ThreadPool* pool, const MatrixView* ws, float* const* ys, int count,
                  const float* x, int64_t m);

// A hint that the next MatMulShared(pool, ws, ..., count, x, m) is coming, after some Run() of
// `pool` (usually the matmul before it) and some serial work on the calling thread: each worker
// prefetches the start of the rows it will compute, right after its share of that Run, while
// the caller does the serial work (ThreadPool::PrefetchAfterNextRun). Acts only where the
// memory system would otherwise idle: batch 1 (m == 1) on repacked (kGroup8 or kRows16)
// matrices with AVX-512 VNNI and a pool of 2 or more threads; elsewhere it does nothing. Never changes a
// result. Same REQUIRES as MatMulShared for ws and count; the weights need not stay alive
// after the call.
void PrefetchNextMatMul(ThreadPool* pool, const MatrixView* ws, int count, int64_t m);

// The most ranges one thread takes in PrefetchDuringNextMatMul.
inline constexpr int kMaxSidePrefetchRanges = 256;

// A hint for data the caller will read right after the next MatMulShared on `pool` (from this
// thread) and that would otherwise come from DRAM at a latency-bound pace, such as the KV pages
// of the attention after a layer's Q/K/V projections: thread `thread` of the pool (0 = the
// caller) prefetches `ranges` into its L2 a little at a time while it computes that matmul,
// spread evenly over its share, and what is left at the end of it. Acts only when that call is
// a batch-1 kRows16 one on AVX-512 VNNI with 2 or more threads, where the weights stream from
// DRAM and the prefetches ride along; any other next call drops the hint. A later hint for the
// same thread before that call replaces it. The ranges are only prefetched, never read: a
// stale range costs time, never correctness, and nothing needs to stay alive. Ranges past
// kMaxSidePrefetchRanges are dropped. Thread-compatible with MatMulShared.
// REQUIRES: pool != nullptr; 0 <= thread < pool->num_threads(); count >= 0.
void PrefetchDuringNextMatMul(ThreadPool* pool, int thread, const ThreadPool::ByteRange* ranges,
                              int count);

// As MatMul, but computes only output features [row_begin, row_end) of every row of y (the
// others are not written), on the calling thread. For callers that schedule their own work.
// REQUIRES: as MatMul, 0 <= row_begin <= row_end <= w.rows.
void MatMulRows(const MatrixView& w, const float* x, int64_t m, float* y, int64_t row_begin,
                int64_t row_end);

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_MATMUL_H_
