#include "medgrid/app/app.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <chrono>
#include <map>
#include <mutex>

#include "medgrid/access/access_api.h"
#include "medgrid/audit/auditing_api.h"
#include "medgrid/cache/rate_limiter.h"
#include "medgrid/cache/redis.h"
#include "medgrid/consent/service.h"
#include "medgrid/bulk/export_http.h"
#include "medgrid/bulk/object_store.h"
#include "medgrid/audit/pipeline.h"
#include "medgrid/audit/service.h"
#include "medgrid/audit/sink.h"
#include "medgrid/audit/spool.h"
#include "change_events.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/request_context.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/core/worker.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/engine/reindexer.h"
#include "medgrid/fhir/compartments.h"
#include "medgrid/fhir/search_params.h"
#include "medgrid/fhir/structure.h"
#include "medgrid/ledger/ledger_store.h"
#include "medgrid/ledger/signer.h"
#include "medgrid/store/migrations.h"
#include "medgrid/store/store.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace medgrid::app {
namespace {

absl::Status BadFlag(std::string_view name, std::string_view why) {
  return absl::InvalidArgumentError(core::StrCat("--", name, ": ", why));
}

template <typename T>
absl::Status ParseInt(std::string_view name, std::string_view value, T min, T max, T& out) {
  T v{};
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || ptr != value.data() + value.size() || v < min || v > max) {
    return BadFlag(name, core::StrCat("expected an integer in [", min, ", ", max, "], got '", value, "'"));
  }
  out = v;
  return absl::OkStatus();
}

absl::Status ParseMillis(std::string_view name, std::string_view value, std::chrono::milliseconds& out) {
  int64_t ms = 0;
  RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 0, 86400000, ms));
  out = std::chrono::milliseconds(ms);
  return absl::OkStatus();
}

// medgrid_db_queries_total{shard,kind}: the store counts statements per
// shard (PoolStats::queries); each scrape moves the counters up to them.
class DbQueryMetrics {
 public:
  DbQueryMetrics(store::Store& store, prometheus::Registry& registry)
      : store_(store),
        family_(prometheus::BuildCounter()
                    .Name("medgrid_db_queries_total")
                    .Help("Statements this process sent to each shard database, by kind: read, search, write, "
                          "history, tx (BEGIN/COMMIT/ROLLBACK/SET), prepare (once per statement and connection), "
                          "other (reindex, export, outbox, subscriptions, migrations)")
                    .Register(registry)) {}

  void Update() {
    const std::vector<store::PoolStats> pools = store_.Pools();
    std::lock_guard lock(mu_);
    for (const store::PoolStats& p : pools) {
      for (const auto& [kind, n] : p.queries) {
        prometheus::Counter& counter = family_.Add({{"shard", p.shard_id}, {"kind", kind}});
        if (static_cast<double>(n) > counter.Value()) counter.Increment(static_cast<double>(n) - counter.Value());
      }
    }
  }

 private:
  store::Store& store_;
  prometheus::Family<prometheus::Counter>& family_;
  std::mutex mu_;  // one scrape at a time moves the counters
};

// The external dependencies' counters (http::ExternalDependency::Stats) and
// breaker states; each scrape moves the counters up to the dependencies'.
// Every series exists from the start, at 0.
class ExternalMetrics {
 public:
  ExternalMetrics(const std::vector<http::ExternalDependency*>& dependencies, prometheus::Registry& registry) {
    auto& calls = prometheus::BuildCounter()
                      .Name("medgrid_external_calls_total")
                      .Help("Calls to external dependencies by how they ended after any retries: success, failure, "
                            "or refused (the dependency's circuit breaker was open; nothing was sent)")
                      .Register(registry);
    auto& retries = prometheus::BuildCounter()
                        .Name("medgrid_external_retries_total")
                        .Help("Requests to external dependencies that repeated a failed one")
                        .Register(registry);
    auto& exhausted = prometheus::BuildCounter()
                          .Name("medgrid_retry_budget_exhausted_total")
                          .Help("Retries of calls to external dependencies that the dependency's retry budget refused")
                          .Register(registry);
    // The family the consent and shard breakers report in (same name and help).
    auto& breaker = prometheus::BuildGauge()
                        .Name("medgrid_circuit_breaker_state")
                        .Help("Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open")
                        .Register(registry);
    for (http::ExternalDependency* d : dependencies) {
      Series x{d,
               &calls.Add({{"dependency", d->name()}, {"outcome", "success"}}),
               &calls.Add({{"dependency", d->name()}, {"outcome", "failure"}}),
               &calls.Add({{"dependency", d->name()}, {"outcome", "refused"}}),
               &retries.Add({{"dependency", d->name()}}),
               &exhausted.Add({{"dependency", d->name()}}),
               &breaker.Add({{"dependency", d->name()}})};
      series_.push_back(x);
    }
  }

  void Update() {
    std::lock_guard lock(mu_);
    for (const Series& x : series_) {
      const http::ExternalDependency::Stats st = x.dependency->stats();
      MoveUp(*x.success, st.successes);
      MoveUp(*x.failure, st.failures);
      MoveUp(*x.refused, st.refused);
      MoveUp(*x.retries, st.retries);
      MoveUp(*x.exhausted, st.budget_exhausted);
      x.breaker->Set(static_cast<double>(x.dependency->breaker().state()));
    }
  }

 private:
  struct Series {
    http::ExternalDependency* dependency;
    prometheus::Counter* success;
    prometheus::Counter* failure;
    prometheus::Counter* refused;
    prometheus::Counter* retries;
    prometheus::Counter* exhausted;
    prometheus::Gauge* breaker;
  };
  static void MoveUp(prometheus::Counter& counter, uint64_t n) {
    if (static_cast<double>(n) > counter.Value()) counter.Increment(static_cast<double>(n) - counter.Value());
  }
  std::vector<Series> series_;
  std::mutex mu_;  // one scrape at a time moves the counters
};

// Availability and p99 latency of a dependency for HealthSignals: nullopt
// while its window holds no call (not measured: the level is unaffected); an
// open breaker reads as availability 0, since every call is refused then.
struct ExternalSignal {
  std::optional<double> availability;
  std::optional<std::chrono::milliseconds> latency_p99;
};

ExternalSignal SignalOf(http::ExternalDependency* dependency) {
  ExternalSignal signal;
  if (dependency == nullptr) return signal;
  const resilience::DependencyHealth::Snapshot health = dependency->health().Read();
  signal.availability = health.availability;
  if (health.latency_p99) signal.latency_p99 = std::chrono::ceil<std::chrono::milliseconds>(*health.latency_p99);
  if (dependency->breaker().state() == resilience::BreakerState::kOpen) signal.availability = 0.0;
  return signal;
}

}  // namespace

std::vector<http::ExternalDependencySettings> DefaultExternalDependencies() {
  std::vector<http::ExternalDependencySettings> out;
  for (std::string_view name : {kJwksDependency, kBtgWebhookDependency, kHieDependency, kAiDependency}) {
    out.push_back(http::ExternalDependencySettings::For(name));
  }
  return out;
}

