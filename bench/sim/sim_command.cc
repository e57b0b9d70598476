#include "bench/sim/sim_command.h"

namespace crescent::bench {

void AddSimCommands(CLI::App& app, int* exit_code) {
  (void)app;
  (void)exit_code;
}

}  // namespace crescent::bench
