#!/usr/bin/env bash
# Tenant isolation on one shard, in one run, on one database: how much a
# noisy tenant's flood of reads slows a quiet tenant's reads on the same
# shard, with the per-tenant database bulkhead off (--db-tenant-connections=0)
# and on (BENCH_CAP, the server's default 20).
#
# Starts a private PostgreSQL on a free loopback port in a temporary
# directory and the server with --auth=off --cache=off (every read reaches
# the database). Creates tenant `noisy`, then tenants until one lands on
# noisy's shard (tenants go to the shard with the fewest); that one is the
# quiet tenant. Seeds BENCH_N Patients in each. Then, per round, for the cap
# off and on (the server restarted for each, same binary and database):
#  1. the quiet tenant alone: GET /fhir/<quiet>/Patient/p<random i>,
#     wrk -tN -cN with N = BENCH_QUIET_CONNECTIONS and read_by_id_timed.lua,
#     which times every request itself (the baseline);
#  2. the same while the noisy tenant reads by id (read_by_id.lua) with
#     BENCH_NOISY_CONNECTIONS connections, starting BENCH_LEAD s before the
#     quiet tenant's wrk and ending BENCH_LEAD s after it.
# Reads by id go to the non-blocking per-I/O-thread pools (FIFO), where the
# noisy tenant's queued reads sit in front of the quiet tenant's unless the
# cap keeps them in the noisy tenant's own queue. Prints the quiet tenant's
# rate, p50 and p99 alone and under noise, the ratios under noise / alone,
# the noisy tenant's rate, its non-2xx (the cap's 503s) and socket errors,
# medgrid_bulkhead_rejections_total{pool="db_tenant"}, and the peaks of
# medgrid_db_pool_connections{state="tenant_max|tenant_waiting"} and of
# medgrid_degradation_level sampled every second. Stops everything it
# started. It only prints: nothing here asserts a speed. It fails if the
# quiet tenant gets any non-2xx answer (its wrk timeouts are only counted).
#
#   bench/tenant_bulkhead.sh
#   BENCH_DURATION=5 BENCH_ROUNDS=1 bench/tenant_bulkhead.sh      # quick check
#
# Environment: BENCH_N (1000 per tenant), BENCH_DURATION (15), BENCH_ROUNDS
# (2), BENCH_QUIET_CONNECTIONS (4), BENCH_NOISY_CONNECTIONS (64), BENCH_CAP
# (20), BENCH_LEAD (2), BENCH_THREADS (2, the noisy wrk's), BENCH_SEED (42),
# BENCH_SERVER_FLAGS (more server flags), BENCH_SERVER_BIN, BENCH_KEEP=1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

n=${BENCH_N:-1000}
duration=${BENCH_DURATION:-15}
rounds=${BENCH_ROUNDS:-2}
quiet_conns=${BENCH_QUIET_CONNECTIONS:-4}
noisy_conns=${BENCH_NOISY_CONNECTIONS:-64}
cap=${BENCH_CAP:-20}
lead=${BENCH_LEAD:-2}
threads=${BENCH_THREADS:-2}
seed=${BENCH_SEED:-42}
read -r -a server_flags <<<"${BENCH_SERVER_FLAGS:-}"
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
noisy=noisy
[ "$cap" -gt 0 ] || { echo "BENCH_CAP must be above 0 (the run with no cap is always made)" >&2; exit 1; }

say() { printf '[tenant_bulkhead] %s\n' "$*" >&2; }
die() { printf '[tenant_bulkhead] FAILED: %s\n' "$*" >&2; exit 1; }

bench_begin tenant_bulkhead
sampler_pid=
noisy_pid=
cleanup() {  # the sampler and the noisy wrk, then bench_cleanup
  local rc=$?
  set +e  # the (exit) below hands bench_cleanup the status; it must not end the trap here
  [ -z "$sampler_pid" ] || kill "$sampler_pid" 2>/dev/null || true
  [ -z "$noisy_pid" ] || kill "$noisy_pid" 2>/dev/null || true
  (exit "$rc")
  bench_cleanup
}
trap cleanup EXIT

