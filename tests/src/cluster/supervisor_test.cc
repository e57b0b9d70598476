#include "src/cluster/supervisor.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crescent::cluster {
namespace {

using ::testing::HasSubstr;

ChildSpec Sh(const std::string& name, const std::string& script) {
  return ChildSpec{name, "/bin/sh", {"-c", script}, {}};
}

std::unique_ptr<Supervisor> Make(SupervisorOptions options = {}) {
  options.forward_output = false;
  auto s = Supervisor::Create(std::move(options));
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

std::string TempPath(const std::string& stem) {
  return ::testing::TempDir() + "/" + stem + "-" + std::to_string(getpid());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(SupervisorTest, ForwardsLinesAndFindsEarlierOnes) {
  absl::Mutex mu;
  std::vector<std::string> seen;
  SupervisorOptions options;
  options.on_line = [&](std::string_view name, std::string_view line) {
    absl::MutexLock lock(&mu);
    seen.push_back(std::string(name) + ":" + std::string(line));
  };
  auto sup = Make(options);
  ASSERT_TRUE(sup->Start(Sh("a",
                            "echo hello; echo 'crescent: x - ready grpc=h:1 http=-' >&2; "
                            "exec sleep 30"))
                  .ok());
  auto line = sup->WaitForLine("a", "crescent: ", absl::Seconds(10));
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(*line, "crescent: x - ready grpc=h:1 http=-");
  // A line printed before the call is found too.
  auto hello = sup->WaitForLine("a", "hel", absl::Seconds(1));
  ASSERT_TRUE(hello.ok()) << hello.status();
  EXPECT_EQ(*hello, "hello");
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(seen, ::testing::ElementsAre("a:hello", "a:crescent: x - ready grpc=h:1 http=-"));
  }
  EXPECT_TRUE(sup->Running("a"));
  EXPECT_FALSE(sup->Exit("a").has_value());
  sup->Stop();
  auto exit = sup->Exit("a");
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->expected);
  EXPECT_EQ(exit->term_signal, SIGTERM);
  EXPECT_FALSE(sup->Running("a"));
}

TEST(SupervisorTest, ReportsUnexpectedExitWithStatus) {
  absl::Mutex mu;
  std::vector<ChildExit> exits;
  SupervisorOptions options;
  options.on_exit = [&](const ChildExit& e) {
    absl::MutexLock lock(&mu);
    exits.push_back(e);
  };
  auto sup = Make(options);
  auto pid = sup->Start(Sh("bad", "echo bye; printf 'no newline'; exit 3"));
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto line = sup->WaitForLine("bad", "crescent: ", absl::Seconds(10));
  ASSERT_FALSE(line.ok());
  EXPECT_EQ(line.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(line.status().message(), HasSubstr("bad exited with status 3"));
  // The last, unterminated line is not lost.
  auto tail = sup->WaitForLine("bad", "no new", absl::Seconds(1));
  ASSERT_TRUE(tail.ok()) << tail.status();
  auto exit = sup->Exit("bad");
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->pid, *pid);
  EXPECT_EQ(exit->exit_code, 3);
  EXPECT_EQ(exit->term_signal, 0);
  EXPECT_FALSE(exit->expected);
  EXPECT_EQ(exit->Describe(), "exited with status 3");
  absl::MutexLock lock(&mu);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].name, "bad");
}

TEST(SupervisorTest, ReportsDeathBySignal) {
  auto sup = Make();
  ASSERT_TRUE(sup->Start(Sh("victim", "kill -9 $$")).ok());
  auto line = sup->WaitForLine("victim", "x", absl::Seconds(10));
  EXPECT_EQ(line.status().code(), absl::StatusCode::kAborted);
  auto exit = sup->Exit("victim");
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->term_signal, SIGKILL);
  EXPECT_EQ(exit->exit_code, -1);
  EXPECT_FALSE(exit->expected);
  EXPECT_THAT(exit->Describe(), HasSubstr("killed by signal 9"));
  ASSERT_EQ(sup->Exits().size(), 1u);
}

TEST(SupervisorTest, ExitIsSeenEvenWhenAGrandchildKeepsThePipeOpen) {
  auto sup = Make();
  ASSERT_TRUE(sup->Start(Sh("parent", "sleep 2 & exit 4")).ok());
  auto line = sup->WaitForLine("parent", "never", absl::Seconds(1.5));
  EXPECT_EQ(line.status().code(), absl::StatusCode::kAborted) << line.status();
  auto exit = sup->Exit("parent");
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->exit_code, 4);
}

