#include "src/model/chat_template.h"

#include <array>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "src/common/status.h"

namespace crescent::model {
namespace {

// Debian's abseil has its own string_view type; its functions take that one.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr std::string_view kSupportedNames = "chatml, llama3, llama3.1, llama2, mistral";

absl::Status NotSupported(std::string_view why) {
  return absl::UnimplementedError(absl::StrCat(
      "chat template not supported: ", Av(why), ". Crescent renders the template families ",
      Av(kSupportedNames), "; start with --chat-template NAME to use one of them for this model"));
}

// ---------------------------------------------------------------------------------------------
// Text helpers that reproduce Python's behaviour byte for byte.

// Decodes the UTF-8 code point at s[i] (lenient: an invalid byte decodes as itself, length 1).
char32_t DecodeAt(std::string_view s, size_t i, size_t* len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  auto cont = [&](size_t k) -> int {
    if (i + k >= s.size()) return -1;
    const auto b = static_cast<unsigned char>(s[i + k]);
    return (b & 0xC0) == 0x80 ? (b & 0x3F) : -1;
  };
  if (b0 < 0x80) {
    *len = 1;
    return b0;
  }
  if ((b0 & 0xE0) == 0xC0) {
    const int c1 = cont(1);
    if (c1 >= 0) {
      *len = 2;
      return static_cast<char32_t>(((b0 & 0x1F) << 6) | c1);
    }
  } else if ((b0 & 0xF0) == 0xE0) {
    const int c1 = cont(1), c2 = c1 >= 0 ? cont(2) : -1;
    if (c2 >= 0) {
      *len = 3;
      return static_cast<char32_t>(((b0 & 0x0F) << 12) | (c1 << 6) | c2);
    }
  } else if ((b0 & 0xF8) == 0xF0) {
    const int c1 = cont(1), c2 = c1 >= 0 ? cont(2) : -1, c3 = c2 >= 0 ? cont(3) : -1;
    if (c3 >= 0) {
      *len = 4;
      return static_cast<char32_t>(((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3);
    }
  }
  *len = 1;
  return 0xFFFD;  // not whitespace: stripping stops at an invalid byte.
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// Python's str.isspace(), which str.strip() and Jinja's `trim` use.
bool IsPyWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Python's str.strip() on UTF-8 text.
std::string_view PyStrip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t len;
    if (!IsPyWhitespace(DecodeAt(s, begin, &len))) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;  // back up to the first byte of the last code point.
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 &&
           end - start < 4) {
      --start;
    }
    size_t len;
    const char32_t c = DecodeAt(s, start, &len);
    if (start + len != end || !IsPyWhitespace(c)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

// json.dumps(s, ensure_ascii=False), as transformers' tojson filter calls it on a string.
std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          static constexpr char kHex[] = "0123456789abcdef";
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out += "\"";
  return out;
}

// Today's local date as strftime("%d %b %Y") writes it in the C locale: "05 Mar 2025".
std::string TodayString() {
  static constexpr std::array<const char*, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char day[3] = {static_cast<char>('0' + tm.tm_mday / 10), static_cast<char>('0' + tm.tm_mday % 10),
                 0};
  return absl::StrCat(day, " ", kMonths[tm.tm_mon], " ", tm.tm_year + 1900);
}

// ---------------------------------------------------------------------------------------------
// A scan of Jinja source: enough of Jinja's lexer to compare a template's structure with the
// layouts Crescent knows, without evaluating it.

struct Token {
  enum Kind { kName, kNumber, kString, kOp } kind;
  std::string text;  // for kString: the decoded value.
};

struct Scan {
  // Every {{ }} and {% %} tag in order, canonicalized: no whitespace except between two words,
  // no whitespace-control marks, `a.b` written a['b'] (unless called), adjacent string literals
  // joined by + folded into one, every string written '...' with \n \r \t \\ \' escapes. Comments
  // are dropped. Example: {%- if loop.first %}{{ '<a>' + "\n" }} -> {%if loop['first']%}{{'<a>\n'}}
  std::string code;
  // The decoded value of every string literal (after folding).
  std::vector<std::string> literals;
  // Text outside tags that the template would output, after whitespace control, trim_blocks and
  // lstrip_blocks.
  std::string stray_text;
};

bool IsWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes the body of a Jinja string literal the way Jinja does (Python's unicode-escape).
absl::StatusOr<std::string> DecodeJinjaString(std::string_view body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out.push_back(body[i]);
      continue;
    }
    const char e = body[++i];
    switch (e) {
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case '\n':
        break;  // line continuation.
      case 'x':
      case 'u':
      case 'U': {
        const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (i + digits >= body.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("truncated \\", std::string(1, e), " escape in a string literal"));
        }
        char32_t c = 0;
        for (size_t k = 1; k <= digits; ++k) {
          const int h = HexValue(body[i + k]);
          if (h < 0) {
            return absl::InvalidArgumentError(
                absl::StrCat("bad \\", std::string(1, e), " escape in a string literal"));
          }
          c = c * 16 + static_cast<char32_t>(h);
        }
        if (c > 0x10FFFF) return absl::InvalidArgumentError("escape beyond U+10FFFF");
        AppendUtf8(c, &out);
        i += digits;
        break;
      }
      case 'N':
        return absl::InvalidArgumentError("\\N{...} escapes are not supported");
      default:
        if (e >= '0' && e <= '7') {
          char32_t c = static_cast<char32_t>(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7';
               ++k) {
            c = c * 8 + static_cast<char32_t>(body[++i] - '0');
          }
          AppendUtf8(c, &out);
        } else {  // Python keeps unknown escapes as written.
          out.push_back('\\');
          out.push_back(e);
        }
    }
  }
  return out;
}

std::string CanonicalString(std::string_view s) {
  std::string out = "'";
  for (const char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\'':
        out += "\\'";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out.push_back(c);
    }
  }
  out += "'";
  return out;
}

bool IsOp(const Token& t, std::string_view op) { return t.kind == Token::kOp && t.text == op; }

// Folds 'a' + 'b' into 'ab' and rewrites x.name (not called) as x['name'].
void Canonicalize(std::vector<Token>* tokens) {
  std::vector<Token>& t = *tokens;
  std::vector<Token> out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (IsOp(t[i], ".") && i + 1 < t.size() && t[i + 1].kind == Token::kName &&
        !(i + 2 < t.size() && IsOp(t[i + 2], "("))) {
      out.push_back({Token::kOp, "["});
      out.push_back({Token::kString, t[i + 1].text});
      out.push_back({Token::kOp, "]"});
      ++i;
      continue;
    }
    out.push_back(t[i]);
  }
  t = std::move(out);
  auto binds_tighter = [](const Token& tok) {
    return tok.kind == Token::kOp && (tok.text == "." || tok.text == "|" || tok.text == "[" ||
                                      tok.text == "(" || tok.text == "*" || tok.text == "/" ||
                                      tok.text == "//" || tok.text == "%" || tok.text == "**");
  };
  for (size_t i = 0; i + 2 < t.size();) {
    const bool foldable = t[i].kind == Token::kString && IsOp(t[i + 1], "+") &&
                          t[i + 2].kind == Token::kString &&
                          (i == 0 || (!binds_tighter(t[i - 1]) && !IsOp(t[i - 1], "]"))) &&
                          !(i + 3 < t.size() && binds_tighter(t[i + 3]));
    if (!foldable) {
      ++i;
      continue;
    }
    t[i].text += t[i + 2].text;
    t.erase(t.begin() + static_cast<std::ptrdiff_t>(i) + 1,
            t.begin() + static_cast<std::ptrdiff_t>(i) + 3);
  }
}

