#!/usr/bin/env bash
# The FHIR read cache, in one run on one database:
#  1. read-by-id answered from L1 (every Patient cached after the warm-up)
#     against /livez of the same server, which does no FHIR work at all: the
#     ratio says how close a cached read comes to the bare HTTP path;
#  2. one hot patient read by 64 connections while its L1 entry expires
#     every BENCH_HOT_TTL_MS (so 64 readers miss together again and again):
#     database reads per 1,000 requests with request coalescing forced on
#     (--cache-coalescing=always) and off.
#
# Starts a private PostgreSQL on a free loopback port in a temporary
# directory and the server with --auth=off and no Redis (L1 only), seeds
# BENCH_N Patients, measures with wrk, and stops everything it started.
#
#   bench/cache.sh
#   BENCH_DURATION=5 BENCH_ROUNDS=1 bench/cache.sh      # quick check
#
# Environment: BENCH_N (1000), BENCH_DURATION (15), BENCH_ROUNDS (2),
# BENCH_CONNECTIONS (32), BENCH_HOT_CONNECTIONS (64), BENCH_HOT_TTL_MS (20),
# BENCH_THREADS (2), BENCH_SEED (42), BENCH_SERVER_BIN, BENCH_KEEP=1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

n=${BENCH_N:-1000}
duration=${BENCH_DURATION:-15}
rounds=${BENCH_ROUNDS:-2}
conns=${BENCH_CONNECTIONS:-32}
hot_conns=${BENCH_HOT_CONNECTIONS:-64}
hot_ttl=${BENCH_HOT_TTL_MS:-20}
threads=${BENCH_THREADS:-2}
seed=${BENCH_SEED:-42}
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[cache] %s\n' "$*" >&2; }
die() { printf '[cache] FAILED: %s\n' "$*" >&2; exit 1; }

bench_begin cache

start_server() {  # start_server FLAG...
  bench_start_server --pg-admin-dsn="$pg_dsn" --log-level=warn --auth=off "$@"
}

