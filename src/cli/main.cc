// crescent: the one binary of every role (DESIGN.md "Processes").
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "src/cli/command.h"
#include "src/common/logging.h"
#include "src/common/status.h"
#include "src/common/thread_pool.h"
#include "src/engine/backend_factory.h"
#include "src/engine/kv_cache.h"
#include "src/engine/loaded_model.h"
#include "src/engine/session.h"

namespace crescent {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "crescent: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError("token list: '" + std::string(part) + "' is not an integer");
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("token list is empty");
  return ids;
}

// Model, backend and KV cache for the single-process commands.
struct Runtime {
  std::unique_ptr<engine::LoadedModel> model;
  std::unique_ptr<engine::KvCache> cache;
  std::unique_ptr<engine::Backend> backend;  // destroyed first: it may have the cache mapped
};

struct RuntimeFlags {
  std::string model = engine::DefaultModelPath();
  std::string chat_template;
  int threads = 0;
  std::string backend = "cpu";
  int64_t ctx = 0;  // KV capacity in tokens; 0 = the model's context length
  int block_tokens = 16;
};

void AddRuntimeFlags(CLI::App* app, RuntimeFlags* f) {
  app->add_option("-m,--model", f->model, "GGUF model file")->capture_default_str();
  app->add_option("--chat-template", f->chat_template,
                  "override the model's chat template: chatml, llama3, llama2, mistral");
  app->add_option("-t,--threads", f->threads, "compute threads (default: all CPUs)");
  app->add_option("--backend", f->backend, "forward pass: cpu, or cuda (builds with nvcc)")
      ->capture_default_str();
  app->add_option("--ctx", f->ctx, "KV cache capacity in tokens (default: model context)");
  app->add_option("--block-tokens", f->block_tokens, "tokens per KV block")
      ->capture_default_str();
}

absl::StatusOr<Runtime> MakeRuntime(const RuntimeFlags& f) {
  Runtime rt;
  engine::LoadOptions options;
  options.chat_template = f.chat_template;
  bool tty = isatty(STDERR_FILENO);
  if (tty) {
    options.progress = [](double fraction) {
      std::fprintf(stderr, "\rloading model: %3d%%", static_cast<int>(fraction * 100));
      if (fraction >= 1.0) std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
    };
  }
  CRESCENT_ASSIGN_OR_RETURN(rt.model, engine::LoadModel(f.model, options));
  CRESCENT_ASSIGN_OR_RETURN(
      rt.backend, engine::CreateBackend(f.backend, rt.model->config, rt.model->weights, f.threads));
  engine::KvCacheConfig kc;
  kc.n_layers = rt.model->config.n_layers;
  kc.n_kv_heads = rt.model->config.n_kv_heads;
  kc.head_dim = rt.model->config.head_dim;
  kc.block_tokens = f.block_tokens;
  int64_t ctx = f.ctx > 0 ? f.ctx : rt.model->config.context_length;
  kc.num_blocks = (ctx + f.block_tokens - 1) / f.block_tokens;
  CRESCENT_ASSIGN_OR_RETURN(rt.cache, engine::KvCache::Create(kc));
  return rt;
}

struct SamplingFlags {
  int max_tokens = 256;
  float temperature = 0.7f;
  float top_p = 1.0f;
  int top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  int64_t seed = -1;
  std::vector<std::string> stop;
};

void AddSamplingFlags(CLI::App* app, SamplingFlags* f) {
  app->add_option("-n,--max-tokens", f->max_tokens, "tokens to generate")->capture_default_str();
  app->add_option("--temperature", f->temperature, "0 = greedy")->capture_default_str();
  app->add_option("--top-p", f->top_p)->capture_default_str();
  app->add_option("--top-k", f->top_k, "0 = off")->capture_default_str();
  app->add_option("--min-p", f->min_p)->capture_default_str();
  app->add_option("--repetition-penalty", f->repetition_penalty)->capture_default_str();
  app->add_option("--seed", f->seed, "sampling seed (default: random)");
  app->add_option("--stop", f->stop, "stop string (repeatable)");
}

absl::StatusOr<engine::GenerateOptions> MakeGenerateOptions(const SamplingFlags& f,
                                                            int vocab_size) {
  engine::GenerateOptions o;
  o.max_tokens = f.max_tokens;
  o.sampling.temperature = f.temperature;
  o.sampling.top_p = f.top_p;
  o.sampling.top_k = f.top_k;
  o.sampling.min_p = f.min_p;
  o.sampling.repetition_penalty = f.repetition_penalty;
  if (f.seed >= 0) {
    o.sampling.seed = static_cast<uint64_t>(f.seed);
    o.sampling.has_seed = true;
  }
  o.stop = f.stop;
  CRESCENT_RETURN_IF_ERROR(engine::ValidateSamplingParams(o.sampling, vocab_size));
  if (o.max_tokens < 1) return absl::InvalidArgumentError("--max-tokens must be at least 1");
  return o;
}

