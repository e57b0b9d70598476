// tier_bench: SSD tier throughput next to a dd-like baseline on the same file system.
//
//   seqwrite  the tier writes the file front to back in `block`-sized requests, batches that keep
//             up to `qd` in flight (the tier opened with queue_depth = qd), fdatasync included;
//   randread  the tier reads `block`-sized requests at random aligned offsets of the file;
//   baseline  one thread, one request at a time, plain pwrite/pread on an fd opened the same way
//             as the tier's (O_DIRECT when the tier uses it) -- what `dd bs=block oflag=direct`
//             or `iflag=direct` measures.
// Prints MB/s (10^6 bytes/s) per block size and queue depth and the ratio tier / baseline. Each
// figure is the median of --repeat runs of about --seconds each. Figures, not assertions. The
// file is removed at exit.
//
//   tier_bench [--dir=DIR] [--file-mb=N] [--seconds=S] [--repeat=N] [--engine=auto|pread]
//              [--buffered]
#include <fcntl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "kvstore/tier/ssd_tier.h"

namespace crescent::kvstore {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string dir;
  uint64_t file_mb = 1024;
  double seconds = 1.0;
  std::string engine = "auto";
  bool buffered = false;
  int repeat = 3;
};

const std::vector<uint64_t> kBlocks = {64ull << 10, 256ull << 10, 1ull << 20, 4ull << 20};
const std::vector<int> kDepths = {1, 8, 32};

std::string SizeName(uint64_t size) {
  return size >= (1 << 20) ? std::to_string(size >> 20) + "MiB"
                           : std::to_string(size >> 10) + "KiB";
}

std::string FsName(const std::string& dir) {
  struct statfs st {};
  if (statfs(dir.c_str(), &st) != 0) return "unknown";
  switch (static_cast<uint64_t>(st.f_type)) {
    case 0xEF53:
      return "ext2/3/4";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x01021994:
      return "tmpfs";
    case 0x794c7630:
      return "overlayfs";
    case 0x6969:
      return "nfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "magic 0x%lx", static_cast<unsigned long>(st.f_type));
      return buf;
    }
  }
}

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};

std::unique_ptr<uint8_t, AlignedFree> Buffer(uint64_t size) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, size) != 0) std::abort();
  std::memset(p, 0x5c, size);
  return std::unique_ptr<uint8_t, AlignedFree>(static_cast<uint8_t*>(p));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Requests per batch: enough to keep `qd` busy for a while, at most ~64 MiB of buffers.
size_t BatchLen(uint64_t block, int qd) {
  return std::max<size_t>(static_cast<size_t>(qd) * 2, (32ull << 20) / block);
}

struct Runner {
  Flags flags;
  std::string path;
  uint64_t file_bytes;

  std::unique_ptr<SsdTier> OpenTier(int qd) {
    SsdTierOptions o;
    o.path = path;
    o.capacity = file_bytes;
    o.truncate = false;
    o.queue_depth = qd;
    o.rings = 1;
    o.max_io_bytes = 4ull << 20;  // One request = one I/O, so qd is the device queue depth.
    o.engine = flags.engine == "pread" ? SsdTierOptions::IoEngine::kPread
                                       : SsdTierOptions::IoEngine::kAuto;
    o.direct_io = flags.buffered ? SsdTierOptions::DirectIo::kOff : SsdTierOptions::DirectIo::kAuto;
    auto tier = OpenSsdTier(o);
    if (!tier.ok()) {
      std::fprintf(stderr, "open: %s\n", tier.status().ToString().c_str());
      std::exit(1);
    }
    return std::move(*tier);
  }

  double TierSeqWrite(SsdTier& tier, uint64_t block, int qd) {
    const size_t batch_len = BatchLen(block, qd);
    auto buffer = Buffer(block * batch_len);
    const uint64_t blocks_in_file = file_bytes / block;
    uint64_t next = 0, bytes = 0;
    const auto start = Clock::now();
    do {
      std::vector<WriteRequest> batch;
      for (size_t i = 0; i < batch_len; ++i, ++next) {
        batch.push_back({(next % blocks_in_file) * block, {buffer.get() + i * block, block}});
      }
      if (!tier.WriteBatch(batch).ok()) std::abort();
      bytes += batch_len * block;
    } while (Seconds(start) < flags.seconds);
    if (!tier.Sync().ok()) std::abort();
    return bytes / Seconds(start) / 1e6;
  }

  double TierRandRead(SsdTier& tier, uint64_t block, int qd) {
    const size_t batch_len = BatchLen(block, qd);
    auto buffer = Buffer(block * batch_len);
    std::mt19937_64 rng(block + qd);
    const uint64_t blocks_in_file = file_bytes / block;
    uint64_t bytes = 0;
    const auto start = Clock::now();
    do {
      std::vector<ReadRequest> batch;
      for (size_t i = 0; i < batch_len; ++i) {
        batch.push_back({(rng() % blocks_in_file) * block, {buffer.get() + i * block, block}});
      }
      if (!tier.ReadBatch(batch).ok()) std::abort();
      bytes += batch_len * block;
    } while (Seconds(start) < flags.seconds);
    return bytes / Seconds(start) / 1e6;
  }

  double BaselineSeqWrite(bool direct, uint64_t block) {
    const int fd = open(path.c_str(), O_RDWR | (direct ? O_DIRECT : 0));
    if (fd < 0) std::abort();
    auto buffer = Buffer(block);
    const uint64_t blocks_in_file = file_bytes / block;
    uint64_t next = 0, bytes = 0;
    const auto start = Clock::now();
    do {
      for (int i = 0; i < 16; ++i, ++next) {
        if (pwrite(fd, buffer.get(), block, (next % blocks_in_file) * block) !=
            static_cast<ssize_t>(block)) {
          std::abort();
        }
        bytes += block;
      }
    } while (Seconds(start) < flags.seconds);
    fdatasync(fd);
    const double mbps = bytes / Seconds(start) / 1e6;
    close(fd);
    return mbps;
  }