TEST(SupervisorTest, MissingBinaryFailsStart) {
  auto sup = Make();
  auto pid = sup->Start({"ghost", "/nonexistent/crescent-binary", {}, {}});
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(pid.status().message(), HasSubstr("/nonexistent/crescent-binary"));
  EXPECT_FALSE(sup->Pid("ghost").has_value());
}

TEST(SupervisorTest, RejectsBadNamesAndStartAfterStop) {
  auto sup = Make();
  EXPECT_EQ(sup->Start(Sh("", "true")).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(sup->Start(Sh("one", "exec sleep 30")).ok());
  EXPECT_EQ(sup->Start(Sh("one", "true")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sup->WaitForLine("nobody", "x", absl::Seconds(1)).status().code(),
            absl::StatusCode::kNotFound);
  sup->Stop();
  EXPECT_EQ(sup->Start(Sh("two", "true")).status().code(), absl::StatusCode::kFailedPrecondition);
  sup->Stop();  // Idempotent.
}

TEST(SupervisorTest, WaitForLineTimesOut) {
  auto sup = Make();
  ASSERT_TRUE(sup->Start(Sh("quiet", "exec sleep 30")).ok());
  auto line = sup->WaitForLine("quiet", "x", absl::Milliseconds(200));
  EXPECT_EQ(line.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(SupervisorTest, PassesEnvironmentAndArguments) {
  auto sup = Make();
  ChildSpec spec = Sh("env", "echo \"v=$CRESCENT_SUP_TEST_VAR $0\"; exec sleep 30");
  spec.args.push_back("arg0");
  spec.env.push_back({"CRESCENT_SUP_TEST_VAR", "bar"});
  ASSERT_TRUE(sup->Start(spec).ok());
  auto line = sup->WaitForLine("env", "v=", absl::Seconds(10));
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(*line, "v=bar arg0");
}

TEST(SupervisorTest, ChildrenDoNotInheritBlockedSignals) {
  // `crescent up` blocks SIGINT/SIGTERM in all its threads; a child must still die on SIGTERM.
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  auto sup = Make();
  ASSERT_TRUE(sup->Start(Sh("t", "echo started; exec sleep 30")).ok());
  ASSERT_TRUE(sup->WaitForLine("t", "started", absl::Seconds(10)).ok());
  auto exit = sup->StopChild("t");
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->term_signal, SIGTERM);
  EXPECT_TRUE(exit->expected);
}

TEST(SupervisorTest, EscalatesToSigkillAfterTheStopTimeout) {
  SupervisorOptions options;
  options.stop_timeout = absl::Milliseconds(300);
  auto sup = Make(options);
  ASSERT_TRUE(
      sup->Start(Sh("stubborn", "trap '' TERM; echo armed; while :; do sleep 0.05; done")).ok());
  ASSERT_TRUE(sup->WaitForLine("stubborn", "armed", absl::Seconds(10)).ok());
  sup->Stop();
  auto exit = sup->Exit("stubborn");
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->term_signal, SIGKILL);
  EXPECT_TRUE(exit->expected);
}

TEST(SupervisorTest, StopsInReverseStartOrder) {
  const std::string path = TempPath("sup-order");
  std::remove(path.c_str());
  auto sup = Make();
  for (const char* name : {"first", "second", "third"}) {
    const std::string script = std::string("trap 'echo ") + name + " >> " + path +
                               "; exit 0' TERM; echo up; while :; do sleep 0.02; done";
    ASSERT_TRUE(sup->Start(Sh(name, script)).ok());
    ASSERT_TRUE(sup->WaitForLine(name, "up", absl::Seconds(10)).ok());
  }
  EXPECT_EQ(sup->Names(), (std::vector<std::string>{"first", "second", "third"}));
  sup->Stop();
  EXPECT_EQ(ReadFile(path), "third\nsecond\nfirst\n");
  for (const auto& e : sup->Exits()) {
    EXPECT_EQ(e.exit_code, 0) << e.name;
    EXPECT_TRUE(e.expected) << e.name;
  }
  std::remove(path.c_str());
}

TEST(SupervisorTest, DestructorStopsChildren) {
  pid_t pid = 0;
  {
    auto sup = Make();
    auto started = sup->Start(Sh("child", "exec sleep 30"));
    ASSERT_TRUE(started.ok());
    pid = *started;
    EXPECT_EQ(kill(pid, 0), 0);
  }
  // Reaped by the supervisor: the pid is gone.
  EXPECT_EQ(kill(pid, 0), -1);
}

}  // namespace
}  // namespace crescent::cluster
