#include "medgrid/store/migrations.h"

#include "medgrid/core/strings.h"
#include "medgrid/core/status.h"

namespace medgrid::store {

const std::vector<Migration>& ControlMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, "shards and tenants", R"sql(
CREATE TABLE shards (
  shard_id    text PRIMARY KEY,
  primary_dsn text NOT NULL,
  replica_dsns text[] NOT NULL DEFAULT '{}',
  accepting   boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tenants (
  tenant_id  text PRIMARY KEY,
  region     text NOT NULL,
  shard_id   text NOT NULL REFERENCES shards(shard_id),
  tier       text NOT NULL DEFAULT 'standard',
  status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_by_shard ON tenants (shard_id);
-- The shard map version: bumped whenever a tenant is placed or moved, so
-- instances can tell that their cached placement is stale.
CREATE TABLE shard_map (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  version   bigint NOT NULL
);
INSERT INTO shard_map VALUES (true, 1);
)sql"},
  };
  return kMigrations;
}

const std::vector<Migration>& ShardMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, "resources and versions", R"sql(
-- The current version of every resource. Rows are never removed: a deletion
-- is a version with deleted = true.
CREATE TABLE resources (
  tenant_id    text NOT NULL,
  res_type     text NOT NULL,
  res_id       text NOT NULL,
  version_id   bigint NOT NULL,
  deleted      boolean NOT NULL,
  last_updated timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, res_type, res_id)
);
-- Every version ever written. seq orders the shard's history for paging.
CREATE TABLE resource_versions (
  tenant_id    text NOT NULL,
  res_type     text NOT NULL,
  res_id       text NOT NULL,
  version_id   bigint NOT NULL,
  seq          bigint GENERATED ALWAYS AS IDENTITY,
  method       text NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
  deleted      boolean NOT NULL,
  last_updated timestamptz NOT NULL,
  body         text,
  PRIMARY KEY (tenant_id, res_type, res_id, version_id),
  CHECK (deleted = (body IS NULL))
);
CREATE INDEX resource_versions_tenant_seq ON resource_versions (tenant_id, seq);
CREATE INDEX resource_versions_type_seq ON resource_versions (tenant_id, res_type, seq);
)sql"},
  };
  return kMigrations;
}

absl::StatusOr<std::vector<const Migration*>> PlanMigrations(const std::vector<Migration>& all,
                                                             const std::set<int>& applied) {
  int prev = 0;
  std::set<int> known;
  for (const Migration& m : all) {
    if (m.version <= prev) {
      return absl::FailedPreconditionError(
          core::StrCat("Migration versions must increase: ", m.version, " after ", prev));
    }
    prev = m.version;
    known.insert(m.version);
  }
  for (int v : applied) {
    if (!known.contains(v)) {
      return absl::FailedPreconditionError(
          core::StrCat("Database has migration ", v, " which this binary does not know; refusing to run"));
    }
  }
  std::vector<const Migration*> pending;
  for (const Migration& m : all) {
    if (!applied.contains(m.version)) pending.push_back(&m);
  }
  return pending;
}

}  // namespace medgrid::store
