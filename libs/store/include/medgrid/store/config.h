// Configuration of the PostgreSQL storage layer.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "medgrid/resilience/circuit_breaker.h"
#include "medgrid/resilience/retry.h"

namespace medgrid::store {

struct StoreConfig {
  // libpq key=value DSN of the cluster's maintenance database (dbname=postgres).
  // When set, start-up creates the control database and the bootstrap shard
  // databases if they are missing (local mode). Empty: all databases exist.
  std::string admin_dsn;
  // DSN of the control database. Empty: admin_dsn with dbname=control_db.
  std::string control_dsn;
  // Name of the control database created in local mode.
  std::string control_db = "medgrid_control";
  // Shard databases created and registered in local mode (admin_dsn set),
  // each as admin_dsn with dbname=<name>. Two, so routing is always exercised.
  std::vector<std::string> bootstrap_shards = {"medgrid_shard_0", "medgrid_shard_1"};
  // Region this instance serves; tenants created here get it as home region
  // unless the request names one.
  std::string region = "local";
  // Connections per shard pool, opened lazily.
  int pool_size = 16;
  // Non-blocking connections per shard and I/O thread, for reads by id and
  // creates.
  int async_pool_size = 8;
  // The database bulkhead per tenant (the seed's 20): at most this many of
  // one tenant's requests hold or wait for a connection of one shard at
  // once, over the shard's blocking pool, its replicas' pools and the
  // non-blocking connections of every I/O thread. Work beyond it waits in
  // the tenant's own queue, so the other tenants' work does not queue
  // behind it, and after tenant_connection_wait gets 503 with Retry-After,
  // counted in medgrid_bulkhead_rejections_total{pool="db_tenant"}. The
  // tenant is the request's; background work (export, reindexing, the
  // outbox) is not capped. 0: no cap.
  int tenant_connections = 20;
  // How long work of a tenant at its cap waits for one of its places before
  // the 503 (0: refused at once). The seed gives no figure; 1 s is ours.
  // The non-blocking path waits on a timer, not blocking its thread.
  std::chrono::milliseconds tenant_connection_wait{1000};
  // How long a request waits for a free connection before 503.
  std::chrono::milliseconds acquire_timeout{5000};
  // Server-side statement_timeout for every pooled connection (with
  // pgbouncer: for every transaction, see below).
  std::chrono::milliseconds statement_timeout{30000};
  // The shard DSNs lead to PgBouncer in transaction pooling mode (or another
  // pooler that hands a server connection to another client after each
  // transaction): no statement is prepared by name (each is sent as an
  // unnamed statement with the same text, a little slower), no setting is
  // made for a whole connection (transactions run SET LOCAL
  // statement_timeout; a statement outside a transaction relies on the
  // database's own statement_timeout, e.g. ALTER DATABASE ... SET, or
  // PgBouncer's query_timeout), and the outbox relay takes its lock per
  // round in a transaction instead of per session. Migrations are safe
  // either way (one transaction under a transaction-scoped lock).
  bool pgbouncer = false;
  // How long an unknown tenant id stays remembered as unknown.
  std::chrono::milliseconds negative_tenant_ttl{2000};
  // A transaction writing at least this many versions writes its version,
  // outbox and index rows with COPY (batched inserts) instead of one
  // INSERT ... SELECT statement, which is one round trip but inserts row at
  // a time. 0: never COPY. The rows written are the same either way.
  int copy_write_min_versions = 64;
  // Streaming replicas in local mode (admin_dsn set): the DSN of the
  // maintenance database of each replica of the cluster; every bootstrap
  // shard gets them, with dbname=<shard>, as its replica DSNs (the shards
  // table's replica_dsns, which is where replicas come from otherwise).
  std::vector<std::string> replica_admin_dsns;
  // Reads go to a replica only while its replay lag is below this (the
  // seed's lag_threshold), else to the primary.
  std::chrono::milliseconds replica_max_lag{100};
  // How often each shard with replicas or a multi-host primary DSN samples
  // the primary's WAL position and the replicas' replay positions.
  std::chrono::milliseconds replica_monitor_interval{100};
  // Consecutive samples that find no writable primary before the shard
  // reports a failover in progress (the seed's health monitor: 3).
  int failover_after_samples = 3;
  // The circuit breaker of each shard primary ("db:<shard>"; the seed's
  // "db": 5 consecutive connection failures open it for 30 s, 3 probes
  // close it). Only connection failures count: the pool could not connect,
  // or a connection broke or was refused (SQLSTATE 08*, 57P01, 57P03).
  // A failure_threshold of 0 guards the pools with no breaker.
  resilience::BreakerSettings shard_breaker = resilience::ForDependency("db");
  // Reads by id, versions, searches and history that fail Unavailable on a
  // shard are tried again with resilience::DatabaseReadPolicy(), within
  // this budget per shard (the seed's: 20% more than the requests), on the
  // blocking path and the non-blocking one (on a timer); counted in
  // medgrid_db_read_retries_total{shard}.
  resilience::RetryBudgetSettings read_retry_budget;
};

// Returns the key=value DSN `dsn` with its dbname set to `dbname`.
std::string WithDbName(const std::string& dsn, const std::string& dbname);

// Whether a libpq DSN (key=value or URI) names more than one host.
bool IsMultiHost(const std::string& dsn);

// `dsn` with target_session_attrs=read-write added when it names several
// hosts and does not say which to use, so every new connection lands on the
// writable node (after a failover, the promoted one). Other DSNs are
// returned unchanged.
std::string EnsureReadWrite(const std::string& dsn);

}  // namespace medgrid::store