# metric NAME: the sum of every series of NAME in /metrics (0 when absent).
metric() { curl -s "$base/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'; }

# read_statements: medgrid_db_queries_total{kind="read"} over every shard.
read_statements() {
  curl -s "$base/metrics" | awk '/^medgrid_db_queries_total\{/ && /kind="read"/ { s += $2 } END { printf "%.0f", s }'
}

wrk_rate() {  # wrk_rate LOG: requests per second
  awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"
}
wrk_total() {  # wrk_total LOG: requests completed
  awk '/requests in/ { print $1 }' "$1"
}
check_wrk() {  # check_wrk LOG WHAT
  if grep -q "Non-2xx\|Socket errors" "$1"; then cat "$1" >&2; die "errors while measuring $2"; fi
}

start_server
bench_create_tenant "$base" "$tenant"
say "seeding $n Patients (seed $seed)"
python3 bench/gen_patients.py --count "$n" --seed "$seed" --dir "$tmp/seed" --base-url "$base/fhir/$tenant"
curl -sS -Z --parallel-max "$conns" -K "$tmp/seed/load.curl" >"$tmp/seed.codes" 2>"$tmp/seed.err" || true
ok=$(grep -cE '^2[0-9][0-9]$' "$tmp/seed.codes" || true)
[ "$ok" = "$n" ] || die "only $ok of $n seeding PUTs answered 2xx"

# 1. Cached reads against /livez, alternating, same server.
declare -a read_rates=() livez_rates=()
BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$tenant wrk -t"$threads" -c"$conns" -d5s -s bench/read_by_id.lua \
  "$base/" >/dev/null 2>&1 || true
for round in $(seq "$rounds"); do
  log="$tmp/wrk-livez-$round.txt"
  wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$base/livez" >"$log" 2>&1 || die "wrk failed"
  check_wrk "$log" /livez
  livez_rates+=("$(wrk_rate "$log")")
  say "round $round, /livez: $(wrk_rate "$log") req/s, p99 $(awk '$1 == "99%" { print $2 }' "$log")"
  hits=$(metric 'medgrid_cache_requests_total{level="l1",result="hit"}')
  backend=$(metric medgrid_cache_backend_reads_total)
  log="$tmp/wrk-read-$round.txt"
  BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$tenant wrk -t"$threads" -c"$conns" -d"${duration}s" --latency \
    -s bench/read_by_id.lua "$base/" >"$log" 2>&1 || die "wrk failed"
  check_wrk "$log" read-by-id
  read_rates+=("$(wrk_rate "$log")")
  hits=$(( $(metric 'medgrid_cache_requests_total{level="l1",result="hit"}') - hits ))
  backend=$(( $(metric medgrid_cache_backend_reads_total) - backend ))
  say "round $round, read-by-id: $(wrk_rate "$log") req/s, p99 $(awk '$1 == "99%" { print $2 }' "$log"), L1 hits $hits, database reads $backend"
done
bench_stop_server "$server_pid"
server_pid=

# 2. The hot patient: coalescing always and off.
declare -A per_thousand_db=() per_thousand_rs=() per_thousand_reads=() hot_rates=()
for mode in always off; do
  # The hot patient's own (longer) L1 TTL is set to the same period, so
  # the two runs differ in coalescing only.
  start_server --cache-coalescing="$mode" --cache-l1-ttl-ms="$hot_ttl" --cache-hot-l1-ttl-ms="$hot_ttl" \
    --hot-patient-rps=0
  curl -sf -o /dev/null "$base/fhir/$tenant/Patient/p1" || die "no Patient/p1"
  db0=$(metric medgrid_db_queries_total)
  rs0=$(read_statements)
  reads0=$(metric medgrid_cache_backend_reads_total)
  log="$tmp/wrk-hot-$mode.txt"
  wrk -t"$threads" -c"$hot_conns" -d"${duration}s" --latency "$base/fhir/$tenant/Patient/p1" >"$log" 2>&1 \
    || die "wrk failed"
  check_wrk "$log" "the hot patient"
  total=$(wrk_total "$log")
  db=$(( $(metric medgrid_db_queries_total) - db0 ))
  rs=$(( $(read_statements) - rs0 ))
  reads=$(( $(metric medgrid_cache_backend_reads_total) - reads0 ))
  coalesced=$(metric medgrid_cache_coalesced_total)
  per_thousand_db[$mode]=$(awk -v a="$db" -v t="$total" 'BEGIN { printf "%.1f", 1000 * a / t }')
  per_thousand_rs[$mode]=$(awk -v a="$rs" -v t="$total" 'BEGIN { printf "%.1f", 1000 * a / t }')
  per_thousand_reads[$mode]=$(awk -v a="$reads" -v t="$total" 'BEGIN { printf "%.1f", 1000 * a / t }')
  hot_rates[$mode]=$(wrk_rate "$log")
  say "coalescing $mode: $total requests, $(wrk_rate "$log") req/s, database statements $db (reads $rs), reads by id $reads, coalesced $coalesced"
  bench_stop_server "$server_pid"
  server_pid=
done

mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.0f", s / NR }'; }
livez=$(mean "${livez_rates[@]}")
read=$(mean "${read_rates[@]}")
cat <<TABLE

$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), wrk -t$threads, ${duration}s runs
| measurement | req/s (each round) | mean | ratio |
|---|---|---:|---:|
| /livez, c$conns (baseline) | ${livez_rates[*]} | $livez | 1.00 |
| read-by-id from L1, $n Patients, c$conns | ${read_rates[*]} | $read | $(awk -v a="$read" -v b="$livez" 'BEGIN { printf "%.2f", a / b }') |

one Patient, c$hot_conns, L1 TTL ${hot_ttl} ms
| coalescing | req/s | database statements / 1,000 requests (all kinds) | read statements / 1,000 requests | reads by id the cache sent on / 1,000 requests |
|---|---:|---:|---:|---:|
| off (baseline) | ${hot_rates[off]} | ${per_thousand_db[off]} | ${per_thousand_rs[off]} | ${per_thousand_reads[off]} |
| always | ${hot_rates[always]} | ${per_thousand_db[always]} | ${per_thousand_rs[always]} | ${per_thousand_reads[always]} |
TABLE
