// A temporary directory under $TMPDIR (or /tmp), removed with its contents at scope exit.
#ifndef CRESCENT_TESTS_KVSTORE_TIER_TEMP_DIR_H_
#define CRESCENT_TESTS_KVSTORE_TIER_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace crescent::kvstore {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                          "/crescent_tier_test_XXXXXX";
    char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << "mkdtemp " << pattern;
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace crescent::kvstore

#endif  // CRESCENT_TESTS_KVSTORE_TIER_TEMP_DIR_H_
