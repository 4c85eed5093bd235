#!/usr/bin/env bash
# CRUD benchmark of the medgrid server against its own database, in one run.
#
# Starts a private PostgreSQL on a free loopback port in a temporary directory
# and the release server on another, creates tenant "bench", seeds BENCH_N
# Patients (PUT, deterministic), then measures for BENCH_DURATION seconds each
# with BENCH_CONNECTIONS connections:
#   livez        wrk GET /livez: the HTTP ceiling of the same server
#   read         wrk GET /fhir/bench/Patient/p<random i>   (read_by_id.lua)
#   read (sql)   pgbench, the server's "read" statement     (read_by_id.sql)
#   create       wrk POST /fhir/bench/Patient               (create.lua)
#   create (sql) pgbench, the server's "insert_new"          (create.sql)
# and prints rates, p50/p99 latency, the server/pgbench and server/livez
# ratios and the server's RSS (idle after seeding, peak under each wrk load).
# Stops everything it started, even on failure. Exits non-zero if any
# response was not 2xx, wrk saw socket errors, or pgbench had failures.
#
#   bench/crud.sh
#   BENCH_N=2000 BENCH_DURATION=5 BENCH_OUT=/tmp/crud.md bench/crud.sh
#
# Environment: BENCH_N (10000), BENCH_DURATION (15), BENCH_CONNECTIONS (32),
# BENCH_THREADS (2, wrk -t and pgbench -j), BENCH_SEED (42), BENCH_OUT (markdown
# result file; default: print only), BENCH_SERVER_BIN (default
# build/release/services/medgrid, built if missing), BENCH_KEEP=1 (keep the
# temporary directory with logs), MEDGRID_PG_FSYNC (on), BENCH_LOG_LEVEL (info,
# the server default).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

n=${BENCH_N:-10000}
duration=${BENCH_DURATION:-15}
conns=${BENCH_CONNECTIONS:-32}
threads=${BENCH_THREADS:-2}
seed=${BENCH_SEED:-42}
out=${BENCH_OUT:-}
log_level=${BENCH_LOG_LEVEL:-info}  # the server default: an access-log line per request
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[crud] %s\n' "$*" >&2; }
die() { printf '[crud] FAILED: %s\n' "$*" >&2; exit 1; }

bench_begin crud wrk pgbench psql curl python3
bench_start_server --pg-admin-dsn="$pg_dsn" --auth=off --log-level="$log_level"

bench_create_tenant "$base" "$tenant"
shard_db=$(bench_shard_db "$tenant")

# --- Seed ---------------------------------------------------------------------
say "seeding $n Patients (seed $seed)"
python3 bench/gen_patients.py --count "$n" --seed "$seed" --dir "$tmp/seed" --base-url "$base/fhir/$tenant"
python3 bench/gen_patients.py --seed "$seed" --create-body >"$tmp/create.json"
t0=$(date +%s.%N)
curl -sS -Z --parallel-max "$conns" -K "$tmp/seed/load.curl" >"$tmp/seed.codes" 2>"$tmp/seed.err" || true
t1=$(date +%s.%N)
seed_ok=$(grep -cE '^2[0-9][0-9]$' "$tmp/seed.codes" || true)
if [ "$seed_ok" != "$n" ]; then
  say "seed status codes: $(sort "$tmp/seed.codes" | uniq -c | tr -s ' \n' ' ')"
  head -5 "$tmp/seed.err" >&2 || true
  server_log_tail
  die "only $seed_ok of $n seeding PUTs answered 2xx"
fi
seed_rate=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
rows=$(psql_db "$shard_db" -Atc "select count(*) from resources where tenant_id='$tenant' and res_type='Patient'")
[ "$rows" = "$n" ] || die "the shard database $shard_db holds $rows Patients of $tenant, expected $n"

# One create and one read through the server before measuring: they must work,
# and the stored create gives pgbench a body exactly as the server writes it.
code=$(curl -sS -o "$tmp/probe.json" -w '%{http_code}' -X POST "$base/fhir/$tenant/Patient" \
  -H 'Content-Type: application/fhir+json' --data-binary "@$tmp/create.json")
[ "$code" = 201 ] || die "probe POST /fhir/$tenant/Patient answered $code: $(head -c 500 "$tmp/probe.json")"
code=$(curl -sS -o "$tmp/probe.json" -w '%{http_code}' "$base/fhir/$tenant/Patient/p1")
[ "$code" = 200 ] || die "probe GET /fhir/$tenant/Patient/p1 answered $code: $(head -c 500 "$tmp/probe.json")"
stored_body=$(psql_db "$shard_db" -Atc "select body from resource_versions where tenant_id='$tenant' \
  and res_type='Patient' and method='POST' order by seq desc limit 1")
