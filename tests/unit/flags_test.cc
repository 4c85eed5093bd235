#include "gtest/gtest.h"
#include "medgrid/app/app.h"

namespace medgrid::app {
namespace {

TEST(Flags, ParsesAndValidates) {
  auto c = ParseFlags({"--http-port=0", "--pg-admin-dsn=host=127.0.0.1 port=5", "--fhir-package-dir=/p",
                       "--pg-shards=a,b,c", "--max-body-bytes=2048", "--log-level=warn",
                       "--public-base-url=https://x.org/"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->http.port, 0);
  EXPECT_EQ(c->store.admin_dsn, "host=127.0.0.1 port=5");
  EXPECT_EQ(c->store.bootstrap_shards, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(c->http.body_limit, 2048u);
  EXPECT_EQ(c->log_level, core::LogLevel::kWarn);
  EXPECT_EQ(c->gateway.public_base_url, "https://x.org");
}

TEST(Flags, RejectsUnknownAndBadValues) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p"};
  for (const std::string bad : {"--nope=1", "--http-port=70000", "--http-port=abc", "--log-level=loud", "positional",
                                "--http-port", "--pg-shards=a,,b", "--worker-threads=-1"}) {
    auto args = base;
    args.push_back(bad);
    auto c = ParseFlags(args);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseFlags({"--pg-admin-dsn=x"}).ok());          // no package dir
  EXPECT_FALSE(ParseFlags({"--fhir-package-dir=/p"}).ok());     // no database
}

}  // namespace
}  // namespace medgrid::app
