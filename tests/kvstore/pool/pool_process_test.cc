// The KV pool as separate processes on loopback: the real `crescent kvstore master` and three
// `crescent kvstore server` processes, driven by a PoolClient in this process.
//   - thousands of blocks put and read back over tcp and over shm;
//   - a storage node killed with SIGKILL while readers run: no reader ever gets wrong bytes, its
//     blocks become misses once the master declares it dead, the others keep working;
//   - DRAM pressure spills blocks to SSD and they come back from SSD with the right bytes;
//   - bytes flipped in an SSD file are detected: those blocks are misses (DataLoss).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/client/pool_client.h"

namespace crescent::kvstore::client {
namespace {

std::string CrescentBinary() {
  const char* dir = std::getenv("CRESCENT_BINARY_DIR");
  return std::string(dir != nullptr ? dir : ".") + "/bin/crescent";
}

// A child process whose stdout's first line is read back (the address it listens on).
class Process {
 public:
  explicit Process(const std::vector<std::string>& args) {
    int out[2];
    if (::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::_Exit(127);
    }
    ::close(out[1]);
    // First line, e.g. "listening on 127.0.0.1:4242".
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n') first_line_ += c;
    ::close(out[0]);
  }
  ~Process() { Stop(SIGTERM); }

  void Stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    if (sig == SIGTERM) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "process did not exit cleanly on SIGTERM: " << status;
    }
    pid_ = -1;
  }

  const std::string& first_line() const { return first_line_; }
  std::string LastWord() const { return first_line_.substr(first_line_.rfind(' ') + 1); }

 private:
  pid_t pid_ = -1;
  std::string first_line_;
};

std::vector<std::byte> Block(uint64_t key, size_t size) {
  std::vector<std::byte> out(size);
  std::mt19937_64 rng(key * 0x9e3779b97f4a7c15ull);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, size - i));
  }
  return out;
}

constexpr size_t kBlock = 8 << 10;

struct GetTally {
  size_t hits = 0;
  size_t wrong = 0;
  std::vector<uint64_t> missed;
  std::vector<absl::StatusCode> miss_codes;
};

// Puts keys [first, first + n) in batches of 64; every key must be stored.
void PutAll(PoolClient& client, uint64_t first, size_t n, size_t size) {
  for (size_t start = 0; start < n; start += 64) {
    const size_t count = std::min<size_t>(64, n - start);
    std::vector<uint64_t> keys;
    std::vector<std::vector<std::byte>> data;
    std::vector<std::span<const std::byte>> spans;
    for (size_t i = 0; i < count; ++i) {
      keys.push_back(first + start + i);
      data.push_back(Block(keys.back(), size));
    }
    for (auto& d : data) spans.emplace_back(d);
    auto put = client.BatchPut(keys, spans);
    ASSERT_TRUE(put.ok()) << put.status();
    for (size_t i = 0; i < count; ++i) {
      ASSERT_TRUE((*put)[i].ok()) << "key " << keys[i] << ": " << (*put)[i];
    }
  }
}

GetTally GetAll(PoolClient& client, uint64_t first, size_t n, size_t size) {
  GetTally tally;
  for (size_t start = 0; start < n; start += 64) {
    const size_t count = std::min<size_t>(64, n - start);
    std::vector<uint64_t> keys;
    std::vector<std::vector<std::byte>> buffers(count, std::vector<std::byte>(size));
    std::vector<std::span<std::byte>> spans;
    for (size_t i = 0; i < count; ++i) keys.push_back(first + start + i);
    for (auto& b : buffers) spans.emplace_back(b);
    auto got = client.BatchGet(keys, spans);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) continue;
    for (size_t i = 0; i < count; ++i) {
      if (!(*got)[i].ok()) {
        tally.missed.push_back(keys[i]);
        tally.miss_codes.push_back((*got)[i].status().code());
        continue;
      }
      const std::vector<std::byte> want = Block(keys[i], size);
      if (*(*got)[i] != size || std::memcmp(buffers[i].data(), want.data(), size) != 0) {
        ++tally.wrong;
      } else {
        ++tally.hits;
      }
    }
  }
  return tally;
}

class PoolProcessTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (::access(CrescentBinary().c_str(), X_OK) != 0) {
      GTEST_SKIP() << "no crescent binary at " << CrescentBinary();
    }
    dir_ = ::testing::TempDir() + "/pool_process_test_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    nodes_.clear();
    master_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void StartMaster(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        CrescentBinary(), "--log-level", "warn", "kvstore",           "master", "--listen",
        "127.0.0.1:0",    "--tick-ms",   "50",   "--node-timeout-ms", "1500"};
    args.insert(args.end(), extra.begin(), extra.end());
    master_ = std::make_unique<Process>(args);
    ASSERT_EQ(master_->first_line().rfind("listening on ", 0), 0u) << master_->first_line();
    address_ = master_->LastWord();
  }

  void StartNode(const std::string& id, const std::string& dram_gb, bool ssd = false) {
    std::vector<std::string> args = {
        CrescentBinary(), "--log-level",    "warn", "kvstore",   "server", "--master",
        address_,         "--node-id",      id,     "--dram-gb", dram_gb,  "--transport",
        GetParam(),       "--heartbeat-ms", "200"};
    if (ssd) {
      args.insert(args.end(), {"--ssd-path", SsdPath(id), "--ssd-gb", "0.03"});
    }
    nodes_.push_back(std::make_unique<Process>(args));
    ASSERT_EQ(nodes_.back()->first_line().rfind("serving ", 0), 0u) << nodes_.back()->first_line();
  }

  std::string SsdPath(const std::string& id) const { return dir_ + "/" + id + ".ssd"; }

  std::unique_ptr<PoolClient> Client() {
    PoolClientOptions options;
    options.master_address = address_;
    options.transport = GetParam();
    auto client = PoolClient::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  std::string dir_;
  std::string address_;
  std::unique_ptr<Process> master_;
  std::vector<std::unique_ptr<Process>> nodes_;
};

