#include "medgrid/store/migrations.h"

#include "medgrid/core/strings.h"
#include "medgrid/core/status.h"
#include "pg_index.h"

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
      {2, "tenants' event policy", R"sql(
-- Whether a tenant's change events carry the resource body.
ALTER TABLE tenants ADD COLUMN events_include_body boolean NOT NULL DEFAULT false;
)sql"},
      {3, "tenants' type-level $everything", R"sql(
-- Whether GET Patient/$everything (every patient's record) is allowed.
ALTER TABLE tenants ADD COLUMN everything_type_level boolean NOT NULL DEFAULT false;
)sql"},
      {4, "tenants' consent policy and break-the-glass roles", R"sql(
-- Whether access needs a permitting Consent (opt-in) or is allowed unless a
-- Consent denies it (opt-out), and which roles may declare an emergency.
-- Existing tenants keep what they had (no consent checks: opt-out); new
-- ones are opt-in unless created otherwise.
ALTER TABLE tenants ADD COLUMN consent_policy text NOT NULL DEFAULT 'opt-out'
  CHECK (consent_policy IN ('opt-in', 'opt-out'));
ALTER TABLE tenants ALTER COLUMN consent_policy SET DEFAULT 'opt-in';
ALTER TABLE tenants ADD COLUMN btg_roles text[] NOT NULL DEFAULT '{}';
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
      {2, "search indexes", R"sql(
-- Search index rows of the current version of every live resource, written
-- in the same statement as the version and removed when it is replaced or
-- deleted. `param` is the search parameter code ("c$i" for component i of
-- composite "c"); `grp` ties the components of one composite value together
-- and is 0 for plain values. Each table has a value index led by
-- (tenant_id, res_type, param) for searching, which also carries res_id so
-- that the id sets of a search come from index-only scans (and, after an
-- equality on the value, in res_id order, so a page can stop early), and a
-- (tenant_id, res_type, res_id) index for replacing a resource's rows,
-- _include and sorting.
CREATE TABLE idx_string (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
  grp integer NOT NULL,
  folded text NOT NULL,  -- case- and accent-folded
  exact  text NOT NULL   -- as written, for :exact
);
CREATE INDEX idx_string_value ON idx_string (tenant_id, res_type, param, folded text_pattern_ops) INCLUDE (res_id);
CREATE INDEX idx_string_res ON idx_string (tenant_id, res_type, res_id);

CREATE TABLE idx_token (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
  grp integer NOT NULL,
  system text,          -- NULL when the element has no system
  code   text NOT NULL,
  text   text NOT NULL,  -- folded display / CodeableConcept.text, for :text
  type_system text,      -- Identifier.type, for :of-type
  type_code   text
);
CREATE INDEX idx_token_value ON idx_token (tenant_id, res_type, param, code, system, res_id);
CREATE INDEX idx_token_res ON idx_token (tenant_id, res_type, res_id);

-- Dates as the half-open range [lo, hi) of microseconds since the epoch that
-- their precision implies; unbounded ends are the bigint extremes.
CREATE TABLE idx_date (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
  grp integer NOT NULL,
  lo bigint NOT NULL,
  hi bigint NOT NULL
);
CREATE INDEX idx_date_lo ON idx_date (tenant_id, res_type, param, lo) INCLUDE (hi, res_id);
CREATE INDEX idx_date_hi ON idx_date (tenant_id, res_type, param, hi) INCLUDE (lo, res_id);
CREATE INDEX idx_date_res ON idx_date (tenant_id, res_type, res_id);

-- References: typed and version-less for relative references ("Patient/1"),
-- `url` for absolute and canonical ones. The value index serves searches,
-- chains (target_id IN ...), _has and _revinclude.
CREATE TABLE idx_reference (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
  grp integer NOT NULL,
  target_type text NOT NULL,
  target_id   text NOT NULL,
  url         text NOT NULL,
  version     text NOT NULL
);
CREATE INDEX idx_reference_target ON idx_reference (tenant_id, res_type, param, target_id, target_type, res_id);
CREATE INDEX idx_reference_url ON idx_reference (tenant_id, res_type, param, url) WHERE url <> '';
CREATE INDEX idx_reference_res ON idx_reference (tenant_id, res_type, res_id);

-- Numbers and quantities: [low, high] (equal for a point; +-Infinity when a
-- Range end is open), with the quantity's system, code and unit.
CREATE TABLE idx_quantity (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
  grp integer NOT NULL,
  low  numeric NOT NULL,
  high numeric NOT NULL,
  system text NOT NULL,
  code   text NOT NULL,
  unit   text NOT NULL
);
CREATE INDEX idx_quantity_value ON idx_quantity (tenant_id, res_type, param, low) INCLUDE (high, res_id);
CREATE INDEX idx_quantity_res ON idx_quantity (tenant_id, res_type, res_id);

CREATE TABLE idx_uri (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL, param text NOT NULL,
  grp integer NOT NULL,
  uri text NOT NULL
);
CREATE INDEX idx_uri_value ON idx_uri (tenant_id, res_type, param, uri text_pattern_ops) INCLUDE (res_id);
CREATE INDEX idx_uri_res ON idx_uri (tenant_id, res_type, res_id);

-- _content and _text through PostgreSQL full-text search.
CREATE TABLE idx_text (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL,
  content   tsvector NOT NULL,
  narrative tsvector NOT NULL
);
CREATE INDEX idx_text_content ON idx_text USING gin (content);
CREATE INDEX idx_text_narrative ON idx_text USING gin (narrative);
CREATE INDEX idx_text_res ON idx_text (tenant_id, res_type, res_id);

-- _lastUpdated searches and sorts.
CREATE INDEX resources_last_updated ON resources (tenant_id, res_type, last_updated);
)sql"},
      {3, "reindex jobs", R"sql(
-- Online reindex jobs. The cursor is the last (res_type, res_id) done; the
-- lease lets one instance at a time work on a job and another take over
-- when it stops renewing (a crash or restart).
CREATE TABLE reindex_jobs (
  tenant_id   text NOT NULL,
  job_id      bigint GENERATED ALWAYS AS IDENTITY,
  types       text[] NOT NULL,
  status      text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
  cursor_type text NOT NULL DEFAULT '',
  cursor_id   text NOT NULL DEFAULT '',
  processed   bigint NOT NULL DEFAULT 0,
  total       bigint NOT NULL,
  error       text NOT NULL DEFAULT '',
  lease_owner text NOT NULL DEFAULT '',
  lease_until timestamptz NOT NULL DEFAULT '-infinity',
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL,
  finished_at timestamptz,
  PRIMARY KEY (tenant_id, job_id)
);
CREATE INDEX reindex_jobs_running ON reindex_jobs (lease_until) WHERE status = 'running';
-- Resources stored before search indexes existed get indexed: one job per
-- tenant that has any (none on a new database).
INSERT INTO reindex_jobs (tenant_id, types, status, total, created_at, updated_at)
SELECT tenant_id, '{}', 'running', count(*), now(), now() FROM resources WHERE NOT deleted GROUP BY tenant_id;
)sql"},
      {4, "search index statistics", R"sql(
-- The leading index columns are strongly correlated (a param belongs to
-- one type; a code to one param), so the planner's independence
-- assumption underestimates a criterion like gender=male by orders of
-- magnitude and picks plans that read every match. Multi-column statistics
-- give it the real frequencies of the common combinations.
CREATE STATISTICS idx_token_stats (mcv, dependencies) ON tenant_id, res_type, param, code FROM idx_token;
CREATE STATISTICS idx_string_stats (mcv, dependencies) ON tenant_id, res_type, param FROM idx_string;
CREATE STATISTICS idx_date_stats (mcv, dependencies) ON tenant_id, res_type, param FROM idx_date;
CREATE STATISTICS idx_reference_stats (mcv, dependencies) ON tenant_id, res_type, param, target_type FROM idx_reference;
CREATE STATISTICS idx_quantity_stats (mcv, dependencies) ON tenant_id, res_type, param, system, code FROM idx_quantity;
CREATE STATISTICS idx_uri_stats (mcv, dependencies) ON tenant_id, res_type, param FROM idx_uri;
CREATE STATISTICS resources_stats (mcv, dependencies) ON tenant_id, res_type, deleted FROM resources;
-- Token combinations are many (every code of every parameter): keep enough
-- of them that a common one such as Patient gender=male is in the list.
ALTER STATISTICS idx_token_stats SET STATISTICS 400;
ALTER STATISTICS idx_reference_stats SET STATISTICS 400;
-- Plans depend on these statistics, so refresh them sooner than the
-- default 10% growth: a tenant's first bulk load is analysed while it runs.
ALTER TABLE resources SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE idx_string SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE idx_token SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE idx_date SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE idx_reference SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE idx_quantity SET (autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE idx_uri SET (autovacuum_analyze_scale_factor = 0.02);
)sql"},
      {5, "value indexes in res_id order after the value; token statistics without a common-values list", R"sql(
-- A search page is cut from the id sets in res_id order. After an equality
-- on the code (or the reference's target id) the index must give res_id
-- order whether or not the query names the system (target type), which
-- nearly always has one value per code: so res_id comes before it.
DROP INDEX idx_token_value;
CREATE INDEX idx_token_value ON idx_token (tenant_id, res_type, param, code, res_id) INCLUDE (system);
DROP INDEX idx_reference_target;
CREATE INDEX idx_reference_target ON idx_reference (tenant_id, res_type, param, target_id, res_id) INCLUDE (target_type);
-- The planner loads the multi-column list of common (tenant, type, param,
-- code) combinations at every plan that touches idx_token, which took
-- longer than the rest of planning a search (0.25 ms of 0.3), and a rare
-- code, which the list leaves out, was still estimated at one row. The
-- functional dependencies alone estimate common and rare codes within a
-- small factor; searches no longer need more (the page is cut from the
-- index sets, and small sets are counted before the plan).
DROP STATISTICS idx_token_stats;
CREATE STATISTICS idx_token_stats (dependencies) ON tenant_id, res_type, param, code FROM idx_token;
ANALYZE idx_token;
)sql"},
      {6, "per-resource date and reference indexes carry their values; a token and a date indexed together",
       core::StrCat(R"sql(
-- A large date set is probed once per id of the driving set, and a chain
-- whose inner set is small walks the referring type's rows in res_id order:
-- both read a resource's rows by (tenant, type, res_id). With the parameter
-- and the values in the index these reads are index-only, so they do not
-- visit the table, which in a large tenant is mostly not in memory. The same
-- indexes still serve replacing a resource's rows and _include.
DROP INDEX idx_date_res;
CREATE INDEX idx_date_res ON idx_date (tenant_id, res_type, res_id, param) INCLUDE (lo, hi);
DROP INDEX idx_reference_res;
CREATE INDEX idx_reference_res ON idx_reference (tenant_id, res_type, res_id, param) INCLUDE (target_type, target_id);

-- A token and a date parameter indexed together (kTokenDateCombos): one row
-- per (code, date range) pair of a resource. `single`: the resource has one
-- value of the date parameter, so conditions on its one row are exact; other
-- resources are checked against idx_date. `span`: the class of the range's
-- width (DateSpanClassSql), so that within a class lo can be bounded from
-- both sides.
CREATE TABLE idx_token_date (
  tenant_id text NOT NULL, res_type text NOT NULL, res_id text NOT NULL,
  token_param text NOT NULL, date_param text NOT NULL,
  system text,
  code   text NOT NULL,
  lo bigint NOT NULL,
  hi bigint NOT NULL,
  single boolean NOT NULL,
  span smallint GENERATED ALWAYS AS ()sql", DateSpanClassSql("lo", "hi"), R"sql() STORED
);
CREATE INDEX idx_token_date_value ON idx_token_date (tenant_id, res_type, token_param, date_param, code, single, span, lo)
  INCLUDE (hi, system, res_id);
CREATE INDEX idx_token_date_res ON idx_token_date (tenant_id, res_type, res_id);
ALTER TABLE idx_token_date SET (autovacuum_analyze_scale_factor = 0.02);
INSERT INTO idx_token_date (tenant_id, res_type, res_id, token_param, date_param, system, code, lo, hi, single)
SELECT t.tenant_id, t.res_type, t.res_id, k.tp, k.dp, t.system, t.code, d.lo, d.hi, n.n = 1
FROM )sql", TokenDateComboValues("k"), R"sql(
JOIN idx_token t ON t.res_type = k.rt AND t.param = k.tp
JOIN idx_date d ON d.tenant_id = t.tenant_id AND d.res_type = t.res_type AND d.res_id = t.res_id AND d.param = k.dp
JOIN (SELECT tenant_id, res_type, res_id, param, count(*) AS n FROM idx_date GROUP BY 1, 2, 3, 4) n
  ON n.tenant_id = d.tenant_id AND n.res_type = d.res_type AND n.res_id = d.res_id AND n.param = d.param;
ANALYZE idx_token_date;
)sql")},
      {7, "resource counts per code", R"sql(
-- How many live resources of a type have a code in a token parameter (any
-- system: by_system false, system NULL), and a system and code (by_system
-- true; system NULL for a code without one), so that _total=accurate of a
-- search by one code reads a count instead of counting every match. Writes
-- append +1/-1 rows to idx_token_count_delta (no row is updated, so writers
-- never wait on each other); the background worker folds them into
-- idx_token_count (PgResourceStore::RefreshStatistics), and a count is the
-- sum of both, in one snapshot.
CREATE TABLE idx_token_count (
  tenant_id text NOT NULL, res_type text NOT NULL, param text NOT NULL,
  code text NOT NULL,
  by_system boolean NOT NULL,
  system text,
  n bigint NOT NULL,
  UNIQUE NULLS NOT DISTINCT (tenant_id, res_type, param, code, by_system, system)
);
CREATE TABLE idx_token_count_delta (
  tenant_id text NOT NULL, res_type text NOT NULL, param text NOT NULL,
  code text NOT NULL,
  by_system boolean NOT NULL,
  system text,
  n bigint NOT NULL
);
CREATE INDEX idx_token_count_delta_key ON idx_token_count_delta (tenant_id, res_type, param, code, by_system, system)
  INCLUDE (n);
INSERT INTO idx_token_count (tenant_id, res_type, param, code, by_system, system, n)
SELECT tenant_id, res_type, param, code, false, NULL, count(DISTINCT res_id) FROM idx_token GROUP BY 1, 2, 3, 4;
INSERT INTO idx_token_count (tenant_id, res_type, param, code, by_system, system, n)
SELECT tenant_id, res_type, param, code, true, system, count(DISTINCT res_id) FROM idx_token GROUP BY 1, 2, 3, 4, 6;
)sql"},
      {8, "a search planned from remembered set sizes can stop itself", R"sql(
-- A search intersecting several id sets is planned from their sizes, which
-- the server remembers for a while (pg_search.cc, SetSizeCache) instead of
-- counting them before every page query. A set planned as small is read
-- whole under LIMIT; the page query checks in the same snapshot that it is
-- still small, and otherwise calls this, so the server plans it again from
-- fresh counts rather than answer from a cut set. Declared STABLE so that
-- PostgreSQL evaluates the check once, before any row, as a one-time filter.
CREATE FUNCTION medgrid_set_sizes_changed() RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = 'MG001', MESSAGE = 'id set sizes changed since the search was planned';
END
$$;
)sql"},
      {9, "string values keyed by their first two characters, then res_id", R"sql(
-- A name prefix is read from idx_string_value in value order, so a page in
-- res_id order reads and sorts every match, which grow with the data. A
-- search for a prefix of exactly two characters (as typed into a patient
-- picker) is an equality on this key instead, and comes out in res_id order:
-- the page stops after its rows (pg_search.cc, KeyedPrefix).
-- (folded is included so that the scan is index-only: PostgreSQL reads a
-- column back from an index only when the column itself is in it.)
CREATE INDEX idx_string_prefix ON idx_string (tenant_id, res_type, param, left(folded, 2), res_id) INCLUDE (folded);
ANALYZE idx_string;
)sql"},
      {10, "the transactional outbox", R"sql(
-- One row per written version, inserted by the write's own statement (so in
-- its transaction) and removed by the outbox relay once the change has been
-- delivered (medgrid/store/outbox.h). The relay reads in seq order.
CREATE TABLE outbox (
  seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id  text NOT NULL,
  res_type   text NOT NULL,
  res_id     text NOT NULL,
  version_id bigint NOT NULL,
  method     text NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
  changed_at timestamptz NOT NULL
);
)sql"},
      {11, "bulk data export jobs", R"sql(
-- One row per $export job (medgrid/store/export_jobs.h). `request` is the
-- kick-off as the export service parsed it; `state` is its checkpoint (the
-- type being read, the last id of the last finished file part, the parts
-- written), updated at each part boundary in the same row, so a job resumes
-- from there on any instance once its lease has lapsed or been released.
CREATE TABLE export_jobs (
  tenant_id        text NOT NULL,
  job_id           text NOT NULL,
  status           text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
  request          jsonb NOT NULL,
  state            jsonb NOT NULL DEFAULT '{}',
  transaction_time timestamptz NOT NULL,
  error            text NOT NULL DEFAULT '',
  lease_owner      text NOT NULL DEFAULT '',
  lease_until      timestamptz NOT NULL DEFAULT '-infinity',
  created_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL,
  finished_at      timestamptz,
  expires_at       timestamptz,
  PRIMARY KEY (tenant_id, job_id)
);
CREATE INDEX export_jobs_running ON export_jobs (lease_until) WHERE status = 'running';
CREATE INDEX export_jobs_expiry ON export_jobs (expires_at) WHERE expires_at IS NOT NULL;
)sql"},
      {12, "subscription notifications waiting for delivery", R"sql(
-- One row per notification of a Subscription (libs/subscriptions), queued by
-- the change handler before the outbox row of the change is removed, and
-- removed once delivered (or when the subscription stops). The key makes a
-- redelivered change queue nothing twice; workers of any instance lease
-- due rows (FOR UPDATE SKIP LOCKED) by moving next_attempt_at forward.
CREATE TABLE subscription_notifications (
  seq             bigint GENERATED ALWAYS AS IDENTITY,
  tenant_id       text NOT NULL,
  subscription_id text NOT NULL,
  res_type        text NOT NULL,
  res_id          text NOT NULL,
  version_id      bigint NOT NULL,
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, subscription_id, res_type, res_id, version_id)
);
CREATE INDEX subscription_notifications_due ON subscription_notifications (next_attempt_at);
)sql"},
      {13, "idempotency keys", R"sql(
-- The recorded response of each completed request that carried an
-- Idempotency-Key, inserted in the transaction of the write it answers (so
-- the two commit or roll back together). A request still running holds a
-- transaction-scoped advisory lock on (tenant, key), never a row, so no
-- "in flight" claim outlives a crash. request_hash is the fingerprint of the
-- request (method, path, query, body, Prefer and caller). The response is
-- either the version written or matched (res_type, res_id, version_id; its
-- body is immutable) or the response body itself (Bundles). Rows past
-- expires_at are ignored, replaced by the next use of the key, and purged
-- in the background.
CREATE TABLE idempotency_keys (
  tenant_id    text NOT NULL,
  idem_key     text NOT NULL,
  request_hash text NOT NULL,
  status       integer NOT NULL,
  res_type     text,
  res_id       text,
  version_id   bigint,
  body         text,
  created_at   timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, idem_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
)sql"},
      {14, "subscription notification order", R"sql(
-- A notification is claimed only when no older one of its subscription is
-- waiting for a retry or leased: this finds the older ones.
CREATE INDEX subscription_notifications_order ON subscription_notifications (tenant_id, subscription_id, seq);
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
