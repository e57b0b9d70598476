#include "src/cluster/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "src/common/logging.h"
#include "src/common/status.h"

extern char** environ;

namespace crescent::cluster {

struct Supervisor::Child {
  std::string name;
  pid_t pid = 0;
  int fd = -1;  // Read end of the child's stdout+stderr pipe; owned by the reader thread.
  std::thread reader;
  std::deque<std::string> lines;  // Guarded by Supervisor::mu_.
  bool stop_requested = false;    // Guarded by Supervisor::mu_.
  // Set, and the child reaped, in one critical section of mu_: while it is false the pid is
  // still ours (alive or a zombie), so signalling it cannot hit a reused pid.
  bool exited = false;
  ChildExit exit;
};

namespace {

constexpr size_t kMaxLineBytes = 64 * 1024;

std::string SignalName(int sig) {
  const char* s = strsignal(sig);
  return s != nullptr ? std::string(s) : std::string("?");
}

}  // namespace

std::string ChildExit::Describe() const {
  if (term_signal != 0) {
    return absl::StrCat("killed by signal ", term_signal, " (", SignalName(term_signal), ")");
  }
  return absl::StrCat("exited with status ", exit_code);
}

Supervisor::Supervisor(SupervisorOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Create(SupervisorOptions options) {
  if (options.stop_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("Supervisor: stop_timeout must be >= 0");
  }
  if (options.max_kept_lines == 0) {
    return absl::InvalidArgumentError("Supervisor: max_kept_lines must be >= 1");
  }
  return std::unique_ptr<Supervisor>(new Supervisor(std::move(options)));
}

Supervisor::~Supervisor() {
  Stop();
  std::vector<Child*> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& c : children_) all.push_back(c.get());
  }
  for (Child* c : all) {
    if (c->reader.joinable()) c->reader.join();
  }
}

Supervisor::Child* Supervisor::Find(std::string_view name) const {
  for (const auto& c : children_) {
    if (c->name == name) return c.get();
  }
  return nullptr;
}

