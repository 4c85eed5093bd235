#!/usr/bin/env bash
# Transaction-ingest benchmark of the medgrid server against COPY of the same
# rows into the same tables, in one run.
#
# Starts a private PostgreSQL on a free loopback port in a temporary directory
# and the release server on another (as bench/crud.sh does), creates tenant
# "bench", generates BENCH_PATIENTS Synthea-like transaction Bundles, one per
# patient, 100 to 1,000 entries each (bench/gen_bundles.py, seeded), then:
#   server  POST /fhir/bench of every bundle, BENCH_CLIENTS at a time
#           (bench/ingest_load.py, largest bundles first); every answer must
#           be 200 with a transaction-response Bundle whose entries are all
#           201, and the shard must then hold that many resources. Rate:
#           resources created / wall time of the whole load.
#   COPY    with the server stopped, the tenant's rows of every table the
#           writes fill are written out with COPY TO: resources,
#           resource_versions and each idx_* table with a tenant_id column;
#           the outbox and idx_token_count_delta rows, which the server's
#           background workers consume within seconds, are rebuilt from the
#           versions and the token rows as the write statement inserts them
#           (idx_token_count, the workers' own table, is left alone). The rows
#           are deleted, the tables VACUUMed and CHECKPOINTed, and COPY FROM of
#           the files back into the same tables is timed: BENCH_COPY_SESSIONS
#           concurrent psql sessions, each one transaction copying its share
#           (split by lines) of every table. Rate: resource_versions rows /
#           wall time.
# and prints both rates, server / COPY, the CPU seconds of the server and of
# PostgreSQL in each phase, and a summary line. Stops everything it started,
# even on failure. Exits non-zero if any bundle failed, a count does not
# match, or a COPY session failed.
#
#   bench/ingest.sh
#   BENCH_PATIENTS=10 bench/ingest.sh                           # quick check
#   BENCH_MODE=put bench/ingest.sh      # the same resources as one PUT each
#
# Environment: BENCH_PATIENTS (40: bundles), BENCH_SEED (42), BENCH_CLIENTS (4),
# BENCH_COPY_SESSIONS (4), BENCH_MODE (transaction, or put: each resource as
# PUT /fhir/bench/Type/<uuid>, references rewritten; for comparison, and on a
# server without transactions), BENCH_OUT (markdown result file; default:
# print only), BENCH_SERVER_BIN (default build/release/services/medgrid, built
# if missing), BENCH_KEEP=1 (keep the temporary directory: bundles, COPY files,
# logs), MEDGRID_PG_FSYNC (on), MEDGRID_PG_SHARED_BUFFERS (256MB),
# BENCH_LOG_LEVEL (info, the server default).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

patients=${BENCH_PATIENTS:-40}
seed=${BENCH_SEED:-42}
clients=${BENCH_CLIENTS:-4}
sessions=${BENCH_COPY_SESSIONS:-4}
mode=${BENCH_MODE:-transaction}
out=${BENCH_OUT:-}
log_level=${BENCH_LOG_LEVEL:-info}
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[ingest] %s\n' "$*" >&2; }
die() { printf '[ingest] FAILED: %s\n' "$*" >&2; exit 1; }

for v in patients seed clients sessions; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then die "$v must be a positive integer, got '${!v}'"; fi
done
case $mode in transaction|put) ;; *) die "BENCH_MODE must be transaction or put, got '$mode'" ;; esac
[ -z "$out" ] || out=$(realpath -m "$out")
bench_begin ingest psql curl python3 split
revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo "no commit")

