// ChatTemplate: turns a conversation into the prompt text a chat model was trained on.
//
// A GGUF file carries its chat template as Jinja source (tokenizer.chat_template). Crescent does
// not run Jinja: it recognizes which family a template belongs to, extracts what varies within
// the family (a default system prompt, a date, spacing around [INST]), refuses templates whose
// layout it does not know, and renders the family in C++ with exactly the bytes the Jinja
// template would produce under Hugging Face transformers' apply_chat_template (trim_blocks,
// lstrip_blocks, Python's str.strip() for `trim`, transformers' tojson). That equivalence is
// checked case by case against jinja2's output in tests/reference/chat_template_golden.json.
//
// Families and names:
//   "chatml"    <|im_start|>role\ncontent<|im_end|>\n  (SmolLM2, Qwen2, Qwen2.5, OpenHermes).
//               Some templates insert a default system prompt when the first message is not a
//               system message, some open with bos; Qwen2.5 wraps tool results in
//               <tool_response> inside a user turn. Qwen3-style <think> templates are refused.
//   "llama3"    <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>, bos first,
//               content trimmed (Llama 3 Instruct).
//   "llama3.1"  as llama3, but always opens with a system turn carrying the knowledge cutoff and
//               the date, and renders tool results as ipython turns holding JSON strings
//               (Llama 3.1 / 3.2 / 3.3 Instruct).
//   "llama2"    <s>[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s>...
//   "mistral"   <s> [INST] user [/INST] assistant</s>..., a system message merged into the first
//               user message (Mistral-7B-Instruct v0.1 / v0.2 and Mixtral-8x7B, current
//               templates; the original releases' templates without system support are
//               recognized too).
//
// The text includes the template's own special tokens (bos, <|im_start|>, ...) as text: tokenize
// it with special-token parsing on and without adding another BOS.
#ifndef CRESCENT_SRC_MODEL_CHAT_TEMPLATE_H_
#define CRESCENT_SRC_MODEL_CHAT_TEMPLATE_H_

#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"

namespace crescent::model {

struct ChatMessage {
  std::string role;  // "system", "developer" (treated as system), "user", "assistant", "tool".
  std::string content;
};

enum class ChatFamily {
  kChatMl,
  kLlama3,
  kLlama31,
  kLlama2,
  kMistral,
};

// Copyable and movable; all const methods are thread-safe.
class ChatTemplate {
 public:
  // Recognizes the family of `source` (a tokenizer.chat_template) by its markers, checks that its
  // message layout is one Crescent reproduces, and extracts the variable parts. A source that is
  // just a family name ("chatml") is accepted as FromName() does. `bos_token` and `eos_token`
  // are the texts of the model's BOS/EOS tokens, substituted where the template uses them.
  // Errors: Unimplemented when the template is not recognized, or is recognized but uses features
  // or a layout Crescent does not reproduce (reasoning blocks, unknown spacing, text outside
  // tags); the message names the supported families and the --chat-template NAME override.
  static absl::StatusOr<ChatTemplate> FromJinja(std::string_view source, std::string bos_token,
                                                std::string eos_token);

  // The canonical template of a family: "chatml" (no default system prompt), "llama3",
  // "llama3.1" (date 26 Jul 2024), "llama2", "mistral" (current v0.2 template, system merged into
  // the first user message). Errors: InvalidArgument naming `name` and the known names.
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name, std::string bos_token,
                                               std::string eos_token);

  // Renders `messages` as the Jinja template would, ending with the assistant header when
  // `add_generation_prompt` (llama2 and mistral have none: their prompt already ends with
  // [/INST]). "developer" is rendered as "system"; "tool" as the family expresses tool results
  // (chatml: its own role, or <tool_response> for Qwen2.5; llama3: its own role; llama3.1: an
  // ipython turn with the content as a JSON string).
  // Errors: InvalidArgument when `messages` is empty, when a role is not one of the five above,
  // or when the family cannot express the conversation (llama2/mistral: roles must alternate
  // user/assistant after an optional leading system message; no tool role) — each naming the
  // index of the offending message.
  absl::StatusOr<std::string> Render(std::span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;

  ChatFamily family() const { return family_; }
  // The family's name as FromName() takes it: "chatml", "llama3", "llama3.1", "llama2",
  // "mistral".
  std::string_view name() const;
  // The system prompt the template inserts when the conversation has none; empty when none.
  const std::string& default_system_prompt() const { return default_system_prompt_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

  // "chatml, llama3, llama3.1, llama2, mistral".
  static std::string_view SupportedNames();

 private:
  ChatTemplate(ChatFamily family, std::string bos_token, std::string eos_token)
      : family_(family), bos_token_(std::move(bos_token)), eos_token_(std::move(eos_token)) {}

  absl::StatusOr<std::string> RenderChatMl(std::span<const ChatMessage> messages,
                                           bool add_generation_prompt) const;
  absl::StatusOr<std::string> RenderLlama3(std::span<const ChatMessage> messages,
                                           bool add_generation_prompt) const;
  absl::StatusOr<std::string> RenderLlama31(std::span<const ChatMessage> messages,
                                            bool add_generation_prompt) const;
  absl::StatusOr<std::string> RenderLlama2(std::span<const ChatMessage> messages) const;
  absl::StatusOr<std::string> RenderMistral(std::span<const ChatMessage> messages) const;

  ChatFamily family_;
  std::string bos_token_;
  std::string eos_token_;

  // chatml: inserted before a conversation that does not start with a system message.
  std::string default_system_prompt_;
  // chatml: the template writes bos first.
  bool leading_bos_ = false;
  // chatml: tool results as a user turn of <tool_response> blocks (Qwen2.5).
  bool tool_response_blocks_ = false;
  // llama3: variants without the add_generation_prompt condition, or with eos in its else branch.
  bool always_generation_prompt_ = false;
  bool eos_without_generation_prompt_ = false;
  // llama3.1: "Cutting Knowledge Date: December 2023\n", then "Today Date: <date_>\n\n"; the
  // date is today's (local time, "%d %b %Y") when the template calls strftime_now.
  std::string knowledge_line_;
  std::string date_;
  bool date_is_today_ = false;
  // llama2: content.strip() around each message.
  bool strip_content_ = true;
  // mistral: " [INST] " (current) or "[INST] " (original), what surrounds an assistant reply,
  // and whether a leading system message is merged into the first user message.
  std::string inst_open_ = " [INST] ";
  std::string assistant_prefix_ = " ";
  std::string assistant_suffix_;  // after eos.
  bool merges_system_ = true;
};

}  // namespace crescent::model

#endif  // CRESCENT_SRC_MODEL_CHAT_TEMPLATE_H_
