// The queue of subscription notifications of one shard
// (subscription_notifications, shard migration 12; see Notification in
// resource_store.h). Times are the caller's clock, stored as instants.
#include <algorithm>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/store/sql.h"
#include "pg_pool.h"
#include "pg_resource_store.h"

namespace medgrid::store {
namespace {

// An instant parameter: microseconds since the epoch, turned back into a
// timestamptz by the statement.
#define MEDGRID_TS(param) "to_timestamp(" param "::bigint / 1000000.0)"

}  // namespace

absl::Status PgResourceStore::QueueNotifications(const std::vector<Notification>& notifications,
                                                 core::TimePoint due) {
  if (notifications.empty()) return absl::OkStatus();
  std::vector<std::string> tenants, subs, types, ids, versions;
  for (const Notification& n : notifications) {
    tenants.push_back(n.tenant);
    subs.push_back(n.subscription_id);
    types.push_back(n.type);
    ids.push_back(n.id);
    versions.push_back(std::to_string(n.version));
  }
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::Status {
    pqxx::nontransaction tx(conn);
    tx.exec_params(
        "INSERT INTO subscription_notifications (tenant_id, subscription_id, res_type, res_id, version_id, "
        "next_attempt_at) SELECT t, s, r, i, v, " MEDGRID_TS("$6") " FROM unnest($1::text[], $2::text[], $3::text[], "
        "$4::text[], $5::bigint[]) AS k(t, s, r, i, v) ON CONFLICT DO NOTHING",
        TextArrayLiteral(tenants), TextArrayLiteral(subs), TextArrayLiteral(types), TextArrayLiteral(ids),
        TextArrayLiteral(versions), core::ToUnixMicros(due));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<Notification>> PgResourceStore::ClaimNotifications(int limit, core::TimePoint now,
                                                                               core::TimePoint lease_until) {
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::vector<Notification>> {
    pqxx::work tx(conn);
    pqxx::result r = tx.exec_params(
        "UPDATE subscription_notifications n SET next_attempt_at = " MEDGRID_TS("$2") " FROM ("
        "SELECT tenant_id, subscription_id, res_type, res_id, version_id FROM subscription_notifications c "
        "WHERE next_attempt_at <= " MEDGRID_TS("$1") " AND NOT EXISTS (SELECT 1 FROM subscription_notifications o "
        "WHERE o.tenant_id = c.tenant_id AND o.subscription_id = c.subscription_id AND o.seq < c.seq "
        "AND o.next_attempt_at > " MEDGRID_TS("$1") ") ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED) d "
        "WHERE (n.tenant_id, n.subscription_id, n.res_type, n.res_id, n.version_id) = "
        "(d.tenant_id, d.subscription_id, d.res_type, d.res_id, d.version_id) "
        "RETURNING n.seq, n.tenant_id, n.subscription_id, n.res_type, n.res_id, n.version_id, n.attempts",
        core::ToUnixMicros(now), core::ToUnixMicros(lease_until), limit);
    tx.commit();
    std::vector<Notification> out;
    out.reserve(r.size());
    for (const pqxx::row& row : r) {
      Notification& n = out.emplace_back();
      n.seq = row[0].as<int64_t>();
      n.tenant = row[1].as<std::string>();
      n.subscription_id = row[2].as<std::string>();
      n.type = row[3].as<std::string>();
      n.id = row[4].as<std::string>();
      n.version = row[5].as<int64_t>();
      n.attempts = row[6].as<int>();
    }
    std::sort(out.begin(), out.end(), [](const Notification& a, const Notification& b) { return a.seq < b.seq; });
    return out;
  });
}

absl::Status PgResourceStore::RemoveNotification(const Notification& n) {
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::Status {
    pqxx::nontransaction tx(conn);
    tx.exec_params(
        "DELETE FROM subscription_notifications WHERE tenant_id = $1 AND subscription_id = $2 AND res_type = $3 "
        "AND res_id = $4 AND version_id = $5",
        n.tenant, n.subscription_id, n.type, n.id, n.version);
    return absl::OkStatus();
  });
}

absl::Status PgResourceStore::RescheduleNotification(const Notification& n, int attempts,
                                                     core::TimePoint next_attempt) {
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::Status {
    pqxx::nontransaction tx(conn);
    tx.exec_params(
        "UPDATE subscription_notifications SET attempts = $6, next_attempt_at = " MEDGRID_TS("$7")
        " WHERE tenant_id = $1 AND subscription_id = $2 AND res_type = $3 AND res_id = $4 AND version_id = $5",
        n.tenant, n.subscription_id, n.type, n.id, n.version, attempts, core::ToUnixMicros(next_attempt));
    return absl::OkStatus();
  });
}

absl::Status PgResourceStore::DropNotifications(const std::string& tenant, const std::string& subscription_id) {
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::Status {
    pqxx::nontransaction tx(conn);
    tx.exec_params("DELETE FROM subscription_notifications WHERE tenant_id = $1 AND subscription_id = $2", tenant,
                   subscription_id);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<std::pair<std::string, ResourceVersion>>> PgResourceStore::AllLive(
    const std::vector<std::string>& tenants, const std::string& type) {
  using Out = std::vector<std::pair<std::string, ResourceVersion>>;
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<Out> {
    pqxx::nontransaction tx(conn);
    pqxx::result r = tx.exec_params(
        "SELECT r.tenant_id, r.res_id, v.version_id, (extract(epoch from v.last_updated) * 1000000)::bigint, "
        "v.method, v.body FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id AND "
        "v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id "
        "WHERE r.tenant_id = ANY($2::text[]) AND r.res_type = $1 AND NOT r.deleted ORDER BY r.tenant_id, r.res_id",
        type, TextArrayLiteral(tenants));
    Out out;
    out.reserve(r.size());
    for (const pqxx::row& row : r) {
      ResourceVersion v;
      v.type = type;
      v.id = row[1].as<std::string>();
      v.version = row[2].as<int64_t>();
      v.last_updated = core::FromUnixMicros(row[3].as<int64_t>());
      v.method = row[4].as<std::string>();
      if (!row[5].is_null()) v.body = row[5].as<std::string>();
      out.emplace_back(row[0].as<std::string>(), std::move(v));
    }
    return out;
  });
}

}  // namespace medgrid::store
