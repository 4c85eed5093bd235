#include "pg_idempotency.h"

#include "medgrid/core/strings.h"
#include "pg_pool.h"
#include "pg_resource_store.h"

namespace medgrid::store {
namespace {

#define MEDGRID_IDEM_TS(param) "('epoch'::timestamptz + " param "::bigint * interval '1 microsecond')"

// Its own lock space: "idempotency" cannot be the start of a conditional
// interaction's lock key (a resource type), so the two never share a lock.
std::string LockKey(const std::string& tenant, const IdempotencyKey& key) {
  return core::StrCat(tenant, "\nidempotency\n", key.key);
}

}  // namespace

std::optional<IdempotentResult> ClaimIdempotencyKey(pqxx::transaction_base& tx, const std::string& tenant,
                                                    const IdempotencyKey& key, core::TimePoint now) {
  // The lock first, then the look-up: a record committed by the lock's
  // last holder is visible to the look-up's snapshot (read committed).
  const bool locked =
      !key.replay_only &&
      tx.exec_params1("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", LockKey(tenant, key))[0].as<bool>();
  pqxx::result r = tx.exec_params(
      "SELECT request_hash, status, res_type, res_id, version_id, body, "
      "expires_at > " MEDGRID_IDEM_TS("$3") " FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2",
      tenant, key.key, core::ToUnixMicros(now));
  const bool live = !r.empty() && r[0][6].as<bool>();
  if (!live) {
    if (!locked) return IdempotentResult{IdempotentResult::Outcome::kInFlight, {}};
    if (!r.empty()) {
      tx.exec_params("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idem_key = $2", tenant, key.key);
    }
    return std::nullopt;
  }
  const pqxx::row& row = r[0];
  if (row[0].as<std::string>() != key.fingerprint) return IdempotentResult{IdempotentResult::Outcome::kMismatch, {}};
  IdempotentResult out{IdempotentResult::Outcome::kReplayed, {}};
  out.response.status = row[1].as<int>();
  if (!row[2].is_null()) out.response.type = row[2].as<std::string>();
  if (!row[3].is_null()) out.response.id = row[3].as<std::string>();
  if (!row[4].is_null()) out.response.version = row[4].as<int64_t>();
  if (!row[5].is_null()) out.response.body = row[5].as<std::string>();
  return out;
}

void RecordIdempotencyKey(pqxx::transaction_base& tx, const std::string& tenant, const IdempotencyKey& key,
                          const IdempotentResponse& response, core::TimePoint now) {
  const int64_t created = core::ToUnixMicros(now);
  const int64_t expires = created + std::chrono::duration_cast<std::chrono::microseconds>(key.ttl).count();
  const bool resource = !response.body.has_value();
  tx.exec_params(
      "INSERT INTO idempotency_keys (tenant_id, idem_key, request_hash, status, res_type, res_id, version_id, body, "
      "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, " MEDGRID_IDEM_TS("$9") ", " MEDGRID_IDEM_TS(
          "$10") ")",
      tenant, key.key, key.fingerprint, response.status,
      resource ? std::optional<std::string>(response.type) : std::nullopt,
      resource ? std::optional<std::string>(response.id) : std::nullopt,
      resource ? std::optional<int64_t>(response.version) : std::nullopt, response.body, created, expires);
}

absl::StatusOr<int64_t> PgResourceStore::PurgeExpiredIdempotencyKeys(int limit) {
  const int64_t now = core::ToUnixMicros(clock_.Now());
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<int64_t> {
    pqxx::nontransaction tx(conn);
    pqxx::result r = tx.exec_params(
        "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys "
        "WHERE expires_at <= " MEDGRID_IDEM_TS("$1") " LIMIT $2))",
        now, limit);
    return static_cast<int64_t>(r.affected_rows());
  });
}

}  // namespace medgrid::store