std::string FlagsHelp() {
  return R"(medgrid: the all-in-one FHIR R4 server.
Flags (all --name=value):
  --http-address        address to bind (default 127.0.0.1)
  --http-port           port to bind, 0 for any free port (default 8080)
  --io-threads          HTTP I/O threads, 0 = one per core (default 0)
  --worker-threads      request handler threads, 0 = four per core (default 0)
  --max-body-bytes      largest request body (default 16777216)
  --max-header-bytes    largest request head (default 16384)
  --read-timeout-ms     time to receive one request (default 30000)
  --idle-timeout-ms     keep-alive idle timeout (default 60000)
  --drain-timeout-ms    graceful shutdown limit (default 30000)
  --pg-admin-dsn        libpq key=value DSN of the maintenance database; local mode creates databases
  --pg-control-dsn      DSN of the control database (default: admin DSN with dbname=medgrid_control)
  --pg-shards           comma-separated shard database names created in local mode (default medgrid_shard_0,medgrid_shard_1)
  --pg-pool-size        blocking connections per shard (default 16)
  --pg-async-pool-size  non-blocking connections per shard and I/O thread (default 8)
  --pg-statement-timeout-ms  per-statement timeout (default 30000)
  --db-breaker-failures  consecutive connection failures of a shard primary that open its circuit
                        breaker (default 5, the seed's); 0 = no breaker
  --db-breaker-open-s   how long an open shard breaker refuses work before a probe (default 30)
  --db-tenant-connections  most connections one tenant's requests hold or wait for on a shard, over its
                        pools (default 20, the seed's; 0 = no cap); beyond it 503 with Retry-After
  --db-tenant-wait-ms   how long work of a tenant at its cap waits for one of its places before the
                        503 (default 1000; 0 = refused at once)
  --pg-replica-admin-dsn  DSN of a streaming replica's maintenance database (repeatable); in local mode
                        every shard reads from these replicas (dbname=<shard>); otherwise replicas come
                        from the shards table (replica_dsns). A DSN naming several hosts (the primary and
                        its standbys) gets target_session_attrs=read-write
  --replica-max-lag-ms  reads go to a replica only while it lags less than this (default 100)
  --replica-monitor-interval-ms  how often replication lag and the primary are sampled (default 100)
  --replica-failover-after  failed samples of the primary in a row that mean a failover (default 3)
  --db-pgbouncer        on|off: the shard DSNs lead to PgBouncer in transaction pooling mode; no named
                        prepared statements or session state (default off: prepared statements, faster)
  --reindex-batch       resources per reindex transaction (default 500)
  --max-bundle-entries  most entries in one batch or transaction Bundle (default 10000)
  --max-bundle-bytes    largest batch or transaction Bundle (default 16777216; --max-body-bytes also applies)
  --idempotency-ttl-s   how long the response of a write with an Idempotency-Key answers its
                        retries (default 86400, the seed's 24 h)
  --idempotency-retry-after-s  Retry-After of the 409 while a key's first request runs (default 1)
  --region              this instance's region (default local)
  --public-base-url     base URL for Location and links (default: from the Host header)
  --fhir-package-dir    the package/ folder of hl7.fhir.r4.examples 4.0.1 (required)
  --audit-spool-dir     directory of the audit spool; empty (the default) audits nothing
  --audit-dsn           DSN of the audit ledger database (default: admin DSN with dbname=medgrid_audit)
  --audit-key-file      Ed25519 PEM key that signs ledger tree heads, created when missing
                        (default <audit-spool-dir>/ledger-signing-key.pem)
  --audit-consumer      on|off: with Kafka, also consume medgrid.audit.events into the ledger
                        (default on; off when medgrid-audit processes do it)
  --audit-spool-max-bytes  audit events waiting for the ledger at most (default 1073741824)
  --kafka-brokers       Kafka bootstrap servers; empty (the default) delivers events in-process
  --kafka-property      name=value, a librdkafka property for every producer and consumer (repeatable)
  --instance-id         this instance's name in Kafka consumer groups (default: the host name)
  --export-dir          where $export files go (default $MEDGRID_HOME/exports, else ./medgrid-exports)
  --export-max-file-bytes  largest NDJSON file part of an export (default 67108864)
  --export-expiry-hours    how long a finished export's files stay (default 24)
  --subscription-max-failures  failed deliveries of a notification in a row before its Subscription
                        is set to error (default 10)
  --subscription-backoff-ms      pause after a failed delivery, doubling with each further one (default 1000)
  --subscription-max-backoff-ms  longest pause between deliveries of a failing notification (default 300000)
  --auth                on|off: SMART on FHIR bearer tokens, scopes, consent and break-the-glass
                        (default on; off trusts every caller: local development only)
  --jwks                the identity provider's JWKS: a file or an http(s) URL (required with auth)
  --auth-issuer         required "iss" of tokens (required with auth)
  --auth-audience       required "aud" of tokens (required with auth)
  --auth-clock-skew-s   tolerance for exp and nbf (default 60)
  --smart-authorize-url, --smart-token-url  published in .well-known/smart-configuration
                        (default <issuer>/authorize and <issuer>/token)
  --consent-dsn         DSN of the consent registry (default: admin DSN with dbname=medgrid_consent)
  --consent-deadline-ms longest wait for the consent registry before failing closed (default 250)
  --btg-duration-s      how long a break-the-glass grant lasts (default 3600)
  --btg-webhook         http(s) URL told of every break-the-glass grant (default none)
  --redis               host:port of Redis: consent cache L2, shared break-the-glass grants (default none)
  --redis-key-prefix    prefix of this deployment's Redis keys and channels (default mg)
  --rate-limit-tenant-rps    FHIR requests per second per tenant, over all instances on one Redis
                        (each instance alone without Redis); 0 = no limit (default 0)
  --rate-limit-tenant-burst  requests a tenant may send at once (default twice the rate)
  --bulkhead-capacity   requests this instance serves at once, split into the service pools
                        critical/standard/ai (shares from --bulkhead-shares); 0 = no admission
                        control (default 256)
  --bulkhead-shares     percent of capacity for critical,standard,ai (default 60,30,10)
  --bulkhead-shed-at    fraction of capacity in flight from which standard and ai work is shed
                        (default 0.8)
  --degradation-interval-ms  how often the degradation level is computed (default 2000)
  --degradation-recovery-s   readings below a level needed for this long before it is left (default 30)
  --cache               on|off: the FHIR read cache (L1 in process, L2 in Redis with --redis) and
                        hot-spot mode (default on)
  --cache-l1-ttl-ms     how long L1 serves an entry (default 60000)
  --cache-l1-max-bytes  L1 size bound per instance (default 1073741824)
  --cache-l2-ttl-s      how long Redis keeps an entry, 1..86400 (default 600)
  --cache-hot-l1-ttl-ms L1 lifetime of a hot patient's entries (default 300000)
  --cache-hot-l2-ttl-s  Redis lifetime of a hot patient's entries (default 900)
  --cache-coalescing    hot|always|off: concurrent misses of one key share one database read for
                        hot keys, for every key, or never (default hot)
  --hot-patient-qps     a patient is hot above this many requests per second (default 100)
  --hot-tenant-share-pct  a tenant is hot above this share of all requests, in percent (default 30)
  --hot-cool-down-s     least time in hot-spot mode before it turns off below half the
                        threshold (default 3600)
  --hot-evaluate-ms     how often hot spots are evaluated (default 1000)
  --hot-patient-rps     requests per second a hot patient may receive, over all instances on one
                        Redis; 0 = no limit (default 200)
  --hot-patient-burst   requests a hot patient may receive at once (default twice the rate)
  --log-level           debug|info|warn|error|off (default info)
)";
}

absl::StatusOr<AppConfig> ParseFlags(const std::vector<std::string>& args) {
  AppConfig c;
  c.security.enabled = true;
  for (const std::string& arg : args) {
    if (arg.rfind("--", 0) != 0) return absl::InvalidArgumentError("Unexpected argument '" + arg + "'");
    std::size_t eq = arg.find('=');
    if (eq == std::string::npos) return absl::InvalidArgumentError("Flag '" + arg + "' needs =value");
    std::string name = arg.substr(2, eq - 2);
    std::string value = arg.substr(eq + 1);
    if (name == "http-address") {
      c.http.address = value;
    } else if (name == "http-port") {
      RETURN_IF_ERROR(ParseInt<uint16_t>(name, value, 0, 65535, c.http.port));
    } else if (name == "io-threads") {
      RETURN_IF_ERROR(ParseInt(name, value, 0, 256, c.http.io_threads));
    } else if (name == "worker-threads") {
      RETURN_IF_ERROR(ParseInt(name, value, 0, 1024, c.http.worker_threads));
    } else if (name == "max-body-bytes") {
      RETURN_IF_ERROR(ParseInt<std::size_t>(name, value, 1024, std::size_t{1} << 30, c.http.body_limit));
    } else if (name == "max-header-bytes") {
      RETURN_IF_ERROR(ParseInt<std::size_t>(name, value, 1024, 1 << 20, c.http.header_limit));
    } else if (name == "read-timeout-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.http.read_timeout));
    } else if (name == "idle-timeout-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.http.idle_timeout));
    } else if (name == "drain-timeout-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.http.drain_timeout));
    } else if (name == "pg-admin-dsn") {
      c.store.admin_dsn = value;
    } else if (name == "pg-control-dsn") {
      c.store.control_dsn = value;
    } else if (name == "pg-shards") {
      c.store.bootstrap_shards.clear();
      for (std::string_view s : core::StrSplit(value, ',')) {
        if (s.empty()) return BadFlag(name, "empty shard name");
        c.store.bootstrap_shards.emplace_back(s);
      }
    } else if (name == "pg-async-pool-size") {
      RETURN_IF_ERROR(ParseInt(name, value, 1, 256, c.store.async_pool_size));
    } else if (name == "pg-pool-size") {
      RETURN_IF_ERROR(ParseInt(name, value, 1, 1000, c.store.pool_size));
    } else if (name == "db-breaker-failures") {
      RETURN_IF_ERROR(ParseInt(name, value, 0, 1000, c.store.shard_breaker.failure_threshold));
    } else if (name == "db-breaker-open-s") {
      int64_t seconds = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 1, 3600, seconds));
      c.store.shard_breaker.open_timeout = std::chrono::seconds(seconds);
    } else if (name == "db-tenant-connections") {
      RETURN_IF_ERROR(ParseInt(name, value, 0, 10000, c.store.tenant_connections));
    } else if (name == "db-tenant-wait-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.store.tenant_connection_wait));
    } else if (name == "pg-statement-timeout-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.store.statement_timeout));
    } else if (name == "pg-replica-admin-dsn") {
      if (value.empty()) return BadFlag(name, "must not be empty");
      c.store.replica_admin_dsns.push_back(value);
    } else if (name == "replica-max-lag-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.store.replica_max_lag));
      if (c.store.replica_max_lag.count() < 1) return BadFlag(name, "must be at least 1");
    } else if (name == "replica-monitor-interval-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.store.replica_monitor_interval));
      if (c.store.replica_monitor_interval.count() < 10) return BadFlag(name, "must be at least 10");
    } else if (name == "replica-failover-after") {
      RETURN_IF_ERROR(ParseInt(name, value, 1, 1000, c.store.failover_after_samples));
    } else if (name == "degradation-interval-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.degradation_interval));
      if (c.degradation_interval.count() < 10) return BadFlag(name, "must be at least 10");
    } else if (name == "degradation-recovery-s") {
      int64_t seconds = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 0, 86400, seconds));
      c.degradation.recovery = std::chrono::seconds(seconds);
    } else if (name == "db-pgbouncer") {
      if (value != "on" && value != "off") return BadFlag(name, "must be on or off");
      c.store.pgbouncer = value == "on";
    } else if (name == "max-bundle-entries") {
      RETURN_IF_ERROR(ParseInt<std::size_t>(name, value, 1, 1'000'000, c.engine.max_bundle_entries));
    } else if (name == "max-bundle-bytes") {
      RETURN_IF_ERROR(ParseInt<std::size_t>(name, value, 1024, std::size_t{1} << 30, c.engine.max_bundle_bytes));
    } else if (name == "idempotency-ttl-s") {
      int64_t seconds = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 1, 30 * 86400, seconds));
      c.engine.idempotency_ttl = std::chrono::seconds(seconds);
    } else if (name == "idempotency-retry-after-s") {
      int64_t seconds = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 1, 3600, seconds));
      c.gateway.idempotency_retry_after = std::chrono::seconds(seconds);
    } else if (name == "reindex-batch") {
      RETURN_IF_ERROR(ParseInt(name, value, 1, 100000, c.reindex.batch));
    } else if (name == "region") {
      c.store.region = value;
    } else if (name == "public-base-url") {
      while (!value.empty() && value.back() == '/') value.pop_back();
      c.gateway.public_base_url = value;
    } else if (name == "fhir-package-dir") {
      c.fhir_package_dir = value;
    } else if (name == "kafka-brokers") {
      c.kafka.brokers = value;
    } else if (name == "kafka-property") {
      const std::size_t split = value.find('=');
      if (split == 0 || split == std::string::npos) return BadFlag(name, "must be name=value");
      c.kafka.properties[value.substr(0, split)] = value.substr(split + 1);
    } else if (name == "instance-id") {
      c.instance_id = value;
    } else if (name == "audit-spool-dir") {
      c.audit.spool_dir = value;
    } else if (name == "audit-dsn") {
      c.audit.dsn = value;
    } else if (name == "audit-consumer") {
      if (value != "on" && value != "off") return BadFlag(name, "must be on or off");
      c.audit.consume = value == "on";
    } else if (name == "audit-key-file") {
      c.audit.key_file = value;
    } else if (name == "audit-spool-max-bytes") {
      int64_t bytes = 0;
      RETURN_IF_ERROR(ParseInt(name, value, int64_t{4096}, int64_t{1} << 40, bytes));
      c.audit.spool_max_bytes = static_cast<uint64_t>(bytes);
    } else if (name == "export-dir") {
      if (value.empty()) return BadFlag(name, "must not be empty");
      c.export_dir = value;
    } else if (name == "export-max-file-bytes") {
      RETURN_IF_ERROR(ParseInt<uint64_t>(name, value, 1024, uint64_t{1} << 40, c.exports.max_file_bytes));
    } else if (name == "export-expiry-hours") {
      int64_t hours = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 1, 24 * 365, hours));
      c.exports.expiry = std::chrono::hours(hours);
    } else if (name == "subscription-max-failures") {
      RETURN_IF_ERROR(ParseInt(name, value, 1, 1000000, c.subscriptions.max_failures));
    } else if (name == "subscription-backoff-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.subscriptions.initial_backoff));
    } else if (name == "subscription-max-backoff-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.subscriptions.max_backoff));
    } else if (name == "auth") {
      if (value != "on" && value != "off") return BadFlag(name, "must be on or off");
      c.security.enabled = value == "on";
    } else if (name == "jwks") {
      c.security.auth.jwks = value;
    } else if (name == "auth-issuer") {
      c.security.auth.issuer = value;
    } else if (name == "auth-audience") {
      c.security.auth.audience = value;
    } else if (name == "auth-clock-skew-s") {
      int64_t skew = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 0, 3600, skew));
      c.security.auth.clock_skew = std::chrono::seconds(skew);
    } else if (name == "smart-authorize-url") {
      c.security.auth.authorize_url = value;
    } else if (name == "smart-token-url") {
      c.security.auth.token_url = value;
    } else if (name == "consent-dsn") {
      c.security.consent_dsn = value;
    } else if (name == "consent-deadline-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.security.consent_deadline));
      if (c.security.consent_deadline.count() < 1) return BadFlag(name, "must be at least 1");
    } else if (name == "btg-duration-s") {
      int64_t seconds = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 60, 86400, seconds));
      c.security.break_glass.duration = std::chrono::seconds(seconds);
    } else if (name == "btg-webhook") {
      if (value.rfind("http://", 0) != 0 && value.rfind("https://", 0) != 0) {
        return BadFlag(name, "must be an http:// or https:// URL");
      }
      c.security.break_glass.webhook_url = value;
    } else if (name == "redis") {
      c.redis = value;
    } else if (name == "rate-limit-tenant-rps" || name == "rate-limit-tenant-burst") {
      int64_t n = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 0, 10'000'000, n));
      (name == "rate-limit-tenant-rps" ? c.tenant_rate_limit : c.tenant_rate_burst) = static_cast<double>(n);
    } else if (name == "bulkhead-capacity") {
      RETURN_IF_ERROR(ParseInt<int>(name, value, 0, 1'000'000, c.service_pools.capacity));
    } else if (name == "bulkhead-shares") {
      const std::vector<std::string_view> parts = core::StrSplit(value, ',');
      if (parts.size() != 3) return BadFlag(name, "must be three percentages: critical,standard,ai");
      double sum = 0;
      for (int i = 0; i < 3; ++i) {
        int pct = 0;
        RETURN_IF_ERROR(ParseInt<int>(name, parts[i], 0, 100, pct));
        c.service_pools.share_pct[i] = pct;
        sum += pct;
      }
      if (sum != 100) return BadFlag(name, "the three percentages must add up to 100");
    } else if (name == "bulkhead-shed-at") {
      // Hundredths, so that the flag parses exactly: 0.8 or 80%.
      int pct = 0;
      std::string_view v = value;
      if (v.rfind("0.", 0) == 0 && v.size() <= 4) {
        std::string digits(v.substr(2));
        digits.resize(2, '0');
        RETURN_IF_ERROR(ParseInt<int>(name, digits, 1, 99, pct));
      } else if (v == "1" || v == "1.0") {
        pct = 100;
      } else {
        return BadFlag(name, "must be a fraction in (0, 1] with at most two decimals, e.g. 0.8");
      }
      c.service_pools.shed_fraction = pct / 100.0;
    } else if (name == "redis-key-prefix") {
      if (value.empty() || value.find_first_of("{}: ") != std::string::npos) {
        return BadFlag(name, "must be a non-empty token without {, }, : or spaces");
      }
      c.redis_prefix = value;
    } else if (name == "cache") {
      if (value != "on" && value != "off") return BadFlag(name, "must be on or off");
      c.cache_enabled = value == "on";
    } else if (name == "cache-l1-ttl-ms") {
      std::chrono::milliseconds ms{0};
      RETURN_IF_ERROR(ParseMillis(name, value, ms));
      if (ms.count() < 1) return BadFlag(name, "must be at least 1");
      c.cache.l1.ttl = ms;
    } else if (name == "cache-l1-max-bytes") {
      RETURN_IF_ERROR(ParseInt<std::size_t>(name, value, 1 << 20, std::size_t{1} << 40, c.cache.l1.max_bytes));
    } else if (name == "cache-hot-l1-ttl-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.cache.hot_l1_ttl));
      if (c.cache.hot_l1_ttl.count() < 1) return BadFlag(name, "must be at least 1");
    } else if (name == "cache-l2-ttl-s" || name == "cache-hot-l2-ttl-s") {
      int64_t seconds = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 1, 86400, seconds));
      (name == "cache-l2-ttl-s" ? c.cache.l2_ttl : c.cache.hot_l2_ttl) = std::chrono::seconds(seconds);
    } else if (name == "cache-coalescing") {
      if (value == "hot") {
        c.hot_spots.coalescing = resource_cache::Coalescing::kHot;
      } else if (value == "always") {
        c.hot_spots.coalescing = resource_cache::Coalescing::kAlways;
      } else if (value == "off") {
        c.hot_spots.coalescing = resource_cache::Coalescing::kOff;
      } else {
        return BadFlag(name, "must be hot, always or off");
      }
    } else if (name == "hot-patient-qps") {
      int64_t qps = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 1, 10'000'000, qps));
      c.hot_spots.detector.patient_qps = static_cast<double>(qps);
    } else if (name == "hot-tenant-share-pct") {
      int64_t pct = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 1, 100, pct));
      c.hot_spots.detector.tenant_share = static_cast<double>(pct) / 100.0;
    } else if (name == "hot-cool-down-s") {
      int64_t seconds = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 0, 7 * 86400, seconds));
      c.hot_spots.detector.cool_down = std::chrono::seconds(seconds);
    } else if (name == "hot-evaluate-ms") {
      RETURN_IF_ERROR(ParseMillis(name, value, c.hot_spots.evaluate_every));
      if (c.hot_spots.evaluate_every.count() < 10) return BadFlag(name, "must be at least 10");
    } else if (name == "hot-patient-rps" || name == "hot-patient-burst") {
      int64_t n = 0;
      RETURN_IF_ERROR(ParseInt<int64_t>(name, value, 0, 10'000'000, n));
      (name == "hot-patient-rps" ? c.hot_spots.patient_rps : c.hot_spots.patient_burst) = static_cast<double>(n);
    } else if (name == "log-level") {
      if (!core::ParseLogLevel(value, c.log_level)) return BadFlag(name, "expected debug|info|warn|error|off");
    } else {
      return absl::InvalidArgumentError("Unknown flag --" + name + " (see --help)");
    }
  }
  if (c.fhir_package_dir.empty()) return BadFlag("fhir-package-dir", "is required");
  if (c.security.enabled) {
    const char* off = " (or --auth=off to serve without tokens, for local development only)";
    if (c.security.auth.jwks.empty()) return BadFlag("jwks", core::StrCat("a JWKS file or URL is required", off));
    if (c.security.auth.issuer.empty()) return BadFlag("auth-issuer", core::StrCat("is required", off));
    if (c.security.auth.audience.empty()) return BadFlag("auth-audience", core::StrCat("is required", off));
  }
  if (c.export_dir.empty()) {
    // Start-up configuration, read once here like the flags themselves.
    const char* home = std::getenv("MEDGRID_HOME");
    c.export_dir = home != nullptr && *home != '\0' ? core::StrCat(home, "/exports") : "medgrid-exports";
  }
  if (c.store.admin_dsn.empty() && c.store.control_dsn.empty()) {
    return BadFlag("pg-admin-dsn", "either --pg-admin-dsn or --pg-control-dsn is required");
  }
  return c;
}

