#include "src/cli/command.h"

namespace crescent::cli {

void AddKvstoreCommands(CLI::App& app, std::vector<Command>* commands) {
  (void)app;
  (void)commands;
}

}  // namespace crescent::cli
