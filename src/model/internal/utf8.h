// UTF-8 and GPT-2 byte-alphabet helpers for the tokenizer. Header-only; pure; thread-safe.
#ifndef CRESCENT_SRC_MODEL_INTERNAL_UTF8_H_
#define CRESCENT_SRC_MODEL_INTERNAL_UTF8_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace crescent::model::internal {

// Length of the UTF-8 sequence that `lead` starts (2..4 for valid multi-byte leads, 1 for ASCII);
// 0 for a byte that cannot start a sequence (a continuation byte, 0xC0, 0xC1, 0xF5..0xFF).
constexpr int Utf8SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF5) return 4;
  return 0;
}

constexpr bool IsUtf8Continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Whether the `len` bytes at `s` form one well-formed UTF-8 character (no overlongs, no
// surrogates, at most U+10FFFF). REQUIRES: len == Utf8SequenceLength(s[0]) and len >= 1.
inline bool IsWellFormedUtf8Char(const uint8_t* s, int len) {
  if (len == 1) return true;
  for (int i = 1; i < len; ++i) {
    if (!IsUtf8Continuation(s[i])) return false;
  }
  if (len == 3) {
    if (s[0] == 0xE0 && s[1] < 0xA0) return false;  // overlong
    if (s[0] == 0xED && s[1] > 0x9F) return false;  // surrogate
  } else if (len == 4) {
    if (s[0] == 0xF0 && s[1] < 0x90) return false;  // overlong
    if (s[0] == 0xF4 && s[1] > 0x8F) return false;  // above U+10FFFF
  }
  return true;
}

// Bytes of the character starting at text[pos]: its length when it is well-formed, else 1 (an
// invalid byte counts as a character of its own). REQUIRES: pos < text.size().
inline size_t Utf8CharLengthAt(std::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + pos;
  const int len = Utf8SequenceLength(s[0]);
  if (len <= 1 || pos + len > text.size()) return 1;
  return IsWellFormedUtf8Char(s, len) ? static_cast<size_t>(len) : 1;
}

// Length of the tail of `text` that is the unfinished start of a character: a valid lead byte
// followed by fewer continuation bytes than it needs (0 when the text ends on a complete
// character or on bytes that can never become one).
inline size_t IncompleteUtf8TailLength(std::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const uint8_t b = s[n - back];
    if (IsUtf8Continuation(b)) continue;
    const int len = Utf8SequenceLength(b);
    if (len <= 1 || static_cast<size_t>(len) <= back) return 0;
    // The bytes so far must be a possible prefix of a well-formed character.
    if (back >= 2) {
      if (b == 0xE0 && s[n - back + 1] < 0xA0) return 0;
      if (b == 0xED && s[n - back + 1] > 0x9F) return 0;
      if (b == 0xF0 && s[n - back + 1] < 0x90) return 0;
      if (b == 0xF4 && s[n - back + 1] > 0x8F) return 0;
    }
    return back;
  }
  return 0;
}

// Appends the UTF-8 encoding of `cp` (REQUIRES: cp <= 0x10FFFF).
inline void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes the character at text[*pos] and advances *pos past it. Returns -1 (advancing one
// byte) for an invalid byte. REQUIRES: *pos < text.size().
inline int32_t DecodeUtf8(std::string_view text, size_t* pos) {
  const size_t len = Utf8CharLengthAt(text, *pos);
  const auto* s = reinterpret_cast<const uint8_t*>(text.data()) + *pos;
  *pos += len;
  if (len == 1) return s[0] < 0x80 ? s[0] : -1;
  if (len == 2) return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
  if (len == 3) return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

// GPT-2's byte alphabet: every byte is shown as a printable code point. Bytes that are printable
// Latin-1 ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for themselves; the other 68 take
// U+0100, U+0101, ... in byte order (so ' ' is U+0120 'Ġ' and '\n' is U+010A 'Ċ').
constexpr std::array<uint16_t, 256> MakeByteToCodepoint() {
  std::array<uint16_t, 256> table{};
  uint16_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[b] = printable ? static_cast<uint16_t>(b) : next++;
  }
  return table;
}
inline constexpr std::array<uint16_t, 256> kByteToCodepoint = MakeByteToCodepoint();
inline constexpr int kByteAlphabetEnd = 256 + 68;  // code points above are not in the alphabet.

// Code point -> byte for the byte alphabet; -1 for code points outside it.
constexpr std::array<int16_t, kByteAlphabetEnd> MakeCodepointToByte() {
  std::array<int16_t, kByteAlphabetEnd> table{};
  for (auto& v : table) v = -1;
  for (int b = 0; b < 256; ++b) table[kByteToCodepoint[b]] = static_cast<int16_t>(b);
  return table;
}
inline constexpr std::array<int16_t, kByteAlphabetEnd> kCodepointToByte = MakeCodepointToByte();

}  // namespace crescent::model::internal

#endif  // CRESCENT_SRC_MODEL_INTERNAL_UTF8_H_
