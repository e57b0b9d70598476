#include "src/engine/loaded_model.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "src/common/hash.h"
#include "src/common/logging.h"
#include "src/common/status.h"

namespace crescent::engine {
namespace {

// Touches every page of the weights so that they are resident before serving.
void Prefault(const model::GgufFile& file, const std::function<void(double)>& progress) {
  size_t total = 0;
  for (const auto& t : file.tensors()) total += t.nbytes;
  size_t done = 0, reported = 0;
  volatile uint8_t sink = 0;
  for (const auto& t : file.tensors()) {
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    for (size_t off = 0; off < t.nbytes; off += 4096) sink = sink + p[off];
    done += t.nbytes;
    if (progress && (done - reported > total / 50 || done == total)) {
      reported = done;
      progress(total == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(total));
    }
  }
  (void)sink;
}

}  // namespace

std::string DefaultModelPath() {
  if (const char* env = std::getenv("CRESCENT_MODEL"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") +
         "/.cache/crescent/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& path,
                                                       const LoadOptions& options) {
  auto m = std::make_unique<LoadedModel>();
  auto file = model::GgufFile::Open(path);
  if (!file.ok()) return Annotate(file.status(), absl::StrCat("loading model ", path));
  m->file = std::move(*file);
  auto config = model::ModelConfigFromGguf(*m->file);
  if (!config.ok()) return Annotate(config.status(), absl::StrCat("model ", path));
  m->config = std::move(*config);
  auto weights = model::LoadModelWeights(*m->file, m->config);
  if (!weights.ok()) return Annotate(weights.status(), absl::StrCat("model ", path));
  m->weights = std::move(*weights);
  auto tokenizer = model::Tokenizer::FromGguf(*m->file);
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), absl::StrCat("tokenizer of ", path));
  m->tokenizer = std::move(*tokenizer);

  std::string bos = m->tokenizer->bos_id() >= 0 ? m->tokenizer->TokenToPiece(m->tokenizer->bos_id()) : "";
  std::string eos = m->tokenizer->eos_id() >= 0 ? m->tokenizer->TokenToPiece(m->tokenizer->eos_id()) : "";
  if (!options.chat_template.empty()) {
    auto tmpl = model::ChatTemplate::FromName(options.chat_template, bos, eos);
    if (!tmpl.ok()) return tmpl.status();
    m->chat_template = std::move(*tmpl);
  } else if (m->file->Has("tokenizer.chat_template")) {
    auto source = m->file->GetString("tokenizer.chat_template");
    if (!source.ok()) return source.status();
    auto tmpl = model::ChatTemplate::FromJinja(*source, bos, eos);
    if (tmpl.ok()) {
      m->chat_template = std::move(*tmpl);
    } else {
      CRESCENT_LOG(warn, "model {}: {}; chat requests will fail until --chat-template is given",
                   path, std::string(tmpl.status().message()));
    }
  }

  m->id = std::filesystem::path(path).stem().string();
  Hasher h(0x43726573);  // "Cres"
  for (const auto& t : m->file->tensors()) {
    h.Update(t.name.data(), t.name.size());
    h.UpdateU64(static_cast<uint64_t>(t.type));
    h.UpdateU64(t.nbytes);
  }
  m->fingerprint = h.Digest();
  if (options.prefault) Prefault(*m->file, options.progress);
  return m;
}

}  // namespace crescent::engine
