#include "kernels/cuda/get_rows.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/internal/weights.cuh"

namespace crescent::kernels::cuda {
namespace {

template <GgmlType T>
__global__ void GetRowsKernel(const uint8_t* table, size_t stride, const int32_t* ids, int64_t n,
                              float* out) {
  const int64_t r = blockIdx.x;
  const uint8_t* row = table + static_cast<size_t>(ids[r]) * stride;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    out[r * n + k] = internal::WeightAt<T>(row, k);
  }
}

}  // namespace

absl::Status GetRows(GgmlType type, const void* table, size_t row_stride, const int32_t* ids,
                     int64_t n_ids, int64_t n, float* out) {
  if (!internal::Decodable(type)) {
    return absl::UnimplementedError(
        absl::StrCat("no CUDA decoder for ", GetTypeInfo(type).name, " rows"));
  }
  if (n_ids <= 0 || n <= 0) return absl::OkStatus();
  const auto* t = static_cast<const uint8_t*>(table);
  internal::DispatchType(type, [&](auto tc) {
    constexpr GgmlType T = decltype(tc)::value;
    GetRowsKernel<T><<<static_cast<unsigned>(n_ids), 256>>>(t, row_stride, ids, n, out);
  });
  return LaunchStatus("GetRows");
}

}  // namespace crescent::kernels::cuda
