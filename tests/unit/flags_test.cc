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
  // The seed's 24 h unless set.
  EXPECT_EQ(c->engine.idempotency_ttl, std::chrono::hours(24));
  EXPECT_EQ(c->gateway.idempotency_retry_after, std::chrono::seconds(1));
  auto ttl = ParseFlags({"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off", "--idempotency-ttl-s=600",
                         "--idempotency-retry-after-s=3"});
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  EXPECT_EQ(ttl->engine.idempotency_ttl, std::chrono::minutes(10));
  EXPECT_EQ(ttl->gateway.idempotency_retry_after, std::chrono::seconds(3));
}

// Replicas, their lag threshold and monitor, and the degradation sampler:
// the seed's numbers unless set.
TEST(Flags, ReplicasAndDegradation) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off"};
  auto defaults = ParseFlags(base);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_TRUE(defaults->store.replica_admin_dsns.empty());
  EXPECT_EQ(defaults->store.replica_max_lag, std::chrono::milliseconds(100));
  EXPECT_EQ(defaults->store.replica_monitor_interval, std::chrono::milliseconds(100));
  EXPECT_EQ(defaults->store.failover_after_samples, 3);
  EXPECT_EQ(defaults->degradation_interval, std::chrono::milliseconds(2000));
  EXPECT_EQ(defaults->degradation.recovery, std::chrono::seconds(30));
  auto args = base;
  args.insert(args.end(), {"--pg-replica-admin-dsn=host=a port=1", "--pg-replica-admin-dsn=host=b port=2",
                           "--replica-max-lag-ms=250", "--replica-monitor-interval-ms=50", "--replica-failover-after=5",
                           "--degradation-interval-ms=200", "--degradation-recovery-s=3"});
  auto c = ParseFlags(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->store.replica_admin_dsns, (std::vector<std::string>{"host=a port=1", "host=b port=2"}));
  EXPECT_EQ(c->store.replica_max_lag, std::chrono::milliseconds(250));
  EXPECT_EQ(c->store.replica_monitor_interval, std::chrono::milliseconds(50));
  EXPECT_EQ(c->store.failover_after_samples, 5);
  EXPECT_EQ(c->degradation_interval, std::chrono::milliseconds(200));
  EXPECT_EQ(c->degradation.recovery, std::chrono::seconds(3));
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

TEST(Flags, TenantDatabaseCap) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off"};
  auto defaults = ParseFlags(base);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->store.tenant_connections, 20);
  EXPECT_EQ(defaults->store.tenant_connection_wait, std::chrono::milliseconds(1000));
  auto args = base;
  args.push_back("--db-tenant-connections=0");
  args.push_back("--db-tenant-wait-ms=250");
  auto set = ParseFlags(args);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->store.tenant_connections, 0);
  EXPECT_EQ(set->store.tenant_connection_wait, std::chrono::milliseconds(250));
  EXPECT_NE(FlagsHelp().find("--db-tenant-connections"), std::string::npos);
}

TEST(Flags, ShardBreaker) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off"};
  auto defaults = ParseFlags(base);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->store.shard_breaker.failure_threshold, 5);
  EXPECT_EQ(defaults->store.shard_breaker.open_timeout, std::chrono::seconds(30));
  auto args = base;
  args.push_back("--db-breaker-failures=0");
  args.push_back("--db-breaker-open-s=5");
  auto set = ParseFlags(args);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->store.shard_breaker.failure_threshold, 0);
  EXPECT_EQ(set->store.shard_breaker.open_timeout, std::chrono::seconds(5));
}

TEST(Flags, RejectsUnknownAndBadValues) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off"};
  for (const std::string bad : {"--nope=1", "--http-port=70000", "--http-port=abc", "--log-level=loud", "positional",
                                "--http-port", "--pg-shards=a,,b", "--worker-threads=-1", "--auth=maybe",
                                "--consent-deadline-ms=0", "--btg-webhook=ftp://x", "--btg-duration-s=5",
                                "--redis-key-prefix=a:b", "--rate-limit-tenant-rps=-1",
                                "--bulkhead-capacity=-1", "--bulkhead-shares=60,30", "--bulkhead-shares=60,30,20",
                                "--bulkhead-shed-at=0", "--bulkhead-shed-at=1.5", "--bulkhead-shed-at=0.855",
                                "--pg-replica-admin-dsn=", "--replica-max-lag-ms=0", "--replica-monitor-interval-ms=5",
                                "--replica-failover-after=0", "--degradation-interval-ms=1",
                                "--degradation-recovery-s=-1", "--cache=maybe",
                                "--cache-l1-ttl-ms=0", "--cache-l2-ttl-s=0", "--cache-l2-ttl-s=90000",
                                "--cache-coalescing=sometimes", "--hot-patient-qps=0", "--hot-tenant-share-pct=101",
                                "--hot-evaluate-ms=1", "--hot-patient-rps=-5", "--cache-l1-max-bytes=10",
                                "--idempotency-ttl-s=0", "--idempotency-retry-after-s=abc", "--db-pgbouncer=yes",
                                "--db-tenant-connections=-1", "--db-tenant-wait-ms=x",
                                "--db-breaker-failures=-1", "--db-breaker-open-s=0"}) {
    auto args = base;
    args.push_back(bad);
    auto c = ParseFlags(args);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseFlags({"--pg-admin-dsn=x"}).ok());          // no package dir
  EXPECT_FALSE(ParseFlags({"--fhir-package-dir=/p"}).ok());     // no database
}

