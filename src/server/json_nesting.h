// How deeply JSON text nests arrays and objects, found without parsing it. nlohmann's parser
// is iterative, but dumping a value and walking it (schemas, tool arguments) recurse once per
// level, so text from a client or a model is measured first and refused past a limit: a body
// of a million '[' then is a 400, not a stack overflow.
#ifndef CRESCENT_SRC_SERVER_JSON_NESTING_H_
#define CRESCENT_SRC_SERVER_JSON_NESTING_H_

#include <string_view>

namespace crescent::server {

// Deepest nesting anything from a client or a model may have: far beyond any real request
// (a JSON schema nested as deeply as the compiler takes, 64 schemas, is ~130 levels) and far
// within what the recursive code's stack allows.
inline constexpr int kMaxJsonNesting = 512;

// The greatest number of arrays and objects open at once in `text` (0 for a scalar),
// counting brackets outside strings (escapes honoured); once it exceeds `limit`, returns
// limit + 1 without reading further. Text that is not JSON gets a number all the same (its
// parse fails later). One pass, no allocation. REQUIRES: limit >= 0.
int JsonNestingDepth(std::string_view text, int limit = kMaxJsonNesting);

}  // namespace crescent::server

#endif  // CRESCENT_SRC_SERVER_JSON_NESTING_H_
