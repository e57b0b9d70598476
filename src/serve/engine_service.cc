#include "src/serve/engine_service.h"

#include <algorithm>
#include <ctime>
#include <deque>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "src/common/logging.h"
#include "src/common/status.h"
#include "src/engine/json_schema.h"
#include "src/model/chat_template.h"
#include "src/model/tokenizer.h"
#include "src/server/openai_protocol.h"

namespace crescent::serve {
namespace {

using server::CompletionChunk;
using server::CompletionRequest;
using server::RequestKind;

// echo with max_tokens 0: the prompt (and its logprobs) alone, the loglikelihood request of
// evaluation harnesses. The engine generates one token, which is dropped.
bool PromptOnly(const CompletionRequest& request) {
  return request.echo && request.max_tokens == 0;
}

// One choice of a request in flight. Its text state is touched only by that choice's callbacks,
// which the generator calls in order, never concurrently.
struct Choice {
  Choice(const model::Tokenizer& tokenizer, std::vector<std::string> stops)
      : detok(tokenizer, /*skip_special=*/true), matcher(std::move(stops)) {}

  model::StreamingDetokenizer detok;
  StopMatcher matcher;
  // Logprobs of tokens whose text has not been sent yet, with where their text starts in the
  // choice's text.
  struct PendingLogprob {
    size_t start;
    server::TokenLogprob logprob;
  };
  std::deque<PendingLogprob> logprobs;
  size_t produced = 0;  // Bytes the detokenizer has given so far.
  int generated = 0;    // Tokens generated so far.
  // echo with logprobs: the echoed prompt's chunk, sent once the engine has reported the logprob
  // of every prompt position (before the first generated token).
  CompletionChunk echo;
  size_t echo_positions = 0;  // prompt positions whose logprob `echo` still waits for
};

// A request in flight: n choices, one generator request each.
struct Generation {
  Generator* generator = nullptr;
  const model::Tokenizer* tokenizer = nullptr;
  bool want_logprobs = false;
  // echo with max_tokens 0: the engine generates one token (it cannot generate none), which is
  // neither sent nor counted.
  bool prompt_only = false;
  // vLLM's min_tokens: stop strings are not looked for in the text of the first min_tokens - 1
  // tokens.
  int min_tokens = 0;
  std::vector<std::unique_ptr<Choice>> choices;

