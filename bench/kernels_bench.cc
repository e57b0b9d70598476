// kernels_bench: the CPU matmul kernels against the memory-bandwidth "speed of light".
//
// Prints the machine's stream-copy and read bandwidth (buffers far larger than the last-level
// cache), then, for the reference model's matrix shapes and the weight types Q4_1, Q8_0, Q4_K
// and F16 at batch m = 1, 8 and 32: time per MatMul call, effective weight bandwidth (weight
// bytes / time) and its fraction of the copy bandwidth, and the cost of a batch relative to
// batch 1. Each measurement cycles over enough distinct copies of the matrix (>= 512 MiB in all)
// that the weights come from DRAM, as in decode, never from cache. Q4_1 and Q8_0 run in the
// layout the CPU backend gives them (--layout auto: kRows16 for Q4_1 and Q8_0 with rows a
// multiple of 16, else kGroup8, where the ISA reads them natively).
//
// Each figure is taken over whole passes (all copies once, or all 512 MiB once): "best" is the
// fastest pass, "median" the middle one. On a machine shared with other work the best pass is
// the closest to the uncontended speed and the median shows the interference; the "of copy"
// column compares best with best, so both sides are measured the same way.
//
//   kernels_bench [--threads N] [--isa scalar|avx2|avx512] [--types q4_1,q8_0,...]
//                 [--batches 1,8,32] [--layout auto|gguf|group8|rows16] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/common/bandwidth.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quants.h"
#include "src/common/thread_pool.h"

namespace crescent::kernels {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

MatrixView Matrix(GgmlType type, MatrixLayout layout, int64_t rows, int64_t cols,
                  const void* data) {
  MatrixView v = DenseMatrix(type, rows, cols, data);
  v.layout = layout;
  return v;
}

struct Shape {
  int64_t rows, cols;
};

struct Result {
  double best_us, median_us;
  double best_gbs;
};

Result TimeMatMul(ThreadPool* pool, uint8_t* arena, size_t arena_bytes, GgmlType type,
                  MatrixLayout layout, const Shape& shape, int64_t m, int passes) {
  const int64_t cols = shape.cols;
  const size_t row_bytes = RowBytes(type, cols);
  const size_t mat_bytes = (row_bytes * shape.rows + 4095) / 4096 * 4096;
  const int64_t copies = std::max<int64_t>(1, static_cast<int64_t>(arena_bytes / mat_bytes));

  // One random matrix, quantized, replicated over the arena.
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-0.1f, 0.1f);
  std::vector<float> row(cols);
  for (int64_t r = 0; r < shape.rows; ++r) {
    for (float& v : row) v = dist(rng);
    QuantizeRow(type, row.data(), arena + r * row_bytes, cols);
  }
  if (layout != MatrixLayout::kGguf) {
    std::vector<uint8_t> gguf(arena, arena + row_bytes * shape.rows);
    if (layout == MatrixLayout::kGroup8) {
      RepackRowsGroup8(type, cols, shape.rows, row_bytes, gguf.data(), arena);
    } else {
      RepackRowsRows16(type, cols, shape.rows, row_bytes, gguf.data(), arena);
    }
  }
  pool->ParallelFor(copies - 1, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo + 1; c <= hi; ++c) std::memcpy(arena + c * mat_bytes, arena, mat_bytes);
  });

  std::vector<float> x(m * cols), y(m * shape.rows);
  for (float& v : x) v = dist(rng) * 10;
  MatMul(pool, Matrix(type, layout, shape.rows, cols, arena), x.data(), m, y.data());  // warm-up
  std::vector<double> times;  // seconds per call, one entry per pass
  for (int pass = 0; pass < passes; ++pass) {
    const double t0 = Now();
    for (int64_t c = 0; c < copies; ++c) {
      MatMul(pool, Matrix(type, layout, shape.rows, cols, arena + c * mat_bytes), x.data(), m,
             y.data());
    }
    times.push_back((Now() - t0) / static_cast<double>(copies));
  }
  std::sort(times.begin(), times.end());
  const double best = times.front(), median = times[times.size() / 2];
  return {best * 1e6, median * 1e6, static_cast<double>(row_bytes * shape.rows) / best / 1e9};
}

// Splits "a,b,c".
std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string::npos ? s.size() : comma;
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

