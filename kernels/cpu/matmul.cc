#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/internal/matmul_internal.h"
#include "kernels/cpu/internal/prefetch_walk.h"
#include "kernels/cpu/quants.h"

namespace crescent::kernels {
namespace {

using internal::QuantizedX;
using internal::XBlockK;
using internal::XGroup8;

// Per-thread scratch for the quantized activations; grows to the largest call and is reused,
// so steady-state decode allocates nothing.
class Workspace {
 public:
  // Returns 64-byte aligned storage of at least `bytes`; invalidates earlier results.
  void* Get(size_t bytes) {
    if (bytes > capacity_) {
      capacity_ = std::max(bytes, capacity_ * 3 / 2);
      buffer_.reset(static_cast<std::byte*>(::operator new[](capacity_, std::align_val_t{64})));
    }
    return buffer_.get();
  }

 private:
  struct AlignedDelete {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<std::byte[], AlignedDelete> buffer_;
  size_t capacity_ = 0;
};

Workspace& ThreadWorkspace() {
  thread_local Workspace ws;
  return ws;
}

size_t AlignUp(size_t v) { return (v + 63) & ~size_t{63}; }

// Round to nearest, ties to even, for |v| < 2^22 (a pure float trick that the compiler can
// vectorize, unlike lrintf without -ffast-math).
inline float RoundNearest(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

void QuantizeRows32(const float* x, int64_t k, int64_t row_begin, int64_t row_end,
                    const QuantizedX& q) {
  const int64_t nb = q.nb;
  for (int64_t i = row_begin; i < row_end; ++i) {
    const float* xr = x + i * k;
    int8_t* qs = const_cast<int8_t*>(q.qs) + i * nb * kQK;
    float* d = const_cast<float*>(q.d) + i * nb;
    float* ds = const_cast<float*>(q.ds) + i * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const float* v = xr + b * kQK;
      float amax = 0;
      for (int l = 0; l < kQK; ++l) amax = std::max(amax, std::fabs(v[l]));
      const float db = amax / 127.0f;
      const float id = db != 0 ? 127.0f / amax : 0.0f;
      int sum = 0;
      for (int l = 0; l < kQK; ++l) {
        const int c = static_cast<int>(RoundNearest(v[l] * id));
        qs[b * kQK + l] = static_cast<int8_t>(c);
        sum += c;
      }
      d[b] = db;
      ds[b] = db * static_cast<float>(sum);
    }
  }
}

void QuantizeRowsK(const float* x, int64_t k, int64_t row_begin, int64_t row_end,
                   const QuantizedX& q) {
  const int64_t nb = q.nb;
  for (int64_t i = row_begin; i < row_end; ++i) {
    XBlockK* out = const_cast<XBlockK*>(q.xk) + i * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const float* v = x + i * k + b * kQKK;
      float amax = 0;
      for (int l = 0; l < kQKK; ++l) amax = std::max(amax, std::fabs(v[l]));
      const float id = amax != 0 ? 127.0f / amax : 0.0f;
      for (int l = 0; l < kQKK; ++l) {
        out[b].qs[l] = static_cast<int8_t>(static_cast<int>(RoundNearest(v[l] * id)));
      }
      for (int j = 0; j < 16; ++j) {
        int s = 0;
        for (int l = 0; l < 16; ++l) s += out[b].qs[16 * j + l];
        out[b].bsum16[j] = static_cast<int16_t>(s);
      }
      for (int j = 0; j < 8; ++j) {
        out[b].bsum32[j] = static_cast<int16_t>(out[b].bsum16[2 * j] + out[b].bsum16[2 * j + 1]);
      }
      out[b].d = amax / 127.0f;
    }
  }
}

enum class Family { kQ32, kK, kFloat };

Family FamilyOf(GgmlType t) {
  switch (t) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
      return Family::kQ32;
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return Family::kK;
    default:
      return Family::kFloat;
  }
}

internal::QuantizeGroupedFn QuantizeGroupedFor(Isa isa) {
#if defined(CRESCENT_KERNELS_X86)
  if (isa == Isa::kAvx512Vnni) return internal::QuantizeGroupedAvx512;
  return internal::QuantizeGroupedAvx2;
#else
  (void)isa;
  return nullptr;  // the scalar kernels use the natural layouts
#endif
}

// Lays out the workspace for `w`'s family (natural layouts for the scalar kernels, the grouped
// one for the SIMD kernels) and quantizes x into it, in parallel on `pool` when there is enough.
QuantizedX PrepareX(ThreadPool* pool, const MatrixView& w, const float* x, int64_t m, Isa isa) {
  QuantizedX q;
  q.wtype = w.type;
  q.m = m;
  q.k = w.cols;
  const Family family = FamilyOf(w.type);
  if (family == Family::kFloat) {
    q.xf = x;
    return q;
  }
  Workspace& ws = ThreadWorkspace();
  q.nb = w.cols / (family == Family::kQ32 ? kQK : kQKK);
  const bool grouped = isa != Isa::kScalar;
  if (grouped) {
    q.ng = family == Family::kQ32 ? (q.nb + 7) / 8 : q.nb;
    q.xg = static_cast<const XGroup8*>(ws.Get(static_cast<size_t>(m * q.ng) * sizeof(XGroup8)));
  } else if (family == Family::kQ32) {
    const size_t nblk = static_cast<size_t>(m * q.nb);
    const size_t qs_bytes = AlignUp(nblk * kQK), f_bytes = AlignUp(nblk * 4);
    auto* base = static_cast<std::byte*>(ws.Get(qs_bytes + 2 * f_bytes));
    q.qs = reinterpret_cast<const int8_t*>(base);
    q.d = reinterpret_cast<const float*>(base + qs_bytes);
    q.ds = reinterpret_cast<const float*>(base + qs_bytes + f_bytes);
  } else {
    q.xk = static_cast<const XBlockK*>(ws.Get(static_cast<size_t>(m * q.nb) * sizeof(XBlockK)));
  }
  const internal::QuantizeGroupedFn quantize_grouped = QuantizeGroupedFor(isa);
  auto quantize = [&](int64_t begin, int64_t end) {
    if (grouped) {
      quantize_grouped(x, begin, end, q);
    } else if (family == Family::kQ32) {
      QuantizeRows32(x, w.cols, begin, end, q);
    } else {
      QuantizeRowsK(x, w.cols, begin, end, q);
    }
  };
  constexpr int64_t kParallelValues = 1 << 16;
  if (pool != nullptr && pool->num_threads() > 1 && m > 1 && m * w.cols >= kParallelValues) {
    pool->ParallelFor(m, std::max<int64_t>(1, kParallelValues / 4 / w.cols), quantize);
  } else {
    quantize(0, m);
  }
  return q;
}

// The kGroup8 layout of a group of c blocks (c = 8, or the 1..7 blocks a row has left over;
// see MatrixLayout). Dword (j, i) is dword i of block j of the group in GGUF layout. Vectors
// hold 2c dwords: dword k belongs to lane l = k for k < c, else 8 + k - c, and lane l to block
// l % 8 (a full group fills all 16 lanes in order; a short one is expanded into its lanes).
//  Q4_1 (blocks of 5 dwords: (d, m), then 4 of nibbles), 20c bytes:
//    8c bytes  lane l = nibble dword (l % 8, 1 + l / 8)
//    8c bytes  lane l = nibble dword (l % 8, 3 + l / 8)
//    2c bytes  d of blocks 0..c-1 (f16), then 2c bytes m of blocks 0..c-1
//  Q8_0 (blocks of a f16 d and 32 int8 codes), 34c bytes:
//    4 x 8c bytes  vector p, lane l = code dword 2p + l / 8 of block l % 8, each byte + 128
//    2c bytes      d of blocks 0..c-1 (f16)
// These are the registers the AVX-512 decoders build from GGUF blocks (matmul_simd.inc), in the
// lane order XGroup8 expects.
constexpr int kGroupBlocks = 8;

// Moves bytes between a GGUF buffer and a repacked one (kGroup8 or kRows16): from GGUF offset
// `go` of `in` to packed offset `po` of `out` when kToPacked, else from `po` to `go`.
template <bool kToPacked>
struct PackMover {
  const uint8_t* in;
  uint8_t* out;

