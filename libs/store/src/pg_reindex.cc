// Online reindexing (see ReindexJob in resource_store.h). A job walks the
// tenant's live resources in (res_type, res_id) order, a batch per
// transaction; each batch locks its resources' current-version rows, so a
// concurrent write either lands before the batch reads the body (and is
// indexed from it) or waits and then writes its own index rows.
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "pg_index.h"
#include "pg_resource_store.h"

namespace medgrid::store {
namespace {

#define MEDGRID_US(col) "(extract(epoch from " col ") * 1000000)::bigint"

constexpr const char* kJobColumns =
    "tenant_id, job_id, types, status, processed, total, " MEDGRID_US("created_at") ", " MEDGRID_US(
        "updated_at") ", " MEDGRID_US("finished_at") ", error, cursor_type, cursor_id";

std::vector<std::string> ParseTextArray(std::string_view text) {
  // PostgreSQL's text form of text[] as libpqxx returns it: {a,b,"c d"}.
  std::vector<std::string> out;
  if (text.size() < 2) return out;
  text = text.substr(1, text.size() - 2);
  std::string cur;
  bool quoted = false;
  bool any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '\\' && i + 1 < text.size()) {
        cur += text[++i];
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      out.push_back(std::move(cur));
      cur.clear();
      any = false;
    } else {
      cur += c;
      any = true;
    }
  }
  if (any || !cur.empty()) out.push_back(std::move(cur));
  return out;
}

struct JobRow {
  ReindexJob job;
  std::string cursor_type;
  std::string cursor_id;
};

JobRow RowToJob(const pqxx::row& row) {
  JobRow j;
  j.job.tenant = row[0].as<std::string>();
  j.job.id = row[1].as<int64_t>();
  j.job.types = ParseTextArray(row[2].as<std::string>());
  j.job.status = row[3].as<std::string>();
  j.job.processed = row[4].as<int64_t>();
  j.job.total = row[5].as<int64_t>();
  j.job.created = core::FromUnixMicros(row[6].as<int64_t>());
  j.job.updated = core::FromUnixMicros(row[7].as<int64_t>());
  if (!row[8].is_null()) j.job.finished = core::FromUnixMicros(row[8].as<int64_t>());
  j.job.error = row[9].as<std::string>();
  j.cursor_type = row[10].as<std::string>();
  j.cursor_id = row[11].as<std::string>();
  return j;
}

// Replaces the index rows of one resource ($1 tenant, $2 type, $3 id) with
// the document in $4.
const std::string& ReplaceIndexSql() {
  static const std::string sql =
      core::StrCat("WITH start AS (SELECT 1)", IndexDeleteCtes(), IndexInsertCtes(4), " SELECT 1");
  return sql;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> PgResourceStore::RefreshStatistics() {
  return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::vector<std::string>> {
    pqxx::nontransaction tx(conn);
    pqxx::result stale = tx.exec(
        "SELECT relname FROM pg_stat_user_tables WHERE relname IN ('resources', 'idx_string', 'idx_token', "
        "'idx_date', 'idx_reference', 'idx_quantity', 'idx_uri') AND n_mod_since_analyze > 1000 "
        "AND n_mod_since_analyze > 0.2 * greatest(n_live_tup, 1)");
    std::vector<std::string> analyzed;
    for (const pqxx::row& row : stale) {
      const std::string table = row[0].as<std::string>();
      tx.exec("ANALYZE " + tx.quote_name(table));
      analyzed.push_back(table);
    }
    // Fold the count deltas written since the last time into the counts,
    // in batches of one transaction each. Two instances folding at once do
    // not count a row twice: the second DELETE waits for the first and then
    // skips the rows it removed.
    for (int i = 0; i < 20; ++i) {
      pqxx::result folded = tx.exec(
          "WITH d AS (DELETE FROM idx_token_count_delta WHERE ctid = ANY(ARRAY(SELECT ctid FROM "
          "idx_token_count_delta LIMIT 50000)) RETURNING *), s AS (SELECT tenant_id, res_type, param, code, "
          "by_system, system, sum(n) AS n, count(*) AS rows FROM d GROUP BY 1, 2, 3, 4, 5, 6), "
          "u AS (INSERT INTO idx_token_count AS c (tenant_id, res_type, param, code, by_system, system, n) "
          "SELECT tenant_id, res_type, param, code, by_system, system, n FROM s WHERE n <> 0 "
          "ON CONFLICT (tenant_id, res_type, param, code, by_system, system) DO UPDATE SET n = c.n + EXCLUDED.n) "
          "SELECT coalesce(sum(rows), 0) FROM s");
      if (folded[0][0].as<int64_t>() < 50000) break;
    }
    return analyzed;
  });
}

