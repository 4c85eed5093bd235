#!/usr/bin/env bash
# What an Idempotency-Key costs a create, in one run against a private
# PostgreSQL: wrk POST /fhir/bench/Patient for BENCH_DURATION seconds each
#   create          no key (the non-blocking path, one INSERT statement)
#   create (key)    a new key per request (the blocking path: one transaction
#                   with the advisory lock, the look-up, the write and the
#                   key's record)
#   replay          the same key every time (after the first, a look-up and a
#                   read of the recorded version)
# and prints rates, p50/p99 and the ratios to the keyless create. Exits
# non-zero on any non-2xx answer or socket error, or when the keyed run
# stored a different number of Patients than keys it was answered for.
#
#   BENCH_DURATION=10 bench/idempotency.sh
#
# Environment: BENCH_DURATION (10), BENCH_CONNECTIONS (32), BENCH_THREADS (2),
# BENCH_SEED (42), BENCH_OUT (markdown result file), BENCH_SERVER_BIN,
# BENCH_LOG_LEVEL (info), BENCH_KEEP=1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

duration=${BENCH_DURATION:-10}
conns=${BENCH_CONNECTIONS:-32}
threads=${BENCH_THREADS:-2}
seed=${BENCH_SEED:-42}
out=${BENCH_OUT:-}
log_level=${BENCH_LOG_LEVEL:-info}
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[idempotency] %s\n' "$*" >&2; }
die() { printf '[idempotency] FAILED: %s\n' "$*" >&2; exit 1; }

bench_begin idempotency
bench_start_server --pg-admin-dsn="$pg_dsn" --auth=off --log-level="$log_level"
bench_create_tenant "$base" "$tenant"
shard_db=$(bench_shard_db "$tenant")
python3 bench/gen_patients.py --seed "$seed" --create-body >"$tmp/create.json"

declare -A rate p50 p99 errs label=([plain]="create, no key" [keyed]="create, a new key each" [replay]="create, one key (replays)")
problems=()
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "?" }'
}
posts() { psql_db "$shard_db" -Atc "select count(*) from resource_versions where tenant_id='$tenant' and method='POST'"; }

# run NAME LUA [KEY_MODE]
run() {
  local name=$1 lua=$2 mode=${3:-} log="$tmp/wrk-$1.txt"
  psql_db "$shard_db" -c CHECKPOINT >/dev/null
  say "wrk $name"
  BENCH_TENANT=$tenant BENCH_CREATE_BODY="$tmp/create.json" BENCH_KEY_MODE=$mode \
    wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s "$lua" "$base/fhir/$tenant/Patient" >"$log" 2>&1 ||
    { cat "$log" >&2; die "wrk $name failed"; }
  rate[$name]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$log")
  p50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$log")")
  p99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$log")")
  local non2xx sock
  non2xx=$(awk -F: '/Non-2xx or 3xx responses/ { gsub(/ /, "", $2); print $2 }' "$log")
  sock=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' "$log")
  errs[$name]="${non2xx:-0} non-2xx"
  [ -n "$sock" ] && errs[$name]+=", socket errors: $sock"
  if [ -n "$non2xx" ] || [ -n "$sock" ] || [ -z "${rate[$name]}" ]; then
    problems+=("$name: ${errs[$name]}")
    cat "$log" >&2
  fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run plain bench/create.lua
before=$(posts)
run keyed bench/create_keyed.lua unique
keyed_rows=$(( $(posts) - before ))
keyed_answers=$(awk '/requests in/ { print $1 }' "$tmp/wrk-keyed.txt")
records=$(psql_db "$shard_db" -Atc "select count(*) from idempotency_keys where tenant_id='$tenant'")
# The replayed key's first request, before the load: otherwise the
# connections that start while it runs answer 409 (in flight), as they should.
code=$(curl -sS -o "$tmp/first.json" -w '%{http_code}' -X POST "$base/fhir/$tenant/Patient" \
  -H 'Content-Type: application/fhir+json' -H 'Idempotency-Key: bench-replay' --data-binary "@$tmp/create.json")
[ "$code" = 201 ] || die "the replayed key's first POST answered $code: $(head -c 500 "$tmp/first.json")"
before=$(posts)
run replay bench/create_keyed.lua same
replay_rows=$(( $(posts) - before ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# A request cut off by wrk at the end may still commit: a few more rows than answers.
[ "$keyed_rows" -ge "${keyed_answers:-0}" ] || problems+=("keyed: $keyed_answers answers, $keyed_rows rows")
[ "$replay_rows" = 0 ] || problems+=("replay: $replay_rows Patients written by replays of one key, expected 0")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "?"; else printf "%.2f", a / b }'; }
report() {
  echo "## Idempotency-Key on create"
  echo
  echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load average before $load_before, after $load_after"
  echo "- server: ${bin#"$root"/} ($(git -C "$root" describe --always --dirty 2>/dev/null)), --log-level=$log_level; PostgreSQL $(psql_db postgres -Atc 'show server_version') on the same machine"
  echo "- load: wrk -t$threads -c$conns -d${duration}s --latency"
  echo
  echo "| benchmark | req/s | p50 ms | p99 ms | errors |"
  echo "|---|---:|---:|---:|---|"
  local k
  for k in plain keyed replay; do
    echo "| ${label[$k]} | ${rate[$k]:-?} | ${p50[$k]:-?} | ${p99[$k]:-?} | ${errs[$k]:-?} |"
  done
  echo
  echo "| ratio | value |"
  echo "|---|---:|"
  echo "| keyed create / create | $(ratio "${rate[keyed]}" "${rate[plain]}") |"
  echo "| replay / create | $(ratio "${rate[replay]}" "${rate[plain]}") |"
  echo
  echo "Keyed run: $keyed_answers answers, $keyed_rows Patients stored, $records key records. Replay run: $replay_rows Patients written (its key was used once before the run)."
  if [ "${#problems[@]}" -gt 0 ]; then echo; echo "**FAILED**: $(IFS=';'; echo "${problems[*]}")"; fi
}
echo
report
[ -n "$out" ] && report >"$out"
[ "${#problems[@]}" -eq 0 ] || die "$(IFS=';'; echo "${problems[*]}")"
