#include "gtest/gtest.h"
#include "medgrid/app/app.h"

namespace medgrid::app {
namespace {

TEST(Flags, ParsesAndValidates) {
  auto c = ParseFlags({"--http-port=0", "--pg-admin-dsn=host=127.0.0.1 port=5", "--fhir-package-dir=/p",
                       "--pg-shards=a,b,c", "--max-body-bytes=2048", "--log-level=warn",
                       "--public-base-url=https://x.org/", "--auth=off"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->http.port, 0);
  EXPECT_EQ(c->store.admin_dsn, "host=127.0.0.1 port=5");
  EXPECT_EQ(c->store.bootstrap_shards, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(c->http.body_limit, 2048u);
  EXPECT_EQ(c->log_level, core::LogLevel::kWarn);
  EXPECT_EQ(c->gateway.public_base_url, "https://x.org");
  EXPECT_FALSE(c->store.pgbouncer);
}

TEST(Flags, PgBouncerMode) {
  auto on = ParseFlags({"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off", "--db-pgbouncer=on"});
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->store.pgbouncer);
  auto off = ParseFlags({"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off", "--db-pgbouncer=off"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->store.pgbouncer);
  EXPECT_NE(FlagsHelp().find("--db-pgbouncer"), std::string::npos);
}

TEST(Flags, RejectsUnknownAndBadValues) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off"};
  for (const std::string bad : {"--nope=1", "--http-port=70000", "--http-port=abc", "--log-level=loud", "positional",
                                "--http-port", "--pg-shards=a,,b", "--worker-threads=-1", "--auth=maybe",
                                "--consent-deadline-ms=0", "--btg-webhook=ftp://x", "--btg-duration-s=5",
                                "--redis-key-prefix=a:b", "--rate-limit-tenant-rps=-1",
                                "--db-pgbouncer=yes"}) {
    auto args = base;
    args.push_back(bad);
    auto c = ParseFlags(args);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseFlags({"--pg-admin-dsn=x"}).ok());          // no package dir
  EXPECT_FALSE(ParseFlags({"--fhir-package-dir=/p"}).ok());     // no database
}

// Auth is on unless turned off, and then needs its JWKS, issuer and audience.
TEST(Flags, AuthIsOnByDefaultAndNeedsItsSettings) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p"};
  auto missing = ParseFlags(base);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("--jwks"), std::string::npos);
  auto args = base;
  args.insert(args.end(), {"--jwks=/k.json", "--auth-issuer=https://idp", "--auth-audience=medgrid",
                           "--redis=127.0.0.1:6379", "--btg-webhook=https://sec.example/btg", "--consent-deadline-ms=100",
                           "--auth-clock-skew-s=30", "--rate-limit-tenant-rps=50"});
  auto c = ParseFlags(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->security.enabled);
  EXPECT_EQ(c->security.auth.jwks, "/k.json");
  EXPECT_EQ(c->security.auth.clock_skew, std::chrono::seconds(30));
  EXPECT_EQ(c->security.consent_deadline, std::chrono::milliseconds(100));
  EXPECT_EQ(c->security.break_glass.webhook_url, "https://sec.example/btg");
  EXPECT_EQ(c->redis, "127.0.0.1:6379");
  EXPECT_EQ(c->tenant_rate_limit, 50);
  args.pop_back();
  args.erase(args.begin() + 3);  // no issuer
  EXPECT_FALSE(ParseFlags(args).ok());
}

}  // namespace
}  // namespace medgrid::app