struct App::Impl {
  core::RealClock clock;
  std::unique_ptr<const fhir::StructureRegistry> registry;
  std::unique_ptr<const fhir::SearchParamRegistry> search_params;
  std::unique_ptr<const fhir::CompartmentRegistry> compartments;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<engine::FhirEngine> engine;
  std::unique_ptr<engine::Reindexer> reindexer;
  prometheus::Registry metrics;
  // Before everything that calls them (authenticator, break_glass), so they
  // outlive their callers.
  std::vector<std::unique_ptr<http::ExternalDependency>> external;
  std::unique_ptr<ExternalMetrics> external_metrics;
  // Before changes (whose relays deliver to it) and server (whose websocket
  // connections use it), so it outlives both.
  std::unique_ptr<subscriptions::SubscriptionService> subscriptions;
  // Auth on: the verifier, the consent service (a ChangeBus handler, so
  // before changes), break-the-glass, and the FHIR API as callers may use it.
  std::shared_ptr<cache::RedisClient> redis;
  // The read cache (a ChangeBus handler, so before changes; below access,
  // so before it) and its hot-spot tracking. `data_api` is what access
  // control (or, with auth off, the gateway) calls: the cache or the engine.
  std::unique_ptr<resource_cache::HotSpots> hot_spots;
  std::unique_ptr<resource_cache::CachingFhirApi> cached;
  engine::FhirApi* data_api = nullptr;
  std::unique_ptr<auth::Authenticator> authenticator;
  std::unique_ptr<consent::ConsentService> consent;
  std::unique_ptr<consent::BreakGlass> break_glass;
  std::unique_ptr<access::AccessControlledFhirApi> access;
  std::unique_ptr<ChangeEvents> changes;
  std::unique_ptr<resilience::DegradationController> degradation;
  std::unique_ptr<cache::RateLimiter> tenant_rate_limit;
  std::unique_ptr<resilience::ServicePools> service_pools;
  // Samples the health signals into `degradation`.
  std::unique_ptr<core::Worker> degradation_worker;
  consent::ConsentService::Stats last_consent;  // the worker's own
  int unreachable_rounds = 0;                    // the worker's own: rounds in a row with a shard unanswered
  std::unique_ptr<audit::Spool> spool;
  std::unique_ptr<ledger::LedgerStore> ledger;
  std::unique_ptr<audit::AuditIndex> audit_index;
  std::unique_ptr<audit::LedgerSink> ledger_sink;
  std::unique_ptr<audit::AuditSink> kafka_audit_sink;  // with brokers: the pipeline's sink
  std::unique_ptr<audit::AuditConsumer> audit_consumer;  // with brokers: Kafka into ledger_sink
  std::unique_ptr<audit::AuditPipeline> audit;
  std::unique_ptr<audit::AuditingFhirApi> audited;
  std::unique_ptr<gateway::Gateway> gateway;
  std::unique_ptr<bulk::FileObjectStore> export_files;
  std::unique_ptr<bulk::ExportService> exports;
  std::unique_ptr<http::Server> server;
  std::unique_ptr<DbQueryMetrics> db_queries;
  bool stopped = false;

