-- pgbench script: the server's read-by-id, statement "read" of
-- libs/store/src/pg_resource_store.cc, copied verbatim but for the
-- parameters. Variables (-D): tenant, rtype, n (ids p1..pn exist).
\set i random(1, :n)
SELECT v.version_id, v.deleted, (extract(epoch from v.last_updated) * 1000000)::bigint, v.method, v.body
FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id AND
v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id
WHERE r.tenant_id = :tenant AND r.res_type = :rtype AND r.res_id = 'p' || :i;