int Main(int argc, char** argv) {
  int threads = 2;
  bool quick = false;
  std::vector<GgmlType> types = {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kF16};
  std::vector<int64_t> batches = {1, 8, 32};
  std::string layout_name = "auto";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--isa" && i + 1 < argc) {
      Isa isa;
      if (!ParseIsa(argv[++i], &isa)) {
        std::fprintf(stderr, "unknown ISA %s\n", argv[i]);
        return 2;
      }
      SetIsaForTesting(isa);
    } else if (a == "--types" && i + 1 < argc) {
      types.clear();
      for (const std::string& name : SplitList(argv[++i])) {
        bool found = false;
        for (GgmlType t :
             {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
              GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
          if (name == GetTypeInfo(t).name) {
            types.push_back(t);
            found = true;
          }
        }
        if (!found) {
          std::fprintf(stderr, "unknown or unsupported type %s\n", name.c_str());
          return 2;
        }
      }
    } else if (a == "--batches" && i + 1 < argc) {
      batches.clear();
      for (const std::string& b : SplitList(argv[++i])) batches.push_back(std::atoll(b.c_str()));
    } else if (a == "--layout" && i + 1 < argc) {
      layout_name = argv[++i];
      if (layout_name != "auto" && layout_name != "gguf" && layout_name != "group8" &&
          layout_name != "rows16") {
        std::fprintf(stderr, "--layout takes auto, gguf, group8 or rows16, not %s\n",
                     layout_name.c_str());
        return 2;
      }
    } else if (a == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr,
                   "usage: kernels_bench [--threads N] [--isa scalar|avx2|avx512] "
                   "[--types q4_1,q8_0,...] [--batches 1,8,32] [--layout auto|gguf|group8|rows16] "
                   "[--quick]\n");
      return 2;
    }
  }
  ThreadPool pool(threads);
  const size_t arena_bytes = size_t{512} << 20;
  const bench::DramBandwidth dram = bench::MeasureDramBandwidth(&pool, arena_bytes, 7);
  const bench::Rate copy = dram.copy, read = dram.read;
  const double copy_gbs = copy.best;
  const bench::PageBuffer arena = bench::AllocateTouched(&pool, arena_bytes, 1);
  std::printf("kernels_bench: isa=%s threads=%d\n", IsaName(ActiveIsa()), threads);
  std::printf(
      "DRAM bandwidth over 512 MiB: copy best %.2f / median %.2f GB/s (read+write, STREAM "
      "convention); read-only (8 streams per thread) best %.2f / median %.2f GB/s\n\n",
      copy.best, copy.median, read.best, read.median);

  // The reference model's matrices: attn_q / attn_output, attn_k / attn_v, ffn_gate / ffn_up,
  // ffn_down, and the (tied) output projection.
  const Shape shapes[] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}, {49152, 576}};
  const int passes = quick ? 3 : 7;
  std::printf("%-6s %-7s %-12s %3s %10s %11s %8s %12s %8s\n", "type", "layout", "rows x K", "m",
              "best us", "weight GB/s", "of copy", "median us", "vs m=1");
  for (GgmlType type : types) {
    for (const Shape& s0 : shapes) {
      Shape s = s0;
      // auto: as the CPU backend runs the model (kRows16, else kGroup8, where this ISA reads
      // it natively); a layout the matrix cannot take falls back to the file's.
      const bool native = Group8Native(ActiveIsa());
      MatrixLayout layout = MatrixLayout::kGguf;
      const bool auto_rows16 =
          (type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0) && Rows16Native(ActiveIsa());
      if (Rows16Supported(type, s.rows) &&
          (layout_name == "rows16" || (layout_name == "auto" && auto_rows16))) {
        layout = MatrixLayout::kRows16;
      } else if (Group8Supported(type) &&
                 (layout_name == "group8" || (layout_name == "auto" && native))) {
        layout = MatrixLayout::kGroup8;
      }
      const char* layout_text = layout == MatrixLayout::kRows16   ? "rows16"
                                : layout == MatrixLayout::kGroup8 ? "group8"
                                                                  : "gguf";
      // K-quants need K % 256 == 0: 576 becomes 768 for Q4_K.
      if (GetTypeInfo(type).block_size == 256 && s.cols % 256 != 0)
        s.cols = (s.cols + 255) / 256 * 256;
      double t1 = 0;
      for (int64_t m : batches) {
        const Result r = TimeMatMul(&pool, arena.get(), arena_bytes, type, layout, s, m, passes);
        if (m == 1) t1 = r.best_us;
        char shape_text[64];
        std::snprintf(shape_text, sizeof(shape_text), "%lldx%lld", static_cast<long long>(s.rows),
                      static_cast<long long>(s.cols));
        std::printf("%-6s %-7s %-12s %3lld %10.1f %11.2f %7.0f%% %12.1f %7.2fx\n",
                    GetTypeInfo(type).name, layout_text, shape_text, static_cast<long long>(m),
                    r.best_us, r.best_gbs, 100.0 * r.best_gbs / copy_gbs, r.median_us,
                    r.best_us / t1);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace crescent::kernels

int main(int argc, char** argv) { return crescent::kernels::Main(argc, argv); }
