#include "tests/kvstore/transfer/test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace crescent::kvstore::testing {
namespace {

uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

std::string PeerBinary() {
  if (const char* dir = std::getenv("CRESCENT_BINARY_DIR"); dir != nullptr && *dir != '\0') {
    return absl::StrCat(dir, "/bin/transfer_test_peer");
  }
  char self[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string path(self, n > 0 ? static_cast<size_t>(n) : 0);
  path = path.substr(0, path.rfind('/'));  // .../tests
  path = path.substr(0, path.rfind('/'));  // build dir
  return absl::StrCat(path, "/bin/transfer_test_peer");
}

}  // namespace

// The pattern is one mixed 64-bit word per aligned 8 bytes of absolute position, so whole words
// can be produced and compared at once (which keeps 64 MiB cheap even under sanitizers).
uint64_t PatternWord(uint64_t seed, uint64_t word_index) {
  return Mix(word_index * 0x9e3779b97f4a7c15ULL + seed);
}

uint8_t PatternByte(uint64_t seed, uint64_t pos) {
  return static_cast<uint8_t>(PatternWord(seed, pos >> 3) >> (8 * (pos & 7)));
}

void FillPattern(void* buf, size_t n, uint64_t seed, uint64_t origin) {
  auto* p = static_cast<uint8_t*>(buf);
  size_t i = 0;
  for (; i < n && ((origin + i) & 7) != 0; ++i) p[i] = PatternByte(seed, origin + i);
  for (; i + 8 <= n; i += 8) {
    const uint64_t w = PatternWord(seed, (origin + i) >> 3);  // little-endian byte order
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] = PatternByte(seed, origin + i);
}

int64_t FindPatternMismatch(const void* buf, size_t n, uint64_t seed, uint64_t origin) {
  const auto* p = static_cast<const uint8_t*>(buf);
  size_t i = 0;
  for (; i < n && ((origin + i) & 7) != 0; ++i) {
    if (p[i] != PatternByte(seed, origin + i)) return static_cast<int64_t>(i);
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != PatternWord(seed, (origin + i) >> 3)) break;  // located byte by byte below
  }
  for (; i < n; ++i) {
    if (p[i] != PatternByte(seed, origin + i)) return static_cast<int64_t>(i);
  }
  return -1;
}

absl::StatusOr<std::unique_ptr<PeerProcess>> PeerProcess::Start(const Options& options) {
  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  const std::string binary = PeerBinary();
  std::vector<std::string> args = {
      binary, "--segment=" + options.segment, absl::StrCat("--size=", options.size),
      "--transports=" + options.transports, absl::StrCat("--seed=", options.pattern_seed)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto peer = std::unique_ptr<PeerProcess>(new PeerProcess());
  const int rc =
      ::posix_spawn(&peer->pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  peer->to_child_ = in_pipe[1];
  peer->from_child_ = out_pipe[0];
  if (rc != 0) {
    peer->pid_ = -1;
    return absl::InternalError(absl::StrCat("posix_spawn ", binary, ": ", std::strerror(rc)));
  }
  absl::StatusOr<std::string> line = peer->ReadLine();
  if (!line.ok()) return line.status();
  absl::StatusOr<SegmentDescriptor> descriptor = ParseSegmentDescriptor(*line);
  if (!descriptor.ok()) return descriptor.status();
  peer->descriptor_ = *descriptor;
  return peer;
}

PeerProcess::~PeerProcess() {
  if (to_child_ >= 0) ::close(to_child_);  // EOF on stdin: the child exits
  if (pid_ > 0) {
    // Give it a moment to exit on its own, then make sure.
    for (int i = 0; i < 200; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      ::usleep(10000);
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  if (from_child_ >= 0) ::close(from_child_);
}

absl::StatusOr<std::string> PeerProcess::ReadLine() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (;;) {
    const size_t nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::DeadlineExceededError("peer process did not answer");
    pollfd pfd{from_child_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(from_child_, buf, sizeof(buf));
    if (n <= 0) return absl::UnavailableError("peer process closed its output");
    buffered_.append(buf, static_cast<size_t>(n));
  }
}

absl::StatusOr<std::string> PeerProcess::Command(const std::string& line) {
  const std::string text = line + "\n";
  if (::write(to_child_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return absl::UnavailableError("cannot write to the peer process");
  }
  return ReadLine();
}

absl::StatusOr<uint64_t> PeerProcess::HashRange(uint64_t offset, uint64_t length) {
  absl::StatusOr<std::string> answer = Command(absl::StrCat("hash ", offset, " ", length));
  if (!answer.ok()) return answer.status();
  uint64_t value = 0;
  if (!absl::SimpleAtoi(*answer, &value)) {
    return absl::InternalError(absl::StrCat("peer answered '", *answer, "'"));
  }
  return value;
}

absl::StatusOr<std::vector<std::string>> PeerProcess::Notifications() {
  absl::StatusOr<std::string> answer = Command("notifications");
  if (!answer.ok()) return answer.status();
  std::vector<std::string> out;
  if (answer->empty()) return out;
  for (absl::string_view piece : absl::StrSplit(*answer, '|')) out.emplace_back(piece);
  return out;
}

void PeerProcess::Kill(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

void PeerProcess::Reap() {
  if (pid_ > 0) {
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

}  // namespace crescent::kvstore::testing
