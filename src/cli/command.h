// One `crescent <role>` subcommand defined outside main.cc: the subcommand CLI11 parsed into,
// and what runs when it was chosen (after parsing and after the log level is set).
#ifndef CRESCENT_SRC_CLI_COMMAND_H_
#define CRESCENT_SRC_CLI_COMMAND_H_

#include <signal.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "CLI/CLI.hpp"

namespace crescent::cli {

struct Command {
  CLI::App* subcommand = nullptr;
  std::function<int()> run;  // The process exit status.
};

// Each file registers its subcommands on `app` and appends them to `commands`. Flag values live
// in objects the run functions own (shared_ptr), so they outlive the call.
// For long-running roles: blocks SIGINT and SIGTERM in the calling thread and every thread it
// starts afterwards (call it before starting any), and ignores SIGPIPE; WaitForStopSignal then
// takes one of them synchronously on the main thread and returns its number.
sigset_t BlockStopSignals();
int WaitForStopSignal(const sigset_t& signals);

void AddServeCommands(CLI::App& app, std::vector<Command>* commands);    // serve_command.cc
void AddKvstoreCommands(CLI::App& app, std::vector<Command>* commands);  // kvstore_command.cc
void AddConductorCommands(CLI::App& app, std::vector<Command>* commands);    // conductor_command.cc
void AddPrefillNodeCommands(CLI::App& app, std::vector<Command>* commands);  // prefill_node_command.cc
void AddDecodeNodeCommands(CLI::App& app, std::vector<Command>* commands);   // decode_node_command.cc
void AddUpCommands(CLI::App& app, std::vector<Command>* commands);           // up_command.cc

}  // namespace crescent::cli

#endif  // CRESCENT_SRC_CLI_COMMAND_H_
