#include "pg_resource_store.h"

#include <cstdio>
#include <ctime>
#include <map>
#include <string_view>

#include "boost/asio/steady_timer.hpp"
#include "libpq-fe.h"
#include "pg_idempotency.h"
#include "pg_index.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::store {
namespace {

constexpr int kMaxWriteAttempts = 4;

// Microseconds since the epoch, exactly, in both directions.
#define MEDGRID_US(col) "(extract(epoch from " col ") * 1000000)::bigint"
#define MEDGRID_TS(param) "('epoch'::timestamptz + " param " * interval '1 microsecond')"

// The read statements, shared by the blocking pool and the asynchronous
// read path.
constexpr const char* kReadSql =
    "SELECT v.version_id, v.deleted, " MEDGRID_US("v.last_updated") ", v.method, v.body "
    "FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id AND "
    "v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id "
    "WHERE r.tenant_id = $1 AND r.res_type = $2 AND r.res_id = $3";
constexpr const char* kVreadSql =
    "SELECT version_id, deleted, " MEDGRID_US("last_updated") ", method, body FROM resource_versions "
    "WHERE tenant_id = $1 AND res_type = $2 AND res_id = $3 AND version_id = $4";

// The outbox row of the version being written (medgrid/store/outbox.h), as
// a data-modifying CTE of the write statement: $1-$3 are the key.
std::string OutboxCte(std::string_view version, std::string_view method, std::string_view micros) {
  return core::StrCat(", ob AS (INSERT INTO outbox (tenant_id, res_type, res_id, version_id, method, changed_at) "
                      "VALUES ($1, $2, $3, ", version, ", ", method, ", ", "('epoch'::timestamptz + ", micros,
                      " * interval '1 microsecond')))");
}

// One statement writes the current pointer, the version row and the search
// index rows of a new resource: one round trip per create.
const std::string& InsertNewSql() {
  static const std::string sql = core::StrCat(
      "WITH cur AS (INSERT INTO resources (tenant_id, res_type, res_id, version_id, deleted, last_updated) "
      "VALUES ($1, $2, $3, 1, false, " MEDGRID_TS("$4") "))",
      IndexInsertCtes(6), OutboxCte("1", "'POST'", "$4"),
      " INSERT INTO resource_versions (tenant_id, res_type, res_id, version_id, method, deleted, "
      "last_updated, body) VALUES ($1, $2, $3, 1, 'POST', false, " MEDGRID_TS("$4") ", $5)");
  return sql;
}

// The next version of an existing (or deleted, or never created) resource:
// moves the pointer, adds the version and replaces the index rows.
const std::string& WriteSql() {
  static const std::string sql = core::StrCat(
      "WITH cur AS (INSERT INTO resources (tenant_id, res_type, res_id, version_id, deleted, last_updated) "
      "VALUES ($1, $2, $3, $4, false, " MEDGRID_TS("$5") ") "
      "ON CONFLICT (tenant_id, res_type, res_id) DO UPDATE SET version_id = EXCLUDED.version_id, "
      "deleted = false, last_updated = EXCLUDED.last_updated)",
      IndexDeleteCtes(), IndexInsertCtes(8), OutboxCte("$4", "$6", "$5"),
      " INSERT INTO resource_versions (tenant_id, res_type, res_id, version_id, method, deleted, "
      "last_updated, body) VALUES ($1, $2, $3, $4, $6, false, " MEDGRID_TS("$5") ", $7)");
  return sql;
}

// A deletion: a tombstone version, and the index rows go.
const std::string& TombstoneSql() {
  static const std::string sql = core::StrCat(
      "WITH cur AS (UPDATE resources SET version_id = $4, deleted = true, last_updated = " MEDGRID_TS("$5")
      " WHERE tenant_id = $1 AND res_type = $2 AND res_id = $3)",
      IndexDeleteCtes(), OutboxCte("$4", "'DELETE'", "$5"),
      " INSERT INTO resource_versions (tenant_id, res_type, res_id, version_id, method, deleted, "
      "last_updated, body) VALUES ($1, $2, $3, $4, 'DELETE', true, " MEDGRID_TS("$5") ", NULL)");
  return sql;
}

// Many versions in one statement (TransactionScope::Write): $1 is the
// tenant, $2-$9 parallel arrays of type, id, version, method, microseconds,
// body, index document and whether index rows exist to be replaced. Without
// `replace`, no version replaces index rows (all are first versions, as in
// a bulk load) and the statement has no DELETE parts, which the planner
// could otherwise run as scans of whole index tables.
std::string WriteManySql(bool replace) {
  return core::StrCat(
      "WITH k AS MATERIALIZED (SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], "
      "$7::text[], $8::jsonb[], $9::boolean[]) AS k(t, i, v, m, us, b, j, existed)), "
      "cur AS (INSERT INTO resources (tenant_id, res_type, res_id, version_id, deleted, last_updated) "
      "SELECT $1, k.t, k.i, k.v, k.m = 'DELETE', " MEDGRID_TS("k.us") " FROM k "
      "ON CONFLICT (tenant_id, res_type, res_id) DO UPDATE SET version_id = EXCLUDED.version_id, "
      "deleted = EXCLUDED.deleted, last_updated = EXCLUDED.last_updated)",
      replace ? IndexDeleteManyCtes() : std::string(), IndexInsertManyCtes(),
      ", ob AS (INSERT INTO outbox (tenant_id, res_type, res_id, version_id, method, changed_at) "
      "SELECT $1, k.t, k.i, k.v, k.m, " MEDGRID_TS("k.us") " FROM k)"
      " INSERT INTO resource_versions (tenant_id, res_type, res_id, version_id, method, deleted, last_updated, body) "
      "SELECT $1, k.t, k.i, k.v, k.m, k.m = 'DELETE', " MEDGRID_TS("k.us") ", k.b FROM k");
}

// The statement of the COPY path (TransactionScope::Write of many
// versions): moves the current pointers, replaces index rows as
// WriteManySql does, and inserts the idx_text rows, which need to_tsvector;
// the other rows follow by COPY. $1 is the tenant, $2-$9 parallel arrays of
// type, id, version, method, microseconds, _content and _text (NULL when
// the resource has no idx_text row) and whether index rows exist to be
// replaced.
std::string CopyWriteSql(bool replace) {
  return core::StrCat(
      "WITH k AS MATERIALIZED (SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], "
      "$7::text[], $8::text[], $9::boolean[]) AS k(t, i, v, m, us, c, n, existed)), "
      "cur AS (INSERT INTO resources (tenant_id, res_type, res_id, version_id, deleted, last_updated) "
      "SELECT $1, k.t, k.i, k.v, k.m = 'DELETE', " MEDGRID_TS("k.us") " FROM k "
      "ON CONFLICT (tenant_id, res_type, res_id) DO UPDATE SET version_id = EXCLUDED.version_id, "
      "deleted = EXCLUDED.deleted, last_updated = EXCLUDED.last_updated)",
      replace ? IndexDeleteManyCtes() : std::string(),
      ", m_text AS (INSERT INTO idx_text (tenant_id, res_type, res_id, content, narrative) "
      "SELECT $1, k.t, k.i, to_tsvector('simple', k.c), to_tsvector('simple', k.n) FROM k WHERE k.c IS NOT NULL) "
      "SELECT 1");
}

// A timestamptz in COPY's text form, exactly `micros` after the epoch.
std::string TimestampText(int64_t micros) {
  int64_t seconds = micros / 1'000'000;
  int64_t fraction = micros % 1'000'000;
  if (fraction < 0) {
    fraction += 1'000'000;
    --seconds;
  }
  const auto t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d.%06lld+00", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(fraction));
  return buf;
}

// The current versions of many keys of tenant $1 ($2 types, $3 ids), with
// their position in the arrays; locked or not, with bodies or not.
std::string CurrentManySql(bool lock, bool with_bodies) {
  std::string sql = core::StrCat(
      "SELECT k.n, r.version_id, r.deleted, " MEDGRID_US("r.last_updated") ", ",
      with_bodies ? "v.method, v.body" : "'PUT', NULL::text",
      " FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k(t, i, n) "
      "JOIN resources r ON r.tenant_id = $1 AND r.res_type = k.t AND r.res_id = k.i");
  if (with_bodies) {
    core::StrAppend(sql, " JOIN resource_versions v ON v.tenant_id = r.tenant_id AND v.res_type = r.res_type AND "
                         "v.res_id = r.res_id AND v.version_id = r.version_id");
  }
  // Locks in key order, whatever the order asked for, so two transactions
  // over overlapping keys cannot deadlock.
  if (lock) core::StrAppend(sql, " ORDER BY r.res_type, r.res_id FOR UPDATE OF r");
  return sql;
}

std::string PrepareAsyncStatements(void* raw, bool with_writes) {
  auto* conn = static_cast<PGconn*>(raw);
  for (const auto& [name, sql] :
       {std::pair{"read", kReadSql}, std::pair{"vread", kVreadSql}, std::pair{"insert_new", InsertNewSql().c_str()}}) {
    if (!with_writes && std::string_view(name) == "insert_new") continue;
    PGresult* r = PQprepare(conn, name, sql, 0, nullptr);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) return std::string("cannot prepare ") + name;
  }
  return "";
}