absl::StatusOr<pid_t> Supervisor::Start(const ChildSpec& spec) {
  if (spec.name.empty()) return absl::InvalidArgumentError("Supervisor::Start: empty child name");
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) {
      return absl::FailedPreconditionError(
          absl::StrCat("Supervisor::Start(", spec.name, "): the supervisor is stopped"));
    }
    if (Find(spec.name) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("Supervisor::Start: a child named '", spec.name, "' exists already"));
    }
  }

  // Everything the child needs is built before fork(): between fork and exec only
  // async-signal-safe calls are allowed.
  const std::string path = spec.binary.empty() ? "/proc/self/exe" : spec.binary;
  std::vector<std::string> arg_storage;
  arg_storage.push_back(spec.binary.empty() ? "crescent" : spec.binary);
  for (const auto& a : spec.args) arg_storage.push_back(a);
  std::vector<char*> argv;
  for (auto& a : arg_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_storage;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool overridden = false;
    for (const auto& [key, value] : spec.env) {
      if (entry.size() > key.size() && entry.substr(0, key.size()) == key &&
          entry[key.size()] == '=') {
        overridden = true;
        break;
      }
    }
    if (!overridden) env_storage.emplace_back(entry);
  }
  for (const auto& [key, value] : spec.env) env_storage.push_back(absl::StrCat(key, "=", value));
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe2 for child output");
  int report[2];  // The child writes errno here if exec fails; exec closes it (O_CLOEXEC).
  if (pipe2(report, O_CLOEXEC) != 0) {
    const int err = errno;
    close(out[0]);
    close(out[1]);
    return ErrnoToStatus(err, "pipe2 for exec report");
  }
  const pid_t parent = getpid();
  sigset_t empty_mask;
  sigemptyset(&empty_mask);

  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    for (int fd : {out[0], out[1], report[0], report[1]}) close(fd);
    return ErrnoToStatus(err, absl::StrCat("fork for child ", spec.name));
  }
  if (pid == 0) {
    // Child. Own process group: a terminal's SIGINT goes to the supervisor only.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // The parent died before prctl took effect.
    dup2(out[1], STDOUT_FILENO);
    dup2(out[1], STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    // Signal dispositions set to "ignore" and the blocked mask survive exec: undo ours.
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaction(sig, &dfl, nullptr);
    sigprocmask(SIG_SETMASK, &empty_mask, nullptr);
    execve(path.c_str(), argv.data(), envp.data());
    const int err = errno;
    ssize_t ignored = write(report[1], &err, sizeof(err));
    (void)ignored;
    _exit(127);
  }

  // Parent.
  close(out[1]);
  close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(report[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    close(out[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return ErrnoToStatus(child_errno, absl::StrCat("exec ", path, " for child ", spec.name));
  }
  fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);

  auto child = std::make_unique<Child>();
  child->name = spec.name;
  child->pid = pid;
  child->fd = out[0];
  Child* raw = child.get();
  bool stop_now = false;
  {
    absl::MutexLock lock(&mu_);
    stop_now = stopped_;
    children_.push_back(std::move(child));
    raw->reader = std::thread([this, raw] { ReaderLoop(raw); });
  }
  CRESCENT_LOG(debug, "started {} (pid {}): {}", spec.name, pid, path);
  if (stop_now) StopOne(raw);  // Stop() ran while we forked.
  return pid;
}

void Supervisor::ReaderLoop(Child* child) {
  std::string partial;
  auto emit = [&](std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (options_.forward_output) {
      const std::string out = absl::StrCat("[", child->name, "] ", line, "\n");
      absl::MutexLock lock(&output_mu_);
      std::fwrite(out.data(), 1, out.size(), stderr);
      std::fflush(stderr);
    }
    if (options_.on_line) options_.on_line(child->name, line);
    absl::MutexLock lock(&mu_);
    child->lines.push_back(std::move(line));
    while (child->lines.size() > options_.max_kept_lines) child->lines.pop_front();
    cv_.SignalAll();
  };
  auto consume = [&](const char* data, size_t len) {
    partial.append(data, len);
    size_t start = 0;
    for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      emit(partial.substr(start, nl - start));
    }
    partial.erase(0, start);
    if (partial.size() > kMaxLineBytes) {
      emit(std::move(partial));
      partial.clear();
    }
  };
  // Reads whatever is available now; returns false at end of file or on an error.
  auto drain = [&]() {
    char buf[8192];
    while (true) {
      const ssize_t n = read(child->fd, buf, sizeof(buf));
      if (n > 0) {
        consume(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
  };

  siginfo_t info;
  bool open = true;
  while (true) {
    if (open) {
      pollfd p{child->fd, POLLIN, 0};
      const int r = poll(&p, 1, 100);
      if (r > 0) {
        open = drain();
        continue;
      }
    }
    // The child may exit while a grandchild still holds the pipe open, so exit is detected by
    // polling (WNOWAIT: the zombie stays until it is reaped below, under mu_).
    std::memset(&info, 0, sizeof(info));
    const int flags = WEXITED | WNOWAIT | (open ? WNOHANG : 0);
    const int w = waitid(P_PID, static_cast<id_t>(child->pid), &info, flags);
    if (w == 0 && info.si_pid == child->pid) break;
    if (w < 0 && errno != EINTR) break;  // ECHILD: cannot happen for our own child.
  }
  if (open) drain();
  if (!partial.empty()) emit(std::move(partial));
  close(child->fd);

  ChildExit exit;
  exit.name = child->name;
  exit.pid = child->pid;
  if (info.si_code == CLD_EXITED) {
    exit.exit_code = info.si_status;
  } else {
    exit.term_signal = info.si_status;
  }
  {
    absl::MutexLock lock(&mu_);
    exit.expected = child->stop_requested;
  }
  // Reported before Exit()/Exits()/WaitForLine can see it, so that whoever observes the exit
  // knows the callback has run. The zombie keeps the pid ours meanwhile.
  if (exit.expected) {
    CRESCENT_LOG(info, "{} (pid {}) stopped: {}", exit.name, exit.pid, exit.Describe());
  } else {
    CRESCENT_LOG(error, "{} (pid {}) died unexpectedly: {}", exit.name, exit.pid, exit.Describe());
  }
  if (options_.on_exit) options_.on_exit(exit);
  {
    absl::MutexLock lock(&mu_);
    int status = 0;
    while (waitpid(child->pid, &status, 0) < 0 && errno == EINTR) {
    }
    child->exit = exit;
    child->exited = true;
    exits_.push_back(exit);
    cv_.SignalAll();
  }
}

absl::StatusOr<std::string> Supervisor::WaitForLine(std::string_view name, std::string_view prefix,
                                                    absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock lock(&mu_);
  Child* child = Find(name);
  if (child == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("Supervisor: no child named '", std::string(name), "'"));
  }
  while (true) {
    for (const auto& line : child->lines) {
      if (line.size() >= prefix.size() &&
          std::string_view(line).substr(0, prefix.size()) == prefix) {
        return line;
      }
    }
    if (child->exited) {
      return absl::AbortedError(absl::StrCat(std::string(name), " ", child->exit.Describe(),
                                             " before printing a line starting with '",
                                             std::string(prefix), "'"));
    }
    if (cv_.WaitWithDeadline(&mu_, deadline) && absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(std::string(name), " printed no line starting with '", std::string(prefix),
                       "' within ", absl::FormatDuration(timeout)));
    }
  }
}

std::optional<pid_t> Supervisor::Pid(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  const Child* c = Find(name);
  if (c == nullptr) return std::nullopt;
  return c->pid;
}

bool Supervisor::Running(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  const Child* c = Find(name);
  return c != nullptr && !c->exited;
}

std::optional<ChildExit> Supervisor::Exit(std::string_view name) const {
  absl::MutexLock lock(&mu_);
  const Child* c = Find(name);
  if (c == nullptr || !c->exited) return std::nullopt;
  return c->exit;
}

std::vector<ChildExit> Supervisor::Exits() const {
  absl::MutexLock lock(&mu_);
  return exits_;
}

std::vector<std::string> Supervisor::Names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& c : children_) names.push_back(c->name);
  return names;
}