int RunGenerate(const RuntimeFlags& rf, const SamplingFlags& sf, const std::string& prompt,
                const std::string& prompt_tokens, bool raw, bool ids_only, bool stats) {
  auto rt = MakeRuntime(rf);
  if (!rt.ok()) return Fail(rt.status());
  auto options = MakeGenerateOptions(sf, rt->model->config.vocab_size);
  if (!options.ok()) return Fail(options.status());
  std::vector<int32_t> tokens;
  if (!prompt_tokens.empty()) {
    auto parsed = ParseTokenList(prompt_tokens);
    if (!parsed.ok()) return Fail(parsed.status());
    tokens = std::move(*parsed);
  } else if (raw || !rt->model->chat_template) {
    tokens = rt->model->tokenizer->Encode(prompt, /*add_special=*/true, /*parse_special=*/true);
  } else {
    model::ChatMessage msg{"user", prompt};
    auto rendered = rt->model->chat_template->Render(std::span(&msg, 1), true);
    if (!rendered.ok()) return Fail(rendered.status());
    tokens = rt->model->tokenizer->Encode(*rendered, /*add_special=*/false, /*parse_special=*/true);
  }
  engine::Session session(rt->model.get(), rt->backend.get(), rt->cache.get());
  auto result = engine::Generate(&session, tokens, *options, [&](std::string_view piece) {
    if (!ids_only) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (!result.ok()) return Fail(result.status());
  if (ids_only) {
    std::printf("%s\n", nlohmann::json(result->tokens).dump().c_str());
  } else {
    std::printf("\n");
  }
  if (stats) {
    double decode_tps = result->tokens.size() > 1
                            ? (result->tokens.size() - 1) / std::max(1e-9, result->decode_seconds)
                            : 0.0;
    std::fprintf(stderr,
                 "prompt %lld tokens, prefill+first token %.3f s (%.1f tok/s); generated %zu "
                 "tokens, decode %.1f tok/s; finish_reason %s\n",
                 static_cast<long long>(result->prompt_tokens), result->prefill_seconds,
                 result->prompt_tokens / std::max(1e-9, result->prefill_seconds),
                 result->tokens.size(), decode_tps, result->finish_reason.c_str());
  }
  return 0;
}

int RunChat(const RuntimeFlags& rf, const SamplingFlags& sf, const std::string& system) {
  auto rt = MakeRuntime(rf);
  if (!rt.ok()) return Fail(rt.status());
  if (!rt->model->chat_template) {
    return Fail(absl::FailedPreconditionError(
        "the model has no usable chat template; pass --chat-template chatml|llama3|llama2|mistral"));
  }
  auto options = MakeGenerateOptions(sf, rt->model->config.vocab_size);
  if (!options.ok()) return Fail(options.status());
  engine::Session session(rt->model.get(), rt->backend.get(), rt->cache.get());
  std::vector<model::ChatMessage> conversation;
  if (!system.empty()) conversation.push_back({"system", system});
  bool tty = isatty(STDIN_FILENO);
  if (tty) {
    std::fprintf(stderr, "crescent chat with %s — /reset clears the conversation, /exit quits\n",
                 rt->model->id.c_str());
  }
  std::string line;
  for (;;) {
    if (tty) std::fprintf(stderr, "\n> ");
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      conversation.resize(system.empty() ? 0 : 1);
      continue;
    }
    if (line.empty()) continue;
    conversation.push_back({"user", line});
    auto rendered = rt->model->chat_template->Render(conversation, true);
    if (!rendered.ok()) return Fail(rendered.status());
    auto tokens = rt->model->tokenizer->Encode(*rendered, false, true);
    auto result = engine::Generate(&session, tokens, *options, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    std::fflush(stdout);
    if (!result.ok()) {
      std::fprintf(stderr, "crescent: %s\n", std::string(result.status().message()).c_str());
      conversation.pop_back();
      continue;
    }
    conversation.push_back({"assistant", result->text});
  }
  return 0;
}

int RunLogits(const RuntimeFlags& rf, const std::string& token_list, const std::string& out) {
  auto tokens = ParseTokenList(token_list);
  if (!tokens.ok()) return Fail(tokens.status());
  auto rt = MakeRuntime(rf);
  if (!rt.ok()) return Fail(rt.status());
  std::vector<engine::KvCache::BlockId> blocks;
  absl::Status grown = rt->cache->GrowTable(static_cast<int64_t>(tokens->size()), &blocks);
  if (!grown.ok()) return Fail(grown);
  engine::SequenceBatch seq;
  seq.tokens = *tokens;
  seq.block_table = blocks;
  seq.logits = engine::LogitsMode::kAll;
  std::vector<float> logits;
  absl::Status s = rt->backend->Forward(std::span(&seq, 1), rt->cache.get(), nullptr, &logits);
  if (!s.ok()) return Fail(s);
  std::ofstream f(out, std::ios::binary);
  f.write(reinterpret_cast<const char*>(logits.data()),
          static_cast<std::streamsize>(logits.size() * sizeof(float)));
  if (!f) return Fail(absl::InternalError("cannot write " + out));
  return 0;
}

int RunTokenize(const RuntimeFlags& rf, const std::string& text, const std::string& file,
                bool special) {
  engine::LoadOptions options;
  options.prefault = false;
  auto m = engine::LoadModel(rf.model, options);
  if (!m.ok()) return Fail(m.status());
  auto encode = [&](const std::string& s) {
    return nlohmann::json((*m)->tokenizer->Encode(s, false, special)).dump();
  };
  if (!file.empty()) {
    // One JSON string per line in, one JSON array of ids per line out.
    std::ifstream in(file);
    if (!in) return Fail(absl::NotFoundError("cannot open " + file));
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty()) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_string()) {
        return Fail(absl::InvalidArgumentError(file + ":" + std::to_string(lineno) +
                                               ": not a JSON string"));
      }
      std::printf("%s\n", encode(j.get<std::string>()).c_str());
    }
  } else {
    std::printf("%s\n", encode(text).c_str());
  }
  return 0;
}