std::string PrepareAsync(void* raw) { return PrepareAsyncStatements(raw, true); }
// A replica's connections run reads only.
std::string PrepareAsyncRead(void* raw) { return PrepareAsyncStatements(raw, false); }

ResourceVersion RowToVersion(const pqxx::row& row, const ResourceKey& key) {
  ResourceVersion v;
  v.type = key.type;
  v.id = key.id;
  v.version = row[0].as<int64_t>();
  v.deleted = row[1].as<bool>();
  v.last_updated = core::FromUnixMicros(row[2].as<int64_t>());
  v.method = row[3].as<std::string>();
  if (!row[4].is_null()) v.body = row[4].as<std::string>();
  return v;
}

absl::StatusOr<ResourceVersion> TextRowToVersion(const PgRow& row, const ResourceKey& key) {
  if (row.size() != 5 || !row[0] || !row[1] || !row[2] || !row[3]) return absl::InternalError("Unexpected row shape");
  ResourceVersion v;
  v.type = key.type;
  v.id = key.id;
  v.version = std::stoll(*row[0]);
  v.deleted = *row[1] == "t";
  v.last_updated = core::FromUnixMicros(std::stoll(*row[2]));
  v.method = *row[3];
  if (row[4]) v.body = *row[4];
  return v;
}

