// Logging: spdlog behind a few macros so that call sites stay short and the sink is set once.
//
//   CRESCENT_LOG(info, "loaded {} tensors from {}", n, path);
//
// Thread-safe. Level from the CRESCENT_LOG_LEVEL environment variable (trace, debug, info,
// warn, error, off) or SetLogLevel(); the default is info. Output goes to stderr.
#ifndef CRESCENT_SRC_COMMON_LOGGING_H_
#define CRESCENT_SRC_COMMON_LOGGING_H_

#include <string_view>

#include "spdlog/spdlog.h"

#define CRESCENT_LOG(level, ...) ::crescent::Logger()->level(__VA_ARGS__)

namespace crescent {

// Returns the process-wide logger (created on first use).
spdlog::logger* Logger();

// Sets the level by name; an unknown name leaves the level as it was and returns false.
bool SetLogLevel(std::string_view level);

// Names this process in every line (e.g. "prefill-0"); call once early in main().
void SetLogRole(std::string_view role);

}  // namespace crescent

#endif  // CRESCENT_SRC_COMMON_LOGGING_H_