  absl::Mutex mu;
  server::ChunkCallback on_chunk ABSL_GUARDED_BY(mu);
  server::DoneCallback on_done ABSL_GUARDED_BY(mu);
  // Generator request ids of the choices submitted so far.
  std::vector<uint64_t> ids ABSL_GUARDED_BY(mu);
  // Choices still to finish, plus one held by Start() until it has submitted them all.
  int remaining ABSL_GUARDED_BY(mu) = 0;
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);
  std::optional<double> retry_after_seconds ABSL_GUARDED_BY(mu);
  server::Usage usage ABSL_GUARDED_BY(mu);
  bool have_cached ABSL_GUARDED_BY(mu) = false;
};

// Drops `count` from gen.remaining; the one that reaches zero calls on_done (once).
void FinishSome(Generation& gen, int count) {
  server::DoneCallback on_done;
  absl::Status status;
  server::Usage usage;
  {
    absl::MutexLock lock(&gen.mu);
    gen.remaining -= count;
    if (gen.remaining > 0) return;
    on_done = std::move(gen.on_done);
    gen.on_done = nullptr;
    gen.on_chunk = nullptr;  // Drop the front's closures: nothing more is sent.
    status = gen.status;
    if (status.ok() && gen.cancelled) status = absl::CancelledError("request cancelled");
    if (!status.ok() && gen.retry_after_seconds) {
      status = server::WithRetryAfter(std::move(status), *gen.retry_after_seconds);
    }
    usage = gen.usage;
  }
  if (on_done) on_done(std::move(status), usage);
}

void SendChunk(Generation& gen, CompletionChunk chunk) {
  server::ChunkCallback on_chunk;
  {
    absl::MutexLock lock(&gen.mu);
    on_chunk = gen.on_chunk;
  }
  if (on_chunk) on_chunk(std::move(chunk));
}

// Moves into `out` the logprobs of the tokens whose text begins before byte `sent` of the
// choice's text (those whose text has begun to be sent; SIZE_MAX: all of them).
void TakeLogprobs(Choice& c, size_t sent, std::vector<server::TokenLogprob>* out) {
  while (!c.logprobs.empty() && (c.logprobs.front().start < sent)) {
    out->push_back(std::move(c.logprobs.front().logprob));
    c.logprobs.pop_front();
  }
}

server::TokenLogprob MakeLogprob(const model::Tokenizer& tokenizer, const engine::SampleResult& r) {
  server::TokenLogprob lp;
  lp.token = tokenizer.TokenToPiece(r.token);
  lp.logprob = r.logprob;
  lp.top_logprobs.reserve(r.top_logprobs.size());
  for (const engine::TokenLogprob& top : r.top_logprobs) {
    lp.top_logprobs.push_back({tokenizer.TokenToPiece(top.token), top.logprob});
  }
  return lp;
}

// A prompt position's logprob for an echoing choice; the last one sends the echo chunk.
void OnPromptLogprob(Generation& gen, int index, const engine::SampleResult& r) {
  Choice& c = *gen.choices[index];
  if (c.echo_positions == 0) return;
  c.echo.logprobs.push_back(MakeLogprob(*gen.tokenizer, r));
  if (--c.echo_positions == 0) SendChunk(gen, std::move(c.echo));
}

bool OnToken(Generation& gen, int index, const engine::SampleResult& r) {
  if (gen.prompt_only) return false;
  Choice& c = *gen.choices[index];
  if (c.matcher.stopped()) return false;
  std::string text = c.detok.Push(r.token);
  if (gen.want_logprobs) c.logprobs.push_back({c.produced, MakeLogprob(*gen.tokenizer, r)});
  c.produced += text.size();
  CompletionChunk chunk;
  chunk.choice_index = index;
  chunk.text =
      ++c.generated < gen.min_tokens ? c.matcher.PushUnchecked(text) : c.matcher.Push(text);
  TakeLogprobs(c, c.matcher.emitted(), &chunk.logprobs);
  if (!chunk.text.empty() || !chunk.logprobs.empty()) SendChunk(gen, std::move(chunk));
  return !c.matcher.stopped();
}

void OnFinish(Generation& gen, int index, const absl::Status& status,
              const GenerationResult& result) {
  Choice& c = *gen.choices[index];
  const engine::FinishReason reason = result.reason;
  const engine::RequestStats& stats = result.stats;
  {
    absl::MutexLock lock(&gen.mu);
    if (!status.ok() && result.retry_after_seconds) {
      gen.retry_after_seconds = result.retry_after_seconds;
    }
    if (!gen.prompt_only) gen.usage.completion_tokens += static_cast<int>(stats.generated_tokens);
    int cached = static_cast<int>(stats.cached_tokens);
    gen.usage.cached_tokens = gen.have_cached ? std::min(gen.usage.cached_tokens, cached) : cached;
    gen.have_cached = true;
    gen.usage.queue_seconds = std::max(gen.usage.queue_seconds.value_or(0.0), stats.queue_seconds);
    if (!status.ok() && gen.status.ok()) gen.status = status;
    if (status.ok() && reason != engine::FinishReason::kStop &&
        reason != engine::FinishReason::kLength && gen.status.ok()) {
      gen.status = absl::CancelledError("request cancelled");
    }
  }
  if (status.ok() &&
      (reason == engine::FinishReason::kStop || reason == engine::FinishReason::kLength)) {
    CompletionChunk chunk;
    chunk.choice_index = index;
    if (!c.matcher.stopped()) {
      chunk.text = c.matcher.Push(c.detok.Flush());
      if (!c.matcher.stopped()) chunk.text += c.matcher.Flush();
    }
    TakeLogprobs(c, c.matcher.stopped() ? c.matcher.emitted() : SIZE_MAX, &chunk.logprobs);
    c.logprobs.clear();
    chunk.finish_reason =
        !gen.prompt_only && (c.matcher.stopped() || reason == engine::FinishReason::kStop)
            ? "stop"
            : "length";
    SendChunk(gen, std::move(chunk));
  }
  FinishSome(gen, 1);
}

// The chunk that echoes prompt `p` of `request`: its text (as sent; token ids decoded with
// their special tokens), and with logprobs one entry per prompt token, the first without a
// logprob (the engine's prompt logprobs fill in the rest).
CompletionChunk EchoChunk(const CompletionRequest& request, size_t p,
                          const std::vector<int32_t>& prompt, const model::Tokenizer& tokenizer) {
  CompletionChunk chunk;
  const server::CompletionPrompt& given = request.prompts[p];
  chunk.text = given.tokens ? tokenizer.Decode(prompt) : given.text;
  if (request.logprobs) {
    server::TokenLogprob first;
    first.token = tokenizer.TokenToPiece(prompt[0]);
    first.logprob = std::nullopt;
    chunk.logprobs.push_back(std::move(first));
  }
  return chunk;
}

class Handle final : public server::CompletionHandle {
 public:
  explicit Handle(std::shared_ptr<Generation> gen) : gen_(std::move(gen)) {}
  void Cancel() override {
    if (!gen_) return;
    std::vector<uint64_t> ids;
    {
      absl::MutexLock lock(&gen_->mu);
      if (gen_->cancelled) return;
      gen_->cancelled = true;
      ids = gen_->ids;
    }
    for (uint64_t id : ids) gen_->generator->Cancel(id);
  }