ResourceVersion NewVersion(const ResourceKey& key, int64_t version, core::TimePoint now, std::string method,
                           std::string body) {
  ResourceVersion v;
  v.type = key.type;
  v.id = key.id;
  v.version = version;
  v.last_updated = now;
  v.deleted = method == "DELETE";
  v.method = std::move(method);
  v.body = std::move(body);
  return v;
}

absl::Status VersionNotFound(const ResourceKey& key, int64_t version) {
  return core::Error(absl::StatusCode::kNotFound,
                     core::StrCat("Version ", version, " of ", key.type, "/", key.id, " is not known"))
      .Http(404)
      .Issue("not-found");
}

absl::Status NotFound(const ResourceKey& key) {
  return core::Error(absl::StatusCode::kNotFound, core::StrCat("Resource ", key.type, "/", key.id, " is not known"))
      .Http(404)
      .Issue("not-found");
}

// A read by id (version unset) or version on `pool`.
void ReadAsyncOn(AsyncPgPool& pool, const ResourceKey& key, std::optional<int64_t> version, ReadCallback done) {
  // Also when a replica's answer sends the read on to the primary, from a
  // callback outside the caller's scope.
  QueryKindScope kind(QueryKind::kRead);
  std::vector<std::string> params = {key.tenant, key.type, key.id};
  if (version) params.push_back(std::to_string(*version));
  pool.QueryPrepared(version ? "vread" : "read", std::move(params), key.tenant,
                     [key, version, done = std::move(done)](absl::StatusOr<std::vector<PgRow>> rows, bool) {
                       if (!rows.ok()) return done(rows.status());
                       if (rows->empty()) return done(version ? VersionNotFound(key, *version) : NotFound(key));
                       done(TextRowToVersion(rows->front(), key));
                     });
}

}  // namespace

void PgResourceStore::PrepareReadStatements(pqxx::connection_base& conn) {
  conn.prepare("read", kReadSql);
  conn.prepare("vread", kVreadSql);
}

namespace {

// The statements of this store by name. Each pooled connection prepares
// them; behind PgBouncer in transaction pooling mode they go as unnamed
// statements with the same text instead (see ExecStatement).
const std::map<std::string, std::string, std::less<>>& Statements() {
  static const auto* const statements = new std::map<std::string, std::string, std::less<>>{
      {"read", kReadSql},
      {"vread", kVreadSql},
      {"lock", "SELECT version_id, deleted, " MEDGRID_US("last_updated") ", 'PUT', NULL::text "
               "FROM resources WHERE tenant_id = $1 AND res_type = $2 AND res_id = $3 FOR UPDATE"},
      {"lock_body", "SELECT r.version_id, r.deleted, " MEDGRID_US("r.last_updated") ", v.method, v.body "
                    "FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id AND "
                    "v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id "
                    "WHERE r.tenant_id = $1 AND r.res_type = $2 AND r.res_id = $3 FOR UPDATE OF r"},
      {"insert_new", InsertNewSql()},
      {"write", WriteSql()},
      {"tombstone", TombstoneSql()},
      {"write_many", WriteManySql(/*replace=*/true)},
      {"write_many_new", WriteManySql(/*replace=*/false)},
      {"copy_write", CopyWriteSql(/*replace=*/true)},
      {"copy_write_new", CopyWriteSql(/*replace=*/false)},
  };
  return *statements;
}

const std::string& StatementSql(std::string_view name) { return Statements().find(name)->second; }

// Runs statement `name` of Statements() in `tx`: by name, or with
// `unnamed` as an unnamed statement of the same text, which lives only
// until the next one on the connection and so never outlives a
// transaction (PgBouncer in transaction pooling mode hands the server
// connection to another client after it).
template <typename... Args>
pqxx::result ExecStatement(pqxx::transaction_base& tx, bool unnamed, const char* name, Args&&... args) {
  if (unnamed) return tx.exec_params(StatementSql(name), std::forward<Args>(args)...);
  return tx.exec_prepared(name, std::forward<Args>(args)...);
}

}  // namespace

