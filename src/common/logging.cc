#include "src/common/logging.h"

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace crescent {
namespace {

std::shared_ptr<spdlog::logger> MakeLogger() {
  auto logger = spdlog::stderr_color_mt("crescent");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
  logger->set_level(spdlog::level::info);
  if (const char* env = std::getenv("CRESCENT_LOG_LEVEL")) {
    auto level = spdlog::level::from_str(env);
    logger->set_level(level);
  }
  return logger;
}

std::shared_ptr<spdlog::logger>& LoggerRef() {
  static std::shared_ptr<spdlog::logger> logger = MakeLogger();
  return logger;
}

}  // namespace

spdlog::logger* Logger() { return LoggerRef().get(); }

bool SetLogLevel(std::string_view level) {
  static const char* kNames[] = {"trace", "debug", "info", "warn", "warning", "error", "off"};
  for (const char* name : kNames) {
    if (level == name) {
      Logger()->set_level(spdlog::level::from_str(std::string(level)));
      return true;
    }
  }
  return false;
}

void SetLogRole(std::string_view role) {
  Logger()->set_pattern(std::string("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [") + std::string(role) +
                        "] %v");
}

}  // namespace crescent