absl::StatusOr<Scan> ScanJinja(std::string_view source) {
  // Jinja normalizes newlines and (keep_trailing_newline=False) drops one final newline.
  std::string s;
  s.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      s.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      s.push_back(source[i]);
    }
  }
  if (!s.empty() && s.back() == '\n') s.pop_back();

  Scan scan;
  size_t pos = 0;
  bool line_starting = true;
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  while (pos <= s.size()) {
    size_t tag = pos;
    while (tag + 1 < s.size() &&
           !(s[tag] == '{' && (s[tag + 1] == '{' || s[tag + 1] == '%' || s[tag + 1] == '#'))) {
      ++tag;
    }
    if (tag + 1 >= s.size()) {
      scan.stray_text += s.substr(pos);
      break;
    }
    std::string data = s.substr(pos, tag - pos);
    const char kind = s[tag + 1];
    size_t body = tag + 2;
    const char open_ws = body < s.size() ? s[body] : '\0';
    if (open_ws == '-' || open_ws == '+') ++body;
    if (open_ws == '-') {
      while (!data.empty() && is_space(data.back())) data.pop_back();
    } else if (open_ws != '+' && kind != '{') {  // lstrip_blocks: block and comment tags.
      const size_t nl = data.rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && l_pos < data.size() &&
          data.find_first_not_of(" \t\r\f\v", l_pos) == std::string::npos) {
        data.resize(l_pos);
      }
    }
    scan.stray_text += data;

    char close_ws = '\0';
    size_t after = 0;
    if (kind == '#') {
      const size_t end = s.find("#}", body);
      if (end == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("unterminated comment at offset ", tag));
      }
      if (end > body && s[end - 1] == '-') close_ws = '-';
      after = end + 2;
    } else {
      const std::string_view close = kind == '{' ? "}}" : "%}";
      std::vector<Token> tokens;
      size_t i = body;
      int depth = 0;
      bool closed = false;
      while (i < s.size()) {
        const char c = s[i];
        if (is_space(c)) {
          ++i;
          continue;
        }
        if (depth == 0) {
          if (s.compare(i, 2, close) == 0) {
            after = i + 2;
            closed = true;
            break;
          }
          if ((c == '-' || c == '+') && s.compare(i + 1, 2, close) == 0) {
            close_ws = c;
            after = i + 3;
            closed = true;
            break;
          }
        }
        if (c == '\'' || c == '"') {
          size_t j = i + 1;
          while (j < s.size() && s[j] != c) j += s[j] == '\\' ? 2 : 1;
          if (j >= s.size()) {
            return absl::InvalidArgumentError(
                absl::StrCat("unterminated string literal at offset ", i));
          }
          auto value = DecodeJinjaString(std::string_view(s).substr(i + 1, j - i - 1));
          if (!value.ok()) return Annotate(value.status(), absl::StrCat("offset ", i));
          tokens.push_back({Token::kString, std::move(*value)});
          i = j + 1;
        } else if (IsWordChar(c)) {
          size_t j = i;
          while (j < s.size() && IsWordChar(s[j])) ++j;
          const bool number = c >= '0' && c <= '9';
          if (number && j < s.size() && s[j] == '.' && j + 1 < s.size() && s[j + 1] >= '0' &&
              s[j + 1] <= '9') {
            for (++j; j < s.size() && IsWordChar(s[j]);) ++j;
          }
          tokens.push_back({number ? Token::kNumber : Token::kName, s.substr(i, j - i)});
          i = j;
        } else {
          static constexpr std::array<std::string_view, 6> kTwoChar = {
              "==", "!=", "<=", ">=", "//", "**"};
          size_t len = 1;
          for (std::string_view op : kTwoChar) {
            if (s.compare(i, 2, op) == 0) len = 2;
          }
          if (c == '(' || c == '[' || c == '{') ++depth;
          if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
          tokens.push_back({Token::kOp, s.substr(i, len)});
          i += len;
        }
      }
      if (!closed) {
        return absl::InvalidArgumentError(absl::StrCat("unterminated tag at offset ", tag));
      }
      if (kind == '%' && !tokens.empty() && tokens[0].kind == Token::kName &&
          tokens[0].text == "raw") {
        return NotSupported("{% raw %} blocks");
      }
      Canonicalize(&tokens);
      scan.code += kind == '{' ? "{{" : "{%";
      for (size_t k = 0; k < tokens.size(); ++k) {
        const Token& tok = tokens[k];
        const bool word = tok.kind == Token::kName || tok.kind == Token::kNumber;
        if (k > 0 && word &&
            (tokens[k - 1].kind == Token::kName || tokens[k - 1].kind == Token::kNumber)) {
          scan.code += ' ';
        }
        if (tok.kind == Token::kString) {
          scan.code += CanonicalString(tok.text);
          scan.literals.push_back(tok.text);
        } else {
          scan.code += tok.text;
        }
      }
      scan.code += kind == '{' ? "}}" : "%}";
    }

    pos = after;
    if (close_ws == '-') {
      line_starting = false;
      while (pos < s.size() && is_space(s[pos])) line_starting = s[pos++] == '\n';
    } else if (kind != '{' && close_ws != '+' && pos < s.size() && s[pos] == '\n') {
      ++pos;  // trim_blocks: the first newline after a block or comment tag.
      line_starting = true;
    } else {
      line_starting = false;
    }
    if (pos == s.size()) break;
  }
  return scan;
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

