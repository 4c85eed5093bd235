#include "medgrid/store/store.h"

#include <map>
#include <mutex>
#include <regex>

#include "medgrid/core/strings.h"
#include "libpq-fe.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/store/migrations.h"
#include "medgrid/store/sql.h"
#include "pg_pool.h"
#include "pg_resource_store.h"
#include "replicas.h"

namespace medgrid::store {

std::string WithDbName(const std::string& dsn, const std::string& dbname) {
  static const std::regex kDbName(R"((^|\s)dbname\s*=\s*('[^']*'|\S+))");
  const std::string replacement = "$1dbname=" + dbname;
  if (std::regex_search(dsn, kDbName)) return std::regex_replace(dsn, kDbName, replacement);
  return core::StrCat(dsn, dsn.empty() ? "" : " ", "dbname=", dbname);
}

namespace {

std::string RedactDsn(const std::string& dsn) {
  static const std::regex kPassword(R"(password\s*=\s*('[^']*'|\S+))");
  return std::regex_replace(dsn, kPassword, "password=***");
}

absl::Status Unreachable(std::string_view what) {
  return core::Error(absl::StatusCode::kUnavailable, core::StrCat(what, " is unreachable")).Http(503).Issue("transient");
}

// Applies the pending migrations of one database in one transaction, under
// a transaction-scoped advisory lock so that concurrent start-ups apply each
// once. Nothing outlives the transaction (no session lock), so this is safe
// through PgBouncer in transaction pooling mode too; a failing migration
// leaves the database as it was.
absl::Status Migrate(pqxx::connection_base& conn, const std::vector<Migration>& all, std::string_view db) {
  try {
    pqxx::work tx(conn);
    tx.exec("SELECT pg_advisory_xact_lock(7262070)");
    tx.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())");
    std::set<int> applied;
    for (const auto& row : tx.exec("SELECT version FROM schema_migrations")) applied.insert(row[0].as<int>());
    ASSIGN_OR_RETURN(std::vector<const Migration*> pending, PlanMigrations(all, applied));
    for (const Migration* m : pending) {
      tx.exec(m->sql);
      tx.exec_params("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m->version, m->name);
    }
    tx.commit();
    for (const Migration* m : pending) {
      core::Log(core::LogLevel::kInfo, "db.migrated",
                {{"database", db}, {"version", std::to_string(m->version)}, {"name", m->name}});
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(core::StrCat("Migrating ", db, " failed: ", e.what()));
  }
}

struct Shard {
  std::string id;
  std::string dsn;  // the primary's, with target_session_attrs=read-write when it names several hosts
  // Before the pools and `store`, which it caps; null without a cap.
  std::unique_ptr<TenantConnections> tenants;
  // Before `pool`, which it guards.
  std::unique_ptr<ShardBreaker> breaker;
  std::unique_ptr<PgPool> pool;
  // Before `store`, which routes its reads through it.
  std::unique_ptr<ReplicaRouter> router;
  std::unique_ptr<PgResourceStore> store;
};

class PgStore final : public Store {
 public:
  PgStore(const StoreConfig& config, const core::Clock& clock) : config_(config), clock_(clock) {}

  absl::Status Init();

  absl::StatusOr<TenantInfo> Tenant(std::string_view id) override;
  bool TenantCached(std::string_view id) override;
  absl::StatusOr<ResourceStore*> ForTenant(std::string_view id) override;
  absl::StatusOr<TenantInfo> CreateTenant(std::string_view id, const TenantOptions& options) override;
  absl::StatusOr<std::vector<TenantInfo>> ListTenants() override;
  absl::StatusOr<std::vector<ShardInfo>> ListShards() override;
  std::vector<PoolStats> Pools() const override;
  std::vector<ResourceStore*> AllShards() override;
  int ReachableShards() override;
  std::vector<ShardReplication> Replication() const override;

 private:
  absl::Status LoadShards(pqxx::connection_base& conn);
  static TenantInfo RowToTenant(const pqxx::row& row);

  const StoreConfig config_;
  const core::Clock& clock_;
  std::unique_ptr<PgPool> control_;

  mutable std::mutex mu_;
  std::map<std::string, Shard> shards_;                                  // guarded by mu_; never erased
  std::map<std::string, TenantInfo, std::less<>> tenants_;               // guarded by mu_
  std::map<std::string, core::TimePoint, std::less<>> unknown_tenants_;  // guarded by mu_
};

}  // namespace

absl::Status MigrateDatabase(const std::string& dsn, const std::vector<Migration>& all, std::string_view name) {
  try {
    pqxx::connection conn(dsn);
    return Migrate(conn, all, name);
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("Cannot connect to ", name, ": ", e.what()));
  }
}

namespace {

absl::Status CreateDatabaseIfMissing(pqxx::connection_base& admin, const std::string& name);

}  // namespace

absl::Status CreateDatabase(const std::string& admin_dsn, const std::string& name) {
  try {
    pqxx::connection admin(admin_dsn);
    return CreateDatabaseIfMissing(admin, name);
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("Cannot create database ", name, ": ", e.what()));
  }
}