  http::ExternalDependency* External(std::string_view name) const {
    for (const auto& d : external) {
      if (d->name() == name) return d.get();
    }
    return nullptr;
  }
};

App::App() : impl_(std::make_unique<Impl>()) {}

namespace {

bool WebsocketAllowed(auth::Authenticator& authn, const http::Request& req) {
  auto p = authn.Authenticate(req[boost::beast::http::field::authorization]);
  if (!p.ok()) return false;
  std::string_view target = req.target();
  if (target.rfind("/fhir/", 0) != 0) return false;
  target.remove_prefix(6);
  const std::string_view tenant = target.substr(0, target.find('/'));
  return !(*p)->tenant.empty() && (*p)->tenant == tenant &&
         (*p)->scopes.Check("Subscription", auth::kRead, auth::kAnyContext) != auth::ScopeSet::Grant::kDenied;
}

}  // namespace

absl::Status App::StartSecurity(const AppConfig& config, Impl& s) {
  const SecurityConfig& sec = config.security;
  auth::AuthConfig auth_config = sec.auth;
  auth_config.jwks_dependency = s.External(kJwksDependency);
  ASSIGN_OR_RETURN(s.authenticator, auth::Authenticator::Start(auth_config, s.clock));
  consent::ConsentServiceConfig cc;
  cc.dsn = sec.consent_dsn;
  if (cc.dsn.empty()) {
    if (config.store.admin_dsn.empty()) return BadFlag("consent-dsn", "is required without --pg-admin-dsn");
    RETURN_IF_ERROR(store::CreateDatabase(config.store.admin_dsn, "medgrid_consent"));
    cc.dsn = config.store.admin_dsn + " dbname=medgrid_consent";
  }
  cc.deadline = sec.consent_deadline;
  cc.redis_prefix = config.redis_prefix;
  cc.breaker = sec.consent_breaker;
  cc.redis_backoff = sec.consent_redis_backoff;
  engine::FhirEngine* engine = s.engine.get();
  ASSIGN_OR_RETURN(s.consent,
                   consent::ConsentService::Open(
                       cc, s.redis,
                       [engine](const std::string& tenant, const std::string& id,
                                int64_t version) -> absl::StatusOr<std::optional<std::string>> {
                         absl::StatusOr<engine::ResourceResult> r = engine->VRead(tenant, "Consent", id, version);
                         if (r.ok()) return r->deleted ? std::nullopt : std::optional<std::string>(r->body);
                         // A deleted version answers 410: nothing to keep.
                         if (core::HttpStatusOf(r.status()) == 410) return std::optional<std::string>();
                         return r.status();
                       },
                       s.clock, s.metrics));
  consent::BreakGlassConfig btg = sec.break_glass;
  btg.redis_prefix = config.redis_prefix;
  btg.webhook_dependency = s.External(kBtgWebhookDependency);
  s.break_glass = std::make_unique<consent::BreakGlass>(btg, s.redis, s.clock);
  access::AccessConfig ac;
  ac.authorize_url = s.authenticator->AuthorizeUrl();
  ac.token_url = s.authenticator->TokenUrl();
  s.access = std::make_unique<access::AccessControlledFhirApi>(ac, *s.data_api, *s.consent, *s.break_glass, *s.store,
                                                               *s.search_params, *s.compartments, s.clock);
  core::Log(core::LogLevel::kInfo, "auth.on", {{"issuer", sec.auth.issuer}, {"audience", sec.auth.audience}});
  return absl::OkStatus();
}

