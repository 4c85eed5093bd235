// The all-in-one medgrid process: storage, FHIR engine, gateway and HTTP
// server wired in-process. main.cc and the integration tests both use it, so
// tests exercise exactly the code paths the binary runs.
//
//   ASSIGN_OR_RETURN(app::AppConfig config, app::ParseFlags(argc, argv));
//   ASSIGN_OR_RETURN(std::unique_ptr<app::App> app, app::App::Start(config));
//   ... app->port() ...
//   app->Stop();
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/auth/principal.h"
#include "medgrid/bulk/export_service.h"
#include "medgrid/consent/break_glass.h"
#include "medgrid/resilience/circuit_breaker.h"
#include "medgrid/resilience/bulkhead.h"
#include "medgrid/resilience/degradation.h"
#include "medgrid/core/logging.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/engine/reindexer.h"
#include "medgrid/events/change.h"
#include "medgrid/events/kafka.h"
#include "medgrid/gateway/gateway.h"
#include "medgrid/http/external.h"
#include "medgrid/http/server.h"
#include "medgrid/resource_cache/caching_api.h"
#include "medgrid/resource_cache/hot_spots.h"
#include "medgrid/store/config.h"
#include "medgrid/subscriptions/service.h"

namespace medgrid::audit {
class AuditPipeline;
}