jget() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s <= 0) print "?"; else printf "%.0f", n / s }'; }
# cpu_s BEFORE AFTER PID: CPU seconds of PID and its children between two snapshots.
cpu_s() { python3 bench/ingest_load.py cpu-diff "$1" "$2" | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$3"; }

# --- Data ---------------------------------------------------------------------
say "generating $patients bundles (seed $seed)"
python3 bench/gen_bundles.py --seed "$seed" --patients "$patients" --out "$tmp/bundles" 2>"$tmp/generate.log" \
  || { cat "$tmp/generate.log" >&2; die "gen_bundles.py failed"; }
cat "$tmp/generate.log" >&2

# --- The server ----------------------------------------------------------------
postmaster_pid=$(head -n 1 "$(readlink -f "$tmp/pg")/data/postmaster.pid")
bench_start_server --pg-admin-dsn="$pg_dsn" --auth=off --log-level="$log_level"
bench_create_tenant "$base" "$tenant"
shard_db=$(bench_shard_db "$tenant")
psql_db "$shard_db" -c CHECKPOINT >/dev/null

# --- Ingest through the server -------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
say "posting $patients bundles to $base/fhir/$tenant, $clients clients ($mode)"
python3 bench/ingest_load.py cpu-snap "$server_pid" "$postmaster_pid" >"$tmp/cpu-server0.json"
rc=0
python3 bench/ingest_load.py post --dir "$tmp/bundles" --base "$base/fhir/$tenant" --clients "$clients" \
  --mode "$mode" >"$tmp/load.json" || rc=$?
python3 bench/ingest_load.py cpu-snap "$server_pid" "$postmaster_pid" >"$tmp/cpu-server1.json"
say "  $(cat "$tmp/load.json")"
if [ "$rc" != 0 ]; then
  server_log_tail
  die "the ingest through the server failed (see the JSON above)"
fi
kill -0 "$server_pid" 2>/dev/null || { server_log_tail; die "the server died during the ingest"; }
entries=$(jget "$tmp/load.json" entries)
created=$(jget "$tmp/load.json" created)
server_s=$(jget "$tmp/load.json" seconds)
server_rate=$(rate "$created" "$server_s")
server_cpu=$(cpu_s "$tmp/cpu-server0.json" "$tmp/cpu-server1.json" "$server_pid")
server_pg_cpu=$(cpu_s "$tmp/cpu-server0.json" "$tmp/cpu-server1.json" "$postmaster_pid")
stored=$(psql_db "$shard_db" -Atc "select count(*) from resources where tenant_id = '$tenant'")
versions=$(psql_db "$shard_db" -Atc "select count(*) from resource_versions where tenant_id = '$tenant'")
if [ "$stored" != "$created" ] || [ "$versions" != "$created" ]; then
  die "$created resources created, but $shard_db holds $stored resources and $versions versions of $tenant"
fi
server_errors=$(grep -cE '"level":"(warn|error)"' "$tmp/server.log" || true)
# The background workers (outbox relay, statistics) must not touch the tables
# while the baseline deletes and copies.
bench_stop_server "$server_pid"
server_pid=

# --- COPY baseline --------------------------------------------------------------
mkdir -p "$tmp/copy"
mapfile -t idx_tables < <(psql_db "$shard_db" -Atc "select t.tablename from pg_tables t
  where t.schemaname = 'public' and t.tablename like 'idx\_%'
    and t.tablename not in ('idx_token_count', 'idx_token_count_delta')
    and exists (select 1 from information_schema.columns c
                where c.table_schema = 'public' and c.table_name = t.tablename and c.column_name = 'tenant_id')
  order by 1")
tables=(resources resource_versions "${idx_tables[@]}" outbox idx_token_count_delta)
declare -A cols rows
for t in resources resource_versions "${idx_tables[@]}"; do
  # Generated columns (idx_token_date.span) cannot be copied; identity
  # values (resource_versions.seq) are, as they were.
  cols[$t]=$(psql_db "$shard_db" -Atc "select string_agg(quote_ident(attname), ', ' order by attnum)
    from pg_attribute where attrelid = '$t'::regclass and attnum > 0 and not attisdropped and attgenerated = ''")
  psql_db "$shard_db" -c "COPY (SELECT ${cols[$t]} FROM $t WHERE tenant_id = '$tenant') TO STDOUT" >"$tmp/copy/$t.tsv"
done
# What the write statement inserted into the outbox (one row per version)
# and idx_token_count_delta (+1 per distinct code, and per distinct system and
# code, of each new resource: pg_index.cc CountDeltas).
cols[outbox]="tenant_id, res_type, res_id, version_id, method, changed_at"
psql_db "$shard_db" -c "COPY (SELECT tenant_id, res_type, res_id, version_id, method, last_updated
  FROM resource_versions WHERE tenant_id = '$tenant' ORDER BY seq) TO STDOUT" >"$tmp/copy/outbox.tsv"
cols[idx_token_count_delta]="tenant_id, res_type, param, code, by_system, system, n"
psql_db "$shard_db" -c "COPY (
  SELECT tenant_id, res_type, param, code, false, NULL, 1
  FROM (SELECT DISTINCT tenant_id, res_type, res_id, param, code FROM idx_token WHERE tenant_id = '$tenant') k
  UNION ALL
  SELECT tenant_id, res_type, param, code, true, system, 1
  FROM (SELECT DISTINCT tenant_id, res_type, res_id, param, code, system FROM idx_token WHERE tenant_id = '$tenant') k
  ) TO STDOUT" >"$tmp/copy/idx_token_count_delta.tsv"
total_rows=0
for t in "${tables[@]}"; do
  rows[$t]=$(wc -l <"$tmp/copy/$t.tsv")
  total_rows=$((total_rows + ${rows[$t]}))
done
[ "${rows[resource_versions]}" = "$versions" ] || die "COPY TO wrote ${rows[resource_versions]} versions, not $versions"
copy_bytes=$(cat "$tmp"/copy/*.tsv | wc -c)

say "COPY baseline: deleting $total_rows rows of $tenant from ${#tables[@]} tables, VACUUM, CHECKPOINT"
for t in "${tables[@]}"; do
  psql_db "$shard_db" -c "DELETE FROM $t WHERE tenant_id = '$tenant'" >/dev/null
done
psql_db "$shard_db" -c "VACUUM (ANALYZE) $(IFS=,; echo "${tables[*]}")" >/dev/null
psql_db "$shard_db" -c CHECKPOINT >/dev/null

for t in "${tables[@]}"; do
  split -n "l/$sessions" -d -a 3 "$tmp/copy/$t.tsv" "$tmp/copy/$t.tsv."
done
for ((k = 0; k < sessions; k++)); do
  part=$(printf '%03d' "$k")
  for t in "${tables[@]}"; do
    f=$tmp/copy/$t.tsv.$part
    if [ -s "$f" ]; then echo "\\copy $t (${cols[$t]}) FROM '$f'"; fi
  done >"$tmp/copy/session-$k.sql"
done

say "COPY baseline: $total_rows rows into ${#tables[@]} tables, $sessions sessions, one transaction each"
python3 bench/ingest_load.py cpu-snap "$postmaster_pid" >"$tmp/cpu-copy0.json"
t0=$(date +%s.%N)
copy_pids=()
for ((k = 0; k < sessions; k++)); do
  psql -X -q -v ON_ERROR_STOP=1 --single-transaction -h 127.0.0.1 -p "$pg_port" -U postgres -d "$shard_db" \
    -f "$tmp/copy/session-$k.sql" >"$tmp/copy/session-$k.log" 2>&1 &
  copy_pids+=("$!")
  bench_bg_pids+=("$!")
done
copy_failed=0
for p in "${copy_pids[@]}"; do wait "$p" || copy_failed=1; done
t1=$(date +%s.%N)
python3 bench/ingest_load.py cpu-snap "$postmaster_pid" >"$tmp/cpu-copy1.json"
bench_bg_pids=()
if [ "$copy_failed" != 0 ]; then
  cat "$tmp"/copy/session-*.log >&2
  die "a COPY session failed"
fi
copy_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
copy_rate=$(rate "$versions" "$copy_s")
copy_pg_cpu=$(cpu_s "$tmp/cpu-copy0.json" "$tmp/cpu-copy1.json" "$postmaster_pid")
back=$(psql_db "$shard_db" -Atc "select count(*) from resource_versions where tenant_id = '$tenant'")
[ "$back" = "$versions" ] || die "after COPY FROM, $shard_db holds $back versions of $tenant, not $versions"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
ratio=$(awk -v a="$server_rate" -v b="$copy_rate" 'BEGIN { if (b == "?" || b == 0) print "?"; else printf "%.2f", a / b }')

# --- Report -------------------------------------------------------------------
ms_per() { awk -v s="$1" -v n="$2" 'BEGIN { if (n == 0) print "?"; else printf "%.3f", s * 1000 / n }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
bundles=$(jget "$tmp/load.json" bundles)
if [ "$mode" = transaction ]; then how="transaction Bundles, one POST /fhir/$tenant each"; else how="one PUT per resource"; fi
summary="ingest: $created resources in $bundles bundles, $server_rate res/s; COPY baseline $copy_rate res/s; ratio $ratio"

report() {
  echo "## medgrid transaction ingest benchmark"
  echo
  echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM; $(uname -sr); load average before $load_before, after $load_after"
  echo "- server: medgrid $revision, --log-level=$log_level, default pools; PostgreSQL $(psql_db postgres -Atc 'show server_version') (fsync=$(psql_db postgres -Atc 'show fsync'), shared_buffers=$(psql_db postgres -Atc 'show shared_buffers')) on the same machine, database $shard_db"
  echo "- data: bench/gen_bundles.py --seed $seed --patients $patients: $bundles bundles, $entries entries ($(jget "$tmp/load.json" min_entries)-$(jget "$tmp/load.json" max_entries) per bundle), $(mb "$(jget "$tmp/load.json" bytes)") MiB sent"
  echo "- load: $how, $clients concurrent clients (keep-alive, largest bundles first); request latency p50 $(jget "$tmp/load.json" p50_ms) ms, max $(jget "$tmp/load.json" max_ms) ms"
  echo "- baseline: the same rows ($total_rows in ${#tables[@]} tables, $(mb "$copy_bytes") MiB of COPY text) deleted, VACUUMed, and copied back by $sessions concurrent psql sessions, one transaction each"
  echo
  echo "| measurement | resources | seconds | resources/s | server CPU s | PostgreSQL CPU s | PostgreSQL CPU ms per resource |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  echo "| server: $how | $created | $server_s | $server_rate | $server_cpu | $server_pg_cpu | $(ms_per "$server_pg_cpu" "$created") |"
  echo "| COPY of the same rows into the same tables | $versions | $copy_s | $copy_rate | - | $copy_pg_cpu | $(ms_per "$copy_pg_cpu" "$versions") |"
  echo
  echo "Ratio server / COPY: **$ratio**."
  echo
  echo "Rows per table: $(for t in "${tables[@]}"; do printf '%s %s, ' "$t" "${rows[$t]}"; done | sed 's/, $//')."
  echo "Server log lines at warn or above: $server_errors."
}

echo
report
echo
echo "$summary"
if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  report >"$out"
  say "wrote $out"
fi
if [ "$server_errors" != 0 ]; then
  say "server log lines at warn or above: $server_errors (first 10):"
  grep -E '"level":"(warn|error)"' "$tmp/server.log" | head -n 10 >&2
fi
