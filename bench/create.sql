-- pgbench script: the server's create, statement "insert_new" of
-- libs/store/src/pg_resource_store.cc, copied verbatim but for the
-- parameters and the search index rows (see docs/BENCHMARKS.md), with its
-- outbox row. Variables (-D): tenant, rtype, body (a body as the server
-- stores it), t0 (microseconds since the epoch), c (0, the per-client counter).
-- Ids rise with time across all clients, as the server's UUIDv7-style ids do;
-- c persists across one client's transactions, so every id is new.
\set c :c + 1
\set id 1000000000000000000 + :c * 1000 + :client_id
\set ts :t0 + :c * 1000 + :client_id
WITH cur AS (INSERT INTO resources (tenant_id, res_type, res_id, version_id, deleted, last_updated)
VALUES (:tenant, :rtype, :id, 1, false, ('epoch'::timestamptz + :ts * interval '1 microsecond'))),
ob AS (INSERT INTO outbox (tenant_id, res_type, res_id, version_id, method, changed_at)
VALUES (:tenant, :rtype, :id, 1, 'POST', ('epoch'::timestamptz + :ts * interval '1 microsecond')))
INSERT INTO resource_versions (tenant_id, res_type, res_id, version_id, method, deleted,
last_updated, body) VALUES (:tenant, :rtype, :id, 1, 'POST', false, ('epoch'::timestamptz + :ts * interval '1 microsecond'), :body);
