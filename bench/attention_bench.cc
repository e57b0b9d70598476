// attention_bench: decode attention (one new query per sequence) over the paged f16 KV cache.
//
// For the reference model's shape (9 query heads, 3 KV heads, head_dim 64, pages of 16 tokens),
// batches of 1, 8 and 32 sequences and contexts from 64 to 2048 positions, prints the time of one
// Attention() call "hot" (the same call again and again: its KV stays in cache while it fits,
// about 1 MiB per core of L2 and the shared L3 here) and "cold" (cycling over enough layers'
// pages, >= 256 MiB in all, that every call reads its KV from DRAM, as a decode step does after
// streaming the weights), and the KV bandwidth of the cold calls (K and V bytes read / time).
// Times are medians over the passes. A decode step of a 30-layer model makes 30 such calls.
//
//   attention_bench [--threads N] [--contexts 64,256,...] [--batches 1,8,32] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/fp16.h"
#include "kernels/cpu/huge_pages.h"
#include "src/common/thread_pool.h"

namespace crescent::kernels {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr int kHeads = 9, kKvHeads = 3, kHeadDim = 64, kBlockTokens = 16;

// A comma-separated list of positive integers into *out; false on anything else.
bool ParseList(absl::string_view text, std::vector<int64_t>* out) {
  out->clear();
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(item, &v) || v <= 0) return false;
    out->push_back(v);
  }
  return !out->empty();
}

// `layers` copies of the KV of `batch` sequences of `context` positions each, in one huge-page
// arena laid out as the engine's KvCache lays it out: block b holds, for each layer, that
// layer's K page then its V page; sequence s owns blocks [s * pages, (s + 1) * pages). The
// calls' arguments for each layer.
struct Workload {
  std::unique_ptr<HugePageBuffer> arena;
  std::vector<std::vector<const uint16_t*>> k_ptrs, v_ptrs;  // [layer * batch + seq]
  std::vector<float> q, out;                                 // [batch][heads][hd]
  std::vector<std::vector<AttentionSeq>> calls;              // [layer][seq]
};

Workload MakeWorkload(int batch, int64_t context, int layers) {
  Workload w;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int64_t n_pages = (context + kBlockTokens - 1) / kBlockTokens;
  const size_t page_elems = static_cast<size_t>(kBlockTokens) * kKvHeads * kHeadDim;
  const size_t block_elems = page_elems * 2 * static_cast<size_t>(layers);
  const size_t blocks = static_cast<size_t>(batch) * n_pages;
  auto arena = HugePageBuffer::Create(blocks * block_elems * sizeof(uint16_t));
  if (!arena.ok()) {
    std::fprintf(stderr, "attention_bench: %s\n", std::string(arena.status().message()).c_str());
    std::exit(1);
  }
  w.arena = std::move(*arena);
  auto* base = static_cast<uint16_t*>(w.arena->data());
  std::vector<uint16_t> pattern(page_elems);
  for (uint16_t& h : pattern) h = F32ToF16(dist(rng));
  for (size_t i = 0; i < blocks * block_elems; i += page_elems) {
    std::copy(pattern.begin(), pattern.end(), base + i);
  }
  w.q.resize(static_cast<size_t>(batch) * kHeads * kHeadDim);
  for (float& v : w.q) v = dist(rng);
  w.out.resize(w.q.size());
  w.k_ptrs.resize(static_cast<size_t>(layers) * batch);
  w.v_ptrs.resize(w.k_ptrs.size());
  w.calls.resize(layers);
  for (int l = 0; l < layers; ++l) {
    for (int s = 0; s < batch; ++s) {
      const size_t i = static_cast<size_t>(l) * batch + s;
      for (int64_t p = 0; p < n_pages; ++p) {
        uint16_t* block = base + (static_cast<size_t>(s) * n_pages + p) * block_elems;
        w.k_ptrs[i].push_back(block + 2 * static_cast<size_t>(l) * page_elems);
        w.v_ptrs[i].push_back(block + (2 * static_cast<size_t>(l) + 1) * page_elems);
      }
      AttentionSeq a;
      a.q = w.q.data() + static_cast<size_t>(s) * kHeads * kHeadDim;
      a.n_q = 1;
      a.q_pos0 = context - 1;
      a.k_blocks = w.k_ptrs[i].data();
      a.v_blocks = w.v_ptrs[i].data();
      a.out = w.out.data() + static_cast<size_t>(s) * kHeads * kHeadDim;
      w.calls[l].push_back(a);
    }
  }
  return w;
}

