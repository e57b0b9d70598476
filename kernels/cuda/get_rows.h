// Row lookup on the device (token embeddings, and gathering rows of an activation matrix).
#ifndef CRESCENT_KERNELS_CUDA_GET_ROWS_H_
#define CRESCENT_KERNELS_CUDA_GET_ROWS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu/types.h"

namespace crescent::kernels::cuda {

// out[r][0..n) = row ids[r] of `table` (rows row_stride bytes apart, encoded as `type`), decoded
// to f32, for r < n_ids. Device pointers (ids too). Asynchronous.
// Errors: Unimplemented for a type without a CUDA decoder (the MatMulSupports types have one);
// Internal when the launch fails. REQUIRES: every id names a row of the table; n is a multiple
// of the type's block size.
absl::Status GetRows(GgmlType type, const void* table, size_t row_stride, const int32_t* ids,
                     int64_t n_ids, int64_t n, float* out);

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_GET_ROWS_H_
