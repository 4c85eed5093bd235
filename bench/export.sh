#!/usr/bin/env bash
# Bulk $export benchmark: loads BENCH_RESOURCES resources (Patient,
# Observation and Condition bodies of about 600 bytes) straight into a
# tenant's shard with generate_series (the export reads only `resources`
# and `resource_versions`), runs one system-level $export through the
# server, and reports NDJSON MB/s and the server's peak RSS against a
# baseline in the same run: psql COPY of the same bodies, in the same
# order, to a file. Starts a private PostgreSQL and the server on free
# loopback ports in a temporary directory and removes them, even on failure.
#
#   bench/export.sh
#   BENCH_RESOURCES=200000 bench/export.sh                       # quicker
#   BENCH_SERVER_BIN=build/export/services/medgrid bench/export.sh
#
# Environment: BENCH_RESOURCES (1000000), BENCH_MAX_FILE_BYTES (67108864),
# BENCH_SERVER_BIN (build/release/services/medgrid, built when unset),
# BENCH_KEEP (0: remove the temporary directory), MEDGRID_PG_FSYNC (on).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

n=${BENCH_RESOURCES:-1000000}
max_file=${BENCH_MAX_FILE_BYTES:-67108864}
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[export] %s\n' "$*" >&2; }
die() { printf '[export] FAILED: %s\n' "$*" >&2; exit 1; }

[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_RESOURCES must be a positive integer, got '$n'"
bench_begin export psql curl python3
bench_machine
bench_start_server --pg-admin-dsn="$pg_dsn" --auth=off --export-dir="$tmp/exports" \
  --export-max-file-bytes="$max_file" --log-level=warn
bench_create_tenant "$base" "$tenant"
shard_db=$(bench_shard_db "$tenant")

say "loading $n resources into $shard_db"
t0=$(date +%s.%N)
psql_db "$shard_db" <<SQL
INSERT INTO resource_versions (tenant_id, res_type, res_id, version_id, method, deleted, last_updated, body)
SELECT '$tenant', t.type, t.id, 1, 'POST', false, now() - interval '1 hour',
  CASE t.type
  WHEN 'Patient' THEN format('{"resourceType":"Patient","id":"%s","meta":{"versionId":"1","lastUpdated":"2025-01-01T00:00:00.000Z"},"identifier":[{"system":"urn:oid:1.2.36.146.595.217.0.1","value":"%s"}],"active":true,"name":[{"use":"official","family":"Family%s","given":["Given%s","Middle"]}],"telecom":[{"system":"phone","value":"(03) 5555 %s","use":"home"}],"gender":"%s","birthDate":"19%s-0%s-1%s","address":[{"line":["%s Main Street"],"city":"Springfield","postalCode":"%s","country":"US"}]}',
       t.id, g, g % 9973, g % 613, lpad((g % 10000)::text, 4, '0'), CASE WHEN g % 2 = 0 THEN 'female' ELSE 'male' END, 10 + g % 90, 1 + g % 9, g % 10, g % 500, 10000 + g % 89999)
  WHEN 'Observation' THEN format('{"resourceType":"Observation","id":"%s","meta":{"versionId":"1","lastUpdated":"2025-01-01T00:00:00.000Z"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},"subject":{"reference":"Patient/p%s"},"effectiveDateTime":"2024-0%s-1%sT10:%s:00Z","valueQuantity":{"value":%s,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}}',
       t.id, lpad((g / 10)::text, 9, '0'), 1 + g % 9, g % 10, 10 + g % 50, 50 + g % 70)
  ELSE format('{"resourceType":"Condition","id":"%s","meta":{"versionId":"1","lastUpdated":"2025-01-01T00:00:00.000Z"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"confirmed"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"%s","display":"Condition %s"}],"text":"Condition %s"},"subject":{"reference":"Patient/p%s"},"onsetDateTime":"20%s-0%s-1%s"}',
       t.id, 100000 + g % 5000, g % 5000, g % 5000, lpad((g / 10)::text, 9, '0'), 10 + g % 14, 1 + g % 9, g % 10)
  END
FROM generate_series(1, $n) g
CROSS JOIN LATERAL (SELECT CASE WHEN g % 10 = 0 THEN 'Patient' WHEN g % 10 < 7 THEN 'Observation' ELSE 'Condition' END AS type,
                           CASE WHEN g % 10 = 0 THEN 'p' ELSE 'r' END || lpad(g::text, 9, '0') AS id) t;
INSERT INTO resources (tenant_id, res_type, res_id, version_id, deleted, last_updated)
SELECT tenant_id, res_type, res_id, 1, false, last_updated FROM resource_versions WHERE tenant_id = '$tenant';
ANALYZE resources;
ANALYZE resource_versions;
CHECKPOINT;
SQL
t1=$(date +%s.%N)
say "  loaded in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

say "baseline: psql COPY of the same bodies in (type, id) order to a file"
t0=$(date +%s.%N)
psql_db "$shard_db" -c "COPY (SELECT v.body FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id
  AND v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id
  WHERE r.tenant_id = '$tenant' AND NOT r.deleted ORDER BY r.res_type, r.res_id) TO STDOUT" >"$tmp/baseline.ndjson"
t1=$(date +%s.%N)
copy_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
copy_bytes=$(stat -c %s "$tmp/baseline.ndjson")
copy_lines=$(wc -l <"$tmp/baseline.ndjson")
rm -f "$tmp/baseline.ndjson"

say "system \$export through the server"
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
t0=$(date +%s.%N)
status_url=$(curl -sS -D - -o /dev/null "$base/fhir/$tenant/\$export" -H 'Prefer: respond-async' \
  | tr -d '\r' | awk 'tolower($1) == "content-location:" {print $2}')
[ -n "$status_url" ] || die "the kick-off gave no Content-Location"
while :; do
  code=$(curl -sS -o "$tmp/manifest.json" -w '%{http_code}' "$status_url")
  [ "$code" = 202 ] || break
  sleep 0.1
done
t1=$(date +%s.%N)
[ "$code" = 200 ] || die "the status answered $code: $(cat "$tmp/manifest.json")"
export_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")
read -r files lines <<<"$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(len(m["output"]), sum(o["count"] for o in m["output"]))' "$tmp/manifest.json")"
export_bytes=$(find "$tmp/exports" -name '*.ndjson' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
[ "$lines" = "$n" ] || die "the manifest counts $lines resources, $n were loaded"
[ "$copy_lines" = "$n" ] || die "COPY gave $copy_lines lines, $n were loaded"

mbs() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
say "results ($n resources):"
say "  export:   $export_bytes bytes in $files files, $export_s s: $(mbs "$export_bytes" "$export_s") MB/s"
say "  baseline: $copy_bytes bytes by COPY, $copy_s s: $(mbs "$copy_bytes" "$copy_s") MB/s"
say "  export / COPY throughput: $(awk -v e="$export_s" -v c="$copy_s" 'BEGIN { printf "%.2f", c / e }')"
say "  server RSS: $((rss_before / 1024)) MiB before the export, peak $((hwm_kb / 1024)) MiB (VmHWM, start-up included)"
