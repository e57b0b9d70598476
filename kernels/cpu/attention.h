// Causal grouped-query attention over a paged f16 KV cache.
#ifndef CRESCENT_KERNELS_CPU_ATTENTION_H_
#define CRESCENT_KERNELS_CPU_ATTENTION_H_

#include <cstdint>

#include "src/common/thread_pool.h"

namespace crescent::kernels {

// One sequence's queries in an Attention() call. Not owning.
struct AttentionSeq {
  const float* q = nullptr;  // [n_q][n_heads][head_dim], rotary embedding already applied.
  int n_q = 0;               // query tokens of this sequence in this call.
  int64_t q_pos0 = 0;        // position of the first query; query j sits at q_pos0 + j.
  // Page b holds positions [b * block_tokens, (b + 1) * block_tokens) as f16 bits, laid out
  // [block_tokens][n_kv_heads][head_dim]. Pages up to the one holding position
  // q_pos0 + n_q - 1 must be present, and every position up to that one written.
  const uint16_t* const* k_blocks = nullptr;
  const uint16_t* const* v_blocks = nullptr;
  float* out = nullptr;  // [n_q][n_heads][head_dim]
};

// For every sequence, query j and head h: out = softmax(scale * q . k_p) . v_p over positions
// p = 0 .. q_pos0 + j (inclusive), with K/V from KV head h / (n_heads / n_kv_heads). Softmax
// with fp32 accumulation (no overflow for any finite scores), one pass per 64-position segment,
// segments folded online. Work is split over (sequence, chunk of queries, KV head); a chunk of
// one query (decode) takes every KV head at once, so that each page is read front to back. When
// that gives too few pieces for the pool, positions are split over threads in whole segments
// and merged at the end. pool may be nullptr (calling thread).
// Each (query, head) output is bit-identical whatever the other queries and sequences of the
// call, the chunk its query came in, the pool's size and block_tokens (for one ISA): every row
// folds per-segment softmax states in position order, split over threads or not.
// Thread-safe for distinct outputs.
// REQUIRES: n_seqs >= 0; n_heads % n_kv_heads == 0; head_dim > 0; block_tokens > 0; each
// seqs[i].n_q >= 0, q_pos0 >= 0; outputs do not overlap inputs.
void Attention(ThreadPool* pool, const AttentionSeq* seqs, int n_seqs, int n_heads, int n_kv_heads,
               int head_dim, int block_tokens, float scale);

}  // namespace crescent::kernels

#endif  // CRESCENT_KERNELS_CPU_ATTENTION_H_