bool AnyLiteralContains(const Scan& scan, std::string_view needle) {
  for (const std::string& l : scan.literals) {
    if (Contains(l, needle)) return true;
  }
  return false;
}

// Canonical snippets (see Scan::code) of the layouts Crescent reproduces.
constexpr std::string_view kChatMlMessage =
    R"({{'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>\n'}})";
constexpr std::string_view kChatMlGeneration =
    R"({%if add_generation_prompt%}{{'<|im_start|>assistant\n'}}{%endif%})";
constexpr std::string_view kChatMlToolResponse =
    R"({{'\n<tool_response>\n'}}{{message['content']}}{{'\n</tool_response>'}})";
constexpr std::string_view kLlama3Message =
    R"('<|start_header_id|>'+message['role']+'<|end_header_id|>\n\n'+message['content']|trim+'<|eot_id|>')";
constexpr std::string_view kLlama3Header = R"('<|start_header_id|>assistant<|end_header_id|>\n\n')";
constexpr std::string_view kLlama31Lines[] = {
    R"({{bos_token}})",
    R"({%set system_message=messages[0]['content']|trim%})",
    R"({{'<|start_header_id|>system<|end_header_id|>\n\n'}})",
    R"({{'Today Date: '+date_string+'\n\n'}})",
    R"({{system_message}}{{'<|eot_id|>'}})",
    R"({{'<|start_header_id|>ipython<|end_header_id|>\n\n'}})",
    R"({{message['content']|tojson}})",
    R"({%if add_generation_prompt%}{{'<|start_header_id|>assistant<|end_header_id|>\n\n'}}{%endif%})",
};
constexpr std::string_view kLlama2System =
    R"('<<SYS>>\n'+system_message+'\n<</SYS>>\n\n'+message['content'])";

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string_view ChatTemplate::SupportedNames() { return kSupportedNames; }