void PgResourceStore::PrepareStatements(pqxx::connection_base& conn) {
  for (const auto& [name, sql] : Statements()) conn.prepare(name, sql);
}

void PgResourceStore::SetLocalTimeout(pqxx::transaction_base& tx) const {
  if (local_statement_timeout_.count() > 0) {
    tx.exec(core::StrCat("SET LOCAL statement_timeout = ", local_statement_timeout_.count()));
  }
}

template <typename Fn>
auto PgResourceStore::WithTransaction(Fn&& fn) -> decltype(fn(std::declval<pqxx::work&>())) {
  for (int attempt = 0; attempt < kMaxWriteAttempts; ++attempt) {
    auto result = WithConnection(pool_, [&](pqxx::connection_base& conn) -> decltype(fn(std::declval<pqxx::work&>())) {
      pqxx::work tx(conn);
      SetLocalTimeout(tx);
      auto r = fn(tx);
      if (r.ok()) {
        tx.commit();
      } else {
        tx.abort();
      }
      return r;
    });
    const absl::StatusCode code = result.status().code();
    if (code != absl::StatusCode::kAlreadyExists && code != absl::StatusCode::kAborted) return result;
  }
  return core::Error(absl::StatusCode::kAborted, "Concurrent writes to this resource; retry").Http(409).Issue("conflict");
}

absl::StatusOr<ResourceVersion> PgResourceStore::Read(const ResourceKey& key) {
  QueryKindScope kind(QueryKind::kRead);
  return RoutedRead(key.tenant, /*not_found_on_primary=*/true,
                    [&](pqxx::connection_base& conn) -> absl::StatusOr<ResourceVersion> {
    pqxx::nontransaction tx(conn);
    pqxx::result r = ExecStatement(tx, pgbouncer_, "read", key.tenant, key.type, key.id);
    if (r.empty()) return NotFound(key);
    return RowToVersion(r[0], key);
  });
}

void PgResourceStore::ReadAsync(const ResourceKey& key, std::optional<int64_t> version, boost::asio::io_context& io,
                                ReadCallback done) {
  QueryKindScope kind(QueryKind::kRead);
  const int r = replicas_.Pick(key.tenant);
  if (r < 0) {
    replicas_.CountRead(false);
    return ReadPrimaryAsync(key, version, io, std::move(done), nullptr);
  }
  AsyncPgPool& replica = AsyncPgPool::ForThread(
      replicas_.async_name(r), replicas_.dsn(r), async_pool_size_, pgbouncer_ ? nullptr : &PrepareAsyncRead,
      pgbouncer_ ? &StatementSql : nullptr, replicas_.async_open(r), &replicas_.pool(r).queries(), io, nullptr,
      tenants_);
  // As RoutedRead: what the replica cannot answer goes to the primary.
  ReadAsyncOn(replica, key, version, [this, key, version, r, &io, done](absl::StatusOr<ResourceVersion> v) {
    const absl::StatusCode code = v.status().code();
    if (code == absl::StatusCode::kUnavailable) replicas_.ReportFailure(r);
    if (!ReadOnPrimaryAfter(v.status(), /*not_found_on_primary=*/true)) {
      replicas_.CountRead(true);
      return done(std::move(v));
    }
    replicas_.CountRead(false);
    ReadPrimaryAsync(key, version, io, done, nullptr);
  });
}

void PgResourceStore::ReadPrimaryAsync(const ResourceKey& key, std::optional<int64_t> version,
                                       boost::asio::io_context& io, ReadCallback done,
                                       std::shared_ptr<resilience::RetryState> retry) {
  AsyncPgPool& pool =
      AsyncPgPool::ForThread(shard_, dsn_, async_pool_size_, pgbouncer_ ? nullptr : &PrepareAsync,
                             pgbouncer_ ? &StatementSql : nullptr, async_open_, &pool_.queries(), io, pool_.breaker(),
                             tenants_);
  ReadAsyncOn(pool, key, version, [this, key, version, &io, done, retry](absl::StatusOr<ResourceVersion> v) mutable {
    if (v.status().code() != absl::StatusCode::kUnavailable || PrimaryBreakerOpen()) return done(std::move(v));
    // Made at the first failure only, so the budget counts failed reads as
    // its requests: under an outage retries add at most its ratio of them.
    if (!retry) {
      retry = std::make_shared<resilience::RetryState>(resilience::DatabaseReadPolicy(), clock_, std::nullopt,
                                                       resilience::SeededRandom(retry_seed_.fetch_add(1)),
                                                       read_budget_.get());
    }
    const std::optional<std::chrono::microseconds> delay = retry->NextDelay();
    if (!delay) return done(std::move(v));
    read_retries_.fetch_add(1, std::memory_order_relaxed);
    auto timer = std::make_shared<boost::asio::steady_timer>(io, *delay);
    timer->async_wait([this, timer, key, version, &io, done, retry](const boost::system::error_code&) {
      ReadPrimaryAsync(key, version, io, done, retry);
    });
  });
}