TEST(Flags, BulkheadPools) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off"};
  auto defaults = ParseFlags(base);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->service_pools.capacity, 256);
  EXPECT_DOUBLE_EQ(defaults->service_pools.shed_fraction, 0.8);
  auto args = base;
  args.insert(args.end(), {"--bulkhead-capacity=40", "--bulkhead-shares=70,20,10", "--bulkhead-shed-at=0.75"});
  auto c = ParseFlags(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->service_pools.capacity, 40);
  EXPECT_EQ(c->service_pools.share_pct[0], 70);
  EXPECT_EQ(c->service_pools.share_pct[1], 20);
  EXPECT_EQ(c->service_pools.share_pct[2], 10);
  EXPECT_DOUBLE_EQ(c->service_pools.shed_fraction, 0.75);
  args.push_back("--bulkhead-capacity=0");  // off
  EXPECT_EQ(ParseFlags(args)->service_pools.capacity, 0);
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

// The read cache and hot spots: on by default with the seed's numbers.
TEST(Flags, CacheAndHotSpotsDefaultToTheSeed) {
  const std::vector<std::string> base = {"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off"};
  auto d = ParseFlags(base);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->cache_enabled);
  EXPECT_EQ(d->cache.l1.ttl, std::chrono::seconds(60));
  EXPECT_EQ(d->cache.l1.max_bytes, std::size_t{1} << 30);
  EXPECT_EQ(d->cache.l2_ttl, std::chrono::minutes(10));
  EXPECT_EQ(d->hot_spots.detector.patient_qps, 100);
  EXPECT_EQ(d->hot_spots.detector.tenant_share, 0.30);
  EXPECT_EQ(d->hot_spots.detector.cool_down, std::chrono::hours(1));
  EXPECT_EQ(d->hot_spots.coalescing, resource_cache::Coalescing::kHot);
  EXPECT_EQ(d->hot_spots.patient_rps, 200);
  auto args = base;
  args.insert(args.end(), {"--cache=off", "--cache-l1-ttl-ms=500", "--cache-l1-max-bytes=2097152",
                           "--cache-l2-ttl-s=300", "--cache-hot-l1-ttl-ms=30000", "--cache-hot-l2-ttl-s=600",
                           "--cache-coalescing=always", "--hot-patient-qps=50", "--hot-tenant-share-pct=40",
                           "--hot-cool-down-s=60", "--hot-evaluate-ms=250", "--hot-patient-rps=20",
                           "--hot-patient-burst=30"});
  auto c = ParseFlags(args);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->cache_enabled);
  EXPECT_EQ(c->cache.l1.ttl, std::chrono::milliseconds(500));
  EXPECT_EQ(c->cache.l1.max_bytes, 2097152u);
  EXPECT_EQ(c->cache.l2_ttl, std::chrono::seconds(300));
  EXPECT_EQ(c->cache.hot_l1_ttl, std::chrono::seconds(30));
  EXPECT_EQ(d->cache.hot_l1_ttl, std::chrono::minutes(5));
  EXPECT_EQ(c->cache.hot_l2_ttl, std::chrono::seconds(600));
  EXPECT_EQ(c->hot_spots.coalescing, resource_cache::Coalescing::kAlways);
  EXPECT_EQ(c->hot_spots.detector.patient_qps, 50);
  EXPECT_EQ(c->hot_spots.detector.tenant_share, 0.40);
  EXPECT_EQ(c->hot_spots.detector.cool_down, std::chrono::seconds(60));
  EXPECT_EQ(c->hot_spots.evaluate_every, std::chrono::milliseconds(250));
  EXPECT_EQ(c->hot_spots.patient_rps, 20);
  EXPECT_EQ(c->hot_spots.patient_burst, 30);
  EXPECT_EQ(ParseFlags({"--pg-admin-dsn=x", "--fhir-package-dir=/p", "--auth=off", "--cache-coalescing=off"})
                ->hot_spots.coalescing,
            resource_cache::Coalescing::kOff);
  EXPECT_NE(FlagsHelp().find("--cache-coalescing"), std::string::npos);
}

}  // namespace
}  // namespace medgrid::app
