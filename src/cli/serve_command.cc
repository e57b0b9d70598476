#include "src/cli/command.h"

namespace crescent::cli {

void AddServeCommands(CLI::App& app, std::vector<Command>* commands) {
  (void)app;
  (void)commands;
}

}  // namespace crescent::cli