 private:
  std::shared_ptr<Generation> gen_;
};

}  // namespace

std::string StopMatcher::Push(std::string_view text) {
  if (stopped_) return "";
  pending_.append(text);
  // The earliest complete match of any stop string. Sent text never ends with the start of a
  // stop string, so a match lies wholly in pending_.
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    if (stop.empty()) continue;
    size_t pos = pending_.find(stop);
    if (pos < first) first = pos;
  }
  std::string out;
  if (first != std::string::npos) {
    stopped_ = true;
    out = pending_.substr(0, first);
    pending_.clear();
  } else {
    // Hold back the longest suffix that is a proper prefix of some stop string.
    size_t hold = 0;
    for (const std::string& stop : stops_) {
      size_t max_k = std::min(stop.size() - (stop.empty() ? 0 : 1), pending_.size());
      for (size_t k = max_k; k > hold; --k) {
        if (std::string_view(pending_).substr(pending_.size() - k) ==
            std::string_view(stop).substr(0, k)) {
          hold = k;
          break;
        }
      }
    }
    out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
  }
  emitted_ += out.size();
  return out;
}

std::string StopMatcher::PushUnchecked(std::string_view text) {
  if (stopped_) return "";
  std::string out = std::move(pending_);
  pending_.clear();
  out.append(text);
  emitted_ += out.size();
  return out;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  std::string out = std::move(pending_);
  pending_.clear();
  emitted_ += out.size();
  return out;
}

