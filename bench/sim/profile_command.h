// `crescent-bench profile`: measures a real node's cost profile with the CPU backend and writes
// it as the JSON `crescent-bench sim --profile` reads.
#ifndef CRESCENT_BENCH_SIM_PROFILE_COMMAND_H_
#define CRESCENT_BENCH_SIM_PROFILE_COMMAND_H_

#include "CLI/CLI.hpp"

namespace crescent::bench {

// Registers `profile` on `app`; stores its exit status in *exit_code.
void AddProfileCommand(CLI::App& app, int* exit_code);

}  // namespace crescent::bench

#endif  // CRESCENT_BENCH_SIM_PROFILE_COMMAND_H_
