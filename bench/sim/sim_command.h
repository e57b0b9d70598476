// `crescent-bench sim ...` subcommands: the discrete-event cluster simulator (policy comparison,
// colocated vs disaggregated, capacity search).
#ifndef CRESCENT_BENCH_SIM_SIM_COMMAND_H_
#define CRESCENT_BENCH_SIM_SIM_COMMAND_H_

#include "CLI/CLI.hpp"

namespace crescent::bench {

// Registers the sim subcommands on `app`; the one that runs stores its exit status in
// *exit_code (which must outlive app's parse).
void AddSimCommands(CLI::App& app, int* exit_code);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_SIM_SIM_COMMAND_H_