engine::SamplingParams ToEngineSampling(const CompletionRequest& request) {
  const server::SamplingParams& s = request.sampling;
  engine::SamplingParams p;
  p.temperature = static_cast<float>(s.temperature);
  p.top_p = static_cast<float>(s.top_p);
  p.top_k = s.top_k > 0 ? s.top_k : 0;
  p.min_p = static_cast<float>(s.min_p);
  p.frequency_penalty = static_cast<float>(s.frequency_penalty);
  p.presence_penalty = static_cast<float>(s.presence_penalty);
  p.repetition_penalty = static_cast<float>(s.repetition_penalty);
  if (s.seed) {
    p.seed = *s.seed;
    p.has_seed = true;
  }
  p.logit_bias.reserve(s.logit_bias.size());
  for (const auto& [id, bias] : s.logit_bias)
    p.logit_bias.emplace_back(id, static_cast<float>(bias));
  p.logprobs = request.logprobs;
  p.top_logprobs = request.logprobs ? request.top_logprobs : 0;
  p.json_object = request.json_object;
  p.json_schema = request.json_schema;
  p.stop_token_ids = request.stop_token_ids;
  p.min_tokens = request.min_tokens;
  return p;
}

EngineService::EngineService(Generator* generator, std::unique_ptr<Generator> owned,
                             server::ServerMetrics* metrics, const EngineServiceOptions& options)
    : owned_generator_(std::move(owned)),
      generator_(generator),
      metrics_(metrics),
      options_(options),
      served_model_name_(options.served_model_name.empty() ? generator->model().id
                                                           : options.served_model_name),
      created_unix_seconds_(static_cast<int64_t>(std::time(nullptr))) {}

absl::StatusOr<std::unique_ptr<EngineService>> EngineService::Create(
    engine::Engine* engine, server::ServerMetrics* metrics, const EngineServiceOptions& options) {
  if (engine == nullptr) return absl::InvalidArgumentError("EngineService: engine is null");
  auto owned = std::make_unique<EngineGenerator>(engine);
  Generator* generator = owned.get();
  std::unique_ptr<EngineService> service(
      new EngineService(generator, std::move(owned), metrics, options));
  if (metrics != nullptr) {
    service->RefreshMetrics();
    if (options.metrics_interval_seconds > 0) {
      service->metrics_thread_ = std::thread([s = service.get()] { s->MetricsLoop(); });
    }
  }
  return service;
}

absl::StatusOr<std::unique_ptr<EngineService>> EngineService::Create(
    Generator* generator, server::ServerMetrics* metrics, const EngineServiceOptions& options) {
  if (generator == nullptr) return absl::InvalidArgumentError("EngineService: generator is null");
  std::unique_ptr<EngineService> service(new EngineService(generator, nullptr, metrics, options));
  if (metrics != nullptr) {
    service->RefreshMetrics();
    if (options.metrics_interval_seconds > 0) {
      service->metrics_thread_ = std::thread([s = service.get()] { s->MetricsLoop(); });
    }
  }
  return service;
}

EngineService::~EngineService() {
  stop_.Notify();
  if (metrics_thread_.joinable()) metrics_thread_.join();
}

void EngineService::MetricsLoop() {
  while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(options_.metrics_interval_seconds))) {
    RefreshMetrics();
  }
}

void EngineService::RefreshMetrics() {
  if (metrics_ == nullptr) return;
  const engine::EngineStats s = generator_->Stats();
  metrics_->num_requests_running->Set(static_cast<double>(s.running));
  metrics_->num_requests_waiting->Set(static_cast<double>(s.waiting));
  metrics_->kv_cache_usage_perc->Set(s.total_blocks > 0
                                         ? static_cast<double>(s.total_blocks - s.free_blocks) /
                                               static_cast<double>(s.total_blocks)
                                         : 0.0);
  absl::MutexLock lock(&metrics_mu_);
  server::AddGrowth(metrics_->prefix_cache_queries, s.prefix_queries, &published_.prefix_queries);
  server::AddGrowth(metrics_->prefix_cache_hits, s.prefix_hits, &published_.prefix_hits);
  server::AddGrowth(metrics_->prompt_tokens_total, s.prompt_tokens, &published_.prompt_tokens);
  server::AddGrowth(metrics_->generation_tokens_total, s.generated_tokens,
                    &published_.generated_tokens);
  server::AddGrowth(metrics_->num_preemptions_total, s.preemptions, &published_.preemptions);
  server::AddGrowth(metrics_->spec_decode_draft_tokens, s.draft_tokens, &published_.draft_tokens);
  server::AddGrowth(metrics_->spec_decode_accepted_tokens, s.accepted_draft_tokens,
                    &published_.accepted_draft_tokens);
  published_ = s;
}

