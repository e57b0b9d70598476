#include "src/model/chat_template.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/model/gguf.h"

namespace crescent::model {
namespace {

using ::testing::HasSubstr;

std::filesystem::path SourceDir() {
  if (const char* dir = std::getenv("CRESCENT_SOURCE_DIR")) return dir;
  // Run outside CTest: this file is <root>/tests/src/model/chat_template_test.cc.
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().parent_path();
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ReadTemplate(const std::string& file) {
  return ReadFile(SourceDir() / "tests/reference/templates" / file);
}

std::vector<ChatMessage> Messages(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m.at("role"), m.at("content")});
  return out;
}

// Shows control characters, so that a failing byte-for-byte comparison is readable.
std::string Visible(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += "\\x" + std::to_string(static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Byte-for-byte agreement with jinja2 on the real templates.

TEST(ChatTemplateGoldenTest, MatchesJinjaRenderingOfRealTemplates) {
  const nlohmann::json golden =
      nlohmann::json::parse(ReadFile(SourceDir() / "tests/reference/chat_template_golden.json"));
  int compared = 0, errors = 0;
  for (const auto& entry : golden.at("templates")) {
    const std::string file = entry.at("file");
    SCOPED_TRACE(file);
    auto tmpl =
        ChatTemplate::FromJinja(ReadTemplate(file), entry.at("bos_token"), entry.at("eos_token"));
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    EXPECT_EQ(tmpl->name(), entry.at("name").get<std::string>());
    EXPECT_EQ(tmpl->default_system_prompt(), entry.at("default_system_prompt").get<std::string>());
    for (const auto& c : entry.at("cases")) {
      const std::string label = c.at("conversation").get<std::string>() +
                                (c.at("add_generation_prompt").get<bool>() ? " +gen" : "");
      SCOPED_TRACE(label);
      const std::vector<ChatMessage> messages = Messages(c.at("messages"));
      auto rendered = tmpl->Render(messages, c.at("add_generation_prompt"));
      if (c.contains("expected")) {
        ASSERT_TRUE(rendered.ok()) << rendered.status();
        const std::string expected = c.at("expected");
        EXPECT_EQ(*rendered, expected);  // gtest prints both with \n and friends escaped.
        ++compared;
      } else {
        // Jinja raised (role alternation, unsupported role): Crescent refuses too.
        EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument)
            << "jinja raised \"" << c.at("error").get<std::string>() << "\" but Crescent gave "
            << (rendered.ok() ? Visible(*rendered) : rendered.status().ToString());
        EXPECT_THAT(std::string(rendered.status().message()), HasSubstr("message "));
        ++errors;
      }
    }
  }
  EXPECT_GT(compared, 250);
  EXPECT_GT(errors, 50);
}

TEST(ChatTemplateGoldenTest, NamedTemplatesMatchTheirJinjaSource) {
  const nlohmann::json golden =
      nlohmann::json::parse(ReadFile(SourceDir() / "tests/reference/chat_template_golden.json"));
  const std::vector<std::pair<std::string, std::string>> canonical = {
      {"chatml.jinja", "chatml"},
      {"llama3.jinja", "llama3"},
      {"llama3_1.jinja", "llama3.1"},
      {"llama2.jinja", "llama2"},
      {"mistral.jinja", "mistral"}};
  for (const auto& [file, name] : canonical) {
    SCOPED_TRACE(name);
    for (const auto& entry : golden.at("templates")) {
      if (entry.at("file") != file) continue;
      auto tmpl = ChatTemplate::FromName(name, entry.at("bos_token"), entry.at("eos_token"));
      ASSERT_TRUE(tmpl.ok()) << tmpl.status();
      EXPECT_EQ(tmpl->name(), name);
      for (const auto& c : entry.at("cases")) {
        if (!c.contains("expected")) continue;
        auto rendered = tmpl->Render(Messages(c.at("messages")), c.at("add_generation_prompt"));
        ASSERT_TRUE(rendered.ok()) << rendered.status();
        EXPECT_EQ(*rendered, c.at("expected").get<std::string>()) << c.at("conversation");
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The reference model's own template.

TEST(ChatTemplateModelTest, SmolLm2TemplateFromGguf) {
  const char* path = std::getenv("CRESCENT_MODEL");
  if (path == nullptr || !std::filesystem::exists(path)) {
    GTEST_SKIP() << "reference model absent (set CRESCENT_MODEL to the SmolLM2 GGUF)";
  }
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto source = (*file)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(*source, ReadTemplate("smollm2.jinja"));
  auto tmpl = ChatTemplate::FromJinja(*source, "<|im_start|>", "<|im_end|>");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(tmpl->family(), ChatFamily::kChatMl);
  EXPECT_EQ(tmpl->default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const std::vector<ChatMessage> chat = {{"user", "What is the capital of France?"}};
  auto rendered = tmpl->Render(chat, true);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_EQ(*rendered,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
            "<|im_start|>assistant\n");
}

// ---------------------------------------------------------------------------------------------
// Recognition.

void ExpectUnsupported(const std::string& source, const std::string& reason) {
  auto tmpl = ChatTemplate::FromJinja(source, "<s>", "</s>");
  ASSERT_EQ(tmpl.status().code(), absl::StatusCode::kUnimplemented) << source;
  const std::string message(tmpl.status().message());
  EXPECT_THAT(message, HasSubstr(reason));
  EXPECT_THAT(message, HasSubstr("chatml, llama3, llama3.1, llama2, mistral"));
  EXPECT_THAT(message, HasSubstr("--chat-template NAME"));
}

TEST(ChatTemplateTest, UnknownTemplatesAreUnimplemented) {
  ExpectUnsupported("{% for m in messages %}{{ m['content'] }}{% endfor %}", "no known family");
  ExpectUnsupported("", "no known family");
  // Gemma: its own markers.
  ExpectUnsupported(
      "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + "
      "'\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}",
      "no known family");
}

TEST(ChatTemplateTest, KnownMarkersInUnknownLayoutsAreUnimplemented) {
  // ChatML markers, but the content is trimmed: rendering it as plain ChatML would be wrong.
  ExpectUnsupported(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
      "%}{{ '<|im_start|>assistant\n' }}{% endif %}",
      "lays messages out differently");
  // One newline too many between tags: trim_blocks eats one, the other is output.
  ExpectUnsupported(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\n\n{% if add_generation_prompt "
      "%}{{ '<|im_start|>assistant\n' }}{% endif %}",
      "outside");
  // eos where plain ChatML has none.
  ExpectUnsupported(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{{ eos_token }}{% if "
      "add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
      "bos or eos");
  // Text outside tags.
  ExpectUnsupported(
      "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] "
      "}}<|im_end|>\n{% endfor %}",
      "outside");
  // Qwen3-style reasoning.
  ExpectUnsupported(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
      "'<|im_start|>assistant\n' }}{% if enable_thinking is defined and enable_thinking is false "
      "%}{{ '<think>\n\n</think>\n\n' }}{% endif %}{% endif %}",
      "<think>");
  // Mistral v3 tool tokens.
  ExpectUnsupported(
      "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ "
      "'[AVAILABLE_TOOLS] [/AVAILABLE_TOOLS][INST] ' + message['content'] + '[/INST]' }}{% endif "
      "%}{% endfor %}",
      "Mistral v3");
  // Unterminated tag.
  ExpectUnsupported("{{ '<|im_start|>' ", "cannot read");
}

TEST(ChatTemplateTest, ChatMlWithLeadingBos) {
  // Hermes-2-Pro style: bos, then plain ChatML; whitespace control and a trailing newline are
  // formatting only. The expected text is what jinja2 renders for this source.
  const std::string source =
      "{{- bos_token }}\n{%- for message in messages %}\n    {{- '<|im_start|>' + message.role + "
      "'\\n' + message.content + '<|im_end|>\\n' }}\n{%- endfor %}\n{%- if "
      "add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";
  auto t = ChatTemplate::FromJinja(source, "<s>", "<|im_end|>");
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  EXPECT_EQ(*t->Render(chat, true), "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, NameAsSourceAndFromName) {
  auto t = ChatTemplate::FromJinja("chatml\n", "", "");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->family(), ChatFamily::kChatMl);
  auto bad = ChatTemplate::FromName("vicuna", "", "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"vicuna\""));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("llama3.1"));
  EXPECT_EQ(ChatTemplate::SupportedNames(), "chatml, llama3, llama3.1, llama2, mistral");
}

TEST(ChatTemplateTest, CrlfSourceRendersLikeLf) {
  std::string lf = ReadTemplate("mistral.jinja");
  std::string crlf;
  for (const char c : lf) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  auto a = ChatTemplate::FromJinja(lf, "<s>", "</s>");
  auto b = ChatTemplate::FromJinja(crlf, "<s>", "</s>");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const std::vector<ChatMessage> chat = {{"system", "S"}, {"user", "U"}};
  EXPECT_EQ(*a->Render(chat, true), *b->Render(chat, true));
  EXPECT_EQ(*a->Render(chat, true), "<s> [INST] S\n\nU [/INST]");
}

TEST(ChatTemplateTest, Llama32TemplateUsesTodaysDate) {
  // Llama 3.2 computes the date with strftime_now when the renderer defines it, as
  // transformers does.
  std::string source = ReadTemplate("llama3_1.jinja");
  const std::string fixed = "    {%- set date_string = \"26 Jul 2024\" %}\n";
  const size_t at = source.find(fixed);
  ASSERT_NE(at, std::string::npos);
  source.replace(at, fixed.size(),
                 "    {%- if strftime_now is defined %}\n"
                 "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
                 "    {%- else %}\n"
                 "        {%- set date_string = \"26 Jul 2024\" %}\n"
                 "    {%- endif %}\n");
  auto tmpl = ChatTemplate::FromJinja(source, "<|begin_of_text|>", "<|eot_id|>");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(tmpl->family(), ChatFamily::kLlama31);
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  auto rendered = tmpl->Render(chat, true);
  ASSERT_TRUE(rendered.ok());
  // "...Today Date: DD Mon YYYY\n\n<|eot_id|>..." with today's date.
  const std::string marker = "\nToday Date: ";
  const size_t date_at = rendered->find(marker) + marker.size();
  ASSERT_GE(date_at, marker.size()) << *rendered;  // found.
  const std::string date = rendered->substr(date_at, 11);
  const std::string months = "JanFebMarAprMayJunJulAugSepOctNovDec";
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  EXPECT_TRUE(date.size() == 11 && digit(date[0]) && digit(date[1]) && date[2] == ' ' &&
              months.find(date.substr(3, 3)) % 3 == 0 &&
              months.find(date.substr(3, 3)) != std::string::npos && date[6] == ' ' &&
              digit(date[7]) && digit(date[8]) && digit(date[9]) && digit(date[10]))
      << date;
  EXPECT_EQ(rendered->substr(date_at + 11, 12), "\n\n<|eot_id|>");
}

// ---------------------------------------------------------------------------------------------
// Rendering errors and roles.

TEST(ChatTemplateTest, EmptyConversationAndUnknownRole) {
  auto t = ChatTemplate::FromName("chatml", "", "");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->Render({}, true).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<ChatMessage> chat = {{"user", "hi"}, {"bot", "hello"}};
  auto r = t->Render(chat, true);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("message 1"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("\"bot\""));
}

TEST(ChatTemplateTest, DeveloperIsSystemAndToolKeepsItsRoleInChatMl) {
  auto t = ChatTemplate::FromName("chatml", "", "");
  ASSERT_TRUE(t.ok());
  const std::vector<ChatMessage> chat = {{"developer", "D"}, {"tool", "T"}};
  EXPECT_EQ(*t->Render(chat, false),
            "<|im_start|>system\nD<|im_end|>\n<|im_start|>tool\nT<|im_end|>\n");
}

TEST(ChatTemplateTest, AlternationErrorsNameTheMessage) {
  for (const char* name : {"llama2", "mistral"}) {
    SCOPED_TRACE(name);
    auto t = ChatTemplate::FromName(name, "<s>", "</s>");
    ASSERT_TRUE(t.ok());
    const std::vector<ChatMessage> twice = {{"system", "s"}, {"user", "a"}, {"user", "b"}};
    auto r = t->Render(twice, true);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("message 2"));
    // Jinja's llama2 template silently drops a system or tool message where an assistant turn
    // belongs; Crescent refuses instead of losing it.
    const std::vector<ChatMessage> dropped = {{"user", "a"}, {"tool", "t"}};
    r = t->Render(dropped, true);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("message 1"));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("tool"));
  }
}

TEST(ChatTemplateTest, IsCopyable) {
  std::optional<ChatTemplate> holder;
  {
    auto t = ChatTemplate::FromJinja(ReadTemplate("qwen2.jinja"), "", "<|im_end|>");
    ASSERT_TRUE(t.ok());
    holder = *t;
  }
  const std::vector<ChatMessage> chat = {{"user", "x"}};
  EXPECT_EQ(*holder->Render(chat, false),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nx<|im_"
            "end|>\n");
}

}  // namespace
}  // namespace crescent::model