namespace medgrid::app {

// The audit trail: every FHIR interaction becomes an AuditEvent in a local
// spool, and a thread moves them into each tenant's ledger.
struct AuditConfig {
  // The spool directory. Empty: interactions are not audited.
  std::string spool_dir;
  // The ledger database. Empty: in local mode, medgrid_audit through the
  // admin DSN (created when missing).
  std::string dsn;
  // The Ed25519 key that signs tree heads (PEM); created when missing.
  // Empty: <spool_dir>/ledger-signing-key.pem.
  std::string key_file;
  uint64_t spool_max_bytes = uint64_t{1} << 30;
  // With Kafka: whether this process also runs the audit consumer (Kafka
  // into the ledger), or leaves that to medgrid-audit processes.
  bool consume = true;
};

// The external dependencies this process calls out to, by name (metrics
// label `dependency`, logs, errors).
inline constexpr std::string_view kJwksDependency = "jwks";           // the identity provider's key set
inline constexpr std::string_view kBtgWebhookDependency = "btg_webhook";  // break-the-glass notices
// Declared for an HIE client and an AI service to call through; nothing
// calls them yet. Their health feeds the degradation levels 2 and 1.
inline constexpr std::string_view kHieDependency = "external_hie";
inline constexpr std::string_view kAiDependency = "ai";

// The four above with their defaults (ExternalDependencySettings::For: the
// seed's external API retry policy, a retry budget, the breaker of
// resilience::ForDependency, a 60 s health window).
std::vector<http::ExternalDependencySettings> DefaultExternalDependencies();

// SMART on FHIR auth, consent and break-the-glass. Off in a default
// AppConfig (embedding, most tests); ParseFlags turns it on unless
// --auth=off.
struct SecurityConfig {
  bool enabled = false;
  auth::AuthConfig auth;
  // The consent registry database. Empty: in local mode, medgrid_consent
  // through the admin DSN (created when missing).
  std::string consent_dsn;
  std::chrono::milliseconds consent_deadline{250};
  // The seed's consent breaker: 5 failures open it for 30 s, 3 probes close it.
  resilience::BreakerSettings consent_breaker = resilience::ForDependency("consent");
  // How long the consent cache skips Redis after a Redis error.
  std::chrono::milliseconds consent_redis_backoff{1000};
  consent::BreakGlassConfig break_glass;
};

struct AppConfig {
  http::ServerConfig http;
  SecurityConfig security;
  // Redis ("host:port"): the consent decision cache's L2, break-the-glass
  // grants shared between instances. Empty: no Redis.
  std::string redis;
  // Prefix of every Redis key and channel of this deployment.
  std::string redis_prefix = "mg";
  // Degradation levels: the seed's rules, and how often the signals are
  // sampled (consent lookups and registry latency, shards reachable).
  resilience::DegradationRules degradation;
  // Requests per second per tenant, shared by the instances on one Redis;
  // 0: no limit. The burst defaults to twice the rate.
  double tenant_rate_limit = 0;
  double tenant_rate_burst = 0;
  std::chrono::milliseconds degradation_interval{2000};
  // Rounds of the degradation worker in a row in which a shard does not
  // answer its ping before it counts as unreachable (level 4, read-only).
  // Ours, as the seed's health monitor: 3. A shard whose breaker is open
  // counts at once.
  int shard_unreachable_rounds = 3;
  // Service bulkheads: the seed's critical/standard/ai pools (60/30/10% of
  // capacity); standard and ai work is shed first. capacity 0: off.
  resilience::ServicePoolSettings service_pools;
  // The FHIR read cache between access control and the engine: L1 in
  // process, L2 in Redis (with --redis), write-through, invalidated by the
  // change stream and Redis pub/sub. Off: reads go to the database, and
  // hot spots are not tracked.
  bool cache_enabled = true;
  resource_cache::CacheConfig cache;
  // Hot-spot detection, request coalescing and per-patient limits (with the
  // cache).
  resource_cache::HotSpotsConfig hot_spots;
  AuditConfig audit;
  // Kafka. Without brokers (local mode), committed changes go from the
  // outbox to in-process consumers, and audit events from the spool straight
  // into the ledger. With brokers, both go through Kafka, and this process
  // consumes them: changes for its own consumers, audit events into the
  // ledger (the audit service's part).
  events::KafkaConfig kafka;
  // Names this instance: its consumer of the change topic commits its
  // offsets as group medgrid-changes-<instance_id> (for operators' lag
  // tools; it starts from its own start time). Empty: the host name.
  std::string instance_id;
  store::StoreConfig store;
  gateway::GatewayConfig gateway;
  engine::ReindexerConfig reindex;
  engine::EngineOptions engine;
  // Subscriptions: retries, backoff, timeouts of their deliveries.
  subscriptions::SubscriptionConfig subscriptions;
  // Bulk data $export: where its files go (a FileObjectStore root). Empty:
  // $export is off (404). ParseFlags fills it: --export-dir, else
  // $MEDGRID_HOME/exports, else ./medgrid-exports.
  std::string export_dir;
  bulk::ExportConfig exports;
  // Outbound calls to external dependencies: one entry per dependency, each
  // with its retries, budget, breaker and health window. A caller whose
  // dependency is not listed calls with a single attempt.
  std::vector<http::ExternalDependencySettings> external = DefaultExternalDependencies();
  // The `package/` folder of the npm package hl7.fhir.r4.examples 4.0.1,
  // from which the type registry is loaded. Required.
  std::string fhir_package_dir;
  core::LogLevel log_level = core::LogLevel::kInfo;
};

// Parses --name=value flags (see `medgrid --help`). Unknown flags and bad
// values are errors (InvalidArgument) naming the flag.
absl::StatusOr<AppConfig> ParseFlags(const std::vector<std::string>& args);
std::string FlagsHelp();

class App {
 public:
  // Loads the registry, opens storage (creating databases in local mode),
  // and starts serving. Errors: whatever stops start-up, e.g. Unavailable
  // when PostgreSQL cannot be reached.
  static absl::StatusOr<std::unique_ptr<App>> Start(const AppConfig& config);
  ~App();

  uint16_t port() const;
  // The audit pipeline, or null when auditing is off (for operations and
  // tests: draining it, stopping and starting its consumer).
  audit::AuditPipeline* audit() const;
  // Where committed changes arrive in this process: register consumers here
  // (before writes they must see).
  events::ChangeBus& changes() const;
  // The degradation controller of this process (for operations and tests).
  resilience::DegradationController& degradation() const;
  // The Subscriptions of this process (for operations and tests).
  subscriptions::SubscriptionService& subscriptions() const;
  // The external dependency `name` (see kJwksDependency ...), for the
  // clients that call it and for tests; null when AppConfig::external does
  // not list it. Thread-safe.
  http::ExternalDependency* external(std::string_view name) const;
  // Graceful: drains in-flight requests, then releases everything. Idempotent.
  void Stop();

 private:
  App();
  struct Impl;
  static absl::Status StartSecurity(const AppConfig& config, Impl& impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::app