[ -n "$stored_body" ] || die "the probe create left no row in $shard_db.resource_versions"
psql_db "$shard_db" -c "VACUUM ANALYZE resources, resource_versions" >/dev/null

vmrss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
idle_rss=$(vmrss_kib "$server_pid")

# --- Measurements ---------------------------------------------------------------
declare -A rate p50 p99 errs peak label=(
  [livez]="GET /livez" [read]="read-by-id (server)" [read_sql]="read-by-id (pgbench, same SQL)"
  [create]="create (server)" [create_sql]="create (pgbench, same SQL)")
problems=()

# to_ms "1.23ms" -> 1.23 (wrk prints us, ms, s or m)
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "?" }'
}

# sample_rss FILE: VmRSS of the server every 0.5 s until killed.
sample_rss() {
  while kill -0 "$server_pid" 2>/dev/null; do
    vmrss_kib "$server_pid" >>"$1"
    sleep 0.5
  done
}

checkpoint() { psql_db "$shard_db" -c CHECKPOINT >/dev/null; }

# run_wrk NAME PATH [LUA]
run_wrk() {
  local name=$1 path=$2 lua=${3:-} log="$tmp/wrk-$1.txt" sampler
  local args=(-t"$threads" -c"$conns" -d"${duration}s" --latency)
  [ -n "$lua" ] && args+=(-s "$lua")
  checkpoint
  say "wrk $name: ${args[*]} $base$path"
  : >"$tmp/rss-$name.txt"
  sample_rss "$tmp/rss-$name.txt" &
  sampler=$!
  bench_bg_pids+=("$sampler")
  BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$tenant BENCH_CREATE_BODY="$tmp/create.json" \
    wrk "${args[@]}" "$base$path" >"$log" 2>&1 || { cat "$log" >&2; die "wrk $name failed"; }
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; server_log_tail; die "the server died during $name"; }
  rate[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$log")
  p50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$log")")
  p99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$log")")
  peak[$name]=$(sort -n "$tmp/rss-$name.txt" | tail -n 1)
  local non2xx sock
  non2xx=$(awk -F: '/Non-2xx or 3xx responses/ { gsub(/ /, "", $2); print $2 }' "$log")
  sock=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' "$log")
  errs[$name]="${non2xx:-0} non-2xx"
  [ -n "$sock" ] && errs[$name]+=", socket errors: $sock"
  if [ -n "$non2xx" ] || [ -n "$sock" ] || [ -z "${rate[$name]}" ]; then
    problems+=("$name: ${errs[$name]}")
    say "!!! $name: ${errs[$name]}; wrk output:"
    cat "$log" >&2
  fi
}

# run_pgbench NAME SCRIPT -D...: latency percentiles from the per-transaction log.
run_pgbench() {
  local name=$1 script=$2 log="$tmp/pgbench-$1.txt" rc=0
  shift 2
  checkpoint
  say "pgbench $name: -c $conns -j $threads -T $duration -M prepared -f $script ($shard_db)"
  mkdir -p "$tmp/pglog-$name"
  pgbench -n -h 127.0.0.1 -p "$pg_port" -U postgres -c "$conns" -j "$threads" -T "$duration" -M prepared \
    --random-seed="$seed" -l --log-prefix="$tmp/pglog-$name/tx" -f "$script" "$@" "$shard_db" \
    >"$log" 2>&1 || rc=$?
  rate[$name]=$(awk '/^tps = .*without initial connection time/ { printf "%.0f", $3 }' "$log")
  # Log lines: client_id transaction_no latency_us script_no epoch_s epoch_us
  read -r p50_us p99_us < <(cat "$tmp/pglog-$name"/tx* | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR == 0) { print "? ?"; exit }
             i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
             print v[i50], v[i99] }')
  p50[$name]=$(awk -v v="$p50_us" 'BEGIN { if (v == "?") print "?"; else printf "%.3f", v / 1000 }')
  p99[$name]=$(awk -v v="$p99_us" 'BEGIN { if (v == "?") print "?"; else printf "%.3f", v / 1000 }')
  local failed
  failed=$(awk -F: '/number of failed transactions/ { split($2, a, " "); print a[1] }' "$log")
  errs[$name]="${failed:-?} failed"
  peak[$name]="-"
  if [ "$rc" != 0 ] || [ "${failed:-0}" != 0 ] || [ -z "${rate[$name]}" ]; then
    problems+=("$name: pgbench exit $rc, ${errs[$name]}")
    say "!!! pgbench $name: exit $rc; output:"
    cat "$log" >&2
  fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run_wrk livez /livez
