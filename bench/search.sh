#!/usr/bin/env bash
# Search benchmark of the medgrid server at growing data sizes, in one run.
#
# Starts a private PostgreSQL on a free loopback port in a temporary directory
# and the release server on another (as bench/crud.sh does), creates tenant
# "bench", and generates bench/searchdata/generate.py's stream once for the
# largest step (fixed seed; about 95 resources per patient). Then, for each
# step of the ladder (default 1000, 4000, 16000 patients):
#   load     PUT the patients added since the previous step (the pools with the
#            first), many keep-alive connections (search_load.py); VACUUM ANALYZE
#            the shard database and CHECKPOINT
#   queries  per shape, up to 500 queries with values drawn from the data
#            loaded so far (search_queries.py make), and a probe of the first
#            five of each (answers 200, matches per page)
#   measure  wrk GET /livez, the HTTP ceiling of the same server, then each
#            shape: wrk -t2 -c32 for --duration seconds rotating through its
#            queries (search_shapes.lua), after a --warmup run
#   medplum  first step only: the same queries in Medplum's in-memory router
#            (tests/differential/medplum_search.mjs --bench) on the same data
#   explain  last step only: EXPLAIN (ANALYZE, BUFFERS) of the first five
#            queries of each shape through GET /admin/explain/{tenant}/{Type}?{query};
#            the report keeps the slowest of the five
# and prints a markdown report (search_report.py): per shape and step req/s,
# p50/p95/p99, the ratio to /livez, last step / first step, medgrid / Medplum,
# and the targets. Stops everything it started, even on failure. Exits
# non-zero if a PUT failed, a response was not 2xx, or wrk saw socket errors.
#
#   bench/search.sh --steps 200,400 --duration 5          # quick check, ~3 minutes
#   bench/search.sh --out /tmp/search.md --explain-out docs/bench/search-explain.md
#   bench/search.sh --reuse KEPT_DIR                     # re-measure the last step of a kept run
#
# Options (environment in brackets, default after it):
#   --steps LIST          patients per step, increasing [BENCH_STEPS] 1000,4000,16000
#   --duration S          seconds per measurement [BENCH_DURATION] 20
#   --warmup S            seconds of unmeasured load before each [BENCH_WARMUP] 3
#   --connections N       wrk connections [BENCH_CONNECTIONS] 32
#   --threads N           wrk threads [BENCH_THREADS] 2
#   --load-connections N  concurrent PUTs while loading [BENCH_LOAD_CONNECTIONS] 32
#   --seed N              generator seed [BENCH_SEED] 1
#   --data-patients N     generate the stream for N patients (>= the last step) [BENCH_DATA_PATIENTS]
#                         = the last step; the pools' sizes depend on it, so a short ladder with
#                         --data-patients 16000 loads exactly the first patients of the full one
#   --per-shape N         queries per shape at most [BENCH_PER_SHAPE] 500
#   --medplum-duration S  seconds per Medplum measurement [BENCH_MEDPLUM_DURATION] = --duration
#   --no-medplum          skip the Medplum comparison
#   --out FILE            also write the report there [BENCH_OUT]
#   --explain-out FILE    write the plans there [BENCH_EXPLAIN_OUT] (default: $tmp only)
#   --reuse DIR           DIR is the kept directory (BENCH_KEEP=1) of an earlier run: start its
#                         PostgreSQL cluster, which holds the data of that run's last step, with
#                         the server of BENCH_SERVER_BIN, run VACUUM ANALYZE, and measure and
#                         explain the last step again (no generation, no loading, no Medplum);
#                         the report keeps the other steps and Medplum from the earlier run and
#                         says so. DIR is kept. For measuring a server change without reloading.
# Environment only: BENCH_SERVER_BIN (default build/release/services/medgrid,
# built if missing), BENCH_DATA_DIR (keep the generated stream there and reuse
# it), BENCH_KEEP=1 (keep the temporary directory: logs, raw wrk output, plans),
# MEDGRID_PG_FSYNC (on), MEDGRID_PG_SHARED_BUFFERS (256MB), BENCH_LOG_LEVEL (info, the
# server default).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

