// A peer node for the multi-process transfer tests: owns one shared segment, serves it over the
// transports given, and answers line commands on stdin:
//   hash OFFSET LENGTH   -> XXH3 of segment[OFFSET, OFFSET + LENGTH)
//   notifications        -> the notifications received so far, "segment payload" joined by '|'
//   quit                 -> exits (so does EOF)
// On start it prints the segment's descriptor (one JSON line). Flags: --segment=NAME --size=N
// --transports=shm,tcp --seed=S (fill the segment with the test pattern of seed S; 0: zeros).
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kvstore/transfer/segment_directory.h"
#include "kvstore/transfer/shm_transport.h"
#include "kvstore/transfer/transfer_engine.h"
#include "src/common/hash.h"
#include "tests/kvstore/transfer/test_util.h"

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "transfer_test_peer: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace crescent::kvstore;
  std::string segment = "peer/seg", transports = "shm,tcp";
  uint64_t size = 1 << 20, seed = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      return arg.substr(std::string(flag).size());
    };
    if (arg.rfind("--segment=", 0) == 0) {
      segment = value("--segment=");
    } else if (arg.rfind("--size=", 0) == 0) {
      if (!absl::SimpleAtoi(value("--size="), &size)) return Fail("bad --size");
    } else if (arg.rfind("--transports=", 0) == 0) {
      transports = value("--transports=");
    } else if (arg.rfind("--seed=", 0) == 0) {
      if (!absl::SimpleAtoi(value("--seed="), &seed)) return Fail("bad --seed");
    } else {
      return Fail("unknown flag " + arg);
    }
  }

  InMemorySegmentDirectory directory;
  TransferEngineOptions options;
  options.transports = absl::StrSplit(transports, ',');
  auto engine = TransferEngine::Create(options, &directory);
  if (!engine.ok()) return Fail(std::string(engine.status().message()));

  std::mutex mu;
  std::vector<std::string> notifications;
  (*engine)->SetNotificationCallback([&](const Notification& n) {
    std::lock_guard<std::mutex> lock(mu);
    notifications.push_back(n.segment + " " + n.payload);
  });

  // Filled before registration, so that the server threads see the pattern (mutex order).
  auto memory = SharedMemory::Create(segment, size);
  if (!memory.ok()) return Fail(std::string(memory.status().message()));
  if (seed != 0) testing::FillPattern(memory->data(), size, seed);
  auto base = (*engine)->RegisterSharedSegment(segment, *std::move(memory));
  if (!base.ok()) return Fail(std::string(base.status().message()));
  auto descriptor = (*engine)->LocalSegmentDescriptor(segment);
  if (!descriptor.ok()) return Fail(std::string(descriptor.status().message()));
  std::cout << SerializeSegmentDescriptor(*descriptor) << std::endl;

  auto* bytes = static_cast<const uint8_t*>(*base);
  std::string line;
  while (std::getline(std::cin, line)) {
    // Every answer is given under `mu`: a notification's callback happened after the writes it
    // covers, and taking the same mutex orders this thread after it.
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.empty()) continue;
    if (words[0] == "quit") break;
    if (words[0] == "hash" && words.size() == 3) {
      uint64_t offset = 0, length = 0;
      if (!absl::SimpleAtoi(words[1], &offset) || !absl::SimpleAtoi(words[2], &length) ||
          offset > size || length > size - offset) {
        std::cout << "error: bad range" << std::endl;
        continue;
      }
      std::cout << crescent::Hash64(bytes + offset, length) << std::endl;
    } else if (words[0] == "notifications") {
      std::cout << absl::StrJoin(notifications, "|") << std::endl;
    } else {
      std::cout << "error: unknown command" << std::endl;
    }
  }
  return 0;
}