void PgResourceStore::CreateAsync(const ResourceKey& key, const BodyFn& body_fn, boost::asio::io_context& io,
                                  ReadCallback done) {
  QueryKindScope kind(QueryKind::kWrite);
  core::TimePoint now = clock_.Now();
  absl::StatusOr<StoredBody> body = body_fn(std::nullopt, 1, now);
  if (!body.ok()) return done(body.status());
  AsyncPgPool& pool = AsyncPgPool::ForThread(shard_, dsn_, async_pool_size_, pgbouncer_ ? nullptr : &PrepareAsync,
                                             pgbouncer_ ? &StatementSql : nullptr, async_open_, &pool_.queries(), io,
                                             pool_.breaker(), tenants_);
  std::vector<std::string> params = {key.tenant, key.type, key.id, std::to_string(core::ToUnixMicros(now)),
                                     body->json, EncodeIndex(body->index)};
  ResourceVersion v = NewVersion(key, 1, now, "POST", std::move(body->json));
  pool.QueryPrepared("insert_new", std::move(params), key.tenant,
                     [this, tenant = key.tenant, caller = CurrentCaller(), v = std::move(v), done = std::move(done)](
                         absl::StatusOr<std::vector<PgRow>> rows, bool retried) mutable {
                       // The id is fresh, so on a retry a unique violation
                       // means the first attempt committed before its
                       // connection broke.
                       bool committed_before = retried && rows.status().code() == absl::StatusCode::kAlreadyExists;
                       if (!rows.ok() && !committed_before) return done(rows.status());
                       replicas_.NoteWrite(tenant, caller);
                       done(std::move(v));
                     });
}

absl::StatusOr<ResourceVersion> PgResourceStore::ReadVersion(const ResourceKey& key, int64_t version) {
  QueryKindScope kind(QueryKind::kRead);
  return RoutedRead(key.tenant, /*not_found_on_primary=*/true,
                    [&](pqxx::connection_base& conn) -> absl::StatusOr<ResourceVersion> {
    pqxx::nontransaction tx(conn);
    pqxx::result r = ExecStatement(tx, pgbouncer_, "vread", key.tenant, key.type, key.id, version);
    if (r.empty()) return VersionNotFound(key, version);
    return RowToVersion(r[0], key);
  });
}

absl::StatusOr<ResourceVersion> PgResourceStore::Create(const ResourceKey& key, const BodyFn& body_fn) {
  QueryKindScope kind(QueryKind::kWrite);
  core::TimePoint now = clock_.Now();
  ASSIGN_OR_RETURN(StoredBody body, body_fn(std::nullopt, 1, now));
  const std::string index = EncodeIndex(body.index);
  RETURN_IF_ERROR(WithConnection(pool_, [&](pqxx::connection_base& conn) {
    // A single statement commits on its own: one round trip per create.
    pqxx::nontransaction tx(conn);
    ExecStatement(tx, pgbouncer_, "insert_new", key.tenant, key.type, key.id, core::ToUnixMicros(now), body.json,
                  index);
    return absl::OkStatus();
  }));
  replicas_.NoteWrite(key.tenant, CurrentCaller());
  return NewVersion(key, 1, now, "POST", std::move(body.json));
}

absl::StatusOr<ResourceVersion> PgResourceStore::UpdateIn(pqxx::work& tx, const ResourceKey& key,
                                                          const std::string& method, const BodyFn& body_fn) {
  const bool need_body = method == "PATCH";
  pqxx::result r = ExecStatement(tx, pgbouncer_, need_body ? "lock_body" : "lock", key.tenant, key.type, key.id);
  std::optional<ResourceVersion> current;
  if (!r.empty()) current = RowToVersion(r[0], key);
  const int64_t next = current ? current->version + 1 : 1;
  core::TimePoint now = clock_.Now();
  if (current && now <= current->last_updated) {
    // Keep lastUpdated strictly increasing per resource even if clocks step back.
    now = current->last_updated + std::chrono::microseconds(1);
  }
  ASSIGN_OR_RETURN(StoredBody body, body_fn(current, next, now));
  ExecStatement(tx, pgbouncer_, "write", key.tenant, key.type, key.id, next, core::ToUnixMicros(now), method, body.json,
                   EncodeIndex(body.index));
  return NewVersion(key, next, now, method, std::move(body.json));
}

