// Supervisor: starts and stops the child processes of a local cluster (`crescent up`).
//
// Each child runs a binary (by default this one, /proc/self/exe) with its own arguments, in
// its own process group (a terminal's Ctrl-C reaches only the supervisor, which then stops the
// children in order), with PR_SET_PDEATHSIG(SIGTERM) so that it never outlives the supervisor's
// thread that started it. A reader thread per child takes the child's stdout and stderr (one
// pipe), forwards each line to the supervisor's stderr as "[name] line", offers it to a
// callback, and keeps it so that WaitForLine() can find lines printed before it was called.
// The same thread reaps the child and reports its exit; an exit that Stop() did not ask for is
// logged as an error.
//
//   auto sup = Supervisor::Create({});
//   CRESCENT_ASSIGN_OR_RETURN(pid_t pid, (*sup)->Start({"master", "", {"kvstore", "master"}}));
//   CRESCENT_ASSIGN_OR_RETURN(std::string line,
//                             (*sup)->WaitForLine("master", "listening on ", absl::Seconds(30)));
//   ...
//   (*sup)->Stop();  // SIGTERM in reverse start order, SIGKILL after the stop timeout
#ifndef CRESCENT_SRC_CLUSTER_SUPERVISOR_H_
#define CRESCENT_SRC_CLUSTER_SUPERVISOR_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace crescent::cluster {

// What to run.
struct ChildSpec {
  std::string name;    // Unique among this supervisor's children; prefixes its output lines.
  std::string binary;  // Executable path; empty = this process's own binary (/proc/self/exe).
  std::vector<std::string> args;  // argv[1..]; argv[0] is `binary` (or "crescent").
  std::vector<std::pair<std::string, std::string>> env;  // Added to (or overriding) ours.
};

// How a child ended.
struct ChildExit {
  std::string name;
  pid_t pid = 0;
  int exit_code = -1;     // The exit status when it exited normally, else -1.
  int term_signal = 0;    // The signal that killed it, else 0.
  bool expected = false;  // true when Stop() (or StopChild) had asked it to stop.
  // "exited with status 3" / "killed by signal 9 (Killed)".
  std::string Describe() const;
};

struct SupervisorOptions {
  // Called from a child's reader thread for each line of its output (without the newline).
  // Must be thread-safe and must not call back into the Supervisor.
  std::function<void(std::string_view name, std::string_view line)> on_line;
  // Called from the child's reader thread once the child has exited, before Exit(), Exits()
  // and WaitForLine() can see the exit. Same rules as on_line.
  std::function<void(const ChildExit&)> on_exit;
  // Forward children's lines to our stderr, prefixed "[name] ".
  bool forward_output = true;
  // How long Stop() waits after SIGTERM before it sends SIGKILL.
  absl::Duration stop_timeout = absl::Seconds(20);
  // Lines kept per child for WaitForLine (older ones are dropped).
  size_t max_kept_lines = 4096;
};

// Thread-safe, except that Start() must be called from a thread that outlives the children
// (PR_SET_PDEATHSIG fires when the *thread* that forked exits): in practice the main thread.
class Supervisor {
 public:
  static absl::StatusOr<std::unique_ptr<Supervisor>> Create(SupervisorOptions options);
  // Stops every child still running (as Stop()) and joins the reader threads.
  ~Supervisor();

  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts a child and returns its pid. Errors: InvalidArgument (empty or duplicate name),
  // FailedPrecondition (after Stop()), and the errno-derived status of pipe/fork/exec — an
  // exec failure (e.g. NotFound for a missing binary) is reported here, not as an exit.
  absl::StatusOr<pid_t> Start(const ChildSpec& spec);

  // Waits until child `name` has printed a line starting with `prefix` (lines printed before
  // the call count) and returns that line. Errors: NotFound (no such child), Aborted (the
  // child exited first; the message says how), DeadlineExceeded (not within `timeout`).
  absl::StatusOr<std::string> WaitForLine(std::string_view name, std::string_view prefix,
                                          absl::Duration timeout);

  // The child's pid, or nullopt for an unknown name.
  std::optional<pid_t> Pid(std::string_view name) const;
  // Whether the child is started and not yet reaped.
  bool Running(std::string_view name) const;
  // How the child ended; nullopt while it runs (or for an unknown name).
  std::optional<ChildExit> Exit(std::string_view name) const;
  // Every exit so far, in the order they were reaped.
  std::vector<ChildExit> Exits() const;
  // Names of the children, in start order.
  std::vector<std::string> Names() const;

  // Sends SIGTERM to one child and waits (up to the stop timeout) for it to exit, then SIGKILL.
  // Its exit is marked expected. Returns how it ended. NotFound for an unknown name.
  absl::StatusOr<ChildExit> StopChild(std::string_view name);

  // Stops all children: SIGTERM to each in reverse start order, waiting for each to exit (up to
  // the stop timeout, then SIGKILL) before signalling the next, so that front ends drain before
  // the back ends they use go away. Idempotent; later Start() calls fail.
  void Stop();

 private:
  struct Child;
  explicit Supervisor(SupervisorOptions options);
  void ReaderLoop(Child* child);
  void StopOne(Child* child);
  Child* Find(std::string_view name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SupervisorOptions options_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // Signalled on every kept line and every exit.
  std::vector<std::unique_ptr<Child>> children_ ABSL_GUARDED_BY(mu_);
  std::vector<ChildExit> exits_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  absl::Mutex output_mu_;  // One forwarded line at a time on our stderr.
};

}  // namespace crescent::cluster

#endif  // CRESCENT_SRC_CLUSTER_SUPERVISOR_H_
