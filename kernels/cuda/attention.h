// Causal grouped-query attention over the paged f16 KV cache, on the device.
#ifndef CRESCENT_KERNELS_CUDA_ATTENTION_H_
#define CRESCENT_KERNELS_CUDA_ATTENTION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/kv_pages.h"

namespace crescent::kernels::cuda {

// The queries of one Attention call: `rows` query tokens of any number of sequences, every
// pointer a device address.
struct AttentionRows {
  const float* q = nullptr;            // [rows][n_heads][head_dim], rotary embedding applied
  float* out = nullptr;                // [rows][n_heads][head_dim]
  const int32_t* pos = nullptr;        // [rows] the query's position
  const int32_t* table = nullptr;      // flat block ids of every sequence's block table
  const int32_t* table_off = nullptr;  // [rows] where the row's sequence's table starts
  int64_t rows = 0;
};

// For each row r and head h: out = softmax(scale * q . k_p) . v_p over positions
// p = 0 .. pos[r] (inclusive), K/V from KV head h / (n_heads / n_kv_heads) of `layer`, page
// p / block_tokens of the row's table. Scores and sums in f32 with an online softmax; one block
// of 4 warps per (row, head), positions dealt round-robin to the warps and merged at the end.
// Asynchronous. Errors: InvalidArgument for head_dim > 256 or n_heads not a multiple of
// n_kv_heads; Internal when the launch fails.
// REQUIRES: every position up to pos[r] written (StoreKv) in pages the table names.
absl::Status Attention(const AttentionRows& rows, const KvPages& pages, int layer, int n_heads,
                       float scale);

}  // namespace crescent::kernels::cuda

#endif  // CRESCENT_KERNELS_CUDA_ATTENTION_H_