absl::StatusOr<ReindexJob> PgResourceStore::StartReindex(const std::string& tenant,
                                                         const std::vector<std::string>& types) {
  return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::StatusOr<ReindexJob> {
    pqxx::work tx(conn);
    const std::string array = TextArrayLiteral(types);
    pqxx::result count = tx.exec_params(
        "SELECT count(*) FROM resources WHERE tenant_id = $1 AND NOT deleted AND "
        "(cardinality($2::text[]) = 0 OR res_type = ANY($2::text[]))",
        tenant, array);
    pqxx::result r = tx.exec_params(
        core::StrCat("INSERT INTO reindex_jobs (tenant_id, types, status, total, created_at, updated_at) "
                     "VALUES ($1, $2::text[], 'running', $3, now(), now()) RETURNING ",
                     kJobColumns),
        tenant, array, count[0][0].as<int64_t>());
    tx.commit();
    return RowToJob(r[0]).job;
  });
}

absl::StatusOr<std::vector<ReindexJob>> PgResourceStore::ReindexJobs(const std::string& tenant) {
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::vector<ReindexJob>> {
    pqxx::nontransaction tx(conn);
    pqxx::result r = tx.exec_params(
        core::StrCat("SELECT ", kJobColumns, " FROM reindex_jobs WHERE tenant_id = $1 ORDER BY job_id DESC LIMIT 20"),
        tenant);
    std::vector<ReindexJob> out;
    for (const pqxx::row& row : r) out.push_back(RowToJob(row).job);
    return out;
  });
}

absl::StatusOr<std::optional<ReindexJob>> PgResourceStore::ClaimReindex(const std::string& owner,
                                                                        std::chrono::seconds lease) {
  return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::optional<ReindexJob>> {
    pqxx::work tx(conn);
    pqxx::result r = tx.exec_params(
        core::StrCat("UPDATE reindex_jobs SET lease_owner = $1, lease_until = now() + $2 * interval '1 second' "
                     "WHERE (tenant_id, job_id) = (SELECT tenant_id, job_id FROM reindex_jobs WHERE status = 'running' "
                     "AND (lease_until < now() OR lease_owner = $1) ORDER BY lease_until LIMIT 1 "
                     "FOR UPDATE SKIP LOCKED) RETURNING ",
                     kJobColumns),
        owner, static_cast<int64_t>(lease.count()));
    tx.commit();
    if (r.empty()) return std::optional<ReindexJob>();
    return std::optional<ReindexJob>(RowToJob(r[0]).job);
  });
}

absl::StatusOr<ReindexJob> PgResourceStore::ReindexBatch(const ReindexJob& job, const std::string& owner, int batch,
                                                         const IndexFn& index, std::chrono::seconds lease) {
  return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::StatusOr<ReindexJob> {
    pqxx::work tx(conn);
    pqxx::result jr = tx.exec_params(
        core::StrCat("SELECT ", kJobColumns,
                     " FROM reindex_jobs WHERE tenant_id = $1 AND job_id = $2 AND status = 'running' "
                     "AND lease_owner = $3 FOR UPDATE"),
        job.tenant, job.id, owner);
    if (jr.empty()) {
      return core::Error(absl::StatusCode::kAborted, core::StrCat("Reindex job ", job.id, " is no longer leased here"));
    }
    JobRow current = RowToJob(jr[0]);
    pqxx::result rows = tx.exec_params(
        "SELECT r.res_type, r.res_id, v.body FROM resources r JOIN resource_versions v ON "
        "v.tenant_id = r.tenant_id AND v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id "
        "WHERE r.tenant_id = $1 AND NOT r.deleted AND (r.res_type, r.res_id) > ($2, $3) "
        "AND (cardinality($4::text[]) = 0 OR r.res_type = ANY($4::text[])) "
        "ORDER BY r.res_type, r.res_id LIMIT $5 FOR UPDATE OF r",
        job.tenant, current.cursor_type, current.cursor_id, TextArrayLiteral(current.job.types), batch);
    std::string last_type = current.cursor_type;
    std::string last_id = current.cursor_id;
    for (const pqxx::row& row : rows) {
      last_type = row[0].as<std::string>();
      last_id = row[1].as<std::string>();
      absl::StatusOr<search::IndexEntries> entries = index(last_type, row[2].as<std::string>());
      // A stored body always parses; should one not, its old rows stay.
      if (!entries.ok()) continue;
      tx.exec_params(ReplaceIndexSql(), job.tenant, last_type, last_id, EncodeIndex(*entries));
    }
    const bool finished = static_cast<int>(rows.size()) < batch;
    pqxx::result updated = tx.exec_params(
        core::StrCat("UPDATE reindex_jobs SET cursor_type = $3, cursor_id = $4, processed = processed + $5, "
                     "updated_at = now(), lease_until = now() + $6 * interval '1 second', "
                     "status = CASE WHEN $7 THEN 'done' ELSE status END, "
                     "finished_at = CASE WHEN $7 THEN now() ELSE NULL END "
                     "WHERE tenant_id = $1 AND job_id = $2 RETURNING ",
                     kJobColumns),
        job.tenant, job.id, last_type, last_id, static_cast<int64_t>(rows.size()),
        static_cast<int64_t>(lease.count()), finished);
    tx.commit();
    return RowToJob(updated[0]).job;
  });
}

}  // namespace medgrid::store
