#include "bench/replay/replay_command.h"

namespace crescent::bench {

void AddReplayCommands(CLI::App& app, int* exit_code) {
  (void)app;
  (void)exit_code;
}

}  // namespace crescent::bench