  void Bytes(size_t go, size_t po, size_t n) const {
    std::memcpy(out + (kToPacked ? po : go), in + (kToPacked ? go : po), n);
  }
  // One dword, each byte xor `flip`.
  void Dword(size_t go, size_t po, uint8_t flip) const {
    uint32_t v;
    std::memcpy(&v, in + (kToPacked ? go : po), 4);
    v ^= 0x01010101u * flip;
    std::memcpy(out + (kToPacked ? po : go), &v, 4);
  }
};

// Copies a group of c blocks between the layouts: GGUF `in` to kGroup8 `out` when kToGroup8,
// else back.
template <bool kToGroup8>
void ConvertGroup(GgmlType type, int c, const uint8_t* in, uint8_t* out) {
  const size_t bb = GetTypeInfo(type).type_size;
  const PackMover<kToGroup8> mv{in, out};
  auto unit = [&](size_t go, size_t po, uint8_t flip) { mv.Dword(go, po, flip); };
  auto half = [&](size_t go, size_t po) { mv.Bytes(go, po, 2); };
  // Vector dword k: block k % c, the block's (k / c)-th dword of the pair the vector holds.
  const size_t vec = 8 * static_cast<size_t>(c);  // bytes per vector
  if (type == GgmlType::kQ4_1) {
    for (int v = 0; v < 2; ++v) {
      for (int k = 0; k < 2 * c; ++k) {
        unit((k % c) * bb + 4 * (1 + 2 * v + k / c), vec * v + 4 * k, 0);
      }
    }
    for (int j = 0; j < c; ++j) {
      half(j * bb, 2 * vec + 2 * j);              // d
      half(j * bb + 2, 2 * vec + 2 * c + 2 * j);  // m
    }
  } else {  // Q8_0
    for (int p = 0; p < 4; ++p) {
      for (int k = 0; k < 2 * c; ++k) {
        unit((k % c) * bb + 2 + 4 * (2 * p + k / c), vec * p + 4 * k, 0x80);
      }
    }
    for (int j = 0; j < c; ++j) half(j * bb, 4 * vec + 2 * j);
  }
}

// Copies whole 16-row panels between the layouts: GGUF `src` to kRows16 `dst` when kToRows16,
// else back (see MatrixLayout::kRows16). GGUF blocks: Q4_1 (d, m) as two f16, then 16 code
// bytes (4 dwords); Q8_0 d as f16, then 32 codes (8 dwords, each byte + 128 in kRows16).
template <bool kToRows16>
void ConvertPanels(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                   void* dst) {
  const bool q8 = type == GgmlType::kQ8_0;
  const size_t block = GetTypeInfo(type).type_size, panel_block = 16 * block;
  const int dwords = q8 ? 8 : 4;
  const size_t codes = q8 ? 2 : 4;  // GGUF offset of a block's codes
  const uint8_t flip = q8 ? 0x80 : 0;
  const int64_t blocks = cols / kQK;
  const size_t row_bytes = static_cast<size_t>(blocks) * block;
  const size_t pad = row_stride - row_bytes;
  for (int64_t p = 0; p < rows / 16; ++p) {
    const size_t panel = 16 * p * row_stride;
    const PackMover<kToRows16> mv{static_cast<const uint8_t*>(src) + panel,
                                  static_cast<uint8_t*>(dst) + panel};
    for (int r = 0; r < 16; ++r) {
      for (int64_t b = 0; b < blocks; ++b) {
        const size_t go = r * row_stride + b * block, po = b * panel_block;
        for (int k = 0; k < dwords; ++k) mv.Dword(go + codes + 4 * k, po + 64 * k + 4 * r, flip);
        mv.Bytes(go, po + 64 * dwords + 2 * r, 2);                    // d
        if (!q8) mv.Bytes(go + 2, po + 64 * dwords + 32 + 2 * r, 2);  // m
      }
      mv.Bytes(r * row_stride + row_bytes, 16 * row_bytes + r * pad, pad);
    }
  }
}

template <bool kToGroup8>
void ConvertRows(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                 void* dst) {
  const size_t block_bytes = GetTypeInfo(type).type_size;
  const int64_t blocks = cols / kQK;
  const int tail = static_cast<int>(blocks % kGroupBlocks);
  const size_t row_bytes = static_cast<size_t>(blocks) * block_bytes;
  for (int64_t r = 0; r < rows; ++r) {
    const auto* in = static_cast<const uint8_t*>(src) + r * row_stride;
    auto* out = static_cast<uint8_t*>(dst) + r * row_stride;
    size_t off = 0;
    for (int64_t b = 0; b + kGroupBlocks <= blocks; b += kGroupBlocks) {
      ConvertGroup<kToGroup8>(type, kGroupBlocks, in + off, out + off);
      off += kGroupBlocks * block_bytes;
    }
    if (tail > 0) ConvertGroup<kToGroup8>(type, tail, in + off, out + off);
    std::memcpy(out + row_bytes, in + row_bytes, row_stride - row_bytes);
  }
}

internal::GemmFn GemmFor(Isa isa) {
#if defined(CRESCENT_KERNELS_X86)
  switch (isa) {
    case Isa::kAvx512Vnni:
      return internal::GemmAvx512;
    case Isa::kAvx2:
      return internal::GemmAvx2;
    case Isa::kScalar:
      break;
  }
#else
  (void)isa;
#endif
  return internal::GemmScalar;
}

// Computes rows [begin, end) of y with `gemm`. A kGroup8 or kRows16 matrix that `isa` cannot
// read directly is unpacked into per-thread scratch 16 rows (one panel) at a time first.
void RunGemm(internal::GemmFn gemm, Isa isa, const MatrixView& w, const QuantizedX& q, float* y,
             int64_t begin, int64_t end) {
  const bool native = (w.layout == MatrixLayout::kGroup8 && Group8Native(isa)) ||
                      (w.layout == MatrixLayout::kRows16 && Rows16Native(isa));
  if (w.layout == MatrixLayout::kGguf || native) {
    gemm(w, q, y, begin, end);
    return;
  }
  constexpr int64_t kRows = 16;
  thread_local Workspace scratch;
  auto* rows = static_cast<uint8_t*>(scratch.Get(kRows * w.row_stride));
  const bool panels = w.layout == MatrixLayout::kRows16;
  for (int64_t b = begin; b < end;) {
    // Unpacked: rows [first, first + n), a whole panel for kRows16.
    const int64_t first = panels ? b / kRows * kRows : b;
    const int64_t n = panels ? kRows : std::min(kRows, end - b);
    const auto* src = static_cast<const uint8_t*>(w.data) + first * w.row_stride;
    if (panels) {
      UnpackRowsRows16(w.type, w.cols, n, w.row_stride, src, rows);
    } else {
      UnpackRowsGroup8(w.type, w.cols, n, w.row_stride, src, rows);
    }
    // A view whose row `first` is the scratch's first row (only rows [b, e) are read).
    MatrixView v = w;
    v.layout = MatrixLayout::kGguf;
    v.data =
        reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(rows) - first * w.row_stride);
    const int64_t e = std::min(end, first + n);
    gemm(v, q, y, b, e);
    b = e;
  }
}

}  // namespace

