#!/usr/bin/env bash
# Read-by-id with SMART auth and consent on, against the same server with
# them off, in one run, on one database; then the cost of a consent decision
# whose patient's Consents are not cached (bench/consent_bench.cc) against a
# SELECT 1 round trip to the same PostgreSQL.
#
# With auth on, every read verifies its bearer token (cached until it
# expires), checks the scopes, and asks the consent service about the
# patient (cached in L1 after the first read of each patient; Redis is not
# used here). The token is a clinician's (user/*.read) of an opt-out tenant
# whose patients have no Consents, so every read is permitted.
#
# Starts a private PostgreSQL on a free loopback port in a temporary
# directory, seeds BENCH_N Patients through a server with auth off, then
# measures `GET /fhir/bench/Patient/p<random i>` (read_by_id.lua) with wrk
# for BENCH_DURATION seconds, alternating the server with auth off and on
# (the same binary and database) for BENCH_ROUNDS rounds each. Stops
# everything it started.
#
#   bench/auth.sh
#   BENCH_DURATION=5 BENCH_ROUNDS=1 bench/auth.sh      # quick check
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
ctl=$root/build/release/services/medgridctl
tenant=bench

say() { printf '[auth] %s\n' "$*" >&2; }
die() { printf '[auth] FAILED: %s\n' "$*" >&2; exit 1; }

bench_begin auth
cmake --build --preset release --target medgridctl consent_bench >/dev/null
issuer=https://idp.bench.medgrid
"$ctl" token keygen --key-out "$tmp/key.pem" --jwks-out "$tmp/jwks.json" --kid bench-1 >/dev/null
mint() { "$ctl" token mint --key "$tmp/key.pem" --kid bench-1 --issuer "$issuer" --audience medgrid "$@"; }

# start_server on|off: the same binary and database, auth on or off.
start_server() {
  local extra=(--auth=off)
  [ "$1" = on ] && extra=(--jwks="$tmp/jwks.json" --auth-issuer="$issuer" --auth-audience=medgrid)
  bench_start_server --pg-admin-dsn="$pg_dsn" --log-level=warn "${extra[@]}"
}

start_server off
code=$(curl -sS -o "$tmp/tenant.json" -w '%{http_code}' -X POST "$base/admin/tenants" \
  -H 'Content-Type: application/json' -d "{\"id\":\"$tenant\",\"consentPolicy\":\"opt-out\"}")
[ "$code" = 201 ] || die "POST /admin/tenants answered $code: $(cat "$tmp/tenant.json")"
say "seeding $n Patients (seed $seed)"
python3 bench/gen_patients.py --count "$n" --seed "$seed" --dir "$tmp/seed" --base-url "$base/fhir/$tenant"
curl -sS -Z --parallel-max "$conns" -K "$tmp/seed/load.curl" >"$tmp/seed.codes" 2>"$tmp/seed.err" || true
ok=$(grep -cE '^2[0-9][0-9]$' "$tmp/seed.codes" || true)
[ "$ok" = "$n" ] || die "only $ok of $n seeding PUTs answered 2xx"
token=$(mint --subject clinician --tenant "$tenant" --fhir-user Practitioner/bench --roles physician \
  --scope "user/*.read" --ttl-s 86400)

declare -a off_rates=() on_rates=()
measure() {  # measure on|off ROUND
  local log="$tmp/wrk-$1-$2.txt" rate tok=
  [ "$1" = on ] && tok=$token
  # The warm-up reads every patient once or more: decisions are cached after.
  BENCH_TOKEN=$tok BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$tenant wrk -t"$threads" -c"$conns" -d3s \
    -s bench/read_by_id.lua "$base/" >/dev/null 2>&1 || true
  BENCH_TOKEN=$tok BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$tenant wrk -t"$threads" -c"$conns" -d"${duration}s" \
    --latency -s bench/read_by_id.lua "$base/" >"$log" 2>&1 || { cat "$log" >&2; die "wrk failed"; }
  if grep -q "Non-2xx\|Socket errors" "$log"; then cat "$log" >&2; die "errors while reading with auth $1"; fi
  rate=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$log")
  say "round $2, auth $1: $rate req/s, p99 $(awk '$1 == "99%" { print $2 }' "$log")"
  if [ "$1" = on ]; then on_rates+=("$rate"); else off_rates+=("$rate"); fi
}

for round in $(seq "$rounds"); do
  [ "$round" = 1 ] || { bench_stop_server "$server_pid"; start_server off; }
  measure off "$round"
  bench_stop_server "$server_pid"
  start_server on
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/fhir/$tenant/Patient/p1")" = 401 ] \
    || die "the auth-on server answered a read without a token"
  measure on "$round"
  lookups=$(curl -s "$base/metrics" | grep '^medgrid_consent_lookups_total' | tr '\n' ' ')
  say "round $round: consent lookups: $lookups"
done
bench_stop_server "$server_pid"
server_pid=

mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.0f", s / NR }'; }
off=$(mean "${off_rates[@]}")
on=$(mean "${on_rates[@]}")
psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -c "create database consent_bench" >/dev/null
say "consent decisions: L1 misses against SELECT 1"
decisions=$("$root/build/release/bench/consent_bench" \
  --dsn "host=127.0.0.1 port=$pg_port user=postgres dbname=consent_bench" --iterations "${BENCH_DECISIONS:-20000}")
cat <<TABLE

read-by-id, $n Patients, wrk -t$threads -c$conns -d${duration}s x $rounds rounds each, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))
| measurement | req/s (each round) | mean | ratio |
|---|---|---:|---:|
| auth off (baseline) | ${off_rates[*]} | $off | 1.00 |
| auth, scopes and consent on (tokens and decisions cached) | ${on_rates[*]} | $on | $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }') |
$decisions
TABLE