absl::StatusOr<ResourceVersion> PgResourceStore::Update(const ResourceKey& key, const std::string& method,
                                                        const BodyFn& body_fn) {
  QueryKindScope kind(QueryKind::kWrite);
  absl::StatusOr<ResourceVersion> v = WithTransaction([&](pqxx::work& tx) { return UpdateIn(tx, key, method, body_fn); });
  if (v.ok()) replicas_.NoteWrite(key.tenant, CurrentCaller());
  return v;
}

absl::StatusOr<ResourceVersion> PgResourceStore::DeleteIn(
    pqxx::work& tx, const ResourceKey& key, const std::function<absl::Status(const ResourceVersion&)>& check) {
  pqxx::result r = ExecStatement(tx, pgbouncer_, "lock", key.tenant, key.type, key.id);
  if (r.empty()) return NotFound(key);
  ResourceVersion current = RowToVersion(r[0], key);
  RETURN_IF_ERROR(check(current));
  if (current.deleted) return current;
  core::TimePoint now = clock_.Now();
  if (now <= current.last_updated) now = current.last_updated + std::chrono::microseconds(1);
  const int64_t next = current.version + 1;
  ExecStatement(tx, pgbouncer_, "tombstone", key.tenant, key.type, key.id, next, core::ToUnixMicros(now));
  return NewVersion(key, next, now, "DELETE", "");
}

absl::StatusOr<ResourceVersion> PgResourceStore::Delete(
    const ResourceKey& key, const std::function<absl::Status(const ResourceVersion&)>& check) {
  QueryKindScope kind(QueryKind::kWrite);
  absl::StatusOr<ResourceVersion> v = WithTransaction([&](pqxx::work& tx) { return DeleteIn(tx, key, check); });
  if (v.ok()) replicas_.NoteWrite(key.tenant, CurrentCaller());
  return v;
}

absl::StatusOr<std::optional<ResourceVersion>> PgResourceStore::Conditional(const std::string& tenant,
                                                                            const search::SearchRequest& match,
                                                                            const std::string& lock_key,
                                                                            const DecideFn& decide) {
  QueryKindScope kind(QueryKind::kWrite);
  absl::StatusOr<std::optional<ResourceVersion>> written =
      WithTransaction([&](pqxx::work& tx) -> absl::StatusOr<std::optional<ResourceVersion>> {
    tx.exec_params("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", core::StrCat(tenant, "\n", lock_key));
    ASSIGN_OR_RETURN(SearchPage page, RunSearch(tx, tenant, match, std::nullopt, clock_.Now(), /*one_snapshot=*/false));
    ASSIGN_OR_RETURN(std::optional<ConditionalWrite> write, decide(page.matches));
    if (!write) return std::optional<ResourceVersion>();
    if (write->method == "DELETE") {
      ASSIGN_OR_RETURN(ResourceVersion v, DeleteIn(tx, write->key, [](const ResourceVersion&) {
                         return absl::OkStatus();
                       }));
      return std::optional<ResourceVersion>(std::move(v));
    }
    ASSIGN_OR_RETURN(ResourceVersion v, UpdateIn(tx, write->key, write->method, write->body));
    return std::optional<ResourceVersion>(std::move(v));
  });
  if (written.ok() && written->has_value()) replicas_.NoteWrite(tenant, CurrentCaller());
  return written;
}

namespace {

absl::StatusOr<HistoryPage> HistoryIn(pqxx::transaction_base& tx, const std::string& tenant, const HistoryQuery& q) {
  std::vector<std::string> params = {tenant};
  std::string sql = "SELECT res_type, res_id, version_id, deleted, " MEDGRID_US("last_updated")
                    ", method, body, seq FROM resource_versions WHERE tenant_id = $1";
  auto add = [&](std::string_view clause, std::string value) {
    params.push_back(std::move(value));
    core::StrAppend(sql, " AND ", core::StrReplaceAll(clause, "?", core::StrCat("$", params.size())));
  };
  if (q.type) add("res_type = ?", *q.type);
  if (q.id) add("res_id = ?", *q.id);
  if (q.since) add(MEDGRID_TS("?::bigint") " <= last_updated", std::to_string(core::ToUnixMicros(*q.since)));
  if (q.before_seq) add("seq < ?::bigint", std::to_string(*q.before_seq));
  core::StrAppend(sql, " ORDER BY seq DESC LIMIT ", q.count + 1);
  pqxx::result r = tx.exec_params(sql, pqxx::prepare::make_dynamic_params(params));
  HistoryPage page;
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (static_cast<int>(i) == q.count) {
      page.next_cursor = r[i - 1][7].as<int64_t>();
      break;
    }
    page.entries.push_back(TypedRowToVersion(r[i]));
  }
  return page;
}

class PgTransactionScope final : public TransactionScope {
 public:
  PgTransactionScope(pqxx::work& tx, const std::string& tenant, core::TimePoint now, int copy_write_min_versions,
                     bool unnamed)
      : tx_(tx), tenant_(tenant), now_(now), copy_write_min_versions_(copy_write_min_versions), unnamed_(unnamed) {}