bool Group8Supported(GgmlType type) { return type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0; }

bool Group8Native(Isa isa) { return isa == Isa::kAvx512Vnni; }

void RepackRowsGroup8(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst) {
  ConvertRows<true>(type, cols, rows, row_stride, src, dst);
}

void UnpackRowsGroup8(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst) {
  ConvertRows<false>(type, cols, rows, row_stride, src, dst);
}

bool Rows16Supported(GgmlType type, int64_t rows) {
  return (type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0) && rows > 0 && rows % 16 == 0;
}

bool Rows16Native(Isa isa) { return isa == Isa::kAvx512Vnni; }

void RepackRowsRows16(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst) {
  ConvertPanels<true>(type, cols, rows, row_stride, src, dst);
}

void UnpackRowsRows16(GgmlType type, int64_t cols, int64_t rows, size_t row_stride, const void* src,
                      void* dst) {
  ConvertPanels<false>(type, cols, rows, row_stride, src, dst);
}

bool MatMulSupports(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

namespace {

// The most B1Rows (threads x matrices) one MatMulShared shares; beyond it, the static split.
constexpr int kMaxB1Rows = 64;

// Batch-1 matmuls of `count` matrices on `threads` threads that run as B1Rows shared between
// the threads (MatMulShared).
bool B1Shared(Isa isa, const MatrixView* ws, int count, int64_t m, int threads) {
#if defined(CRESCENT_KERNELS_X86)
  if (m != 1 || isa != Isa::kAvx512Vnni || threads < 2 || threads * count > kMaxB1Rows) {
    return false;
  }
  for (int j = 0; j < count; ++j) {
    if (ws[j].layout != MatrixLayout::kGroup8) return false;
  }
  return true;
#else
  (void)isa, (void)ws, (void)count, (void)m, (void)threads;
  return false;
#endif
}

// Batch-1 matmuls of `count` kRows16 matrices on `threads` threads (AVX-512 VNNI): each thread
// computes its contiguous share of the panels (ThreadRows with tiles of 16 rows).
bool Rows16B1(Isa isa, const MatrixView* ws, int count, int64_t m, int threads) {
  if (m != 1 || !Rows16Native(isa) || threads < 2) return false;
  for (int j = 0; j < count; ++j) {
    if (ws[j].layout != MatrixLayout::kRows16) return false;
  }
  return true;
}

// PrefetchDuringNextMatMul's hints, kept per calling thread (one queue per pool thread) and
// read by the pool's threads during the next MatMulShared, as PanelShare below.
struct SideQueue {
  ThreadPool::ByteRange ranges[kMaxSidePrefetchRanges];
  int count = 0;
  size_t bytes = 0;
};

std::vector<SideQueue>& CallerSideQueues() {
  thread_local std::vector<SideQueue> queues;
  return queues;
}

// Lines a thread prefetches before each panel at the least: with fewer ranges than its panels
// can spread, it is done early in the matmul, so that the lines are there before attention.
constexpr int64_t kMinSideLinesPerPanel = 32;

// A thread's walk through its queue during one matmul (inactive: walk.ranges == nullptr).
struct SideCursor {
  internal::PrefetchWalk walk;
  int64_t lines_per_panel = 0;
};

thread_local SideCursor tls_side;

// Batch 1 on kRows16 matrices: the panels of all the matrices of one MatMulShared, numbered in
// order across them, are split into one contiguous share per thread (ThreadRows' split). The
// owner of a share claims panels from its front, a thread done with its own share claims them
// one at a time from the back of the others', so that the matmul does not wait for a thread
// slowed by its memory traffic or its vCPU (the static split's two threads ended ~10 % apart
// on average). Alternating on the decode steps of one run (2 threads, SmolLM2), it changed
// nothing on the Q4_1 matrices alone; it is what made the Q8_0 output matrix in kRows16 no
// slower than in kGroup8 (docs/benchmarks.md, 2026-11-24). A panel is computed whole by one
// thread with the same kernel, so every row's bits are those of the static split.
constexpr int kMaxPanelShares = 64;
struct alignas(64) PanelShare {
  int64_t begin = 0;  // the share's first panel (global numbering)
  // ClaimFromEnds' word over the share's panels, relative to begin.
  std::atomic<uint64_t> claim{0};

  // Gives panels [b, e) out afresh. Not thread-safe: call before the threads start on them.
  void Reset(int64_t b, int64_t e) {
    begin = b;
    claim.store(static_cast<uint64_t>(e - b) << 32, std::memory_order_relaxed);
  }

  // Claims panels [*g0, *g1) (internal::ClaimFromEnds): the owner a quarter of what is left
  // (at least one) from the front, a helper one from the back. False when none is left.
  bool Claim(bool owner, int64_t* g0, int64_t* g1) {
    if (!internal::ClaimFromEnds(claim, owner, 1, 4, 1, g0, g1)) return false;
    *g0 += begin;
    *g1 += begin;
    return true;
  }
};

// The rows of a tile: 16 (a kRows16 panel) when any of the matrices is kRows16, else 4.
int64_t TileRows(const MatrixView* ws, int count) {
  for (int i = 0; i < count; ++i) {
    if (ws[i].layout == MatrixLayout::kRows16) return 16;
  }
  return 4;
}

int64_t Tiles(const MatrixView& w, int64_t tile) { return (w.rows + tile - 1) / tile; }

// Tiles of `tile` rows are numbered across the matrices; thread t of nt takes a contiguous
// range of them. Rows [*b, *e) of matrix j (whose first tile is first_tile) are thread t's.
void ThreadRows(const MatrixView* ws, int count, int64_t tile, int t, int nt, int j,
                int64_t first_tile, int64_t* b, int64_t* e) {
  int64_t total_tiles = 0;
  for (int i = 0; i < count; ++i) total_tiles += Tiles(ws[i], tile);
  const int64_t tb = std::max(total_tiles * t / nt, first_tile);
  const int64_t te = std::min(total_tiles * (t + 1) / nt, first_tile + Tiles(ws[j], tile));
  *b = (tb - first_tile) * tile;
  *e = std::max(*b, std::min(ws[j].rows, (te - first_tile) * tile));
}

// How much of its next rows a worker prefetches ahead of a batch-1 matmul. Alternating A/B on
// the decode steps of one run (2 threads, SmolLM2): 16 KiB +0.8 %, 64 KiB +1-2 %, 128 KiB
// +2-3 %, 256 KiB +2 %, 512 KiB 0.
constexpr size_t kPrefetchNextBytes = 128 << 10;

}  // namespace

namespace internal {
void SidePrefetchPanel() {
  SideCursor& c = tls_side;
  if (c.walk.ranges != nullptr) c.walk.Prefetch(c.lines_per_panel);
}
}  // namespace internal

void PrefetchDuringNextMatMul(ThreadPool* pool, int thread, const ThreadPool::ByteRange* ranges,
                              int count) {
  std::vector<SideQueue>& queues = CallerSideQueues();
  if (queues.size() < static_cast<size_t>(pool->num_threads())) queues.resize(pool->num_threads());
  SideQueue& q = queues[thread];
  q.count = std::clamp(count, 0, kMaxSidePrefetchRanges);
  q.bytes = 0;
  for (int i = 0; i < q.count; ++i) {
    q.ranges[i] = ranges[i];
    q.bytes += ranges[i].bytes;
  }
}

void PrefetchNextMatMul(ThreadPool* pool, const MatrixView* ws, int count, int64_t m) {
  if (pool == nullptr || count <= 0) return;
  const int threads = pool->num_threads();
  if (Rows16B1(ActiveIsa(), ws, count, m, threads)) {
    // Each thread reads its rows of the matrices as one sequential stream (its panels of
    // matrix 0, then of matrix 1, ...): prefetch the first kPrefetchNextBytes of it.
    for (int t = 1; t < threads; ++t) {
      ThreadPool::ByteRange ranges[ThreadPool::kMaxPrefetchRanges];
      int n = 0;
      size_t budget = kPrefetchNextBytes;
      int64_t first_tile = 0;
      for (int j = 0; j < count && budget > 0 && n < ThreadPool::kMaxPrefetchRanges; ++j) {
        int64_t b, e;
        ThreadRows(ws, count, 16, t, threads, j, first_tile, &b, &e);
        first_tile += Tiles(ws[j], 16);
        if (b == e) continue;
        const size_t bytes = std::min(budget, static_cast<size_t>(e - b) * ws[j].row_stride);
        ranges[n++] = {static_cast<const uint8_t*>(ws[j].data) + b * ws[j].row_stride, bytes};
        budget -= bytes;
      }
      pool->PrefetchAfterNextRun(t, ranges, n);
    }
    return;
  }
  if (!B1Shared(ActiveIsa(), ws, count, m, threads)) return;
  for (int t = 1; t < threads; ++t) {
    int64_t own = 0, first_tile = 0;
    for (int j = 0; j < count; ++j) {
      int64_t b, e;
      ThreadRows(ws, count, 4, t, threads, j, first_tile, &b, &e);
      own += e - b;
      first_tile += Tiles(ws[j], 4);
    }
    if (own == 0) continue;
    // The thread walks each of its matrices' rows as internal::kB1Parts parts from their
    // starts: prefetch the start of every part, in proportion to the matrix's share of rows.
    ThreadPool::ByteRange ranges[ThreadPool::kMaxPrefetchRanges];
    int n = 0;
    first_tile = 0;
    for (int j = 0; j < count; ++j) {
      int64_t b, e;
      ThreadRows(ws, count, 4, t, threads, j, first_tile, &b, &e);
      first_tile += Tiles(ws[j], 4);
      if (b == e) continue;
      const size_t bytes = kPrefetchNextBytes * static_cast<size_t>(e - b) /
                           static_cast<size_t>(own) / internal::kB1Parts;
      const int64_t part = (e - b) / internal::kB1Parts;
      const auto* base = static_cast<const uint8_t*>(ws[j].data);
      for (int s = 0; s < internal::kB1Parts && n < ThreadPool::kMaxPrefetchRanges; ++s) {
        const int64_t row = b + (part >= 2 ? s * part : 0);
        const size_t left = static_cast<size_t>(e - row) * ws[j].row_stride;
        ranges[n++] = {base + row * ws[j].row_stride, std::min(bytes, left)};
        if (part < 2) break;
      }
    }
    pool->PrefetchAfterNextRun(t, ranges, n);
  }
}

void MatMul(ThreadPool* pool, const MatrixView& w, const float* x, int64_t m, float* y) {
  MatMulShared(pool, &w, &y, 1, x, m);
}

void MatMulShared(ThreadPool* pool, const MatrixView* ws, float* const* ys, int count,
                  const float* x, int64_t m) {
  // PrefetchDuringNextMatMul's hints are for this call only, whichever path it takes.
  std::vector<SideQueue>& side = CallerSideQueues();
  struct DropHints {
    std::vector<SideQueue>& side;
    ~DropHints() {
      for (SideQueue& q : side) q.count = 0;
    }
  } drop_hints{side};
  if (m <= 0 || count <= 0) return;
  const Isa isa = ActiveIsa();
  const QuantizedX q = PrepareX(pool, ws[0], x, m, isa);
  const internal::GemmFn gemm = GemmFor(isa);
  int64_t total_rows = 0;
  size_t work = 0;
  for (int j = 0; j < count; ++j) {
    total_rows += ws[j].rows;
    work += static_cast<size_t>(ws[j].rows) * RowBytes(ws[j].type, ws[j].cols);
  }
  work *= static_cast<size_t>(std::max<int64_t>(1, m / 4));
  const int threads = pool != nullptr ? pool->num_threads() : 1;
  // Below this much work a second thread costs more in wake-up than it saves.
  constexpr size_t kMinParallelBytes = 16 << 10;
  if (threads == 1 || work < kMinParallelBytes || total_rows < 8) {
    for (int j = 0; j < count; ++j) {
      if (ws[j].rows > 0) RunGemm(gemm, isa, ws[j], q, ys[j], 0, ws[j].rows);
    }
    return;
  }
  // Tiles of 4 rows numbered across the matrices; each thread takes a contiguous range and
  // walks the matrices it overlaps (ThreadRows).
#if defined(CRESCENT_KERNELS_X86)
  // Batch 1 on repacked matrices: the same ranges, but a thread done with its own rows helps
  // with the rows the others have not reached (internal::B1Rows). Each of the two threads'
  // shares of a matmul measured 15-20 % apart on average (either one the slower), and every
  // matmul waits for the slower.
  if (B1Shared(isa, ws, count, m, threads)) {
    // [thread][matrix]. Kept per calling thread: constructing all of them per call cost ~600
    // cycles, and only threads * count are used (all reset here, empty ones to b == e). The
    // workers reach the caller's through this pointer (by name they would find their own).
    thread_local internal::B1Rows storage[kMaxB1Rows];
    internal::B1Rows* const rows = storage;
    for (int t = 0; t < threads; ++t) {
      int64_t first_tile = 0;
      for (int j = 0; j < count; ++j) {
        int64_t b, e;
        ThreadRows(ws, count, 4, t, threads, j, first_tile, &b, &e);
        rows[t * count + j].Reset(b, e);
        first_tile += Tiles(ws[j], 4);
      }
    }
    pool->Run([&](int t, int nt) {
      for (int j = 0; j < count; ++j) {
        internal::B1Rows* r = &rows[t * count + j];
        if (r->begin < r->end) internal::GemmB1SharedAvx512(ws[j], q, ys[j], r, /*owner=*/true);
      }
      for (int d = 1; d < nt; ++d) {
        const int v = (t + d) % nt;
        for (int j = count - 1; j >= 0; --j) {
          internal::B1Rows* r = &rows[v * count + j];
          if (r->begin < r->end) internal::GemmB1SharedAvx512(ws[j], q, ys[j], r, /*owner=*/false);
        }
      }
    });
    return;
  }
#endif
  if (Rows16B1(isa, ws, count, m, threads) && threads <= kMaxPanelShares) {
    // Per calling thread, as B1Rows above; first[j] is matrix j's first panel.
    thread_local PanelShare storage[kMaxPanelShares];
    thread_local std::vector<int64_t> first_storage;
    PanelShare* const shares = storage;
    std::vector<int64_t>& first = first_storage;
    first.assign(1, 0);
    for (int j = 0; j < count; ++j) first.push_back(first[j] + Tiles(ws[j], 16));
    const int64_t panels = first[count];
    for (int t = 0; t < threads; ++t) {
      shares[t].Reset(panels * t / threads, panels * (t + 1) / threads);
    }
    pool->Run([&](int t, int nt) {
      // This thread's hinted ranges, spread over the panels it owns (SidePrefetchPanel).
      const SideQueue* queue =
          static_cast<size_t>(t) < side.size() && side[t].count > 0 ? &side[t] : nullptr;
      if (queue != nullptr) {
        const int64_t own = panels * (t + 1) / nt - panels * t / nt;
        const auto lines = static_cast<int64_t>(queue->bytes / 64);
        tls_side =
            SideCursor{{queue->ranges, static_cast<size_t>(queue->count)},
                       std::max(kMinSideLinesPerPanel, lines / std::max<int64_t>(1, own) + 1)};
      }
      // Panels [g0, g1) of the numbering, matrix by matrix.
      auto compute = [&](int64_t g0, int64_t g1) {
        int j = 0;
        while (g0 < g1) {
          while (first[j + 1] <= g0) ++j;
          const int64_t stop = std::min(g1, first[j + 1]);
          RunGemm(gemm, isa, ws[j], q, ys[j], (g0 - first[j]) * 16,
                  std::min(ws[j].rows, (stop - first[j]) * 16));
          g0 = stop;
        }
      };
      int64_t g0, g1;
      while (shares[t].Claim(/*owner=*/true, &g0, &g1)) compute(g0, g1);
      for (int d = 1; d < nt; ++d) {
        PanelShare& other = shares[(t + d) % nt];
        while (other.Claim(/*owner=*/false, &g0, &g1)) compute(g0, g1);
      }
      if (queue != nullptr) {
        tls_side.walk.Prefetch(std::numeric_limits<int64_t>::max());  // what the panels left
        tls_side = SideCursor{};
      }
    });
    return;
  }
  const int64_t tile = TileRows(ws, count);
  pool->Run([&](int t, int nt) {
    int64_t first_tile = 0;  // global index of matrix j's first tile
    for (int j = 0; j < count; ++j) {
      int64_t b, e;
      ThreadRows(ws, count, tile, t, nt, j, first_tile, &b, &e);
      if (b < e) RunGemm(gemm, isa, ws[j], q, ys[j], b, e);
      first_tile += Tiles(ws[j], tile);
    }
  });
}

void MatMulRows(const MatrixView& w, const float* x, int64_t m, float* y, int64_t row_begin,
                int64_t row_end) {
  if (m <= 0 || row_begin >= row_end) return;
  const Isa isa = ActiveIsa();
  const QuantizedX q = PrepareX(nullptr, w, x, m, isa);
  RunGemm(GemmFor(isa), isa, w, q, y, row_begin, row_end);
}

}  // namespace crescent::kernels
