// Helpers shared by the transfer tests: deterministic byte patterns, and a peer process running
// tests/kvstore/transfer/transfer_test_peer.cc that owns a segment.
#ifndef CRESCENT_TESTS_KVSTORE_TRANSFER_TEST_UTIL_H_
#define CRESCENT_TESTS_KVSTORE_TRANSFER_TEST_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kvstore/transfer/segment.h"

namespace crescent::kvstore::testing {

// Fills buf[0, n) with a pattern determined by `seed` and the absolute position `origin + i`, so
// that any sub-range can be checked on its own.
void FillPattern(void* buf, size_t n, uint64_t seed, uint64_t origin = 0);
// The pattern byte at absolute position `pos`.
uint8_t PatternByte(uint64_t seed, uint64_t pos);
// Index of the first byte of buf[0, n) that differs from the pattern, or -1.
int64_t FindPatternMismatch(const void* buf, size_t n, uint64_t seed, uint64_t origin = 0);

// A child process (transfer_test_peer) owning one segment. The child prints its descriptor; the
// parent publishes it in its own directory.
class PeerProcess {
 public:
  struct Options {
    std::string segment = "peer/seg";
    uint64_t size = 1 << 20;
    std::string transports = "shm,tcp";
    uint64_t pattern_seed = 0;  // the segment starts filled with this pattern
  };

  // Spawns the child and waits for its descriptor.
  static absl::StatusOr<std::unique_ptr<PeerProcess>> Start(const Options& options);
  ~PeerProcess();  // kills the child if it is still running

  const SegmentDescriptor& descriptor() const { return descriptor_; }
  int pid() const { return pid_; }

  // Sends one command line and returns the child's one-line answer.
  absl::StatusOr<std::string> Command(const std::string& line);
  // XXH3 of segment[offset, offset + length) in the child.
  absl::StatusOr<uint64_t> HashRange(uint64_t offset, uint64_t length);
  // Notifications the child received so far ("segment payload" per line).
  absl::StatusOr<std::vector<std::string>> Notifications();

  void Kill(int signal);
  // Waits for the child to exit (after Kill(SIGKILL)).
  void Reap();

 private:
  PeerProcess() = default;
  absl::StatusOr<std::string> ReadLine();

  int pid_ = -1;
  int to_child_ = -1;
  int from_child_ = -1;
  std::string buffered_;
  SegmentDescriptor descriptor_;
};

}  // namespace crescent::kvstore::testing

#endif  // CRESCENT_TESTS_KVSTORE_TRANSFER_TEST_UTIL_H_