  core::TimePoint Now() const override { return now_; }

  absl::Status Lock(const std::string& lock_key) override {
    tx_.exec_params("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", core::StrCat(tenant_, "\n", lock_key));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::optional<ResourceVersion>>> Current(const std::vector<ResourceKey>& keys, bool lock,
                                                                      bool with_bodies) override {
    std::vector<std::optional<ResourceVersion>> out(keys.size());
    if (keys.empty()) return out;
    std::vector<std::string> types;
    std::vector<std::string> ids;
    types.reserve(keys.size());
    ids.reserve(keys.size());
    for (const ResourceKey& k : keys) {
      types.push_back(k.type);
      ids.push_back(k.id);
    }
    pqxx::result r =
        tx_.exec_params(CurrentManySql(lock, with_bodies), tenant_, TextArrayLiteral(types), TextArrayLiteral(ids));
    for (const pqxx::row& row : r) {
      const auto n = row[0].as<std::size_t>() - 1;
      ResourceVersion v;
      v.type = keys[n].type;
      v.id = keys[n].id;
      v.version = row[1].as<int64_t>();
      v.deleted = row[2].as<bool>();
      v.last_updated = core::FromUnixMicros(row[3].as<int64_t>());
      v.method = row[4].as<std::string>();
      if (!row[5].is_null()) v.body = row[5].as<std::string>();
      out[n] = std::move(v);
    }
    return out;
  }

  absl::StatusOr<ResourceVersion> ReadVersion(const ResourceKey& key, int64_t version) override {
    pqxx::result r = ExecStatement(tx_, unnamed_, "vread", tenant_, key.type, key.id, version);
    if (r.empty()) return VersionNotFound(key, version);
    return RowToVersion(r[0], key);
  }

  absl::StatusOr<SearchPage> Search(const search::SearchRequest& request,
                                    const std::optional<Compartment>& compartment) override {
    return RunSearch(tx_, tenant_, request, compartment, now_, /*one_snapshot=*/false);
  }

  absl::StatusOr<HistoryPage> History(const HistoryQuery& q) override { return HistoryIn(tx_, tenant_, q); }

  absl::Status Write(const std::vector<PendingWrite>& writes) override {
    if (writes.empty()) return absl::OkStatus();
    if (copy_write_min_versions_ > 0 && writes.size() >= static_cast<std::size_t>(copy_write_min_versions_)) {
      return CopyWrite(writes);
    }
    const std::size_t n = writes.size();
    std::vector<std::string> types, ids, versions, methods, micros;
    std::vector<std::optional<std::string>> bodies, indexes;
    std::vector<std::string> existed;
    bool replace = false;
    for (auto* v : {&types, &ids, &versions, &methods, &micros, &existed}) v->reserve(n);
    bodies.reserve(n);
    indexes.reserve(n);
    for (const PendingWrite& w : writes) {
      types.push_back(w.key.type);
      ids.push_back(w.key.id);
      versions.push_back(std::to_string(w.version));
      methods.push_back(w.method);
      micros.push_back(std::to_string(core::ToUnixMicros(w.last_updated)));
      const bool deletion = w.method == "DELETE";
      bodies.push_back(deletion ? std::nullopt : std::optional<std::string>(w.body.json));
      indexes.push_back(deletion ? std::nullopt : std::optional<std::string>(EncodeIndex(w.body.index)));
      // Version 1 has no index rows yet; later versions may.
      existed.push_back(w.version > 1 ? "t" : "f");
      replace = replace || w.version > 1;
    }
    ExecStatement(tx_, unnamed_, replace ? "write_many" : "write_many_new", tenant_, TextArrayLiteral(types),
                  TextArrayLiteral(ids), TextArrayLiteral(versions), TextArrayLiteral(methods),
                  TextArrayLiteral(micros), OptionalTextArrayLiteral(bodies), OptionalTextArrayLiteral(indexes),
                  TextArrayLiteral(existed));
    return absl::OkStatus();
  }

 private:
  // Write of many versions: the statement of CopyWriteSql, then COPY of
  // the version, outbox and index rows built here, which PostgreSQL
  // inserts into the heap in batches and without expanding JSON documents,
  // where INSERT ... SELECT goes row by row. The same rows as write_many
  // (bundle_pgtest compares them).
  absl::Status CopyWrite(const std::vector<PendingWrite>& writes) {
    const std::size_t n = writes.size();
    std::vector<std::string> types, ids, versions, methods, micros, existed;
    std::vector<std::optional<std::string>> contents, narratives;
    for (auto* v : {&types, &ids, &versions, &methods, &micros, &existed}) v->reserve(n);
    contents.reserve(n);
    narratives.reserve(n);
    bool replace = false;
    for (const PendingWrite& w : writes) {
      types.push_back(w.key.type);
      ids.push_back(w.key.id);
      versions.push_back(std::to_string(w.version));
      methods.push_back(w.method);
      micros.push_back(std::to_string(core::ToUnixMicros(w.last_updated)));
      // As EncodeIndex and IndexInsertManyCtes: a row when either text is
      // not empty.
      const search::IndexEntries& index = w.body.index;
      const bool text = w.method != "DELETE" && (!index.content.empty() || !index.narrative.empty());
      contents.push_back(text ? std::optional<std::string>(index.content) : std::nullopt);
      narratives.push_back(text ? std::optional<std::string>(index.narrative) : std::nullopt);
      existed.push_back(w.version > 1 ? "t" : "f");
      replace = replace || w.version > 1;
    }
    ExecStatement(tx_, unnamed_, replace ? "copy_write" : "copy_write_new", tenant_, TextArrayLiteral(types),
                      TextArrayLiteral(ids), TextArrayLiteral(versions), TextArrayLiteral(methods),
                      TextArrayLiteral(micros), OptionalTextArrayLiteral(contents),
                      OptionalTextArrayLiteral(narratives), TextArrayLiteral(existed));
    CopyRows rows;
    for (const PendingWrite& w : writes) {
      const std::string stamp = TimestampText(core::ToUnixMicros(w.last_updated));
      rows.Text(tenant_).Text(w.key.type).Text(w.key.id).Int(w.version).Text(w.method).Raw(stamp);
      if (w.method == "DELETE") {
        rows.Bool(true).Null().EndRow();
      } else {
        rows.Bool(false).Text(w.body.json).EndRow();
      }
    }
    rows.Copy(tx_, "resource_versions",
              {"tenant_id", "res_type", "res_id", "version_id", "method", "last_updated", "deleted", "body"});
    for (const PendingWrite& w : writes) {
      rows.Text(tenant_)
          .Text(w.key.type)
          .Text(w.key.id)
          .Int(w.version)
          .Text(w.method)
          .Raw(TimestampText(core::ToUnixMicros(w.last_updated)))
          .EndRow();
    }
    rows.Copy(tx_, "outbox", {"tenant_id", "res_type", "res_id", "version_id", "method", "changed_at"});
    CopyIndexRows(tx_, tenant_, writes);
    return absl::OkStatus();
  }

  pqxx::work& tx_;
  const std::string& tenant_;
  const core::TimePoint now_;
  const int copy_write_min_versions_;
  const bool unnamed_;  // statements as unnamed ones (ExecStatement)
};

}  // namespace

