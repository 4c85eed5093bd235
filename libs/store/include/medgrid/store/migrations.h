// Versioned schema migrations for the control database and the shards.
//
// Each database records applied versions in `schema_migrations`. Start-up
// applies the pending ones in order, all in one transaction (a failing one
// leaves the database as it was), under a transaction-scoped advisory lock
// so that two instances starting together do not race; nothing outlives the
// transaction, so this works through PgBouncer in transaction mode too.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::store {

struct Migration {
  int version;       // strictly increasing, starting at 1
  std::string name;  // short description
  std::string sql;   // one or more statements
};

const std::vector<Migration>& ControlMigrations();
const std::vector<Migration>& ShardMigrations();

// The migrations of `all` not in `applied`, in order. Errors:
// FailedPrecondition if `all` is not strictly increasing, or if `applied`
// holds a version this binary does not know (the database is newer than the
// code, which must not run against it).
absl::StatusOr<std::vector<const Migration*>> PlanMigrations(const std::vector<Migration>& all,
                                                             const std::set<int>& applied);

// Applies the pending migrations of `all` on the database at `dsn` (named
// `name` in logs and errors), as start-up does for the control database and
// the shards. For other components' databases (the audit ledger).
absl::Status MigrateDatabase(const std::string& dsn, const std::vector<Migration>& all, std::string_view name);

// Creates database `name` through the server at `admin_dsn` unless it
// exists (local mode, for other components' databases).
absl::Status CreateDatabase(const std::string& admin_dsn, const std::string& name);

}  // namespace medgrid::store
