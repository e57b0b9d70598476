// crescent-bench: `replay` (trace replay against any OpenAI-compatible endpoint, reports,
// comparisons), `sim` (discrete-event cluster simulator running the Conductor's policy code),
// `profile` (measures a node's cost model for the simulator).
#include "CLI/CLI.hpp"
#include "bench/replay/replay_command.h"
#include "bench/sim/sim_command.h"

int main(int argc, char** argv) {
  CLI::App app{"crescent-bench: trace replay, cluster simulation and profiles for Crescent"};
  app.require_subcommand(1);
  int exit_code = 0;
  crescent::bench::AddReplayCommands(app, &exit_code);
  crescent::bench::AddSimCommands(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