steps=${BENCH_STEPS:-1000,4000,16000}
duration=${BENCH_DURATION:-20}
warmup=${BENCH_WARMUP:-3}
conns=${BENCH_CONNECTIONS:-32}
threads=${BENCH_THREADS:-2}
load_conns=${BENCH_LOAD_CONNECTIONS:-32}
seed=${BENCH_SEED:-1}
data_patients=${BENCH_DATA_PATIENTS:-}
per_shape=${BENCH_PER_SHAPE:-500}
medplum_duration=${BENCH_MEDPLUM_DURATION:-}
medplum=1
reuse=
out=${BENCH_OUT:-}
explain_out=${BENCH_EXPLAIN_OUT:-}
log_level=${BENCH_LOG_LEVEL:-info}
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[search] %s\n' "$*" >&2; }
die() { printf '[search] FAILED: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --load-connections) load_conns=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --data-patients) data_patients=$2; shift 2 ;;
    --per-shape) per_shape=$2; shift 2 ;;
    --medplum-duration) medplum_duration=$2; shift 2 ;;
    --no-medplum) medplum=0; shift ;;
    --out) out=$2; shift 2 ;;
    --explain-out) explain_out=$2; shift 2 ;;
    --reuse) reuse=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
medplum_duration=${medplum_duration:-$duration}
if [ -n "$reuse" ]; then
  for f in meta.tsv loads.jsonl pg; do [ -e "$reuse/$f" ] || die "--reuse $reuse: no $f there (was it kept with BENCH_KEEP=1?)"; done
  steps=$(awk -F'\t' '$1 == "steps" { print $2 }' "$reuse/meta.tsv")
  seed=$(awk -F'\t' '$1 == "seed" { print $2 }' "$reuse/meta.tsv")
  medplum=0
fi
IFS=, read -r -a step_list <<<"$steps"
[ "${#step_list[@]}" -ge 1 ] || die "--steps is empty"
prev=0
for s in "${step_list[@]}"; do
  if ! [[ $s =~ ^[0-9]+$ ]] || [ "$s" -le "$prev" ]; then die "--steps must be increasing patient counts, got $steps"; fi
  prev=$s
done
first_step=${step_list[0]}
last_step=${step_list[-1]}
data_patients=${data_patients:-$last_step}
if ! [[ $data_patients =~ ^[0-9]+$ ]] || [ "$data_patients" -lt "$last_step" ]; then
  die "--data-patients must be at least the last step ($last_step)"
fi
# Make the report paths absolute before anything changes directory.
[ -z "$out" ] || out=$(realpath -m "$out")
[ -z "$explain_out" ] || explain_out=$(realpath -m "$explain_out")

node=
if [ "$medplum" = 1 ]; then
  node="$(tests/differential/install.sh)/bin/node" || die "tests/differential/install.sh failed (or use --no-medplum)"
fi

bench_reuse_dir=$reuse
bench_begin search wrk psql curl python3 /usr/bin/time
mkdir -p "$tmp/wrk" "$tmp/queries" "$tmp/medplum" "$tmp/explain"
revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo "no commit")

# --- Data -----------------------------------------------------------------------
data_dir=${BENCH_DATA_DIR:-$tmp}
if [ -n "$reuse" ]; then
  # Only the last step is measured again; its queries were drawn by the earlier run.
  say "reusing the cluster and queries of $reuse (steps $steps)"
  step_list=("$last_step")
else
mkdir -p "$data_dir"
data="$data_dir/searchdata-$data_patients-seed$seed.ndjson"
if [ -s "$data" ]; then
  say "reusing $data"
else
  say "generating $data_patients patients (seed $seed) into $data"
  python3 bench/searchdata/generate.py --patients "$data_patients" --seed "$seed" --jobs 2 >"$data.part" 2>"$tmp/generate.log" \
    || { cat "$tmp/generate.log" >&2; die "generate.py failed"; }
  mv "$data.part" "$data"
  cat "$tmp/generate.log" >&2
fi
fi

# --- The server ----------------------------------------------------------------
postmaster_pid=$(head -n 1 "$(readlink -f "$tmp/pg")/data/postmaster.pid")
bench_start_server --pg-admin-dsn="$pg_dsn" --auth=off --log-level="$log_level"
[ -n "$reuse" ] || bench_create_tenant "$base" "$tenant"
shard_db=$(bench_shard_db "$tenant")

if [ -n "$reuse" ]; then
  # The earlier run's description stays; the new measurement is added to it.
  sed -i '/^remeasured\t/d; /^server_warnings\t/d' "$tmp/meta.tsv"
  printf 'remeasured\t%s step re-measured on %s with medgrid %s (built %s)\n' "$last_step" \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$revision" "$(date -u -r "$bin_built" '+%Y-%m-%d %H:%M UTC')" >>"$tmp/meta.tsv"
