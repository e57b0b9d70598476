// Tensor element types as GGUF stores them (ggml's type ids) and their block layouts.
// A quantized type packs `block_size` consecutive values of a row into `type_size` bytes; a
// row of n values (n a multiple of block_size) takes n / block_size * type_size bytes.
#ifndef CRESCENT_KERNELS_CPU_TYPES_H_
#define CRESCENT_KERNELS_CPU_TYPES_H_

#include <cstddef>
#include <cstdint>

namespace crescent::kernels {

// Values are the on-disk ids of GGUF's ggml_type; never renumber.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

struct TypeInfo {
  const char* name;   // "q4_1", ...; "unknown" for ids this table lacks.
  int64_t block_size;  // values per block (1 for plain types); 0 for unknown ids.
  size_t type_size;    // bytes per block; 0 for unknown ids.
  bool quantized;
};

// Returns the layout of `type`; for an id GGUF defines but Crescent does not know (or any other
// value), block_size and type_size are 0. Pure; thread-safe.
constexpr TypeInfo GetTypeInfo(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return {"f32", 1, 4, false};
    case GgmlType::kF16: return {"f16", 1, 2, false};
    case GgmlType::kBF16: return {"bf16", 1, 2, false};
    case GgmlType::kF64: return {"f64", 1, 8, false};
    case GgmlType::kI8: return {"i8", 1, 1, false};
    case GgmlType::kI16: return {"i16", 1, 2, false};
    case GgmlType::kI32: return {"i32", 1, 4, false};
    case GgmlType::kI64: return {"i64", 1, 8, false};
    case GgmlType::kQ4_0: return {"q4_0", 32, 2 + 16, true};
    case GgmlType::kQ4_1: return {"q4_1", 32, 2 + 2 + 16, true};
    case GgmlType::kQ5_0: return {"q5_0", 32, 2 + 4 + 16, true};
    case GgmlType::kQ5_1: return {"q5_1", 32, 2 + 2 + 4 + 16, true};
    case GgmlType::kQ8_0: return {"q8_0", 32, 2 + 32, true};
    case GgmlType::kQ8_1: return {"q8_1", 32, 2 + 2 + 32, true};
    case GgmlType::kQ2_K: return {"q2_k", 256, 256 / 16 + 256 / 4 + 2 + 2, true};
    case GgmlType::kQ3_K: return {"q3_k", 256, 256 / 8 + 256 / 4 + 12 + 2, true};
    case GgmlType::kQ4_K: return {"q4_k", 256, 2 + 2 + 12 + 256 / 2, true};
    case GgmlType::kQ5_K: return {"q5_k", 256, 2 + 2 + 12 + 256 / 8 + 256 / 2, true};
    case GgmlType::kQ6_K: return {"q6_k", 256, 256 / 2 + 256 / 4 + 256 / 16 + 2, true};
    case GgmlType::kQ8_K: return {"q8_k", 256, 4 + 256 + 2 * 256 / 16, true};
  }
  return {"unknown", 0, 0, false};
}

// Bytes of a row of `n` values. REQUIRES: type is known and n % block_size == 0.
constexpr size_t RowBytes(GgmlType type, int64_t n) {
  TypeInfo info = GetTypeInfo(type);
  return static_cast<size_t>(n / info.block_size) * info.type_size;
}

// How the blocks of a weight row are laid out in memory.
enum class MatrixLayout {
  kGguf,  // as GGUF stores them.
  // Q4_1 and Q8_0 only: each group of 8 blocks (256 values) of a row, and the 1..7 blocks a
  // row may have left over, rewritten as the registers the AVX-512 kernels decode it into
  // (RepackRowsGroup8 in matmul.h), same bytes per row. The AVX-512 VNNI kernels then decode
  // with loads alone (no permutes or gathers), which is what limits batch-1 decode. Other ISAs
  // read it by unpacking a few rows at a time into scratch (slow: for tests and forced ISAs).
  kGroup8,
  // Q4_1 and Q8_0, for matrices whose rows are a multiple of 16: rows as vector lanes. Each
  // panel of 16 rows (row_stride * 16 bytes from data + 16 p * row_stride) holds, for each
  // block b of the rows in turn, 16 blocks' bytes: the code vectors (Q4_1 4, Q8_0 8, 64 bytes
  // each: the k-th holds dword k of the block's codes for rows 0..15 of the panel; Q8_0 codes
  // + 128), then the 16 rows' d (f16), then Q4_1's m (f16); the panel's bytes past blocks x 16
  // blocks are the rows' padding, copied as they are (RepackRowsRows16 in matmul.h). An
  // AVX-512 VNNI kernel then takes one block of 16 rows in 8 dot-product steps whose lanes are
  // the rows: no horizontal sums and half the float work of kGroup8 per value, the same
  // operations for every batch shape. Its results are rounded in another order than the other
  // layouts' (not their bits). Other ISAs unpack it.
  kRows16,
};

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_TYPES_H_