absl::StatusOr<std::vector<int32_t>> EngineService::PromptTokens(const CompletionRequest& request,
                                                                 size_t prompt_index,
                                                                 std::string* param) const {
  if (!request.model.empty() && request.model != served_model_name_) {
    return absl::NotFoundError(absl::StrCat("The model '", request.model,
                                            "' does not exist; this server serves '",
                                            served_model_name_, "'"));
  }
  const engine::LoadedModel& model = generator_->model();
  const model::Tokenizer& tokenizer = *model.tokenizer;
  std::vector<int32_t> tokens;
  // The field errors name: "messages", "prompt", or "prompt[i]" in a batch.
  std::string& prompt_param = *param;
  prompt_param = request.prompts.size() > 1 ? absl::StrCat("prompt[", prompt_index, "]") : "prompt";
  if (request.kind == RequestKind::kChat) {
    prompt_param = "messages";
    if (!model.chat_template) {
      return server::InvalidParam("messages",
                                  "the model has no usable chat template; use /v1/completions "
                                  "or start the server with a --chat-template");
    }
    std::vector<model::ChatMessage> messages;
    messages.reserve(request.messages.size());
    for (const server::ChatMessage& m : request.messages) messages.push_back({m.role, m.content});
    absl::StatusOr<std::string> rendered = model.chat_template->Render(messages, true);
    if (!rendered.ok()) {
      return server::InvalidParam("messages", std::string(rendered.status().message()));
    }
    tokens = tokenizer.Encode(*rendered, /*add_special=*/false, /*parse_special=*/true);
  } else if (prompt_index >= request.prompts.size()) {
    return server::InvalidParam("prompt", "'prompt' is required");
  } else if (const server::CompletionPrompt& p = request.prompts[prompt_index]; p.tokens) {
    tokens = *p.tokens;
    for (size_t i = 0; i < tokens.size(); ++i) {
      int32_t id = tokens[i];
      if (id < 0 || id >= tokenizer.vocab_size()) {
        return server::InvalidParam(prompt_param, absl::StrCat(prompt_param, "[", i, "] = ", id,
                                                               " is not a token id (vocabulary of ",
                                                               tokenizer.vocab_size(), " tokens)"));
      }
    }
  } else {
    tokens = tokenizer.Encode(p.text, /*add_special=*/true, /*parse_special=*/true);
  }
  if (tokens.empty()) return server::InvalidParam(prompt_param, "the prompt is empty");
  return tokens;
}

