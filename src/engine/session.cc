#include "src/engine/session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "src/common/clock.h"
#include "src/common/status.h"

namespace crescent::engine {

Session::Session(const LoadedModel* model, Backend* backend, KvCache* cache)
    : model_(model), backend_(backend), cache_(cache) {}

Session::~Session() { Reset(); }

void Session::Reset() {
  for (KvCache::BlockId b : blocks_) cache_->Unref(b);
  blocks_.clear();
  tokens_.clear();
}

absl::Status Session::EnsureBlocks(int64_t positions) {
  return cache_->GrowTable(positions, &blocks_);
}

absl::Status Session::Compute(size_t begin, size_t end, std::vector<float>* logits) {
  SequenceBatch seq;
  seq.tokens = std::span<const int32_t>(tokens_).subspan(begin, end - begin);
  seq.pos0 = static_cast<int64_t>(begin);
  seq.block_table = blocks_;
  seq.logits = LogitsMode::kLast;
  return backend_->Forward(std::span<const SequenceBatch>(&seq, 1), cache_, nullptr, logits);
}

absl::Status Session::Prefill(std::span<const int32_t> tokens, int chunk_tokens,
                              std::vector<float>* logits) {
  if (tokens.empty()) return absl::InvalidArgumentError("empty prompt");
  if (static_cast<int64_t>(tokens.size()) > model_->config.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", tokens.size(),
                                                   " tokens exceeds the model context of ",
                                                   model_->config.context_length));
  }
  // Longest common prefix with what is cached; at least the last token is recomputed so
  // that its logits exist.
  size_t common = 0;
  while (common < tokens_.size() && common < tokens.size() && tokens_[common] == tokens[common]) {
    ++common;
  }
  if (common == tokens.size()) --common;
  tokens_.assign(tokens.begin(), tokens.end());
  reused_ = static_cast<int64_t>(common);
  const int bt = cache_->config().block_tokens;
  // Blocks past the common prefix are rewritten; drop the ones no longer needed.
  int64_t keep = (static_cast<int64_t>(tokens.size()) + bt - 1) / bt;
  while (static_cast<int64_t>(blocks_.size()) > keep) {
    cache_->Unref(blocks_.back());
    blocks_.pop_back();
  }
  absl::Status s = EnsureBlocks(static_cast<int64_t>(tokens.size()));
  if (!s.ok()) {
    Reset();
    return s;
  }
  if (chunk_tokens <= 0) chunk_tokens = 512;
  for (size_t begin = common; begin < tokens.size();) {
    size_t end = std::min(tokens.size(), begin + static_cast<size_t>(chunk_tokens));
    s = Compute(begin, end, logits);
    if (!s.ok()) {
      Reset();
      return s;
    }
    begin = end;
  }
  return absl::OkStatus();
}

absl::Status Session::Step(int32_t token, std::vector<float>* logits) {
  if (static_cast<int64_t>(tokens_.size()) + 1 > model_->config.context_length) {
    return absl::OutOfRangeError(absl::StrCat("context of ", model_->config.context_length,
                                              " tokens is full"));
  }
  CRESCENT_RETURN_IF_ERROR(EnsureBlocks(static_cast<int64_t>(tokens_.size()) + 1));
  tokens_.push_back(token);
  absl::Status s = Compute(tokens_.size() - 1, tokens_.size(), logits);
  if (!s.ok()) tokens_.pop_back();
  return s;
}

absl::StatusOr<GenerateResult> Generate(Session* session, std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<bool(std::string_view)>& on_text) {
  const LoadedModel& m = session->model();
  const Clock* clock = RealClock::Get();
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  int64_t t0 = clock->NowNanos();
  std::vector<float> logits;
  CRESCENT_RETURN_IF_ERROR(session->Prefill(prompt, options.prefill_chunk, &logits));
  r.cached_tokens = session->reused_tokens();

  Sampler sampler(options.sampling, m.config.vocab_size);
  model::StreamingDetokenizer detok(*m.tokenizer);
  size_t max_stop = 0;
  for (const std::string& s : options.stop) max_stop = std::max(max_stop, s.size());
  std::string text;    // all text so far
  size_t emitted = 0;  // bytes of `text` handed to on_text
  bool stopped = false;          // on_text asked to stop
  bool stop_string_hit = false;
  auto emit_up_to = [&](size_t end) {
    if (end > emitted) {
      if (on_text && !on_text(std::string_view(text).substr(emitted, end - emitted))) {
        stopped = true;
      }
      emitted = end;
    }
  };
  int64_t t_first = 0;
  r.finish_reason = "length";
  for (int i = 0; i < options.max_tokens; ++i) {
    SampleResult sr = sampler.Sample(std::span<float>(logits.data(), m.config.vocab_size),
                                     prompt, r.tokens);
    if (i == 0) t_first = clock->NowNanos();
    if (m.tokenizer->IsEndOfGeneration(sr.token)) {
      r.finish_reason = "stop";
      break;
    }
    r.tokens.push_back(sr.token);
    size_t before = text.size();
    text += detok.Push(sr.token);
    // A stop string may straddle the previous text, so search from max_stop bytes back.
    size_t from = before >= max_stop ? before - max_stop : 0;
    size_t hit = std::string::npos;
    for (const std::string& s : options.stop) {
      if (s.empty()) continue;
      size_t p = text.find(s, from);
      if (p != std::string::npos && p < hit) hit = p;
    }
    if (hit != std::string::npos) {
      text.resize(hit);
      emit_up_to(text.size());
      stop_string_hit = true;
      r.finish_reason = "stop";
      break;
    }
    // Hold back a tail that could still become a stop string.
    size_t safe = max_stop > 0 && text.size() >= max_stop - 1 ? text.size() - (max_stop - 1)
                  : (max_stop > 0 ? 0 : text.size());
    emit_up_to(safe);
    if (stopped) {
      r.finish_reason = "stop";
      break;
    }
    if (i + 1 < options.max_tokens) {
      CRESCENT_RETURN_IF_ERROR(session->Step(sr.token, &logits));
    }
  }
  if (!stopped && !stop_string_hit) {
    text += detok.Flush();
    emit_up_to(text.size());
  }
  int64_t t_end = clock->NowNanos();
  if (t_first == 0) t_first = t_end;
  r.text = std::move(text);
  r.prefill_seconds = static_cast<double>(t_first - t0) * 1e-9;
  r.decode_seconds = static_cast<double>(t_end - t_first) * 1e-9;
  return r;
}

}  // namespace crescent::engine