else
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'revision\t%s\n' "$revision"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  printf 'ram\t%s\n' "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -sr)"
  printf 'pg\t%s\n' "$(psql_db postgres -Atc 'show server_version')"
  printf 'pg_settings\tshared_buffers=%s, fsync=%s, work_mem=%s, random_page_cost=%s\n' \
    "$(psql_db postgres -Atc 'show shared_buffers')" "$(psql_db postgres -Atc 'show fsync')" \
    "$(psql_db postgres -Atc 'show work_mem')" "$(psql_db postgres -Atc 'show random_page_cost')"
  printf 'server\tmedgrid %s (binary built %s), --log-level=%s, default pools and threads\n' "$revision" \
    "$(date -u -r "$bin_built" '+%Y-%m-%d %H:%M UTC')" "$log_level"
  printf 'wrk\twrk -t%s -c%s -d%ss --timeout 60s --latency, after %ss of warm-up\n' "$threads" "$conns" "$duration" "$warmup"
  printf 'steps\t%s\n' "$steps"
  printf 'seed\t%s\n' "$seed"
  printf 'data_patients\t%s\n' "$data_patients"
  printf 'load_connections\t%s\n' "$load_conns"
  printf 'medplum\t%s\n' "$([ "$medplum" = 1 ] && echo "node medplum_search.mjs --bench --concurrency $conns --count 20 --duration $medplum_duration" || echo off)"
} >"$tmp/meta.tsv"
fi

# --- Measurements ---------------------------------------------------------------
problems=()
shapes=$(python3 bench/search_queries.py shapes)

# run_wrk STEP NAME PATHS_FILE: a warm-up, then the measured run into wrk/STEP-NAME.txt.
run_wrk() {
  local step=$1 name=$2 paths=$3 log="$tmp/wrk/$1-$2.txt"
  local args=(-t"$threads" -c"$conns" --timeout 60s --latency -s bench/search_shapes.lua)
  if [ "$warmup" != 0 ]; then
    BENCH_URLS=$paths BENCH_THREADS=$threads wrk "${args[@]}" -d"${warmup}s" "$base" >/dev/null 2>&1 || true
  fi
  # CPU snapshots around the run tell how much other processes (compile jobs) took.
  python3 bench/search_report.py cpu-snap "$server_pid" "$postmaster_pid" >"${log%.txt}.cpu0"
  BENCH_URLS=$paths BENCH_THREADS=$threads /usr/bin/time -f '%U %S' -o "${log%.txt}.time" \
    wrk "${args[@]}" -d"${duration}s" "$base" >"$log" 2>&1 || { cat "$log" >&2; die "wrk $name failed"; }
  python3 bench/search_report.py cpu-snap "$server_pid" "$postmaster_pid" >"${log%.txt}.cpu1"
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; server_log_tail; die "the server died during $name"; }
  local summary
  summary=$(python3 bench/search_report.py wrk "$log") || { cat "$log" >&2; die "no BENCH line in $log"; }
  say "  $step $name: $summary"
  case $summary in
    *"errors: none"*) ;;
    *) problems+=("step $step $name: $summary") ;;
  esac
}