// Median microseconds per call over `reps` passes over `layers` (1: hot).
double TimeCalls(ThreadPool* pool, const Workload& w, int reps) {
  const float scale = 1.0f / 8.0f;
  std::vector<double> per_call;
  for (int r = 0; r < reps; ++r) {
    const double t0 = Now();
    for (const auto& call : w.calls) {
      Attention(pool, call.data(), static_cast<int>(call.size()), kHeads, kKvHeads, kHeadDim,
                kBlockTokens, scale);
    }
    per_call.push_back((Now() - t0) / static_cast<double>(w.calls.size()) * 1e6);
  }
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

int Main(int argc, char** argv) {
  int threads = ThreadPool::DefaultThreadCount();
  std::vector<int64_t> contexts = {64, 128, 256, 512, 1024, 2048};
  std::vector<int64_t> batches = {1, 8, 32};
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &threads) || threads < 1) {
        std::fprintf(stderr, "attention_bench: --threads takes a positive integer\n");
        return 2;
      }
    } else if ((a == "--contexts" || a == "--batches") && i + 1 < argc) {
      if (!ParseList(argv[++i], a == "--contexts" ? &contexts : &batches)) {
        std::fprintf(stderr, "attention_bench: %s takes positive integers, comma-separated\n",
                     a.c_str());
        return 2;
      }
    } else if (a == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr,
                   "usage: attention_bench [--threads N] [--contexts 64,256,...] "
                   "[--batches 1,8,32] [--quick]\n");
      return 2;
    }
  }
  ThreadPool pool(threads);
  std::printf("attention_bench: isa=%s threads=%d heads=%d kv_heads=%d head_dim=%d page=%d\n\n",
              IsaName(ActiveIsa()), threads, kHeads, kKvHeads, kHeadDim, kBlockTokens);
  std::printf("%5s %7s %10s %10s %10s %12s\n", "batch", "context", "KV KB", "hot us", "cold us",
              "cold KV GB/s");
  const int reps = quick ? 5 : 21;
  for (int64_t batch : batches) {
    for (int64_t context : contexts) {
      const double kv_bytes = static_cast<double>(batch) * context * kKvHeads * kHeadDim * 2 * 2;
      // Enough copies that one pass reads >= 256 MiB: each call's KV comes from DRAM.
      const int layers = static_cast<int>(std::max(2.0, (256.0 * (1 << 20)) / kv_bytes));
      if (static_cast<double>(layers) * kv_bytes > 2.0 * (1ull << 30)) continue;
      const Workload hot = MakeWorkload(static_cast<int>(batch), context, 1);
      const Workload cold = MakeWorkload(static_cast<int>(batch), context, layers);
      TimeCalls(&pool, hot, 3);  // warm-up
      const double hot_us = TimeCalls(&pool, hot, reps * 20);
      const double cold_us = TimeCalls(&pool, cold, quick ? 2 : 5);
      std::printf("%5lld %7lld %10.1f %10.2f %10.2f %12.2f\n", static_cast<long long>(batch),
                  static_cast<long long>(context), kv_bytes / 1024, hot_us, cold_us,
                  kv_bytes / (cold_us * 1e-6) / 1e9);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace crescent::kernels

int main(int argc, char** argv) { return crescent::kernels::Main(argc, argv); }