absl::Status PgResourceStore::RunTransaction(const std::string& tenant, const TransactionFn& fn) {
  QueryKindScope kind(QueryKind::kWrite);
  absl::StatusOr<bool> done = WithTransaction([&](pqxx::work& tx) -> absl::StatusOr<bool> {
    PgTransactionScope scope(tx, tenant, clock_.Now(), copy_write_min_versions_, pgbouncer_);
    RETURN_IF_ERROR(fn(scope));
    return true;
  });
  if (done.ok()) replicas_.NoteWrite(tenant, CurrentCaller());
  return done.status();
}

absl::StatusOr<IdempotentResult> PgResourceStore::RunIdempotent(const std::string& tenant, const IdempotencyKey& key,
                                                                const IdempotentFn& fn) {
  QueryKindScope kind(QueryKind::kWrite);
  absl::StatusOr<IdempotentResult> result = WithTransaction([&](pqxx::work& tx) -> absl::StatusOr<IdempotentResult> {
    const core::TimePoint now = clock_.Now();
    if (std::optional<IdempotentResult> done = ClaimIdempotencyKey(tx, tenant, key, now)) return *std::move(done);
    PgTransactionScope scope(tx, tenant, now, copy_write_min_versions_, pgbouncer_);
    ASSIGN_OR_RETURN(IdempotentResponse response, fn(scope));
    RecordIdempotencyKey(tx, tenant, key, response, now);
    return IdempotentResult{IdempotentResult::Outcome::kExecuted, std::move(response)};
  });
  // A replay wrote nothing now, but the caller's reads should still see the
  // write it stands for.
  if (result.ok()) replicas_.NoteWrite(tenant, CurrentCaller());
  return result;
}

absl::StatusOr<HistoryPage> PgResourceStore::History(const std::string& tenant, const HistoryQuery& q) {
  QueryKindScope kind(QueryKind::kHistory);
  return RoutedRead(tenant, /*not_found_on_primary=*/false, [&](pqxx::connection_base& conn) -> absl::StatusOr<HistoryPage> {
    pqxx::nontransaction tx(conn);
    return HistoryIn(tx, tenant, q);
  });
}

}  // namespace medgrid::store