TEST_P(PoolProcessTest, ThousandsOfBlocksAndANodeKilledMidRun) {
  StartMaster();
  for (const char* id : {"n0", "n1", "n2"}) StartNode(id, "0.02");
  auto client = Client();
  ASSERT_NE(client, nullptr);
  constexpr size_t kKeys = 3000;
  PutAll(*client, 1, kKeys, kBlock);
  {
    GetTally t = GetAll(*client, 1, kKeys, kBlock);
    EXPECT_EQ(t.hits, kKeys);
    EXPECT_EQ(t.wrong, 0u);
  }

  // Readers run while n1 dies.
  std::atomic<bool> stop{false};
  std::atomic<size_t> wrong{0}, reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      auto reader = Client();
      if (reader == nullptr) return;
      while (!stop) {
        GetTally t = GetAll(*reader, 1, kKeys, kBlock);
        wrong += t.wrong;
        reads += t.hits + t.missed.size();
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  nodes_[1]->Stop(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // > node timeout.
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(wrong, 0u);
  EXPECT_GT(reads, kKeys);
  std::printf("readers: %zu key reads, %zu wrong, while n1 was killed\n", reads.load(),
              wrong.load());

  // Its blocks are now misses (the master no longer names its replicas); the rest are intact.
  GetTally t = GetAll(*client, 1, kKeys, kBlock);
  EXPECT_EQ(t.wrong, 0u);
  EXPECT_GT(t.hits, kKeys / 3);
  EXPECT_GT(t.missed.size(), kKeys / 10);
  EXPECT_EQ(t.hits + t.missed.size(), kKeys);
  for (absl::StatusCode code : t.miss_codes) EXPECT_EQ(code, absl::StatusCode::kNotFound);
  std::printf("after the node timeout: %zu hits, %zu misses (the killed node's blocks)\n", t.hits,
              t.missed.size());
  auto exists = client->BatchExists(t.missed);
  ASSERT_TRUE(exists.ok());
  for (bool e : *exists) EXPECT_FALSE(e);

  // The surviving nodes keep taking puts and serving them.
  PutAll(*client, 100000, 500, kBlock);
  GetTally after = GetAll(*client, 100000, 500, kBlock);
  EXPECT_EQ(after.hits, 500u);
  EXPECT_EQ(after.wrong, 0u);
}

TEST_P(PoolProcessTest, DramPressureSpillsToSsdAndCorruptedSsdBlocksAreMisses) {
  StartMaster({"--high-watermark", "0.5", "--low-watermark", "0.3", "--no-promote"});
  for (const char* id : {"n0", "n1", "n2"}) StartNode(id, "0.002", /*ssd=*/true);
  auto client = Client();
  ASSERT_NE(client, nullptr);
  constexpr size_t kKeys = 600;
  constexpr size_t kSize = 16 << 10;  // 9.4 MiB through 6 MiB of DRAM.
  for (size_t start = 0; start < kKeys; start += 60) {
    PutAll(*client, 1 + start, 60, kSize);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // Ticks demote.
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  GetTally t = GetAll(*client, 1, kKeys, kSize);
  EXPECT_EQ(t.hits, kKeys);
  EXPECT_EQ(t.wrong, 0u);
  const uint64_t ssd_reads = client->stats().ssd_reads;
  EXPECT_GT(ssd_reads, 0u);
  EXPECT_EQ(client->stats().checksum_mismatches, 0u);

  // Flip a byte in every 4 KiB of every SSD file, behind the servers' backs.
  for (const char* id : {"n0", "n1", "n2"}) {
    int fd = ::open(SsdPath(id).c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    struct stat st;
    ASSERT_EQ(::fstat(fd, &st), 0);
    for (off_t off = 100; off < st.st_size; off += 4096) {
      unsigned char b;
      ASSERT_EQ(::pread(fd, &b, 1, off), 1);
      b ^= 0xff;
      ASSERT_EQ(::pwrite(fd, &b, 1, off), 1);
    }
    ::close(fd);
  }
  GetTally c = GetAll(*client, 1, kKeys, kSize);
  EXPECT_EQ(c.wrong, 0u);
  // The SSD-only blocks (at least those read from SSD before) are misses; DRAM ones are hits.
  EXPECT_GE(c.missed.size(), ssd_reads);
  for (absl::StatusCode code : c.miss_codes) EXPECT_EQ(code, absl::StatusCode::kDataLoss);
  EXPECT_EQ(c.hits + c.missed.size(), kKeys);
  EXPECT_GT(client->stats().checksum_mismatches, 0u);
  std::printf(
      "%zu blocks: %llu read from SSD before corruption; after it %zu hits, %zu "
      "DataLoss misses\n",
      kKeys, static_cast<unsigned long long>(ssd_reads), c.hits, c.missed.size());
}

INSTANTIATE_TEST_SUITE_P(Transports, PoolProcessTest, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crescent::kvstore::client
