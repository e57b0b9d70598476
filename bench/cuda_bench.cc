// cuda_bench: the CUDA backend's speed against the device-memory "speed of light", the
// counterpart of model_bench (built where nvcc is found; needs a device to run).
//
// Prints, in one run: the device, its copy bandwidth (cudaMemcpy device to device of half a
// 1 GiB buffer onto the other half, bytes read + written per second, best of 5: the STREAM
// convention model_bench uses), weight bytes per decode step, prefill tokens/s for a 512-token
// prompt (best of 3), decode tokens/s at batch 1 (128 tokens, best of 3) and at batch 8 and 32,
// and batch-1 decode's fraction of the bound (copy bandwidth / (weight + KV bytes per token)).
//
// Read the fraction knowing where the KV cache is: CudaBackend leaves it in host memory, mapped
// for the device (docs/runtime.md, "The CUDA backend"), so attention's K/V cross the bus and
// count against the device bandwidth here only as a lower bound of their cost.
//
//   cuda_bench [--model PATH] [--decode-steps N]
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>

#include "CLI/CLI.hpp"
#include "bench/common/model_runs.h"
#include "kernels/cuda/device.h"
#include "src/common/clock.h"
#include "src/engine/cuda_backend.h"
#include "src/engine/kv_cache.h"
#include "src/engine/loaded_model.h"

namespace crescent {
namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "cuda_bench: %s\n", s.ToString().c_str());
  return 1;
}

// Device-to-device copy bandwidth, GB/s (read + write), best of `passes`.
absl::StatusOr<double> DeviceCopyBandwidth(size_t bytes, int passes) {
  auto buf = kernels::cuda::DeviceBuffer::Create(bytes);
  if (!buf.ok()) return buf.status();
  auto* p = static_cast<char*>(buf->data());
  const size_t half = bytes / 2;
  double best = 0;
  for (int i = 0; i < passes + 1; ++i) {  // the first pass warms up
    const double t0 = RealClock::Get()->NowSeconds();
    absl::Status s = kernels::cuda::CopyOnDevice(p + half, p, half);
    if (s.ok()) s = kernels::cuda::Synchronize();
    if (!s.ok()) return s;
    const double dt = RealClock::Get()->NowSeconds() - t0;
    if (i > 0) best = std::max(best, 2.0 * static_cast<double>(half) / dt / 1e9);
  }
  return best;
}

int Main(int argc, char** argv) {
  CLI::App app{"Crescent CUDA model benchmark"};
  std::string model_path = engine::DefaultModelPath();
  int decode_steps = 128;
  app.add_option("--model", model_path)->capture_default_str();
  app.add_option("--decode-steps", decode_steps)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (absl::Status s = kernels::cuda::CheckDevice(); !s.ok()) return Fail(s);
  auto model = engine::LoadModel(model_path);
  if (!model.ok()) return Fail(model.status());
  const model::ModelConfig& c = (*model)->config;
  auto backend = engine::CudaBackend::Create(c, (*model)->weights);
  if (!backend.ok()) return Fail(backend.status());
  engine::KvCacheConfig kc{c.n_layers, c.n_kv_heads, c.head_dim, 16, 0};
  kc.num_blocks = 32 * ((64 + decode_steps + 15) / 16) + (512 + 15) / 16 + 8;
  auto cache = engine::KvCache::Create(kc);
  if (!cache.ok()) return Fail(cache.status());

  auto bw = DeviceCopyBandwidth(size_t{1} << 30, 5);
  if (!bw.ok()) return Fail(bw.status());
  std::mt19937 rng(1234);
  const double weight_bytes = static_cast<double>((*model)->weights.WeightBytesPerToken());
  const double kv_bytes = bench::KvBytesPerStep(c, 1, decode_steps);
  auto prefill =
      bench::PrefillTokensPerSecond(backend->get(), cache->get(), c.vocab_size, 512, 3, &rng);
  if (!prefill.ok()) return Fail(prefill.status());
  double decode[3] = {0, 0, 0};
  const int batches[3] = {1, 8, 32};
  for (int i = 0; i < 3; ++i) {
    for (int rep = 0; rep < 3; ++rep) {
      auto tps = bench::DecodeTokensPerSecond(backend->get(), cache->get(), c.vocab_size,
                                              batches[i], 64, decode_steps, &rng);
      if (!tps.ok()) return Fail(tps.status());
      decode[i] = std::max(decode[i], *tps);
    }
  }
  const double bound = *bw * 1e9 / (weight_bytes + kv_bytes);
  std::printf("model                         %s (%s, %d layers, d=%d)\n", (*model)->id.c_str(),
              c.arch.c_str(), c.n_layers, c.n_embd);
  std::printf("device                        %s\n", kernels::cuda::DeviceDescription().c_str());
  std::printf("device copy bandwidth         %.1f GB/s (read + write)\n", *bw);
  std::printf("weight bytes per token        %.1f MB (+ %.2f MB KV at batch 1, in host memory)\n",
              weight_bytes / 1e6, kv_bytes / 1e6);
  std::printf("prefill, 512-token prompt     %.1f tok/s\n", *prefill);
  std::printf("decode batch 1 (%d tokens)   %.1f tok/s\n", decode_steps, decode[0]);
  std::printf("decode batch 8                %.1f tok/s  (%.2fx batch 1)\n", decode[1],
              decode[1] / decode[0]);
  std::printf("decode batch 32               %.1f tok/s  (%.2fx batch 1)\n", decode[2],
              decode[2] / decode[0]);
  std::printf("bandwidth bound, batch 1      %.1f tok/s\n", bound);
  std::printf("batch-1 fraction of bound     %.1f%%\n", 100 * decode[0] / bound);
  return 0;
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