namespace {

absl::Status CreateDatabaseIfMissing(pqxx::connection_base& admin, const std::string& name) {
  pqxx::nontransaction tx(admin);
  if (tx.exec_params("SELECT 1 FROM pg_database WHERE datname = $1", name).empty()) {
    try {
      tx.exec("CREATE DATABASE " + tx.quote_name(name));
      core::Log(core::LogLevel::kInfo, "db.created", {{"database", name}});
    } catch (const pqxx::sql_error& e) {
      // Another instance created it between our check and CREATE.
      if (e.sqlstate() != "42P04") throw;
    }
  }
  return absl::OkStatus();
}

absl::Status PgStore::Init() {
  std::string control_dsn = EnsureReadWrite(config_.control_dsn);
  try {
    if (!config_.admin_dsn.empty()) {
      pqxx::connection admin(EnsureReadWrite(config_.admin_dsn));
      RETURN_IF_ERROR(CreateDatabaseIfMissing(admin, config_.control_db));
      for (const std::string& shard : config_.bootstrap_shards) RETURN_IF_ERROR(CreateDatabaseIfMissing(admin, shard));
      if (control_dsn.empty()) control_dsn = EnsureReadWrite(WithDbName(config_.admin_dsn, config_.control_db));
    }
    if (control_dsn.empty()) return absl::InvalidArgumentError("No control database DSN configured");
    control_ = std::make_unique<PgPool>("control", control_dsn, 4, config_.acquire_timeout, nullptr);
    ASSIGN_OR_RETURN(PgPool::Lease lease, control_->Acquire());
    RETURN_IF_ERROR(Migrate(lease.conn(), ControlMigrations(), "control"));
    if (!config_.admin_dsn.empty()) {
      pqxx::work tx(lease.conn());
      for (const std::string& shard : config_.bootstrap_shards) {
        // In local mode the admin DSN is the truth about where the cluster
        // is (its port may change between runs), so refresh the DSN too;
        // likewise the replicas' DSNs.
        std::vector<std::string> replicas;
        for (const std::string& r : config_.replica_admin_dsns) replicas.push_back(WithDbName(r, shard));
        tx.exec_params(
            "INSERT INTO shards (shard_id, primary_dsn, replica_dsns) VALUES ($1, $2, $3::text[]) "
            "ON CONFLICT (shard_id) DO UPDATE SET primary_dsn = EXCLUDED.primary_dsn, "
            "replica_dsns = EXCLUDED.replica_dsns",
            shard, WithDbName(config_.admin_dsn, shard), TextArrayLiteral(replicas));
      }
      tx.commit();
    }
    RETURN_IF_ERROR(LoadShards(lease.conn()));
  } catch (const pqxx::broken_connection&) {
    return Unreachable("The control database");
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(core::StrCat("Storage start-up failed: ", e.what()));
  }
  std::lock_guard lock(mu_);
  for (auto& [id, shard] : shards_) {
    try {
      std::unique_ptr<ShardConnection> conn = OpenShardConnection(shard.dsn, &shard.pool->queries());
      RETURN_IF_ERROR(Migrate(*conn, ShardMigrations(), id));
    } catch (const pqxx::broken_connection&) {
      // A shard that is down at start-up is migrated by whichever instance
      // reaches it; requests for its tenants answer 503 meanwhile.
      core::Log(core::LogLevel::kWarn, "db.shard_unreachable", {{"shard", id}});
    }
  }
  return absl::OkStatus();
}

absl::Status PgStore::LoadShards(pqxx::connection_base& conn) {
  pqxx::nontransaction tx(conn);
  std::lock_guard lock(mu_);
  for (const auto& row : tx.exec("SELECT shard_id, primary_dsn, replica_dsns FROM shards ORDER BY shard_id")) {
    std::string id = row[0].as<std::string>();
    if (shards_.contains(id)) continue;
    Shard s;
    s.id = id;
    s.dsn = EnsureReadWrite(row[1].as<std::string>());
    // Behind PgBouncer a connection's startup options would be refused (and
    // its settings would follow the server connection to other clients):
    // transactions set the timeout themselves with SET LOCAL.
    auto with_timeout = [&](std::string dsn) {
      if (config_.statement_timeout.count() > 0 && !config_.pgbouncer) {
        core::StrAppend(dsn, " options='-c statement_timeout=", config_.statement_timeout.count(), "'");
      }
      return dsn;
    };
    const std::string dsn = with_timeout(s.dsn);
    std::vector<std::string> replicas;
    auto array = row[2].as_array();
    for (auto item = array.get_next(); item.first != pqxx::array_parser::juncture::done; item = array.get_next()) {
      if (item.first == pqxx::array_parser::juncture::string_value) replicas.push_back(with_timeout(item.second));
    }
    if (config_.tenant_connections > 0) {
      s.tenants = std::make_unique<TenantConnections>(id, config_.tenant_connections, config_.tenant_connection_wait);
    }
    s.breaker = std::make_unique<ShardBreaker>(id, config_.shard_breaker, clock_);
    s.pool = std::make_unique<PgPool>(id, dsn, config_.pool_size, config_.acquire_timeout,
                                      config_.pgbouncer ? nullptr : &PgResourceStore::PrepareStatements,
                                      config_.shard_breaker.failure_threshold > 0 ? s.breaker.get() : nullptr,
                                      s.tenants.get());
    s.router = std::make_unique<ReplicaRouter>(id, s.dsn, std::move(replicas), config_, clock_,
                                               config_.pgbouncer ? nullptr : &PgResourceStore::PrepareReadStatements,
                                               s.tenants.get());
    s.store = std::make_unique<PgResourceStore>(
        *s.pool, id, dsn, config_.async_pool_size, config_.copy_write_min_versions, clock_, *s.router,
        config_.pgbouncer, config_.pgbouncer ? config_.statement_timeout : std::chrono::milliseconds(0),
        config_.read_retry_budget, s.tenants.get());
    // The monitor reaching a writable primary through the shard's DSN (the
    // promoted node, after a failover) ends the breaker's open time early:
    // requests probe the primary at once instead of being refused for the
    // rest of it.
    s.router->SetOnPrimaryAnswered([breaker = s.breaker.get()] {
      if (breaker->breaker().state() == resilience::BreakerState::kOpen) breaker->breaker().ProbeNow();
    });
    s.router->Start();
    shards_.emplace(id, std::move(s));
  }
  return absl::OkStatus();
}

TenantInfo PgStore::RowToTenant(const pqxx::row& row) {
  TenantInfo t;
  t.id = row[0].as<std::string>();
  t.region = row[1].as<std::string>();
  t.shard_id = row[2].as<std::string>();
  t.status = row[3].as<std::string>();
  t.created_at = core::FromUnixMicros(row[4].as<int64_t>());
  t.events_include_body = row[5].as<bool>();
  t.everything_type_level = row[6].as<bool>();
  t.consent_policy = row[7].as<std::string>();
  t.btg_roles.clear();
  auto roles = row[8].as_array();
  for (auto item = roles.get_next(); item.first != pqxx::array_parser::juncture::done; item = roles.get_next()) {
    if (item.first == pqxx::array_parser::juncture::string_value) t.btg_roles.push_back(item.second);
  }
  return t;
}

constexpr const char* kTenantColumns =
    "tenant_id, region, shard_id, status, (extract(epoch from created_at) * 1000000)::bigint, events_include_body, "
    "everything_type_level, consent_policy, btg_roles";

absl::StatusOr<TenantInfo> PgStore::Tenant(std::string_view id) {
  {
    std::lock_guard lock(mu_);
    if (auto it = tenants_.find(id); it != tenants_.end()) return it->second;
    if (auto it = unknown_tenants_.find(id); it != unknown_tenants_.end()) {
      if (clock_.Now() - it->second < config_.negative_tenant_ttl) {
        return core::Error(absl::StatusCode::kNotFound, core::StrCat("Unknown tenant '", id, "'"))
            .Http(404)
            .Issue("not-found");
      }
      unknown_tenants_.erase(it);
    }
  }
  return WithConnection(*control_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<TenantInfo> {
    pqxx::nontransaction tx(conn);
    pqxx::result r = tx.exec_params(
        core::StrCat("SELECT ", kTenantColumns, " FROM tenants WHERE tenant_id = $1"), std::string(id));
    if (r.empty()) {
      std::lock_guard lock(mu_);
      if (unknown_tenants_.size() > 10000) unknown_tenants_.clear();  // bound memory under id probing
      unknown_tenants_[std::string(id)] = clock_.Now();
      return core::Error(absl::StatusCode::kNotFound, core::StrCat("Unknown tenant '", id, "'"))
          .Http(404)
          .Issue("not-found");
    }
    TenantInfo t = RowToTenant(r[0]);
    bool shard_known;
    {
      std::lock_guard lock(mu_);
      shard_known = shards_.contains(t.shard_id);
    }
    // A shard registered by another instance after we started.
    if (!shard_known) RETURN_IF_ERROR(LoadShards(conn));
    std::lock_guard lock(mu_);
    tenants_[t.id] = t;
    return t;
  });
}

bool PgStore::TenantCached(std::string_view id) {
  std::lock_guard lock(mu_);
  if (tenants_.find(id) != tenants_.end()) return true;
  auto it = unknown_tenants_.find(id);
  return it != unknown_tenants_.end() && clock_.Now() - it->second < config_.negative_tenant_ttl;
}

absl::StatusOr<ResourceStore*> PgStore::ForTenant(std::string_view id) {
  ASSIGN_OR_RETURN(TenantInfo t, Tenant(id));
  if (t.status != "active") {
    return core::Error(absl::StatusCode::kFailedPrecondition, core::StrCat("Tenant '", id, "' is suspended"))
        .Http(403)
        .Issue("suspended");
  }
  std::lock_guard lock(mu_);
  auto it = shards_.find(t.shard_id);
  if (it == shards_.end()) return Unreachable(core::StrCat("Shard ", t.shard_id));
  return it->second.store.get();
}

absl::StatusOr<TenantInfo> PgStore::CreateTenant(std::string_view id, const TenantOptions& options) {
  return WithConnection(*control_, [&](pqxx::connection_base& conn) -> absl::StatusOr<TenantInfo> {
    pqxx::work tx(conn);
    // Serialize placement so two concurrent creations balance correctly.
    tx.exec("LOCK TABLE tenants IN SHARE ROW EXCLUSIVE MODE");
    if (!tx.exec_params("SELECT 1 FROM tenants WHERE tenant_id = $1", std::string(id)).empty()) {
      return core::Error(absl::StatusCode::kAlreadyExists, core::StrCat("Tenant '", id, "' already exists"))
          .Http(409)
          .Issue("duplicate");
    }
    pqxx::result pick = tx.exec(
        "SELECT s.shard_id FROM shards s LEFT JOIN tenants t ON t.shard_id = s.shard_id "
        "WHERE s.accepting GROUP BY s.shard_id ORDER BY count(t.tenant_id), s.shard_id LIMIT 1");
    if (pick.empty()) {
      return core::Error(absl::StatusCode::kFailedPrecondition, "No shard accepts new tenants").Http(503);
    }
    pqxx::result r = tx.exec_params(
        core::StrCat("INSERT INTO tenants (tenant_id, region, shard_id, events_include_body, everything_type_level, "
                     "consent_policy, btg_roles) VALUES ($1, $2, $3, $4, $5, $6, $7::text[]) "
                     "RETURNING ",
                     kTenantColumns),
        std::string(id), options.region.empty() ? config_.region : options.region, pick[0][0].as<std::string>(),
        options.events_include_body, options.everything_type_level, options.consent_policy,
        TextArrayLiteral(options.btg_roles));
    tx.exec("UPDATE shard_map SET version = version + 1");
    tx.commit();
    TenantInfo t = RowToTenant(r[0]);
    std::lock_guard lock(mu_);
    unknown_tenants_.erase(t.id);
    tenants_[t.id] = t;
    core::Log(core::LogLevel::kInfo, "tenant.created", {{"tenant", t.id}, {"shard", t.shard_id}, {"region", t.region}});
    return t;
  });
}

absl::StatusOr<std::vector<TenantInfo>> PgStore::ListTenants() {
  return WithConnection(*control_, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::vector<TenantInfo>> {
    pqxx::nontransaction tx(conn);
    std::vector<TenantInfo> out;
    for (const auto& row : tx.exec(core::StrCat("SELECT ", kTenantColumns, " FROM tenants ORDER BY tenant_id"))) {
      out.push_back(RowToTenant(row));
    }
    return out;
  });
}

absl::StatusOr<std::vector<ShardInfo>> PgStore::ListShards() {
  return WithConnection(*control_, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::vector<ShardInfo>> {
    pqxx::nontransaction tx(conn);
    std::vector<ShardInfo> out;
    for (const auto& row : tx.exec(
             "SELECT s.shard_id, s.primary_dsn, count(t.tenant_id) FROM shards s "
             "LEFT JOIN tenants t ON t.shard_id = s.shard_id GROUP BY s.shard_id, s.primary_dsn ORDER BY s.shard_id")) {
      out.push_back({row[0].as<std::string>(), RedactDsn(row[1].as<std::string>()), row[2].as<int>()});
    }
    return out;
  });
}

std::vector<ResourceStore*> PgStore::AllShards() {
  std::lock_guard lock(mu_);
  std::vector<ResourceStore*> out;
  for (auto& [id, shard] : shards_) out.push_back(shard.store.get());
  return out;
}

std::vector<PoolStats> PgStore::Pools() const {
  std::lock_guard lock(mu_);
  std::vector<PoolStats> out;
  for (const auto& [id, shard] : shards_) {
    PoolStats& p = out.emplace_back();
    p.shard_id = id;
    p.size = shard.pool->size();
    p.open = shard.pool->open();
    p.busy = shard.pool->busy();
    p.async_open = shard.store->async_open();
    p.breaker_state = static_cast<int>(shard.breaker->breaker().state());
    if (shard.tenants) {
      p.tenant_limit = shard.tenants->slots().limit();
      p.tenant_max_in_use = shard.tenants->slots().MaxInUse();
      p.tenant_waiting = shard.tenants->slots().TotalWaiting();
      p.tenant_rejections = shard.tenants->slots().rejections();
    }
    p.queries = shard.pool->queries().Snapshot();
    shard.store->AddSearchStats(p);
  }
  return out;
}

int PgStore::ReachableShards() {
  std::vector<std::string> dsns;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, shard] : shards_) dsns.push_back(shard.dsn);
  }
  // PQping asks the server whether it accepts connections, outside the
  // pools: a busy pool must not make a loaded instance look unready, and a
  // probe must answer within its own short timeout.
  int reachable = 0;
  for (const std::string& dsn : dsns) {
    if (PQping(core::StrCat(dsn, " connect_timeout=2").c_str()) == PQPING_OK) ++reachable;
  }
  return reachable;
}

std::vector<ShardReplication> PgStore::Replication() const {
  std::lock_guard lock(mu_);
  std::vector<ShardReplication> out;
  for (const auto& [id, shard] : shards_) {
    ShardReplication& r = out.emplace_back(shard.router->Stats());
    for (ReplicaStats& replica : r.replicas) replica.dsn = RedactDsn(replica.dsn);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const StoreConfig& config, const core::Clock& clock) {
  auto store = std::make_unique<PgStore>(config, clock);
  RETURN_IF_ERROR(store->Init());
  return store;
}

}  // namespace medgrid::store