std::string_view ChatTemplate::name() const {
  switch (family_) {
    case ChatFamily::kChatMl:
      return "chatml";
    case ChatFamily::kLlama3:
      return "llama3";
    case ChatFamily::kLlama31:
      return "llama3.1";
    case ChatFamily::kLlama2:
      return "llama2";
    case ChatFamily::kMistral:
      return "mistral";
  }
  return "unknown";
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(std::string_view name, std::string bos_token,
                                                    std::string eos_token) {
  ChatFamily family;
  if (name == "chatml") {
    family = ChatFamily::kChatMl;
  } else if (name == "llama3") {
    family = ChatFamily::kLlama3;
  } else if (name == "llama3.1") {
    family = ChatFamily::kLlama31;
  } else if (name == "llama2") {
    family = ChatFamily::kLlama2;
  } else if (name == "mistral") {
    family = ChatFamily::kMistral;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown chat template name \"", Av(name),
                                                   "\"; known names: ", Av(kSupportedNames)));
  }
  ChatTemplate t(family, std::move(bos_token), std::move(eos_token));
  if (family == ChatFamily::kLlama31) {
    t.knowledge_line_ = "Cutting Knowledge Date: December 2023\n";
    t.date_ = "26 Jul 2024";
  }
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromJinja(std::string_view source, std::string bos_token,
                                                     std::string eos_token) {
  {
    const std::string_view trimmed = PyStrip(source);
    if (trimmed == "chatml" || trimmed == "llama3" || trimmed == "llama3.1" ||
        trimmed == "llama2" || trimmed == "mistral") {
      return FromName(trimmed, std::move(bos_token), std::move(eos_token));
    }
  }
  auto scanned = ScanJinja(source);
  if (!scanned.ok()) {
    if (absl::IsUnimplemented(scanned.status())) return scanned.status();
    return NotSupported(
        absl::StrCat("cannot read the Jinja source (", scanned.status().message(), ")"));
  }
  const Scan& scan = *scanned;
  const std::string& code = scan.code;
  if (!scan.stray_text.empty()) {
    return NotSupported(absl::StrCat("it writes text outside {{ }} tags (\"",
                                     Av(std::string_view(scan.stray_text).substr(0, 40)),
                                     "\"), which no supported layout does"));
  }

  if (AnyLiteralContains(scan, "<|im_start|>")) {
    if (AnyLiteralContains(scan, "<think>") || Contains(code, "reasoning_content") ||
        Contains(code, "enable_thinking")) {
      return NotSupported("it is a ChatML template with <think> reasoning blocks (Qwen3 style)");
    }
    if (!Contains(code, kChatMlMessage) || !Contains(code, kChatMlGeneration)) {
      return NotSupported(
          "it uses ChatML markers but lays messages out differently from the "
          "supported ChatML templates");
    }
    ChatTemplate t(ChatFamily::kChatMl, std::move(bos_token), std::move(eos_token));
    // Some ChatML templates open with bos; any other use of bos or eos is one Crescent does not
    // know, and ignoring it would change the text.
    if (code.starts_with("{{bos_token}}")) t.leading_bos_ = true;
    if (Contains(std::string_view(code).substr(t.leading_bos_ ? 13 : 0), "bos_token") ||
        Contains(code, "eos_token")) {
      return NotSupported("it is a ChatML template that writes bos or eos in an unknown place");
    }
    constexpr std::string_view kOpen = "<|im_start|>system\n", kClose = "<|im_end|>\n";
    for (const std::string& l : scan.literals) {
      if (l.size() > kOpen.size() + kClose.size() && l.starts_with(kOpen) && l.ends_with(kClose)) {
        std::string prompt = l.substr(kOpen.size(), l.size() - kOpen.size() - kClose.size());
        if (!t.default_system_prompt_.empty() && t.default_system_prompt_ != prompt) {
          return NotSupported("it has more than one default system prompt");
        }
        t.default_system_prompt_ = std::move(prompt);
      }
    }
    if (!t.default_system_prompt_.empty() && !Contains(code, "messages[0]['role']!='system'") &&
        !Contains(code, "messages[0]['role']=='system'")) {
      return NotSupported("it inserts a system prompt under a condition Crescent does not know");
    }
    if (AnyLiteralContains(scan, "<tool_response>")) {
      if (!Contains(code, kChatMlToolResponse)) {
        return NotSupported("it wraps tool results in <tool_response> in an unknown layout");
      }
      t.tool_response_blocks_ = true;
    }
    return t;
  }

  if (AnyLiteralContains(scan, "<|start_header_id|>")) {
    if (!Contains(code, kLlama3Message)) {
      return NotSupported(
          "it uses Llama 3 markers but lays messages out differently from the "
          "supported Llama 3 templates");
    }
    ChatTemplate t(ChatFamily::kLlama3, std::move(bos_token), std::move(eos_token));
    if (AnyLiteralContains(scan, "Cutting Knowledge Date:")) {
      t.family_ = ChatFamily::kLlama31;
      for (std::string_view line : kLlama31Lines) {
        if (!Contains(code, line)) {
          return NotSupported(
              absl::StrCat("it looks like a Llama 3.1 template but lacks ", Av(line)));
        }
      }
      for (const std::string& l : scan.literals) {
        if (l.starts_with("Cutting Knowledge Date:")) t.knowledge_line_ = l;
      }
      if (Contains(code, "strftime_now")) {
        if (!Contains(code, "{%set date_string=strftime_now('%d %b %Y')%}")) {
          return NotSupported("it formats today's date in an unknown way");
        }
        t.date_is_today_ = true;
      } else {
        constexpr std::string_view kSetDate = "{%set date_string='";
        const size_t at = code.find(kSetDate);
        if (at == std::string::npos) return NotSupported("it sets no date_string");
        const size_t begin = at + kSetDate.size();
        const size_t end = code.find("'%}", begin);
        if (end == std::string::npos) return NotSupported("it sets date_string oddly");
        t.date_ = code.substr(begin, end - begin);
        if (Contains(t.date_, "\\")) return NotSupported("it sets date_string oddly");
      }
      return t;
    }
    if (!Contains(code, "bos_token")) return NotSupported("this Llama 3 template never writes bos");
    const bool eos_variant = Contains(code, "eos_token");
    const std::string header = absl::StrCat("{{", Av(kLlama3Header), "}}");
    if (!Contains(code, "add_generation_prompt")) {
      if (!Contains(code, header)) return NotSupported("it never writes the assistant header");
      t.always_generation_prompt_ = true;
    } else if (Contains(code, absl::StrCat("{%if add_generation_prompt%}", header,
                                           "{%else%}{{eos_token}}{%endif%}"))) {
      t.eos_without_generation_prompt_ = true;
    } else if (!Contains(code, absl::StrCat("{%if add_generation_prompt%}", header, "{%endif%}"))) {
      return NotSupported("it writes the assistant header under an unknown condition");
    }
    if (eos_variant && !t.eos_without_generation_prompt_) {
      return NotSupported("this Llama 3 template writes eos in an unknown place");
    }
    return t;
  }

  if (AnyLiteralContains(scan, "[INST]") && AnyLiteralContains(scan, "<<SYS>>")) {
    if (!Contains(code, kLlama2System)) {
      return NotSupported("it uses Llama 2 markers but lays out the system block differently");
    }
    ChatTemplate t(ChatFamily::kLlama2, std::move(bos_token), std::move(eos_token));
    if (Contains(code, R"({{bos_token+'[INST] '+content.strip()+' [/INST]'}})") &&
        Contains(code, R"({{' '+content.strip()+' '+eos_token}})")) {
      t.strip_content_ = true;
    } else if (Contains(code, R"({{bos_token+'[INST] '+content+' [/INST]'}})") &&
               Contains(code, R"({{' '+content+' '+eos_token}})")) {
      t.strip_content_ = false;
    } else {
      return NotSupported("it uses Llama 2 markers but lays out turns differently");
    }
    return t;
  }

  if (AnyLiteralContains(scan, "[INST]")) {
    if (AnyLiteralContains(scan, "[AVAILABLE_TOOLS]") ||
        AnyLiteralContains(scan, "[SYSTEM_PROMPT]") || AnyLiteralContains(scan, "[TOOL_RESULTS]")) {
      return NotSupported("it is a Mistral v3 / Tekken template (tool and system-prompt tokens)");
    }
    if (!Contains(code, "{{bos_token}}")) return NotSupported("this Mistral template lacks bos");
    ChatTemplate t(ChatFamily::kMistral, std::move(bos_token), std::move(eos_token));
    if (Contains(code, R"({{' [INST] '+system_message+'\n\n'+message['content']+' [/INST]'}})") &&
        Contains(code, R"({{' [INST] '+message['content']+' [/INST]'}})")) {
      t.inst_open_ = " [INST] ";
      t.merges_system_ = true;
    } else if (!Contains(code, "system_message") &&
               Contains(code, R"({{'[INST] '+message['content']+' [/INST]'}})")) {
      t.inst_open_ = "[INST] ";
      t.merges_system_ = false;
    } else {
      return NotSupported("it uses [INST] markers in a layout Crescent does not know");
    }
    if (Contains(code, R"({{' '+message['content']+eos_token}})")) {
      t.assistant_prefix_ = " ";
      t.assistant_suffix_ = "";
    } else if (Contains(code, R"({{message['content']+eos_token+' '}})")) {
      t.assistant_prefix_ = "";
      t.assistant_suffix_ = " ";
    } else if (Contains(code, R"({{message['content']+eos_token}})")) {
      t.assistant_prefix_ = "";
      t.assistant_suffix_ = "";
    } else {
      return NotSupported("it writes Mistral assistant turns in a layout Crescent does not know");
    }
    return t;
  }

  return NotSupported(
      "no known family's markers (<|im_start|>, <|start_header_id|>, [INST], "
      "<<SYS>>) were found in it");
}