absl::StatusOr<PreparedRequest> EngineService::Prepare(const CompletionRequest& request,
                                                       size_t prompt_index) const {
  const engine::LoadedModel& model = generator_->model();
  PreparedRequest prepared;
  std::string prompt_param;
  CRESCENT_ASSIGN_OR_RETURN(prepared.prompt, PromptTokens(request, prompt_index, &prompt_param));

  const int64_t prompt = static_cast<int64_t>(prepared.prompt.size());
  const int64_t context = model.config.context_length;
  if (prompt >= context) {
    return absl::OutOfRangeError(absl::StrCat(
        "This model's maximum context length is ", context, " tokens. However, your ", prompt_param,
        " resulted in ", prompt, " tokens, which leaves no room for the completion"));
  }
  if (PromptOnly(request)) {
    prepared.max_tokens = 1;  // the prompt alone: Start drops the one token generated
  } else if (request.max_tokens) {
    if (*request.max_tokens < 1) {
      return server::InvalidParam(
          "max_tokens", absl::StrCat("max_tokens must be at least 1, got ", *request.max_tokens));
    }
    if (prompt + *request.max_tokens > context) {
      return absl::OutOfRangeError(absl::StrCat(
          "This model's maximum context length is ", context, " tokens. However, you requested ",
          prompt + *request.max_tokens, " tokens (", prompt, " in the ", prompt_param, ", ",
          *request.max_tokens, " in the completion). Please reduce the length of the ",
          prompt_param, " or the completion"));
    }
    prepared.max_tokens = *request.max_tokens;
  } else {
    prepared.max_tokens = static_cast<int>(context - prompt);
  }

  // One sequence must fit the whole KV cache (the engine preempts others to make room).
  const int64_t cache_tokens = generator_->max_sequence_tokens();
  if (prompt + 1 > cache_tokens) {
    return server::InvalidParam(
        prompt_param, absl::StrCat("the prompt's ", prompt, " tokens do not fit the KV cache (",
                                   cache_tokens, " tokens; see --kv-cache-mb)"));
  }
  if (prompt + prepared.max_tokens > cache_tokens) {
    if (request.max_tokens) {
      return server::InvalidParam(
          "max_tokens",
          absl::StrCat(prompt, " prompt tokens + max_tokens ", prepared.max_tokens,
                       " exceed the KV cache's ", cache_tokens, " tokens (see --kv-cache-mb)"));
    }
    prepared.max_tokens = static_cast<int>(cache_tokens - prompt);
  }

  prepared.sampling = ToEngineSampling(request);
  CRESCENT_RETURN_IF_ERROR(
      engine::ValidateSamplingParams(prepared.sampling, model.config.vocab_size));
  if (!request.json_schema.empty()) {
    if (absl::Status s = engine::JsonSchema::Compile(request.json_schema).status(); !s.ok()) {
      return server::InvalidParam("response_format.json_schema.schema", std::string(s.message()));
    }
  }
  return prepared;
}

absl::Status EngineService::Validate(const CompletionRequest& request) {
  const size_t prompts = std::max<size_t>(1, request.prompts.size());
  for (size_t p = 0; p < prompts; ++p) {
    CRESCENT_ASSIGN_OR_RETURN(PreparedRequest prepared, Prepare(request, p));
    engine::EngineRequest er;
    er.prompt = std::move(prepared.prompt);
    er.max_tokens = prepared.max_tokens;
    er.ignore_eos = request.ignore_eos;
    er.sampling = std::move(prepared.sampling);
    CRESCENT_RETURN_IF_ERROR(generator_->Validate(er));
  }
  return absl::OkStatus();
}