  double BaselineRandRead(bool direct, uint64_t block) {
    const int fd = open(path.c_str(), O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0) std::abort();
    auto buffer = Buffer(block);
    std::mt19937_64 rng(block);
    const uint64_t blocks_in_file = file_bytes / block;
    uint64_t bytes = 0;
    const auto start = Clock::now();
    do {
      for (int i = 0; i < 16; ++i) {
        if (pread(fd, buffer.get(), block, (rng() % blocks_in_file) * block) !=
            static_cast<ssize_t>(block)) {
          std::abort();
        }
        bytes += block;
      }
    } while (Seconds(start) < flags.seconds);
    const double mbps = bytes / Seconds(start) / 1e6;
    close(fd);
    return mbps;
  }
};

int Main(int argc, char** argv) {
  Flags flags;
  const char* tmp = std::getenv("TMPDIR");
  flags.dir = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  CLI::App app{"SSD tier throughput next to a dd-like pwrite/pread baseline"};
  app.add_option("--dir", flags.dir, "directory for the test file");
  app.add_option("--file-mb", flags.file_mb, "test file size in MiB");
  app.add_option("--seconds", flags.seconds, "duration of each measurement");
  app.add_option("--engine", flags.engine, "auto (io_uring if possible) or pread")
      ->check(CLI::IsMember({"auto", "pread"}));
  app.add_flag("--buffered", flags.buffered, "do not use O_DIRECT");
  app.add_option("--repeat", flags.repeat, "runs per figure; the median is printed")
      ->check(CLI::Range(1, 99));
  CLI11_PARSE(app, argc, argv);

  Runner r{flags, flags.dir + "/tier_bench_" + std::to_string(getpid()) + ".dat",
           flags.file_mb << 20};
  // Create and fill the file once so that reads hit allocated, written blocks.
  {
    SsdTierOptions o;
    o.path = r.path;
    o.capacity = r.file_bytes;
    o.direct_io = flags.buffered ? SsdTierOptions::DirectIo::kOff : SsdTierOptions::DirectIo::kAuto;
    auto tier = OpenSsdTier(o);
    if (!tier.ok()) {
      std::fprintf(stderr, "open %s: %s\n", r.path.c_str(), tier.status().ToString().c_str());
      return 1;
    }
    auto buffer = Buffer(4 << 20);
    std::vector<WriteRequest> batch;
    for (uint64_t at = 0; at < r.file_bytes; at += 4 << 20) {
      batch.push_back({at, {buffer.get(), std::min<uint64_t>(4 << 20, r.file_bytes - at)}});
    }
    if (!(*tier)->WriteBatch(batch).ok() || !(*tier)->Sync().ok()) return 1;
  }
  auto probe = r.OpenTier(1);
  const bool direct = probe->direct_io();
  std::printf(
      "tier_bench: file %s (%llu MiB) on %s; O_DIRECT %s; engine %s; median of %d x %.1f s\n",
      r.path.c_str(), static_cast<unsigned long long>(flags.file_mb), FsName(flags.dir).c_str(),
      direct ? "yes" : "no (buffered; reads may hit page cache)",
      std::string(probe->engine_name()).c_str(), flags.repeat, flags.seconds);
  probe.reset();
  std::printf("baseline: one thread, pwrite/pread one block at a time, %s\n\n",
              direct ? "O_DIRECT (dd oflag=direct / iflag=direct)" : "buffered");
  std::printf("%-9s %7s  %9s  %7s %7s %7s  %6s %6s %6s\n", "op", "block", "baseline", "qd1", "qd8",
              "qd32", "r1", "r8", "r32");
  std::printf("%-9s %7s  %9s  %23s  %20s\n", "", "", "MB/s", "tier MB/s", "tier / baseline");
  for (int op = 0; op < 2; ++op) {
    for (uint64_t block : kBlocks) {
      // Runs alternate between baseline and tier so that a burst of load on the machine hits
      // both alike; each figure is the median of its runs.
      std::vector<std::vector<double>> runs(1 + kDepths.size());
      for (int rep = 0; rep < flags.repeat; ++rep) {
        runs[0].push_back(op == 0 ? r.BaselineSeqWrite(direct, block)
                                  : r.BaselineRandRead(direct, block));
        for (size_t d = 0; d < kDepths.size(); ++d) {
          auto tier = r.OpenTier(kDepths[d]);
          runs[d + 1].push_back(op == 0 ? r.TierSeqWrite(*tier, block, kDepths[d])
                                        : r.TierRandRead(*tier, block, kDepths[d]));
        }
      }
      const double base = Median(runs[0]);
      std::vector<double> tier_mbps;
      for (size_t d = 0; d < kDepths.size(); ++d) tier_mbps.push_back(Median(runs[d + 1]));
      std::printf("%-9s %7s  %9.0f  %7.0f %7.0f %7.0f  %6.2f %6.2f %6.2f\n",
                  op == 0 ? "seqwrite" : "randread", SizeName(block).c_str(), base, tier_mbps[0],
                  tier_mbps[1], tier_mbps[2], tier_mbps[0] / base, tier_mbps[1] / base,
                  tier_mbps[2] / base);
      std::fflush(stdout);
    }
  }
  unlink(r.path.c_str());
  return 0;
}

}  // namespace
}  // namespace crescent::kvstore

int main(int argc, char** argv) { return crescent::kvstore::Main(argc, argv); }