start_server() {  # start_server CAP
  bench_start_server --pg-admin-dsn="$pg_dsn" --log-level=warn --auth=off --cache=off \
    --db-tenant-connections="$1" ${server_flags[@]+"${server_flags[@]}"}
}
stop_server() { bench_stop_server "$server_pid"; server_pid=; }

# metric NAME: the sum of every series of NAME in /metrics (0 when absent).
metric() { curl -s "$base/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'; }
# pool_state STATE: medgrid_db_pool_connections{state=STATE}, the largest over the shards (empty when absent).
pool_state() {
  curl -s "$base/metrics" | awk -v s="state=\"$1\"" '/^medgrid_db_pool_connections\{/ && index($1, s) {
    if (m == "" || $2 + 0 > m) m = $2 + 0 } END { print m }'
}
# tenant_shard TENANT: the tenant's shard, from GET /admin/tenants.
tenant_shard() {
  curl -sf "$base/admin/tenants" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tenants"]:
    if t["id"] == sys.argv[1]:
        print(t["shard"])' "$1"
}

# The quiet tenant's numbers come from read_by_id_timed.lua, which times each
# request itself (one connection per wrk thread): on this project's VM wrk's
# own latency histogram summed to several times connections x seconds, even
# at one connection, so its percentiles are not used here.
# timed LOG FIELD [FORMAT]: a field of the TIMED line (rps, p50_ms, p99_ms, busy, non2xx, ...),
# printed with FORMAT (%.2f; %.0f for rps and non2xx).
timed() {
  local format=${3:-%.2f}
  case $2 in rps | non2xx | requests) format=${3:-%.0f} ;; esac
  sed -n 's/^TIMED //p' "$1" | python3 -c 'import json, sys; print(sys.argv[2] % json.load(sys.stdin)[sys.argv[1]])' "$2" "$format"
}
wrk_rate() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
wrk_non2xx() { awk '/Non-2xx or 3xx responses:/ { s = $NF } END { print s + 0 }' "$1"; }
wrk_socket_errors() {  # connect + read + write + timeout
  awk '/Socket errors:/ { gsub(/,/, ""); s = $4 + $6 + $8 + $10 } END { print s + 0 }' "$1"
}
wrk_quiet() {  # wrk_quiet DURATION LOG
  BENCH_N=$n BENCH_SEED=$seed BENCH_TENANT=$quiet wrk -t"$quiet_conns" -c"$quiet_conns" -d"$1s" \
    -s bench/read_by_id_timed.lua "$base/" >"$2" 2>&1 || { cat "$2" >&2; die "wrk failed"; }
  grep -q '^TIMED ' "$2" || { cat "$2" >&2; die "no TIMED line from bench/read_by_id_timed.lua"; }
}
wrk_noisy() {  # wrk_noisy DURATION LOG
  BENCH_N=$n BENCH_SEED=$((seed + 1)) BENCH_TENANT=$noisy wrk -t"$threads" -c"$noisy_conns" -d"$1s" \
    -s bench/read_by_id.lua "$base/" >"$2" 2>&1
}
check_quiet() {  # check_quiet LOG WHAT: the quiet tenant is never refused (timeouts are only counted)
  if grep -q "Non-2xx" "$1" || [ "$(timed "$1" non2xx)" != 0 ]; then
    cat "$1" >&2; die "non-2xx answers to the quiet tenant's reads $2"
  fi
}
load() { cut -d' ' -f1 /proc/loadavg; }

start_server 0
bench_create_tenant "$base" "$noisy"
shard=$(tenant_shard "$noisy")
[ -n "$shard" ] || die "GET /admin/tenants does not list $noisy"
quiet=
for i in $(seq 1 8); do
  bench_create_tenant "$base" "quiet$i"
  if [ "$(tenant_shard "quiet$i")" = "$shard" ]; then quiet=quiet$i; break; fi
done
[ -n "$quiet" ] || die "no tenant landed on $noisy's shard $shard in 8 tries"
say "tenants $noisy and $quiet share shard $shard"
for t in "$noisy" "$quiet"; do
  say "seeding $n Patients in $t (seed $seed)"
  python3 bench/gen_patients.py --count "$n" --seed "$seed" --dir "$tmp/seed-$t" --base-url "$base/fhir/$t"
  curl -sS -Z --parallel-max 16 -K "$tmp/seed-$t/load.curl" >"$tmp/seed-$t.codes" 2>"$tmp/seed-$t.err" || true
  ok=$(grep -cE '^2[0-9][0-9]$' "$tmp/seed-$t.codes" || true)
  [ "$ok" = "$n" ] || die "only $ok of $n seeding PUTs in $t answered 2xx"