std::unique_ptr<server::CompletionHandle> EngineService::Start(CompletionRequest request,
                                                               server::ChunkCallback on_chunk,
                                                               server::DoneCallback on_done) {
  // Every prompt of a batch first: an error in any is the request's, before anything runs.
  std::vector<PreparedRequest> prepared;
  int prompt_tokens = 0;
  for (size_t p = 0; p < std::max<size_t>(1, request.prompts.size()); ++p) {
    absl::StatusOr<PreparedRequest> one = Prepare(request, p);
    if (!one.ok()) {
      on_done(one.status(), server::Usage{});
      return std::make_unique<Handle>(nullptr);
    }
    prompt_tokens += static_cast<int>(one->prompt.size());
    prepared.push_back(*std::move(one));
  }
  const int per_prompt = std::max(1, request.n);
  const int n = per_prompt * static_cast<int>(prepared.size());
  auto gen = std::make_shared<Generation>();
  gen->generator = generator_;
  gen->tokenizer = generator_->model().tokenizer.get();
  gen->want_logprobs = request.logprobs;
  gen->prompt_only = PromptOnly(request);
  gen->min_tokens = request.min_tokens;
  for (int i = 0; i < n; ++i) {
    gen->choices.push_back(std::make_unique<Choice>(*gen->tokenizer, request.stop));
    if (request.echo) {
      const size_t p = static_cast<size_t>(i / per_prompt);
      Choice& c = *gen->choices.back();
      c.echo = EchoChunk(request, p, prepared[p].prompt, *gen->tokenizer);
      c.echo.choice_index = i;
      if (request.logprobs) c.echo_positions = prepared[p].prompt.size() - 1;
    }
  }
  {
    absl::MutexLock lock(&gen->mu);
    gen->on_chunk = std::move(on_chunk);
    gen->on_done = std::move(on_done);
    gen->remaining = n + 1;
    gen->usage.prompt_tokens = prompt_tokens;
  }

  int submitted = 0;
  absl::Status error;
  for (int i = 0; i < n; ++i) {
    const PreparedRequest& pr = prepared[i / per_prompt];
    engine::EngineRequest er;
    er.prompt = pr.prompt;
    er.max_tokens = pr.max_tokens;
    er.ignore_eos = request.ignore_eos;
    er.sampling = pr.sampling;
    if (er.sampling.has_seed) er.sampling.seed += static_cast<uint64_t>(i % per_prompt);
    if (request.echo) {
      Choice& c = *gen->choices[i];
      if (c.echo_positions > 0) {
        er.prompt_logprobs = request.top_logprobs;
        er.on_prompt_logprob = [gen, i](int64_t, const engine::SampleResult& r) {
          OnPromptLogprob(*gen, i, r);
        };
      } else {
        SendChunk(*gen, std::move(c.echo));  // no logprobs to wait for
      }
    }
    absl::StatusOr<uint64_t> id = generator_->Submit(
        std::move(er), [gen, i](const engine::SampleResult& r) { return OnToken(*gen, i, r); },
        [gen, i](absl::Status status, const GenerationResult& result) {
          OnFinish(*gen, i, status, result);
        });
    if (!id.ok()) {
      error = id.status();
      break;
    }
    ++submitted;
    bool cancel = false;
    {
      absl::MutexLock lock(&gen->mu);
      gen->ids.push_back(*id);
      cancel = gen->cancelled;
    }
    if (cancel) generator_->Cancel(*id);
  }
  if (!error.ok()) {
    std::vector<uint64_t> ids;
    {
      absl::MutexLock lock(&gen->mu);
      if (gen->status.ok()) gen->status = error;
      ids = gen->ids;
    }
    for (uint64_t id : ids) generator_->Cancel(id);
  }
  FinishSome(*gen, n - submitted + 1);
  return std::make_unique<Handle>(std::move(gen));
}

absl::StatusOr<std::vector<int32_t>> EngineService::Tokenize(const CompletionRequest& request) {
  std::string param;
  return PromptTokens(request, 0, &param);
}

absl::StatusOr<std::string> EngineService::Detokenize(const std::vector<int32_t>& tokens) {
  const model::Tokenizer& tokenizer = *generator_->model().tokenizer;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= tokenizer.vocab_size()) {
      return server::InvalidParam(
          absl::StrCat("tokens[", i, "]"),
          absl::StrCat("tokens[", i, "] = ", tokens[i], " is not a token id (vocabulary of ",
                       tokenizer.vocab_size(), " tokens)"));
    }
  }
  return tokenizer.Decode(tokens);
}

server::ToolPromptStyle EngineService::tool_prompt_style() {
  const engine::LoadedModel& model = generator_->model();
  if (model.chat_template && model.chat_template->family() == model::ChatFamily::kLlama31) {
    return server::ToolPromptStyle::kLlama31Json;
  }
  return server::ToolPromptStyle::kHermes;
}

std::vector<server::ModelInfo> EngineService::Models() {
  server::ModelInfo info;
  info.id = served_model_name_;
  info.created = created_unix_seconds_;
  info.max_model_len = static_cast<int>(generator_->model().config.context_length);
  return {info};
}

}  // namespace crescent::serve