App::~App() { Stop(); }

absl::StatusOr<std::unique_ptr<App>> App::Start(const AppConfig& config) {
  std::unique_ptr<App> app(new App());
  Impl& s = *app->impl_;
  auto t0 = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(s.registry, fhir::StructureRegistry::LoadFromPackage(config.fhir_package_dir));
  ASSIGN_OR_RETURN(s.search_params, fhir::SearchParamRegistry::LoadFromPackage(config.fhir_package_dir, *s.registry));
  ASSIGN_OR_RETURN(s.compartments, fhir::CompartmentRegistry::LoadFromPackage(config.fhir_package_dir));
  auto t1 = std::chrono::steady_clock::now();
  core::Log(core::LogLevel::kInfo, "registry.loaded",
            {{"resource_types", std::to_string(s.registry->ResourceTypes().size())},
             {"ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count())}});
  std::vector<http::ExternalDependency*> dependencies;
  for (const http::ExternalDependencySettings& settings : config.external) {
    if (s.External(settings.name) != nullptr) {
      return absl::InvalidArgumentError(core::StrCat("external dependency ", settings.name, " is listed twice"));
    }
    s.external.push_back(std::make_unique<http::ExternalDependency>(
        settings, s.clock, [](std::string_view name, resilience::BreakerState from, resilience::BreakerState to) {
          core::Log(to == resilience::BreakerState::kOpen ? core::LogLevel::kWarn : core::LogLevel::kInfo,
                    "breaker.transition",
                    {{"dependency", name},
                     {"from", resilience::BreakerStateName(from)},
                     {"to", resilience::BreakerStateName(to)}});
        }));
    dependencies.push_back(s.external.back().get());
  }
  s.external_metrics = std::make_unique<ExternalMetrics>(dependencies, s.metrics);
  ASSIGN_OR_RETURN(s.store, store::Store::Open(config.store, s.clock));
  s.engine = std::make_unique<engine::FhirEngine>(*s.registry, *s.search_params, *s.compartments, *s.store, s.clock,
                                                  config.engine);
  s.reindexer = std::make_unique<engine::Reindexer>(*s.engine, *s.store, config.reindex);
  s.reindexer->Start();
  std::string instance = config.instance_id;
  if (instance.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    instance = host;
  }
  s.subscriptions = std::make_unique<subscriptions::SubscriptionService>(config.subscriptions, *s.engine, *s.registry,
                                                                        *s.store, s.clock, s.metrics);
  // A shard that cannot be reached now is not fatal (/readyz says so); the
  // service loads again from its worker until it can.
  if (absl::Status loaded = s.subscriptions->Load(); !loaded.ok()) {
    core::Log(core::LogLevel::kWarn, "subscriptions.load_failed", {{"error", std::string(loaded.message())}});
  }
  if (!config.redis.empty()) {
    ASSIGN_OR_RETURN(cache::RedisConfig redis, cache::ParseRedisAddress(config.redis));
    s.redis = std::make_shared<cache::RedisClient>(redis);
  }
  std::vector<events::ChangeHandler*> change_handlers = {s.subscriptions.get()};
  s.data_api = s.engine.get();
  if (config.cache_enabled) {
    s.hot_spots = std::make_unique<resource_cache::HotSpots>(config.hot_spots, s.clock, s.redis, config.redis_prefix,
                                                             &s.metrics);
    resource_cache::CacheConfig cc = config.cache;
    cc.redis_prefix = config.redis_prefix;
    s.cached = std::make_unique<resource_cache::CachingFhirApi>(cc, *s.engine, s.redis, s.hot_spots.get(), s.clock,
                                                                &s.metrics);
    change_handlers.push_back(s.cached.get());
    s.data_api = s.cached.get();
    s.hot_spots->Start();
  }
  if (config.security.enabled) {
    RETURN_IF_ERROR(StartSecurity(config, s));
    change_handlers.push_back(s.consent.get());
  } else {
    core::Log(core::LogLevel::kWarn, "auth.off", {{"reason", "--auth=off: every caller is trusted"}});
  }
  ASSIGN_OR_RETURN(s.changes, ChangeEvents::Start(config.kafka, *s.store, s.clock,
                                                  core::StrCat("medgrid-changes-", instance), s.metrics,
                                                  change_handlers));
  s.subscriptions->Start();
  engine::FhirApi* api = s.access ? static_cast<engine::FhirApi*>(s.access.get()) : s.data_api;
  if (!config.audit.spool_dir.empty()) {
    const AuditConfig& a = config.audit;
    std::string dsn = a.dsn;
    if (dsn.empty()) {
      if (config.store.admin_dsn.empty()) return BadFlag("audit-dsn", "is required without --pg-admin-dsn");
      RETURN_IF_ERROR(store::CreateDatabase(config.store.admin_dsn, "medgrid_audit"));
      dsn = config.store.admin_dsn + " dbname=medgrid_audit";
    }
    ASSIGN_OR_RETURN(s.spool, audit::Spool::Open({a.spool_dir, a.spool_max_bytes}));
    const std::string key_file = a.key_file.empty() ? a.spool_dir + "/ledger-signing-key.pem" : a.key_file;
    ASSIGN_OR_RETURN(std::unique_ptr<ledger::Signer> signer, ledger::Signer::FromPemFile(key_file, /*create=*/true));
    ASSIGN_OR_RETURN(s.ledger, ledger::LedgerStore::Open(dsn, std::shared_ptr<ledger::Signer>(std::move(signer))));
    ASSIGN_OR_RETURN(s.audit_index, audit::AuditIndex::Open(dsn));
    s.ledger_sink = std::make_unique<audit::LedgerSink>(*s.ledger, s.audit_index.get());
    audit::AuditSink* sink = s.ledger_sink.get();
    if (!config.kafka.brokers.empty()) {
      ASSIGN_OR_RETURN(s.kafka_audit_sink, audit::KafkaAuditSink::Create(config.kafka));
      sink = s.kafka_audit_sink.get();
      if (a.consume) {
        ASSIGN_OR_RETURN(s.audit_consumer, audit::AuditConsumer::Start(config.kafka, *s.ledger_sink));
        s.changes->Watch(&s.audit_consumer->loop());
      }
    }
    s.audit = std::make_unique<audit::AuditPipeline>(
        *s.spool, *sink,
        core::StrCat("medgrid ", config.store.region, " pid ", static_cast<int64_t>(::getpid())));
    s.audit->Start();
    s.audited = std::make_unique<audit::AuditingFhirApi>(*api, *s.audit, *s.audit_index, *s.search_params,
                                                         *s.registry, s.clock);
    if (s.break_glass) {
      // Each opened grant is a security alert in the tenant's ledger.
      s.break_glass->SetOnOpen([audit = s.audit.get()](const consent::BreakGlassEvent& e) {
        audit::Interaction in;
        in.tenant = e.request.tenant;
        in.interaction = "break-the-glass";
        in.action = 'E';
        in.http_status = 200;
        in.patients.push_back(core::StrCat("Patient/", e.request.patient));
        in.agent = e.request.agent;
        in.agent_address = core::CurrentRequest().client_address;
        in.purpose_of_use.push_back(e.request.purpose);
        in.emergency_override = true;
        in.override_reason = e.request.reason;
        in.recorded = e.grant.opened;
        audit->Record(in);
      });
    }
    api = s.audited.get();
    core::Log(core::LogLevel::kInfo, "audit.on", {{"spool", a.spool_dir}});
  } else {
    core::Log(core::LogLevel::kWarn, "audit.off", {{"reason", "no --audit-spool-dir"}});
  }
  auto& level_gauge = prometheus::BuildGauge()
                          .Name("medgrid_degradation_level")
                          .Help("The degradation level in effect (0 normal ... 5 regional outage), as in the seed")
                          .Register(s.metrics)
                          .Add({});
  s.degradation = std::make_unique<resilience::DegradationController>(
      config.degradation, s.clock, [&level_gauge](const resilience::DegradationStatus& st) {
        level_gauge.Set(static_cast<double>(st.level));
        std::string reasons;
        for (const std::string& r : st.reasons) reasons += (reasons.empty() ? "" : "; ") + r;
        core::Log(st.level == resilience::DegradationLevel::kNormal ? core::LogLevel::kInfo : core::LogLevel::kWarn,
                  "degradation.level", {{"level", std::to_string(static_cast<int>(st.level))},
                                         {"name", std::string(resilience::DegradationLevelName(st.level))},
                                         {"reasons", reasons}});
      });
  s.degradation_worker = std::make_unique<core::Worker>([&s, interval = config.degradation_interval,
                                                         after = config.shard_unreachable_rounds] {
    resilience::HealthSignals h;
    const std::vector<store::PoolStats> pools = s.store->Pools();
    h.shards_total = static_cast<int>(pools.size());
    // A ping that goes unanswered once (a saturated machine can take its
    // 2 s to accept a connection) is not an outage: a shard counts as
    // unreachable once it has missed `after` rounds in a row.
    const int reachable = s.store->ReachableShards();
    s.unreachable_rounds = reachable < h.shards_total ? s.unreachable_rounds + 1 : 0;
    h.shards_reachable = s.unreachable_rounds >= after ? reachable : h.shards_total;
    // A shard whose breaker is open refuses its primary's work like an
    // unreachable one, even if it answers a ping again.
    int breakers_open = 0;
    for (const store::PoolStats& p : pools) {
      if (p.breaker_state == static_cast<int>(resilience::BreakerState::kOpen)) ++breakers_open;
    }
    h.shards_reachable = std::min(h.shards_reachable, h.shards_total - breakers_open);
    // A shard whose lag monitor finds no writable primary is failing over
    // (level 4: read-only, reads served by its replicas).
    for (const store::ShardReplication& r : s.store->Replication()) {
      if (r.monitored && !r.primary_writable) h.db_failover = true;
    }
    if (s.consent) {
      const consent::ConsentService::Stats now = s.consent->stats();
      const uint64_t hits = (now.l1_hits - s.last_consent.l1_hits) + (now.l2_hits - s.last_consent.l2_hits);
      const uint64_t misses = (now.misses - s.last_consent.misses) + (now.failures - s.last_consent.failures);
      h.consent_hits = hits;
      h.consent_misses = misses;
      if (misses > 0) {
        h.consent_db_latency =
            std::chrono::milliseconds((now.registry_us - s.last_consent.registry_us) / misses / 1000);
      }
      h.consent_breaker_open = s.consent->breaker_state() == resilience::BreakerState::kOpen;
      s.last_consent = now;
    }
    // Measured only once something calls them (no HIE client or AI service
    // exists yet): until then both stay nullopt and leave the level alone.
    const ExternalSignal hie = SignalOf(s.External(kHieDependency));
    h.hie_availability = hie.availability;
    h.hie_latency = hie.latency_p99;
    const ExternalSignal ai = SignalOf(s.External(kAiDependency));
    h.ai_availability = ai.availability;
    h.ai_latency_p99 = ai.latency_p99;
    s.degradation->Update(h);
    return std::optional<std::chrono::milliseconds>(interval);
  });
  s.degradation_worker->Start();
  gateway::GatewayConfig gateway_config = config.gateway;
  gateway_config.authenticator = s.authenticator.get();
  gateway_config.degradation = s.degradation.get();
  if (config.tenant_rate_limit > 0) {
    resilience::TokenBucketSettings limit;
    limit.rate_per_second = config.tenant_rate_limit;
    limit.burst = config.tenant_rate_burst > 0 ? config.tenant_rate_burst : 2 * config.tenant_rate_limit;
    s.tenant_rate_limit = std::make_unique<cache::RateLimiter>(limit, s.redis, config.redis_prefix, s.clock);
    gateway_config.tenant_rate_limit = s.tenant_rate_limit.get();
  }
  if (config.service_pools.capacity > 0) {
    s.service_pools = std::make_unique<resilience::ServicePools>(config.service_pools);
    gateway_config.service_pools = s.service_pools.get();
  }
  if (s.hot_spots) gateway_config.hotspots = [hot = s.hot_spots.get()] { return hot->ToJson(); };
  s.gateway = std::make_unique<gateway::Gateway>(gateway_config, *api, *s.store, s.metrics);
  s.db_queries = std::make_unique<DbQueryMetrics>(*s.store, s.metrics);
  auto& reads_routed = prometheus::BuildCounter()
                           .Name("medgrid_db_reads_routed_total")
                           .Help("Reads (by id, versions, searches, history) by the node that served them: "
                                 "target=primary|replica")
                           .Register(s.metrics);
  auto& replica_lag = prometheus::BuildGauge()
                          .Name("medgrid_db_replica_lag_seconds")
                          .Help("How long a replica has been missing WAL its primary had, as last sampled")
                          .Register(s.metrics);
  auto& replica_lag_bytes = prometheus::BuildGauge()
                                .Name("medgrid_db_replica_lag_bytes")
                                .Help("The primary's sampled WAL position minus the replica's replay position")
                                .Register(s.metrics);
  auto& replica_up = prometheus::BuildGauge()
                         .Name("medgrid_db_replica_up")
                         .Help("1 when the replica answered the last sample and is in recovery (may serve reads)")
                         .Register(s.metrics);
  auto& primary_writable = prometheus::BuildGauge()
                               .Name("medgrid_db_primary_writable")
                               .Help("0 while a monitored shard has no writable primary (failover in progress)")
                               .Register(s.metrics);
  // The family the consent breaker reports in (same name and help, so the
  // registry hands back the one family); one series per shard primary.
  auto& breaker_state = prometheus::BuildGauge()
                            .Name("medgrid_circuit_breaker_state")
                            .Help("Circuit breaker state by dependency: 0 closed, 1 open, 2 half-open")
                            .Register(s.metrics);
  // Copies the store's replication figures and shard breaker states into
  // the metrics at each scrape.
  auto replication_metrics = [&reads_routed, &replica_lag, &replica_lag_bytes, &replica_up, &primary_writable,
                              &breaker_state, db = s.store.get()] {
    for (const store::PoolStats& p : db->Pools()) {
      breaker_state.Add({{"dependency", core::StrCat("db:", p.shard_id)}}).Set(p.breaker_state);
    }
    for (const store::ShardReplication& r : db->Replication()) {
      for (const auto& [target, n] :
           {std::pair{"primary", r.reads_primary}, std::pair{"replica", r.reads_replica}}) {
        prometheus::Counter& counter = reads_routed.Add({{"shard", r.shard_id}, {"target", target}});
        if (static_cast<double>(n) > counter.Value()) counter.Increment(static_cast<double>(n) - counter.Value());
      }
      if (r.monitored) primary_writable.Add({{"shard", r.shard_id}}).Set(r.primary_writable ? 1 : 0);
      for (const store::ReplicaStats& replica : r.replicas) {
        const std::map<std::string, std::string> labels = {{"shard", r.shard_id},
                                                           {"replica", std::to_string(replica.index)}};
        replica_lag.Add(labels).Set(replica.lag_seconds);
        replica_lag_bytes.Add(labels).Set(static_cast<double>(replica.lag_bytes));
        replica_up.Add(labels).Set(replica.reachable && replica.standby ? 1 : 0);
      }
    }
  };
  if (s.audit) {
    auto& audit_events = prometheus::BuildGauge()
                       .Name("medgrid_audit_events")
                       .Help("Audit events of this process: recorded (spooled), spool_failed (lost: the spool could "
                             "not take them), appended (delivered to the ledger, or to Kafka on its way there), append_failures (batches retried)")
                       .Register(s.metrics);
    auto& pending = prometheus::BuildGauge()
                        .Name("medgrid_audit_spool_pending_bytes")
                        .Help("Bytes of audit events spooled and not yet delivered")
                        .Register(s.metrics)
                        .Add({});
    // Admin API requests: in the ledger of the tenant they concern, or the admin ledger.
    s.gateway->SetAdminHook([audit = s.audit.get(), &clock = s.clock](const gateway::AdminAction& a) {
      audit::Interaction in;
      in.tenant = a.tenant.empty() ? audit::AuditPipeline::kAdminLedger : a.tenant;
      in.interaction = "operation";
      in.action = a.method == "GET" || a.method == "HEAD" ? 'R' : 'E';
      in.http_status = a.status;
      in.query = core::StrCat(a.method, " ", a.target);
      in.agent_address = a.client_address;
      in.recorded = clock.Now();
      audit->Record(in);
    });
    s.gateway->SetMetricsHook([&audit_events, &pending, audit = s.audit.get(), changes = s.changes.get(),
                               replication_metrics, cached = s.cached.get(), db_queries = s.db_queries.get(),
                               external = s.external_metrics.get()] {
      replication_metrics();
      external->Update();
      changes->UpdateMetrics();
      if (cached != nullptr) cached->UpdateMetrics();
      db_queries->Update();
      const audit::AuditPipeline::Stats st = audit->stats();
      audit_events.Add({{"state", "recorded"}}).Set(static_cast<double>(st.recorded));
      audit_events.Add({{"state", "spool_failed"}}).Set(static_cast<double>(st.spool_failures));
      audit_events.Add({{"state", "appended"}}).Set(static_cast<double>(st.appended));
      audit_events.Add({{"state", "append_failures"}}).Set(static_cast<double>(st.append_failures));
      pending.Set(static_cast<double>(st.pending_bytes));
    });
  } else {
    s.gateway->SetMetricsHook([changes = s.changes.get(), replication_metrics, cached = s.cached.get(),
                               db_queries = s.db_queries.get(), external = s.external_metrics.get()] {
      replication_metrics();
      external->Update();
      changes->UpdateMetrics();
      if (cached != nullptr) cached->UpdateMetrics();
      db_queries->Update();
    });
  }
  if (!config.export_dir.empty()) {
    ASSIGN_OR_RETURN(s.export_files, bulk::FileObjectStore::Open(config.export_dir));
    s.exports = std::make_unique<bulk::ExportService>(config.exports, *s.store, *s.engine, *s.registry,
                                                      *s.compartments, *s.export_files, s.clock);
    // With auth on, the gateway lets only tokens of the tenant with a
    // system/*.read scope reach $export (and its status and files).
    s.exports->SetAccess([](const std::string&, const std::string&) { return absl::OkStatus(); });
    if (s.audit) {
      s.exports->SetKickOffHook([audit = s.audit.get(), &clock = s.clock](const bulk::KickOffEvent& e) {
        audit::Interaction in;
        in.tenant = e.tenant;
        in.interaction = "operation";
        in.action = 'E';
        in.http_status = 202;
        if (e.level == "group") {
          in.type = "Group";
          in.id = e.group_id;
        } else if (e.level == "patient") {
          in.type = "Patient";
        }
        in.query = e.request_url;
        in.agent_address = core::CurrentRequest().client_address;
        in.recorded = clock.Now();
        audit->Record(in);
      });
    }
    s.gateway->SetExportHook([svc = s.exports.get()](const http::Request& req, const std::string& tenant,
                                                     const std::string& rest,
                                                     const std::vector<std::pair<std::string, std::string>>& params,
                                                     const std::string& base, std::string& route) {
      return bulk::HandleExportRequest(*svc, req, tenant, rest, params, base, route);
    });
    s.exports->Start();
  }
  gateway::Gateway* gw = s.gateway.get();
  s.server = std::make_unique<http::Server>(
      config.http, [gw](http::Request&& req, const http::Peer& peer) { return gw->Handle(std::move(req), peer); },
      [gw](int status, const std::string& msg, unsigned version) { return gw->ErrorResponse(status, msg, version); },
      [gw](http::Request& req, const http::Peer& peer, boost::asio::io_context& io,
           std::function<void(http::Response)> done) { return gw->HandleAsync(req, peer, io, std::move(done)); });
  s.server->SetAdmission([gw](const http::Request& req, const http::Peer& peer, std::shared_ptr<void>& ticket) {
    return gw->Admit(req, peer, ticket);
  });
  s.server->SetUpgradeHandler([hub = &s.subscriptions->websocket(), authn = s.authenticator.get()](
                                  http::Request& req, const http::Peer& peer, boost::asio::ip::tcp::socket& socket) {
    // With auth on, the websocket channel needs a token of the path's
    // tenant that may read Subscriptions; anything else is left to the
    // ordinary HTTP path, which answers 401/403/404.
    if (authn != nullptr && !WebsocketAllowed(*authn, req)) return false;
    return hub->TakeUpgrade(req, peer, socket);
  });
  RETURN_IF_ERROR(s.server->Start());
  core::Log(core::LogLevel::kInfo, "server.started",
            {{"address", config.http.address}, {"port", std::to_string(s.server->port())}});
  return app;
}

uint16_t App::port() const { return impl_->server ? impl_->server->port() : 0; }

audit::AuditPipeline* App::audit() const { return impl_->audit.get(); }

events::ChangeBus& App::changes() const { return impl_->changes->bus(); }

subscriptions::SubscriptionService& App::subscriptions() const { return *impl_->subscriptions; }

resilience::DegradationController& App::degradation() const { return *impl_->degradation; }

http::ExternalDependency* App::external(std::string_view name) const { return impl_->External(name); }

void App::Stop() {
  if (!impl_->server || impl_->stopped) return;
  impl_->stopped = true;
  // Deliveries stop first: the websocket connections end with the server's
  // I/O threads. What is queued stays in the shards for the next start.
  impl_->subscriptions->Stop();
  impl_->server->Stop();
  impl_->degradation_worker->Stop();
  if (impl_->hot_spots) impl_->hot_spots->Stop();
  impl_->reindexer->Stop();
  if (impl_->exports) impl_->exports->Stop();
  if (impl_->audit) {
    // What the last requests spooled goes to the ledger now if it can;
    // otherwise it waits in the spool for the next start.
    impl_->audit->Drain(std::chrono::seconds(5));
    impl_->audit->Stop();
  }
  if (impl_->audit_consumer) impl_->audit_consumer->Stop();
  impl_->changes->Stop();
  // After the change stream: its handler writes to L2.
  if (impl_->cached) impl_->cached->Stop();
  core::Log(core::LogLevel::kInfo, "server.stopped");
}

}  // namespace medgrid::app