done
psql_db "$(bench_shard_db "$quiet")" -c 'VACUUM ANALYZE' >/dev/null
stop_server

# sample CAP ROUND: every second, the peaks of the cap's gauges and of
# medgrid_degradation_level, into $tmp/peaks-CAP-ROUND ("- - LEVEL" with no cap).
sample() {
  local out="$tmp/peaks-$1-$2" max=-1 waiting=-1 level=0 m w l
  while :; do
    m=$(pool_state tenant_max)
    w=$(pool_state tenant_waiting)
    l=$(metric medgrid_degradation_level)
    [ -z "$m" ] || [ "$m" -le "$max" ] || max=$m
    [ -z "$w" ] || [ "$w" -le "$waiting" ] || waiting=$w
    [ "$l" -le "$level" ] || level=$l
    if [ "$max" -lt 0 ]; then echo "- - $level"; else echo "$max $waiting $level"; fi >"$out"
    sleep 1
  done
}

declare -A alone_rate=() alone_p50=() alone_p99=() alone_errors=() noise_rate=() noise_p50=() noise_p99=() \
  noise_errors=() noisy_rate=() noisy_non2xx=() noisy_errors=() rejections=() peak_max=() \
  peak_waiting=() peak_level=() loads=()
for round in $(seq "$rounds"); do
  for c in 0 "$cap"; do
    k=$c-$round
    start_server "$c"
    # Warm-up: opens the pools' connections and reads both tenants' rows once.
    wrk_noisy 3 "$tmp/warm-noisy-$k.txt" &
    noisy_pid=$!
    wrk_quiet 3 "$tmp/warm-quiet-$k.txt"
    wait "$noisy_pid" || true
    noisy_pid=
    sleep 1

    # 1. The quiet tenant alone.
    log=$tmp/quiet-alone-$k.txt
    wrk_quiet "$duration" "$log"
    check_quiet "$log" alone
    alone_rate[$k]=$(timed "$log" rps) alone_p50[$k]=$(timed "$log" p50_ms) alone_p99[$k]=$(timed "$log" p99_ms)
    alone_errors[$k]=$(wrk_socket_errors "$log")
    say "round $round, cap $c, quiet alone: ${alone_rate[$k]} req/s, p50 ${alone_p50[$k]} ms, p99 ${alone_p99[$k]} ms," \
      "socket errors ${alone_errors[$k]}, busy $(timed "$log" busy) (load $(load))"

    # 2. The quiet tenant under the noisy tenant's flood.
    rej0=$(metric 'medgrid_bulkhead_rejections_total{pool="db_tenant"}')
    sample "$c" "$round" &
    sampler_pid=$!
    wrk_noisy $((duration + 2 * lead)) "$tmp/noisy-$k.txt" &
    noisy_pid=$!
    sleep "$lead"
    log=$tmp/quiet-noise-$k.txt
    wrk_quiet "$duration" "$log"
    loads[$k]=$(load)
    wait "$noisy_pid" || { cat "$tmp/noisy-$k.txt" >&2; die "the noisy tenant's wrk failed"; }
    noisy_pid=
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=
    check_quiet "$log" "under noise"
    noise_rate[$k]=$(timed "$log" rps) noise_p50[$k]=$(timed "$log" p50_ms) noise_p99[$k]=$(timed "$log" p99_ms)
    noise_errors[$k]=$(wrk_socket_errors "$log")
    noisy_rate[$k]=$(wrk_rate "$tmp/noisy-$k.txt")
    noisy_non2xx[$k]=$(wrk_non2xx "$tmp/noisy-$k.txt")
    noisy_errors[$k]=$(wrk_socket_errors "$tmp/noisy-$k.txt")
    rejections[$k]=$(( $(metric 'medgrid_bulkhead_rejections_total{pool="db_tenant"}') - rej0 ))
    read -r "peak_max[$k]" "peak_waiting[$k]" "peak_level[$k]" <"$tmp/peaks-$c-$round"
    say "round $round, cap $c, quiet under noise: ${noise_rate[$k]} req/s, p50 ${noise_p50[$k]} ms, p99 ${noise_p99[$k]} ms," \
      "socket errors ${noise_errors[$k]}, busy $(timed "$log" busy); noisy ${noisy_rate[$k]} req/s, non-2xx ${noisy_non2xx[$k]}," \
      "socket errors ${noisy_errors[$k]}, rejections ${rejections[$k]}, peak tenant_max ${peak_max[$k]}," \
      "tenant_waiting ${peak_waiting[$k]}, degradation level ${peak_level[$k]} (load ${loads[$k]})"
    stop_server
  done