// ---------------------------------------------------------------------------------------------
// Rendering.

namespace {

enum class Role { kSystem, kUser, kAssistant, kTool };

std::string_view RoleName(Role r) {
  switch (r) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
    case Role::kTool:
      return "tool";
  }
  return "";
}

absl::StatusOr<std::vector<Role>> ParseRoles(std::span<const ChatMessage> messages) {
  if (messages.empty()) return absl::InvalidArgumentError("the conversation has no messages");
  std::vector<Role> roles;
  roles.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r == "system" || r == "developer") {
      roles.push_back(Role::kSystem);
    } else if (r == "user") {
      roles.push_back(Role::kUser);
    } else if (r == "assistant") {
      roles.push_back(Role::kAssistant);
    } else if (r == "tool") {
      roles.push_back(Role::kTool);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", i, ": unknown role \"", r,
                       "\" (expected system, developer, user, assistant or tool)"));
    }
  }
  return roles;
}

// llama2 / mistral: after an optional leading system message, user and assistant alternate,
// starting with user. `first` is the index of the first message after the system message.
absl::Status CheckAlternation(std::string_view family, const std::vector<Role>& roles,
                              size_t first) {
  for (size_t i = first; i < roles.size(); ++i) {
    const bool user_turn = (i - first) % 2 == 0;
    const Role want = user_turn ? Role::kUser : Role::kAssistant;
    if (roles[i] == want) continue;
    if (roles[i] == Role::kSystem || roles[i] == Role::kTool) {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", i, ": the ", Av(family), " template cannot express a ",
                       Av(RoleName(roles[i])),
                       " message here (only one system message, first, and then "
                       "alternating user/assistant messages)"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("message ", i, ": the ", Av(family),
                     " template needs user and assistant messages to "
                     "alternate, starting with user, after an optional system message; got ",
                     Av(RoleName(roles[i])), " where ", Av(RoleName(want)), " belongs"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  switch (family_) {
    case ChatFamily::kChatMl:
      return RenderChatMl(messages, add_generation_prompt);
    case ChatFamily::kLlama3:
      return RenderLlama3(messages, add_generation_prompt);
    case ChatFamily::kLlama31:
      return RenderLlama31(messages, add_generation_prompt);
    case ChatFamily::kLlama2:
      return RenderLlama2(messages);
    case ChatFamily::kMistral:
      return RenderMistral(messages);
  }
  return absl::InternalError("unknown chat family");
}

absl::StatusOr<std::string> ChatTemplate::RenderChatMl(std::span<const ChatMessage> messages,
                                                       bool add_generation_prompt) const {
  CRESCENT_ASSIGN_OR_RETURN(std::vector<Role> roles, ParseRoles(messages));
  std::string out = leading_bos_ ? bos_token_ : std::string();
  if (!default_system_prompt_.empty() && roles[0] != Role::kSystem) {
    absl::StrAppend(&out, "<|im_start|>system\n", default_system_prompt_, "<|im_end|>\n");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (tool_response_blocks_ && roles[i] == Role::kTool) {
      // Consecutive tool results share one user turn.
      if (i == 0 || roles[i - 1] != Role::kTool) out += "<|im_start|>user";
      absl::StrAppend(&out, "\n<tool_response>\n", messages[i].content, "\n</tool_response>");
      if (i + 1 == messages.size() || roles[i + 1] != Role::kTool) out += "<|im_end|>\n";
      continue;
    }
    absl::StrAppend(&out, "<|im_start|>", Av(RoleName(roles[i])), "\n", messages[i].content,
                    "<|im_end|>\n");
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderLlama3(std::span<const ChatMessage> messages,
                                                       bool add_generation_prompt) const {
  CRESCENT_ASSIGN_OR_RETURN(std::vector<Role> roles, ParseRoles(messages));
  std::string out = bos_token_;
  for (size_t i = 0; i < messages.size(); ++i) {
    absl::StrAppend(&out, "<|start_header_id|>", Av(RoleName(roles[i])), "<|end_header_id|>\n\n",
                    Av(PyStrip(messages[i].content)), "<|eot_id|>");
  }
  if (add_generation_prompt || always_generation_prompt_) {
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  } else if (eos_without_generation_prompt_) {
    out += eos_token_;
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderLlama31(std::span<const ChatMessage> messages,
                                                        bool add_generation_prompt) const {
  CRESCENT_ASSIGN_OR_RETURN(std::vector<Role> roles, ParseRoles(messages));
  size_t first = 0;
  std::string_view system_message;
  if (roles[0] == Role::kSystem) {
    system_message = PyStrip(messages[0].content);
    first = 1;
  }
  std::string out = bos_token_;
  absl::StrAppend(&out, "<|start_header_id|>system<|end_header_id|>\n\n", knowledge_line_,
                  "Today Date: ", date_is_today_ ? TodayString() : date_, "\n\n",
                  Av(system_message), "<|eot_id|>");
  for (size_t i = first; i < messages.size(); ++i) {
    if (roles[i] == Role::kTool) {
      // The template passes a string through tojson, since a string `is iterable`.
      absl::StrAppend(&out, "<|start_header_id|>ipython<|end_header_id|>\n\n",
                      JsonQuote(messages[i].content), "<|eot_id|>");
    } else {
      absl::StrAppend(&out, "<|start_header_id|>", Av(RoleName(roles[i])), "<|end_header_id|>\n\n",
                      Av(PyStrip(messages[i].content)), "<|eot_id|>");
    }
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderLlama2(
    std::span<const ChatMessage> messages) const {
  CRESCENT_ASSIGN_OR_RETURN(std::vector<Role> roles, ParseRoles(messages));
  const size_t first = roles[0] == Role::kSystem ? 1 : 0;
  CRESCENT_RETURN_IF_ERROR(CheckAlternation("llama2", roles, first));
  std::string out;
  for (size_t i = first; i < messages.size(); ++i) {
    std::string content = messages[i].content;
    if (i == first && first == 1) {
      content = absl::StrCat("<<SYS>>\n", messages[0].content, "\n<</SYS>>\n\n", content);
    }
    const std::string_view body = strip_content_ ? PyStrip(content) : std::string_view(content);
    if (roles[i] == Role::kUser) {
      absl::StrAppend(&out, bos_token_, "[INST] ", Av(body), " [/INST]");
    } else {
      absl::StrAppend(&out, " ", Av(body), " ", eos_token_);
    }
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::RenderMistral(
    std::span<const ChatMessage> messages) const {
  CRESCENT_ASSIGN_OR_RETURN(std::vector<Role> roles, ParseRoles(messages));
  const size_t first = merges_system_ && roles[0] == Role::kSystem ? 1 : 0;
  CRESCENT_RETURN_IF_ERROR(CheckAlternation("mistral", roles, first));
  std::string out = bos_token_;
  for (size_t i = first; i < messages.size(); ++i) {
    if (roles[i] == Role::kUser) {
      if (i == 1 && first == 1) {
        absl::StrAppend(&out, inst_open_, messages[0].content, "\n\n", messages[i].content,
                        " [/INST]");
      } else {
        absl::StrAppend(&out, inst_open_, messages[i].content, " [/INST]");
      }
    } else {
      absl::StrAppend(&out, assistant_prefix_, messages[i].content, eos_token_, assistant_suffix_);
    }
  }
  return out;
}

}  // namespace crescent::model
