// Per-tenant rate limits on the running server: a tenant's token bucket in
// Redis is shared by two instances (together they let through one burst, not
// one each), refusals are 429 with Retry-After and an OperationOutcome,
// other tenants are unaffected; without Redis each instance keeps a bucket
// of its own.
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {

TEST(RateLimit, ATenantsBucketIsSharedByInstancesThroughRedis) {
  const char* redis = std::getenv("MEDGRID_TEST_REDIS");
  if (redis == nullptr || *redis == '\0') GTEST_SKIP() << "MEDGRID_TEST_REDIS is not set";
  app::AppConfig c = TestServer::BaseConfig("ratelimit");
  c.redis = redis;
  c.redis_prefix = c.store.control_db;  // this run's keys only
  c.tenant_rate_limit = 1;              // refills slower than the test sends
  c.tenant_rate_burst = 5;
  TestServer server("ratelimit", {"t1", "t2"}, c);
  auto second = app::App::Start(server.config());
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient b((*second)->port());
  HttpClient& a = server.client();

  int ok = 0;
  int throttled = 0;
  for (int i = 0; i < 12; ++i) {
    HttpResponse res = (i % 2 == 0 ? a : b).Get("/fhir/t1/metadata");
    if (res.status == 200) {
      ++ok;
    } else {
      ASSERT_EQ(res.status, 429) << res.body;
      EXPECT_EQ(res.IssueCode(), "throttled");
      EXPECT_GE(std::stoi(res.Header("Retry-After")), 1);
      ++throttled;
    }
  }
  // One burst of 5 between them (a sixth if a token refilled meanwhile).
  EXPECT_GE(ok, 5);
  EXPECT_LE(ok, 6);
  EXPECT_EQ(ok + throttled, 12);
  // Another tenant has its own bucket.
  EXPECT_EQ(a.Get("/fhir/t2/metadata").status, 200);
  EXPECT_EQ(b.Get("/fhir/t2/metadata").status, 200);
}

TEST(RateLimit, WithoutRedisEachInstanceHasItsOwnBucket) {
  app::AppConfig c = TestServer::BaseConfig("ratelocal");
  c.tenant_rate_limit = 1;
  c.tenant_rate_burst = 3;
  TestServer server("ratelocal", {"t1"}, c);
  auto second = app::App::Start(server.config());
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient b((*second)->port());
  int ok_a = 0;
  int ok_b = 0;
  for (int i = 0; i < 6; ++i) {
    ok_a += server.client().Get("/fhir/t1/metadata").status == 200 ? 1 : 0;
    ok_b += b.Get("/fhir/t1/metadata").status == 200 ? 1 : 0;
  }
  EXPECT_GE(ok_a, 3);
  EXPECT_LE(ok_a, 4);
  EXPECT_GE(ok_b, 3);
  EXPECT_LE(ok_b, 4);
  EXPECT_EQ(server.client().Get("/livez").status, 200);  // only FHIR requests count
}

}  // namespace
}  // namespace medgrid::testing
