// Bulk export jobs and the reads they make (medgrid/store/export_jobs.h).
// Job times that decide what is read (transaction_time, since) come from
// the server's clock; leases use the database's now(), like reindex jobs.
#include <pqxx/pqxx>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/store/export_jobs.h"
#include "medgrid/store/sql.h"
#include "pg_pool.h"
#include "pg_resource_store.h"

namespace medgrid::store {
namespace {

#define MEDGRID_EXPORT_US(col) "(extract(epoch from " col ") * 1000000)::bigint"
#define MEDGRID_EXPORT_TS(param) "('epoch'::timestamptz + " param "::bigint * interval '1 microsecond')"

constexpr const char* kJobColumns =
    "tenant_id, job_id, status, request::text, state::text, " MEDGRID_EXPORT_US(
        "transaction_time") ", error, " MEDGRID_EXPORT_US("created_at") ", " MEDGRID_EXPORT_US("finished_at") ", " MEDGRID_EXPORT_US("expires_at");

ExportJobRecord RowToJob(const pqxx::row& row) {
  ExportJobRecord j;
  j.tenant = row[0].as<std::string>();
  j.id = row[1].as<std::string>();
  j.status = row[2].as<std::string>();
  j.request = row[3].as<std::string>();
  j.state = row[4].as<std::string>();
  j.transaction_time = core::FromUnixMicros(row[5].as<int64_t>());
  j.error = row[6].as<std::string>();
  j.created = core::FromUnixMicros(row[7].as<int64_t>());
  if (!row[8].is_null()) j.finished = core::FromUnixMicros(row[8].as<int64_t>());
  if (!row[9].is_null()) j.expires = core::FromUnixMicros(row[9].as<int64_t>());
  return j;
}

absl::Status Gone(const std::string& id) {
  return core::Error(absl::StatusCode::kAborted, core::StrCat("Export job ", id, " was cancelled or is leased elsewhere"));
}

class PgExportJobStore final : public ExportJobStore {
 public:
  explicit PgExportJobStore(PgPool& pool) : pool_(pool) {}

  absl::StatusOr<ExportJobRecord> Create(const std::string& tenant, const std::string& id, const std::string& request,
                                         core::TimePoint transaction_time) override {
    return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::StatusOr<ExportJobRecord> {
      pqxx::work tx(conn);
      pqxx::result r = tx.exec_params(
          core::StrCat("INSERT INTO export_jobs (tenant_id, job_id, status, request, transaction_time, created_at, "
                       "updated_at) VALUES ($1, $2, 'running', $3::jsonb, " MEDGRID_EXPORT_TS("$4") ", now(), now()) RETURNING ",
                       kJobColumns),
          tenant, id, request, core::ToUnixMicros(transaction_time));
      tx.commit();
      return RowToJob(r[0]);
    });
  }

  absl::StatusOr<ExportJobRecord> Get(const std::string& tenant, const std::string& id) override {
    return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<ExportJobRecord> {
      pqxx::nontransaction tx(conn);
      pqxx::result r = tx.exec_params(
          core::StrCat("SELECT ", kJobColumns, " FROM export_jobs WHERE tenant_id = $1 AND job_id = $2"), tenant, id);
      if (r.empty()) return core::Error(absl::StatusCode::kNotFound, "No such export job").Http(404);
      return RowToJob(r[0]);
    });
  }

