// The storage layer: the control database (tenants, shards, shard map) and
// one connection pool plus ResourceStore per shard.
//
//   ASSIGN_OR_RETURN(auto store, store::Store::Open(config, clock));
//   ASSIGN_OR_RETURN(store::ResourceStore* shard, store->ForTenant("demo"));
//
// Open() applies migrations to the control database and every shard. In
// local mode (config.admin_dsn set) it first creates the databases. All
// methods are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"
#include "medgrid/store/config.h"
#include "medgrid/store/resource_store.h"

namespace medgrid::store {

struct TenantInfo {
  std::string id;
  std::string region;    // home region
  std::string shard_id;  // the one shard holding all of the tenant's data
  std::string status;    // "active" or "suspended"
  // Whether the tenant's change events (medgrid.resource.changed) carry the
  // resource body; by default they carry its key, version and operation only.
  bool events_include_body = false;
  // Whether type-level Patient/$everything (every patient's record at
  // once) is allowed; instance-level $everything always is.
  bool everything_type_level = false;
  // Consents: "opt-in" (access needs a Consent that permits it) or "opt-out"
  // (allowed unless a Consent denies it).
  std::string consent_policy = "opt-in";
  // Roles (the token's "roles") that may declare break-the-glass access.
  std::vector<std::string> btg_roles;
  core::TimePoint created_at;
};

// What a new tenant is created with.
struct TenantOptions {
  std::string region;  // empty: the server's region
  bool events_include_body = false;
  bool everything_type_level = false;
  std::string consent_policy = "opt-in";  // or "opt-out"
  std::vector<std::string> btg_roles;
};

struct ShardInfo {
  std::string id;
  std::string dsn;  // with any password removed
  int tenants = 0;
};

struct PoolStats {
  std::string shard_id;
  int size = 0;  // configured maximum
  int open = 0;  // connections currently open
  int busy = 0;  // leased to a request
  int async_open = 0;  // non-blocking connections open, over all I/O threads
  // The shard primary's circuit breaker: 0 closed, 1 open, 2 half-open.
  int breaker_state = 0;
  // The per-tenant cap (StoreConfig::tenant_connections; 0: none), the most
  // places one tenant holds on the shard now, the work waiting for a place
  // of its tenant, and the work the cap has refused.
  // Reads on the shard's primary sent again after failing Unavailable
  // (DatabaseReadPolicy within the read retry budget), both paths.
  int64_t read_retries = 0;
  int tenant_limit = 0;
  int tenant_max_in_use = 0;
  int tenant_waiting = 0;
  uint64_t tenant_rejections = 0;
  // Searches on the shard that intersect several id sets, by how their page
  // query was planned: from set sizes remembered from an earlier search, from
  // sizes counted first, and again from fresh counts because a remembered
  // size no longer held (see SetSizeCache).
  int64_t sizes_remembered = 0;
  int64_t sizes_counted = 0;
  int64_t sizes_changed = 0;
  // Statements this process sent to the shard's database, by kind, every
  // kind listed (zeros too): read, search, write, history (the
  // ResourceStore operations of that name; a conditional write or a
  // transaction Bundle counts as write), tx (BEGIN, COMMIT, ROLLBACK, SET
  // of those operations' transactions),
  // prepare (a connection preparing a statement, once per statement and
  // connection), other (reindexing, export jobs, the outbox relay,
  // subscription queues, migrations, with their transaction statements).
  // Exact: a read by id is one read.
  std::vector<std::pair<std::string, int64_t>> queries;
};

// One streaming replica of a shard, as its lag monitor last saw it.
struct ReplicaStats {
  int index = 0;           // position in the shard's replica_dsns
  std::string dsn;         // with any password removed
  bool reachable = false;  // answered the last sample
  bool standby = false;    // in recovery (a promoted replica is not)
  double lag_seconds = 0;  // see replicas.h: time it has missed WAL the primary had
  int64_t lag_bytes = 0;   // primary's last sampled WAL position minus the replay position
};

// Replication of one shard: read routing and the health of its nodes.
struct ShardReplication {
  std::string shard_id;
  // Whether a monitor samples this shard (it has replicas or a multi-host
  // primary DSN); primary_writable is only measured then.
  bool monitored = false;
  bool primary_writable = true;
  // Reads (by id, versions, searches, history) served by each target.
  int64_t reads_primary = 0;
  int64_t reads_replica = 0;
  std::vector<ReplicaStats> replicas;
};

class Store {
 public:
  virtual ~Store() = default;

  // Errors: Unavailable if the control database cannot be reached,
  // FailedPrecondition if a migration fails.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const StoreConfig& config, const core::Clock& clock);

  // The tenant record, cached after the first look-up. Errors: NotFound
  // (404) for unknown tenants, FailedPrecondition (403) for suspended ones.
  virtual absl::StatusOr<TenantInfo> Tenant(std::string_view id) = 0;
  // True when Tenant(id) would answer from memory (a known tenant, or an
  // unknown one remembered as unknown) without asking the control database.
  virtual bool TenantCached(std::string_view id) = 0;
  // The ResourceStore of the tenant's shard. Same errors as Tenant().
  virtual absl::StatusOr<ResourceStore*> ForTenant(std::string_view id) = 0;
  // Creates a tenant on the shard with the fewest tenants. Errors:
  // AlreadyExists (409), InvalidArgument (400) for a bad id.
  virtual absl::StatusOr<TenantInfo> CreateTenant(std::string_view id, const TenantOptions& options) = 0;
  virtual absl::StatusOr<std::vector<TenantInfo>> ListTenants() = 0;
  virtual absl::StatusOr<std::vector<ShardInfo>> ListShards() = 0;
  virtual std::vector<PoolStats> Pools() const = 0;
  // The ResourceStore of every known shard (for background work such as
  // reindexing). The pointers stay valid for the life of the Store.
  virtual std::vector<ResourceStore*> AllShards() = 0;
  // Number of shards whose server accepts connections right now (PQping,
  // at most 2 s each, outside the pools).
  virtual int ReachableShards() = 0;
  // Replication and read routing of every shard. From memory (the lag
  // monitors' last samples), no I/O.
  virtual std::vector<ShardReplication> Replication() const = 0;
};

}  // namespace medgrid::store