int RunInfo(const RuntimeFlags& rf) {
  engine::LoadOptions options;
  options.prefault = false;
  auto m = engine::LoadModel(rf.model, options);
  if (!m.ok()) return Fail(m.status());
  const model::ModelConfig& c = (*m)->config;
  nlohmann::json j = {
      {"id", (*m)->id},
      {"arch", c.arch},
      {"layers", c.n_layers},
      {"embedding", c.n_embd},
      {"heads", c.n_heads},
      {"kv_heads", c.n_kv_heads},
      {"head_dim", c.head_dim},
      {"ffn", c.n_ff},
      {"vocab", c.vocab_size},
      {"context_length", c.context_length},
      {"weight_bytes_per_token", (*m)->weights.WeightBytesPerToken()},
      {"chat_template", (*m)->chat_template ? std::string((*m)->chat_template->name()) : "none"},
  };
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"Crescent: a KVCache-centric, disaggregated LLM serving cluster"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off");

  RuntimeFlags rf;
  SamplingFlags sf;

  auto* gen = app.add_subcommand("generate", "generate text from a prompt");
  std::string prompt, prompt_tokens;
  bool raw = false, ids_only = false, stats = false;
  AddRuntimeFlags(gen, &rf);
  AddSamplingFlags(gen, &sf);
  gen->add_option("-p,--prompt", prompt, "prompt text (sent as a user message unless --raw)");
  gen->add_option("--prompt-tokens", prompt_tokens, "prompt as token ids: 1,2,3");
  gen->add_flag("--raw", raw, "use the prompt as is, without the chat template");
  gen->add_flag("--ids", ids_only, "print the generated token ids as a JSON array");
  gen->add_flag("--stats", stats, "print timing figures to stderr");

  auto* chat = app.add_subcommand("chat", "interactive streaming chat");
  std::string system;
  AddRuntimeFlags(chat, &rf);
  AddSamplingFlags(chat, &sf);
  chat->add_option("--system", system, "system prompt");

  auto* logits = app.add_subcommand("logits", "write the logits of every position (float32)");
  std::string token_list, out;
  AddRuntimeFlags(logits, &rf);
  logits->add_option("--tokens", token_list, "token ids: 1,2,3")->required();
  logits->add_option("--out", out, "output file")->required();

  auto* tok = app.add_subcommand("tokenize", "print token ids as JSON");
  std::string text, file;
  bool special = false;
  AddRuntimeFlags(tok, &rf);
  tok->add_option("--text", text, "text to tokenize");
  tok->add_option("--file", file, "JSONL file of strings; prints one id array per line");
  tok->add_flag("--special", special, "parse special tokens such as <|im_start|>");

  auto* info = app.add_subcommand("info", "print the model's configuration");
  AddRuntimeFlags(info, &rf);

  std::vector<cli::Command> commands;
  cli::AddServeCommands(app, &commands);
  cli::AddKvstoreCommands(app, &commands);
#ifdef CRESCENT_HAVE_CONDUCTOR_COMMAND
  cli::AddConductorCommands(app, &commands);
#endif
#ifdef CRESCENT_HAVE_PREFILL_NODE_COMMAND
  cli::AddPrefillNodeCommands(app, &commands);
#endif
#ifdef CRESCENT_HAVE_DECODE_NODE_COMMAND
  cli::AddDecodeNodeCommands(app, &commands);
#endif
#ifdef CRESCENT_HAVE_UP_COMMAND
  cli::AddUpCommands(app, &commands);
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error (unknown flag, bad value type) exits 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!SetLogLevel(log_level)) {
    std::fprintf(stderr, "crescent: unknown --log-level %s\n", log_level.c_str());
    return 2;
  }
  if (*gen) {
    if (prompt.empty() == prompt_tokens.empty()) {
      std::fprintf(stderr, "crescent generate: give exactly one of --prompt or --prompt-tokens\n");
      return 2;
    }
    return RunGenerate(rf, sf, prompt, prompt_tokens, raw, ids_only, stats);
  }
  if (*chat) return RunChat(rf, sf, system);
  if (*logits) return RunLogits(rf, token_list, out);
  if (*tok) return RunTokenize(rf, text, file, special);
  if (*info) return RunInfo(rf);
  for (const cli::Command& command : commands) {
    if (*command.subcommand) return command.run();
  }
  return 2;
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
