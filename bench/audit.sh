#!/usr/bin/env bash
# Read-by-id with auditing on against the same server with auditing off, in
# one run, on one database: every read then also builds an AuditEvent and
# appends it to the spool, and a thread moves the events into the ledger.
#
# Starts a private PostgreSQL on a free loopback port in a temporary
# directory, seeds BENCH_N Patients through a server without auditing, then
# measures `GET /fhir/bench/Patient/p<random i>` (read_by_id.lua) with wrk for
# BENCH_DURATION seconds, alternating a server with auditing off and one with
# it on (the same binary and database) for BENCH_ROUNDS rounds each. Prints
# each measurement, the ratio of the means, and checks that the audited
# server's ledger took every event. Stops everything it started.
#
#   bench/audit.sh
#   BENCH_DURATION=5 BENCH_ROUNDS=1 bench/audit.sh      # quick check
#
# Environment: BENCH_N (5000), BENCH_DURATION (15), BENCH_ROUNDS (2),
# BENCH_CONNECTIONS (32), BENCH_THREADS (2), BENCH_SEED (42), BENCH_SERVER_BIN,
# BENCH_KEEP=1 (keep the temporary directory), MEDGRID_PG_FSYNC (on).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

n=${BENCH_N:-5000}
duration=${BENCH_DURATION:-15}
rounds=${BENCH_ROUNDS:-2}
conns=${BENCH_CONNECTIONS:-32}
threads=${BENCH_THREADS:-2}
seed=${BENCH_SEED:-42}
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[audit] %s\n' "$*" >&2; }
die() { printf '[audit] FAILED: %s\n' "$*" >&2; exit 1; }

bench_begin audit

# start_server on|off: the same binary and database, auditing on or off.
start_server() {
  local extra=()
  [ "$1" = on ] && extra=(--audit-spool-dir="$tmp/spool")
  bench_start_server --pg-admin-dsn="$pg_dsn" --auth=off --log-level=warn "${extra[@]}"
}

start_server off
bench_create_tenant "$base" "$tenant"
say "seeding $n Patients (seed $seed)"
python3 bench/gen_patients.py --count "$n" --seed "$seed" --dir "$tmp/seed" --base-url "$base/fhir/$tenant"
curl -sS -Z --parallel-max "$conns" -K "$tmp/seed/load.curl" >"$tmp/seed.codes" 2>"$tmp/seed.err" || true
ok=$(grep -cE '^2[0-9][0-9]$' "$tmp/seed.codes" || true)
[ "$ok" = "$n" ] || die "only $ok of $n seeding PUTs answered 2xx"

declare -a off_rates=() on_rates=()
measure() {  # measure on|off ROUND
  local log="$tmp/wrk-$1-$2.txt" rate
  BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$tenant wrk -t"$threads" -c"$conns" -d2s -s bench/read_by_id.lua \
    "$base/" >/dev/null 2>&1 || true
  BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$tenant wrk -t"$threads" -c"$conns" -d"${duration}s" --latency \
    -s bench/read_by_id.lua "$base/" >"$log" 2>&1 || { cat "$log" >&2; die "wrk failed"; }
  if grep -q "Non-2xx\|Socket errors" "$log"; then cat "$log" >&2; die "errors while reading with auditing $1"; fi
  rate=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$log")
  say "round $2, auditing $1: $rate req/s, p99 $(awk '$1 == "99%" { print $2 }' "$log")"
  if [ "$1" = on ]; then on_rates+=("$rate"); else off_rates+=("$rate"); fi
}

for round in $(seq "$rounds"); do
  [ "$round" = 1 ] || { bench_stop_server "$server_pid"; start_server off; }
  measure off "$round"
  bench_stop_server "$server_pid"
  start_server on
  measure on "$round"
  # Every read of the audited server is in the ledger once it drains.
  for _ in $(seq 100); do
    pending=$(curl -s "$base/metrics" | awk '/^medgrid_audit_spool_pending_bytes/ { print $2 }')
    [ "$pending" = 0 ] && break
    sleep 0.2
  done
  metrics=$(curl -s "$base/metrics")
  recorded=$(awk '/^medgrid_audit_events\{state="recorded"\}/ { printf "%.0f", $2 }' <<<"$metrics")
  appended=$(awk '/^medgrid_audit_events\{state="appended"\}/ { printf "%.0f", $2 }' <<<"$metrics")
  lost=$(awk '/^medgrid_audit_events\{state="spool_failed"\}/ { printf "%.0f", $2 }' <<<"$metrics")
  say "round $round: $recorded events recorded, $appended in the ledger, $lost lost"
  if [ "$recorded" != "$appended" ] || [ "$lost" != 0 ]; then die "the ledger did not take every event"; fi
done

mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.0f", s / NR }'; }
off=$(mean "${off_rates[@]}")
on=$(mean "${on_rates[@]}")
ledger_rows=$(psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d medgrid_audit -Atc \
  "select count(*) from ledger_entries where tenant_id = '$tenant'")
cat <<TABLE

read-by-id, $n Patients, wrk -t$threads -c$conns -d${duration}s x $rounds rounds each, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))
| measurement | req/s (each round) | mean | ratio |
|---|---|---:|---:|
| auditing off (baseline) | ${off_rates[*]} | $off | 1.00 |
| auditing on | ${on_rates[*]} | $on | $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }') |

AuditEvents in the ledger of tenant $tenant: $ledger_rows
TABLE
