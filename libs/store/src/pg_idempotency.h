// The SQL of the idempotency_keys table (shard migration 13), run inside the
// transaction of a keyed write (PgResourceStore::RunIdempotent).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"
#include "medgrid/store/idempotency.h"
#include "pqxx/pqxx"

namespace medgrid::store {

// Tries the transaction-scoped advisory lock of (tenant, key) without
// waiting (unless key.replay_only) and looks the key up. Returns the outcome
// that ends the request: kReplayed or kMismatch for an unexpired record
// (lock or no lock: concurrent replays hold it briefly too), kInFlight for
// none without the lock; or nullopt when the write should run (the lock is
// held, and there is no record or an expired one, which is removed).
std::optional<IdempotentResult> ClaimIdempotencyKey(pqxx::transaction_base& tx, const std::string& tenant,
                                                    const IdempotencyKey& key, core::TimePoint now);

// Inserts the record of the completed write.
void RecordIdempotencyKey(pqxx::transaction_base& tx, const std::string& tenant, const IdempotencyKey& key,
                          const IdempotentResponse& response, core::TimePoint now);

}  // namespace medgrid::store
