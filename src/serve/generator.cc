#include "src/serve/generator.h"

#include <utility>

namespace crescent::serve {

int64_t EngineGenerator::max_sequence_tokens() const {
  return engine_->cache()->num_blocks() * engine_->options().block_tokens;
}

absl::StatusOr<uint64_t> EngineGenerator::Submit(engine::EngineRequest request,
                                                 engine::TokenCallback on_token,
                                                 GenerationDoneCallback on_done) {
  return engine_->Submit(
      std::move(request), std::move(on_token),
      [on_done = std::move(on_done)](absl::Status status, engine::FinishReason reason,
                                     const engine::RequestStats& stats,
                                     std::span<const engine::KvCache::BlockId>) {
        GenerationResult result;
        result.reason = reason;
        result.stats = stats;
        on_done(std::move(status), result);
      });
}

}  // namespace crescent::serve
