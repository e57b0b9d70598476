#include "bench/sim/profile.h"

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "src/common/status.h"

namespace crescent::bench::sim {

std::string_view DefaultCostProfileDescription() {
  return "built-in illustrative profile (not measured): GPU-class node, 8B GQA model, "
         "128 KiB KV per token, 50 GB/s transfers";
}

policy::CostProfile DefaultCostProfile() {
  policy::CostProfile p;
  p.block_tokens = 512;
  p.kv_bytes_per_token = 32 * 8 * 128 * 2 * 2;  // layers x kv heads x head dim x (K,V) x f16
  p.transfer_bandwidth_bytes_per_s = 50e9;
  p.transfer_latency_s = 1e-4;
  for (int64_t n : {512, 2048, 8192, 32768}) {
    for (int64_t c : {0, 8192, 65536}) {
      const double nn = static_cast<double>(n);
      const double cc = static_cast<double>(c);
      p.prefill.push_back({n, c, 0.005 + 125e-6 * nn + 4e-9 * nn * (cc + nn / 2)});
    }
  }
  for (int b : {1, 8, 32, 64}) {
    for (int64_t k : {4096, 65536, 262144}) {
      p.decode.push_back({b, k, 0.012 + 2e-4 * b + 3e-8 * static_cast<double>(k)});
    }
  }
  return p;
}

absl::StatusOr<policy::CostProfile> ParseCostProfileJson(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cost profile is not JSON: ", e.what()));
  }
  policy::CostProfile p;
  try {
    p.block_tokens = j.at("block_tokens").get<int>();
    p.kv_bytes_per_token = j.at("kv_bytes_per_token").get<int64_t>();
    p.transfer_bandwidth_bytes_per_s = j.at("transfer_bandwidth_bytes_per_s").get<double>();
    p.transfer_latency_s = j.value("transfer_latency_s", 0.0);
    for (const auto& s : j.at("prefill")) {
      p.prefill.push_back({s.at("new_tokens").get<int64_t>(), s.at("cached_tokens").get<int64_t>(),
                           s.at("seconds").get<double>()});
    }
    for (const auto& s : j.at("decode")) {
      p.decode.push_back({s.at("batch").get<int>(), s.at("context_tokens").get<int64_t>(),
                          s.at("seconds").get<double>()});
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cost profile: ", e.what()));
  }
  return p;
}

absl::StatusOr<policy::CostProfile> LoadCostProfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return ErrnoToStatus(errno, absl::StrCat("opening cost profile ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto p = ParseCostProfileJson(ss.str());
  if (!p.ok()) return Annotate(p.status(), path);
  return p;
}

std::string CostProfileToJson(const policy::CostProfile& p, std::string_view description) {
  nlohmann::json j;
  j["description"] = std::string(description);
  j["block_tokens"] = p.block_tokens;
  j["kv_bytes_per_token"] = p.kv_bytes_per_token;
  j["transfer_bandwidth_bytes_per_s"] = p.transfer_bandwidth_bytes_per_s;
  j["transfer_latency_s"] = p.transfer_latency_s;
  j["prefill"] = nlohmann::json::array();
  for (const auto& s : p.prefill) {
    j["prefill"].push_back(
        {{"new_tokens", s.new_tokens}, {"cached_tokens", s.cached_tokens}, {"seconds", s.seconds}});
  }
  j["decode"] = nlohmann::json::array();
  for (const auto& s : p.decode) {
    j["decode"].push_back(
        {{"batch", s.batch}, {"context_tokens", s.context_tokens}, {"seconds", s.seconds}});
  }
  return j.dump(2);
}

}  // namespace crescent::bench::sim