done
if grep -qE '"level":"(error|fatal)"' "$tmp/server.log"; then
  say "the server log has errors:"; grep -E '"level":"(error|fatal)"' "$tmp/server.log" | tail -n 5 >&2
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.2f", s / NR }'; }
declare -A p99_ratio=() p50_ratio=() rate_ratio=()
for c in 0 "$cap"; do
  p=() m=() r=()
  for round in $(seq "$rounds"); do
    k=$c-$round
    p+=("$(ratio "${noise_p99[$k]}" "${alone_p99[$k]}")")
    m+=("$(ratio "${noise_p50[$k]}" "${alone_p50[$k]}")")
    r+=("$(ratio "${noise_rate[$k]}" "${alone_rate[$k]}")")
  done
  p99_ratio[$c]=$(mean "${p[@]}") p50_ratio[$c]=$(mean "${m[@]}") rate_ratio[$c]=$(mean "${r[@]}")
done

printf '\n%s CPUs (%s), shard %s: %s (quiet, wrk -t%s -c%s) and %s (noisy, wrk -t%s -c%s), %s Patients each, %ss runs, --cache=off\n' \
  "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$shard" "$quiet" "$quiet_conns" \
  "$quiet_conns" "$noisy" "$threads" "$noisy_conns" "$n" "$duration"
echo
echo 'The quiet tenant, latencies timed by read_by_id_timed.lua (socket errors: wrk timeouts etc.):'
echo '| round | cap | alone req/s | p50 ms | p99 ms | under noise req/s | p50 ms | p99 ms | p99 noise/alone | req/s noise/alone | socket errors alone / noise |'
echo '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|'
label() { if [ "$1" = 0 ]; then echo "off"; else echo "$1"; fi; }
for round in $(seq "$rounds"); do
  for c in 0 "$cap"; do
    k=$c-$round
    echo "| $round | $(label "$c") | ${alone_rate[$k]} | ${alone_p50[$k]} | ${alone_p99[$k]} | ${noise_rate[$k]} | ${noise_p50[$k]} | ${noise_p99[$k]} | $(ratio "${noise_p99[$k]}" "${alone_p99[$k]}") | $(ratio "${noise_rate[$k]}" "${alone_rate[$k]}") | ${alone_errors[$k]} / ${noise_errors[$k]} |"
  done
done
echo
echo 'The noisy tenant meanwhile (its whole run, BENCH_LEAD s longer on each side):'
echo '| round | cap | req/s | non-2xx | socket errors | db_tenant rejections | peak tenant_max / tenant_waiting | peak degradation level | load at end |'
echo '|---|---|---:|---:|---:|---:|---|---:|---:|'
for round in $(seq "$rounds"); do
  for c in 0 "$cap"; do
    k=$c-$round
    echo "| $round | $(label "$c") | ${noisy_rate[$k]} | ${noisy_non2xx[$k]} | ${noisy_errors[$k]} | ${rejections[$k]} | ${peak_max[$k]} / ${peak_waiting[$k]} | ${peak_level[$k]} | ${loads[$k]} |"
  done
done
cat <<SUMMARY

quiet p99 under noise / alone (mean over rounds): cap off ${p99_ratio[0]}, cap $cap ${p99_ratio[$cap]}
quiet p50 under noise / alone (mean over rounds): cap off ${p50_ratio[0]}, cap $cap ${p50_ratio[$cap]}
quiet req/s under noise / alone (mean over rounds): cap off ${rate_ratio[0]}, cap $cap ${rate_ratio[$cap]}
SUMMARY