void Supervisor::StopOne(Child* child) {
  absl::MutexLock lock(&mu_);
  if (child->exited) return;
  child->stop_requested = true;
  kill(child->pid, SIGTERM);
  const absl::Time deadline = absl::Now() + options_.stop_timeout;
  while (!child->exited && absl::Now() < deadline) cv_.WaitWithDeadline(&mu_, deadline);
  if (child->exited) return;
  CRESCENT_LOG(warn, "{} (pid {}) still running {} after SIGTERM: SIGKILL", child->name, child->pid,
               absl::FormatDuration(options_.stop_timeout));
  // The child leads its own process group: kill the group so that no grandchild keeps going.
  kill(-child->pid, SIGKILL);
  kill(child->pid, SIGKILL);
  while (!child->exited) cv_.Wait(&mu_);
}

absl::StatusOr<ChildExit> Supervisor::StopChild(std::string_view name) {
  Child* child;
  {
    absl::MutexLock lock(&mu_);
    child = Find(name);
    if (child == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("Supervisor: no child named '", std::string(name), "'"));
    }
  }
  StopOne(child);
  absl::MutexLock lock(&mu_);
  return child->exit;
}

void Supervisor::Stop() {
  std::vector<Child*> order;
  {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) order.push_back(it->get());
  }
  for (Child* c : order) StopOne(c);
}

}  // namespace crescent::cluster