  absl::Status Delete(const std::string& tenant, const std::string& id) override {
    return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::Status {
      pqxx::work tx(conn);
      pqxx::result r = tx.exec_params("DELETE FROM export_jobs WHERE tenant_id = $1 AND job_id = $2", tenant, id);
      tx.commit();
      if (r.affected_rows() == 0) return core::Error(absl::StatusCode::kNotFound, "No such export job").Http(404);
      return absl::OkStatus();
    });
  }

  absl::StatusOr<std::optional<ExportJobRecord>> Claim(const std::string& owner, std::chrono::seconds lease) override {
    return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::optional<ExportJobRecord>> {
      pqxx::work tx(conn);
      pqxx::result r = tx.exec_params(
          core::StrCat("UPDATE export_jobs SET lease_owner = $1, lease_until = now() + $2 * interval '1 second' "
                       "WHERE (tenant_id, job_id) = (SELECT tenant_id, job_id FROM export_jobs WHERE status = 'running' "
                       "AND (lease_until < now() OR lease_owner = $1) ORDER BY lease_until, created_at LIMIT 1 "
                       "FOR UPDATE SKIP LOCKED) RETURNING ",
                       kJobColumns),
          owner, static_cast<int64_t>(lease.count()));
      tx.commit();
      if (r.empty()) return std::optional<ExportJobRecord>();
      return std::optional<ExportJobRecord>(RowToJob(r[0]));
    });
  }

  absl::Status Checkpoint(const std::string& tenant, const std::string& id, const std::string& owner,
                          const std::string& state, std::chrono::seconds lease, const std::string& status,
                          const std::string& error, std::optional<core::TimePoint> expires) override {
    return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::Status {
      pqxx::work tx(conn);
      const bool ends = status != "running";
      pqxx::result r = tx.exec_params(
          "UPDATE export_jobs SET state = $4::jsonb, status = $5, error = $6, updated_at = now(), "
          "lease_until = CASE WHEN $8 THEN '-infinity' ELSE now() + $7 * interval '1 second' END, "
          "finished_at = CASE WHEN $8 THEN now() ELSE NULL END, "
          "expires_at = CASE WHEN $8 THEN " MEDGRID_EXPORT_TS("$9") " ELSE NULL END "
          "WHERE tenant_id = $1 AND job_id = $2 AND lease_owner = $3 AND status = 'running'",
          tenant, id, owner, state, status, error, static_cast<int64_t>(lease.count()), ends,
          expires ? core::ToUnixMicros(*expires) : int64_t{0});
      tx.commit();
      if (r.affected_rows() == 0) return Gone(id);
      return absl::OkStatus();
    });
  }

  absl::Status Release(const std::string& tenant, const std::string& id, const std::string& owner) override {
    return WithConnection(pool_, [&](pqxx::connection_base& conn) -> absl::Status {
      pqxx::work tx(conn);
      tx.exec_params(
          "UPDATE export_jobs SET lease_until = '-infinity', lease_owner = '' "
          "WHERE tenant_id = $1 AND job_id = $2 AND lease_owner = $3 AND status = 'running'",
          tenant, id, owner);
      tx.commit();
      return absl::OkStatus();
    });
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> DeleteExpired(core::TimePoint now) override {
    return WithConnection(pool_,
                          [&](pqxx::connection_base& conn) -> absl::StatusOr<std::vector<std::pair<std::string, std::string>>> {
                            pqxx::work tx(conn);
                            pqxx::result r = tx.exec_params(
                                "DELETE FROM export_jobs WHERE expires_at < " MEDGRID_EXPORT_TS("$1")
                                " RETURNING tenant_id, job_id",
                                core::ToUnixMicros(now));
                            tx.commit();
                            std::vector<std::pair<std::string, std::string>> out;
                            for (const pqxx::row& row : r) out.emplace_back(row[0].as<std::string>(), row[1].as<std::string>());
                            return out;
                          });
  }

  absl::StatusOr<std::vector<ExportRow>> Page(const ExportSelection& s, const std::string& after_id,
                                              int limit) override {
    // The version current at as_of: the newest one not after it (usually
    // the current row's own version, the first the backward scan meets).
    static const std::string sql = core::StrCat(
        "SELECT r.res_id, v.body FROM resources r CROSS JOIN LATERAL (SELECT v.body, v.last_updated FROM "
        "resource_versions v WHERE v.tenant_id = r.tenant_id AND v.res_type = r.res_type AND v.res_id = r.res_id "
        "AND v.version_id <= r.version_id AND v.last_updated <= " MEDGRID_EXPORT_TS("$4") " ORDER BY v.version_id DESC LIMIT 1) v "
        "WHERE r.tenant_id = $1 AND r.res_type = $2 AND r.res_id > $3 AND v.body IS NOT NULL "
        "AND (NOT $5::boolean OR v.last_updated > " MEDGRID_EXPORT_TS("$6") ") "
        "AND (NOT $7::boolean OR r.res_id = ANY($8::text[])) "
        "AND (NOT $9::boolean OR (CASE WHEN r.res_type = 'Patient' THEN (NOT $11::boolean OR r.res_id = ANY($12::text[])) "
        "ELSE EXISTS (SELECT 1 FROM idx_reference x WHERE x.tenant_id = r.tenant_id AND x.res_type = r.res_type "
        "AND x.res_id = r.res_id AND x.param = ANY($10::text[]) AND x.target_type = 'Patient' "
        "AND (NOT $11::boolean OR x.target_id = ANY($12::text[]))) END)) "
        "ORDER BY r.res_id LIMIT $13");
    return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::vector<ExportRow>> {
      pqxx::nontransaction tx(conn);
      pqxx::result r = tx.exec_params(
          sql, s.tenant, s.type, after_id, core::ToUnixMicros(s.as_of), s.since.has_value(),
          s.since ? core::ToUnixMicros(*s.since) : int64_t{0}, s.ids.has_value(),
          TextArrayLiteral(s.ids ? *s.ids : std::vector<std::string>{}), s.patient_compartment,
          TextArrayLiteral(s.compartment_params), s.restrict_patients, TextArrayLiteral(s.patients), limit);
      std::vector<ExportRow> out;
      out.reserve(r.size());
      for (const pqxx::row& row : r) {
        ExportRow e;
        e.id = row[0].as<std::string>();
        const pqxx::field body = row[1];
        e.body.assign(body.c_str(), body.size());
        out.push_back(std::move(e));
      }
      return out;
    });
  }

 private:
  PgPool& pool_;
};

}  // namespace

std::unique_ptr<ExportJobStore> NewPgExportJobStore(PgPool& pool) { return std::make_unique<PgExportJobStore>(pool); }

}  // namespace medgrid::store
