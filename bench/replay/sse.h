// SseParser: incremental Server-Sent Events parser (the text/event-stream format) for the
// OpenAI streaming responses. Bytes arrive in arbitrary pieces; each complete event's data
// (its "data:" lines joined with "\n") is handed out once the blank line that ends it arrives.
// Comment lines (": keep-alive") and other fields are ignored.
#ifndef CRESCENT_BENCH_REPLAY_SSE_H_
#define CRESCENT_BENCH_REPLAY_SSE_H_

#include <string>
#include <string_view>
#include <vector>

namespace crescent::bench {

class SseParser {
 public:
  // Consumes `bytes` and appends the data of every event completed by them to *events.
  // Accepts "\n", "\r\n" and "\r" line ends. Not thread-safe.
  void Feed(std::string_view bytes, std::vector<std::string>* events);

  // Bytes buffered in an incomplete line or event.
  size_t pending() const { return line_.size() + data_.size(); }

 private:
  void OnLine(std::string_view line, std::vector<std::string>* events);

  std::string line_;  // The current incomplete line.
  std::string data_;  // Data lines of the current event so far.
  bool has_data_ = false;
  bool last_was_cr_ = false;  // A "\r" ended the last line: skip a "\n" right after it.
};

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_REPLAY_SSE_H_
