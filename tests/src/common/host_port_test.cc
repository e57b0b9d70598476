#include "src/common/host_port.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace crescent {
namespace {

TEST(HostPortTest, ParsesNamesAddressesAndBracketedIpv6) {
  auto a = ParseHostPort("127.0.0.1:50", "x");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 50);
  auto b = ParseHostPort("[::1]:7", "x");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 7);
  auto c = ParseHostPort("kv-master.crescent.svc:65535", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->host, "kv-master.crescent.svc");
  EXPECT_EQ(c->port, 65535);
  auto any = ParseHostPort("0.0.0.0:0", "x");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->port, 0);
}

TEST(HostPortTest, RejectsMalformedAddressesNamingTheFlag) {
  for (const char* bad : {"", "nohost", ":80", "[]:80", "h:", "h:99999", "h:8a", "h:-1", "h: 80"}) {
    auto r = ParseHostPort(bad, "--grpc-listen");
    ASSERT_FALSE(r.ok()) << "'" << bad << "' parsed";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(),
              std::string("--grpc-listen must be host:port, got '") + bad + "'");
  }
}

TEST(HostPortTest, JoinIsReadBackByParse) {
  EXPECT_EQ(JoinHostPort("127.0.0.1", 0), "127.0.0.1:0");
  EXPECT_EQ(JoinHostPort("::1", 9000), "[::1]:9000");
  for (const char* address : {"10.0.0.2:80", "[fe80::1]:443", "node-3:1"}) {
    auto parsed = ParseHostPort(address, "x");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(JoinHostPort(parsed->host, parsed->port), address);
  }
}

TEST(HostPortTest, AdvertisedHostPrefersTheGivenOneThenABoundInterface) {
  EXPECT_EQ(AdvertisedHost("0.0.0.0", "10.1.2.3"), "10.1.2.3");
  EXPECT_EQ(AdvertisedHost("127.0.0.1", ""), "127.0.0.1");
  EXPECT_EQ(AdvertisedHost("::1", ""), "::1");
  char name[256] = {};
  ASSERT_EQ(::gethostname(name, sizeof(name) - 1), 0);
  EXPECT_EQ(AdvertisedHost("0.0.0.0", ""), name);
  EXPECT_EQ(AdvertisedHost("::", ""), name);
  EXPECT_TRUE(IsWildcardHost(""));
  EXPECT_FALSE(IsWildcardHost("127.0.0.1"));
}

}  // namespace
}  // namespace crescent