prev=0
for step in "${step_list[@]}"; do
  loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
  if [ -n "$reuse" ]; then
    say "step $step: VACUUM ANALYZE of the kept data"
    psql_db "$shard_db" -c "VACUUM ANALYZE" >/dev/null
    psql_db "$shard_db" -c CHECKPOINT >/dev/null
  else
  say "step $step: loading patients $((prev + 1))..$step"
  if ! python3 bench/search_load.py load --data "$data" --base "$base/fhir/$tenant" --from-patient "$prev" \
    --to-patient "$step" --connections "$load_conns" >"$tmp/load-$step.json"; then
    cat "$tmp/load-$step.json" >&2
    server_log_tail
    die "loading step $step: some PUTs failed"
  fi
  say "  $(cat "$tmp/load-$step.json")"
  t0=$(date +%s.%N)
  psql_db "$shard_db" -c "VACUUM ANALYZE" >/dev/null
  t1=$(date +%s.%N)
  psql_db "$shard_db" -c CHECKPOINT >/dev/null
  db_bytes=$(psql_db "$shard_db" -Atc "select pg_database_size(current_database())")
  resources=$(psql_db "$shard_db" -Atc "select count(*) from resources where tenant_id='$tenant' and not deleted")
  vacuum_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  printf '{"step":%s,"vacuum_s":%s,"db_bytes":%s,"resources_in_db":%s,"loadavg":"%s","load":%s}\n' \
    "$step" "$vacuum_s" "$db_bytes" "$resources" "$loadavg" "$(cat "$tmp/load-$step.json")" >>"$tmp/loads.jsonl"
  say "  VACUUM ANALYZE ${vacuum_s} s; $resources resources, database $((db_bytes / 1048576)) MiB"
  fi

  qdir="$tmp/queries/$step"
  if [ -z "$reuse" ]; then
    python3 bench/search_queries.py make --data "$data" --to-patient "$step" --tenant "$tenant" --out "$qdir" \
      --per-shape "$per_shape" --seed "$seed" >"$tmp/queries-$step.json"
  fi
  if ! python3 bench/search_queries.py probe --base "$base" --dir "$qdir" >"$tmp/probe-$step.jsonl"; then
    cat "$tmp/probe-$step.jsonl" >&2
    problems+=("step $step: probe queries failed (see the report)")
  fi
  printf '/livez\n' >"$tmp/livez.paths"
  run_wrk "$step" livez "$tmp/livez.paths"
  for shape in $shapes; do
    run_wrk "$step" "$shape" "$qdir/$shape.paths"
  done

  if [ "$step" = "$first_step" ] && [ "$medplum" = 1 ]; then
    say "step $step: Medplum MemoryRepository on the same data"
    python3 bench/search_load.py subset --data "$data" --to-patient "$step" >"$tmp/medplum/data.ndjson"
    for shape in $shapes; do
      # As around wrk: CPU snapshots tell how much other processes took meanwhile.
      python3 bench/search_report.py cpu-snap "$server_pid" "$postmaster_pid" >"$tmp/medplum/$shape.cpu0"
      NODE_OPTIONS=--max-old-space-size=8192 /usr/bin/time -f '%U %S' -o "$tmp/medplum/$shape.time" \
        "$node" tests/differential/medplum_search.mjs \
        --data "$tmp/medplum/data.ndjson" --queries "$qdir/$shape.txt" --bench --duration "$medplum_duration" \
        --warmup "$warmup" --concurrency "$conns" --count 20 --out "$tmp/medplum/$shape.json" \
        >/dev/null 2>"$tmp/medplum/$shape.log" \
        || { cat "$tmp/medplum/$shape.log" >&2; problems+=("medplum $shape failed"); continue; }
      python3 bench/search_report.py cpu-snap "$server_pid" "$postmaster_pid" >"$tmp/medplum/$shape.cpu1"
      say "  medplum $shape: $(python3 bench/search_report.py medplum "$tmp/medplum/$shape.json")"
    done
    rm -f "$tmp/medplum/data.ndjson"
  fi

  if [ "$step" = "$last_step" ]; then
    say "step $step: EXPLAIN (ANALYZE, BUFFERS) of the first five queries of each shape"
    rm -f "$tmp"/explain/*
    for shape in $shapes; do
      for i in 1 2 3 4 5; do
        path=$(sed -n "${i}p" "$qdir/$shape.paths")
        [ -n "$path" ] || break
        sed -n "${i}p" "$qdir/$shape.txt" >"$tmp/explain/$shape.$i.query"
        curl -sS -o /dev/null "$base$path" || true  # the plan of a warm query, as under load
        code=$(curl -sS -o "$tmp/explain/$shape.$i.txt" -w '%{http_code}' "$base/admin/explain/${path#/fhir/}") \
          || code=000
        if [ "$code" != 200 ]; then
          say "  GET /admin/explain answered $code for $shape"
          printf 'GET /admin/explain answered %s:\n%s\n' "$code" "$(head -c 2000 "$tmp/explain/$shape.$i.txt")" \
            >"$tmp/explain/$shape.$i.txt"
        fi
      done
    done
  fi
  prev=$step
done

server_errors=$(grep -cE '"level":"(warn|error)"' "$tmp/server.log" || true)
printf 'server_warnings\t%s\n' "$server_errors" >>"$tmp/meta.tsv"

# --- Report -------------------------------------------------------------------
report_args=(--tmp "$tmp")
[ -z "$explain_out" ] || report_args+=(--explain-out "$explain_out")
python3 bench/search_report.py report "${report_args[@]}" >"$tmp/report.md"
echo
cat "$tmp/report.md"
if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  cp "$tmp/report.md" "$out"
  say "wrote $out"
fi
[ -z "$explain_out" ] || say "wrote $explain_out"
if [ "$server_errors" != 0 ]; then
  say "server log lines at warn or above: $server_errors (first 10):"
  grep -E '"level":"(warn|error)"' "$tmp/server.log" | head -n 10 >&2
fi
if [ "${#problems[@]}" -gt 0 ]; then
  die "$(IFS=';'; echo "${problems[*]}")"
fi