run_wrk read "/fhir/$tenant/Patient/p1" bench/read_by_id.lua
run_pgbench read_sql bench/read_by_id.sql -D tenant="$tenant" -D rtype=Patient -D n="$n"
posts_before=$(psql_db "$shard_db" -Atc "select count(*) from resource_versions where method='POST'")
run_wrk create "/fhir/$tenant/Patient" bench/create.lua
# Every 201 must be a stored row (in-flight requests at the cut may add a few).
created=$(( $(psql_db "$shard_db" -Atc "select count(*) from resource_versions where method='POST'") - posts_before ))
answered=$(awk '/requests in/ { print $1 }' "$tmp/wrk-create.txt")
if [ "$created" -lt "${answered:-0}" ]; then
  problems+=("create: wrk got $answered answers but only $created rows were stored")
fi
run_pgbench create_sql bench/create.sql -D tenant="$tenant" -D rtype=Patient -D c=0 \
  -D t0="$(date +%s%6N)" -D body="$stored_body"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

server_errors=$(grep -cE '"level":"(warn|error)"' "$tmp/server.log" || true)

# --- Report -------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "?"; else printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { if (k == "" || k == "-") print "-"; else printf "%.0f", k / 1024 }'; }
overall_peak=$(cat "$tmp"/rss-*.txt | sort -n | tail -n 1)
mem_total=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
body_bytes=$(wc -c <"$tmp/create.json")
stored_bytes=$(printf '%s' "$stored_body" | wc -c)
pg_version=$(psql_db postgres -Atc 'show server_version')
pg_fsync=$(psql_db postgres -Atc 'show fsync')
revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo "no commit")

report() {
  echo "## medgrid CRUD benchmark"
  echo
  echo "- machine: $(nproc) CPUs, $cpu_model, $mem_total RAM; $(uname -sr); load average before $load_before, after $load_after"
  echo "- server: $bin_built ($revision), --log-level=$log_level (one JSON access-log line per request at info), default pools; PostgreSQL $pg_version (fsync=$pg_fsync) on the same machine, database $shard_db"
  echo "- data: $n Patients seeded by PUT (seed $seed) at $seed_rate/s; create body $body_bytes bytes sent, $stored_bytes stored"
  echo "- load: wrk -t$threads -c$conns -d${duration}s --latency; pgbench -c $conns -j $threads -T $duration -M prepared"
  echo
  echo "| benchmark | req/s | p50 ms | p99 ms | server peak RSS MiB | errors |"
  echo "|---|---:|---:|---:|---:|---|"
  local k
  for k in livez read read_sql create create_sql; do
    echo "| ${label[$k]} | ${rate[$k]:-?} | ${p50[$k]:-?} | ${p99[$k]:-?} | $(mib "${peak[$k]:-}") | ${errs[$k]:-?} |"
  done
  echo
  echo "| ratio | value | reference |"
  echo "|---|---:|---|"
  echo "| read / pgbench read | $(ratio "${rate[read]}" "${rate[read_sql]}") | >= 0.5 |"
  echo "| create / pgbench create | $(ratio "${rate[create]}" "${rate[create_sql]}") | >= 0.5 |"
  echo "| read / livez | $(ratio "${rate[read]}" "${rate[livez]}") | |"
  echo "| create / livez | $(ratio "${rate[create]}" "${rate[livez]}") | |"
  echo "| read p99 | ${p99[read]} ms | < 10 ms |"
  echo
  echo "Server RSS: $(mib "$idle_rss") MiB idle after start and seeding, $(mib "$overall_peak") MiB peak under load (sampled every 0.5 s)."
  echo "Creates stored by the server: $created rows for $answered answers. Server log lines at warn or above: $server_errors."
  if [ "${#problems[@]}" -gt 0 ]; then
    echo
    echo "**FAILED**: $(IFS=';'; echo "${problems[*]}")"
  fi
}

echo
report
if [ -n "$out" ]; then
  report >"$out"
  say "wrote $out"
fi
if [ "$server_errors" != 0 ]; then
  say "server log (first 20 lines):"
  head -n 20 "$tmp/server.log" >&2
fi
if [ "${#problems[@]}" -gt 0 ]; then
  die "errors under load: $(IFS=';'; echo "${problems[*]}")"
fi
