# shellcheck shell=bash disable=SC2034,SC2154
# Shell functions shared by the benchmark scripts, which source
# deploy/local/lib.sh first and define say and die before calling these.
# The globals they share ($root and $bin from the script; $tmp, $package,
# $pg_port, $pg_dsn, $http_port, $base and $server_pid from bench_prepare
# and bench_begin) are why shellcheck's unset/unused checks are off here.

psql_db() { local db=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d "$db" "$@"; }

server_log_tail() { say "server log ($tmp/server.log), last lines:"; tail -n 30 "$tmp/server.log" >&2 || true; }

# bench_wait_server BASE_URL PID: waits up to 60 s for BASE_URL/livez; dies
# with the server log's tail if the server exits or does not answer.
bench_wait_server() {
  local base=$1 pid=$2
  wait_http "$base/livez" 60 && return 0
  kill -0 "$pid" 2>/dev/null || { server_log_tail; die "the server exited during start-up"; }
  server_log_tail
  die "the server did not answer $base/livez within 60 s"
}

# bench_create_tenant BASE_URL TENANT: POST /admin/tenants; dies unless 201.
# The answer is kept in $tmp/tenant.json.
bench_create_tenant() {
  local base=$1 tenant=$2 code
  code=$(curl -sS -o "$tmp/tenant.json" -w '%{http_code}' -X POST "$base/admin/tenants" \
    -H 'Content-Type: application/json' -d "{\"id\":\"$tenant\"}")
  [ "$code" = 201 ] || die "POST /admin/tenants answered $code: $(cat "$tmp/tenant.json")"
}

# bench_shard_db TENANT: prints the database of the tenant's shard: the
# dbname of the shard's DSN, else (local mode) its id.
bench_shard_db() {
  local tenant=$1 shard db
  shard=$(psql_db medgrid_control -Atc "select shard_id from tenants where tenant_id='$tenant'")
  [ -n "$shard" ] || die "tenant $tenant has no row in medgrid_control.tenants"
  db=$(psql_db medgrid_control -Atc "select primary_dsn from shards where shard_id='$shard'" \
    | sed -n 's/.*dbname=\([^ ]*\).*/\1/p')
  printf '%s\n' "${db:-$shard}"
}

# bench_build_server: builds the release server unless BENCH_SERVER_BIN names
# one; dies unless $bin is then executable.
bench_build_server() {
  if [ -z "${BENCH_SERVER_BIN:-}" ]; then
    say "building the server"
    cmake --preset release >/dev/null
    cmake --build --preset release --target medgrid >/dev/null
  fi
  [ -x "$bin" ] || die "no server binary at $bin"
}

# bench_stop_server PID: SIGTERM, up to 10 s to drain, then SIGKILL.
bench_stop_server() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# bench_with_private_pg TARGET DB ARG...: runs the benchmark binary
# build/release/bench/TARGET (built first if missing) with ARG... and
# --dsn for database DB (created unless it is postgres) of a private
# PostgreSQL on a free loopback port in a temporary directory, which is
# stopped and removed afterwards, even on failure. Prints the machine first.
bench_with_private_pg() {
  local target=$1 db=$2 bin
  shift 2
  bin=$root/build/release/bench/$target
  if [ ! -x "$bin" ]; then
    say "building $target"
    cmake --preset release >/dev/null
    cmake --build build/release --target "$target" >/dev/null
  fi
  tmp=$(mktemp -d -t "medgrid-$target.XXXXXX")
  chmod 755 "$tmp"  # the postgres user must reach its data directory
  trap 'rc=$?; pg_stop "$tmp/pg"; rm -rf "$tmp"; exit $rc' EXIT
  pg_port=$(free_port)
  pg_start "$tmp/pg" "$pg_port" || die "PostgreSQL did not start"
  if [ "$db" != postgres ]; then psql_db postgres -c "CREATE DATABASE $db" || die "cannot create the database"; fi
  bench_machine
  "$bin" --dsn "host=127.0.0.1 port=$pg_port user=postgres dbname=$db" "$@"
}

# bench_machine: prints a line naming the machine and its load.
bench_machine() {
  say "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# bench_prepare NAME [TOOL...]: the set-up the server benchmarks share.
# Checks that each TOOL is installed (default: wrk psql curl python3), builds
# the server and runs a private copy of it, $bin = $tmp/medgrid (a rebuild of
# the tree during a run does not touch it; $bin_built names the original),
# fetches the FHIR package ($package), makes $tmp (a fresh directory, or
# $bench_reuse_dir when the caller sets it; removed at exit unless
# BENCH_KEEP=1 or reused) and picks the server's port ($http_port, $base).
# At exit, even on failure, it kills the pids in bench_bg_pids, stops the
# server whose pid is in $server_pid and every PostgreSQL started with
# bench_start_pg, and exits with the script's status.
bench_prepare() {
  local name=$1 tool
  shift
  [ $# -gt 0 ] || set -- wrk psql curl python3
  for tool in "$@"; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
  bench_build_server
  package=$(deploy/local/fetch-fhir-package.sh)
  if [ -n "${bench_reuse_dir:-}" ]; then
    tmp=$(realpath "$bench_reuse_dir")
  else
    tmp=$(mktemp -d -t "medgrid-$name.XXXXXX")
  fi
  chmod 755 "$tmp"  # the postgres user must reach its data directory
  server_pid=
  bench_bg_pids=()
  bench_pg_dirs=()
  trap bench_cleanup EXIT
  trap 'say interrupted; exit 130' INT
  trap 'say terminated; exit 143' TERM
  bin_built=$bin
  [ "$bin" -ef "$tmp/medgrid" ] || cp -p "$bin" "$tmp/medgrid"
  bin=$tmp/medgrid
  http_port=$(free_port)
  base="http://127.0.0.1:$http_port"
}

# bench_begin NAME [TOOL...]: bench_prepare, then a private PostgreSQL on a
# free port in $tmp/pg ($pg_port, $pg_dsn).
bench_begin() {
  bench_prepare "$@"
  pg_port=$(free_port)
  bench_start_pg "$tmp/pg" "$pg_port"
  pg_dsn="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres"
}

# bench_start_pg DIR PORT: pg_start, and pg_stop at exit; dies if it fails.
bench_start_pg() {
  bench_pg_dirs+=("$1")
  pg_start "$1" "$2" || die "PostgreSQL ($1) did not start"
}

# bench_start_server FLAG...: starts $bin on $http_port with the FHIR package
# and FLAG... (the database and the rest), its output appended to
# $tmp/server.log, and waits until it answers; $server_pid is its pid.
bench_start_server() {
  "$bin" --http-port="$http_port" --fhir-package-dir="$package" "$@" >>"$tmp/server.log" 2>&1 &
  server_pid=$!
  bench_wait_server "$base" "$server_pid"
}

bench_cleanup() {
  local rc=$? p dir
  trap - EXIT INT TERM
  set +e
  for p in ${bench_bg_pids[@]+"${bench_bg_pids[@]}"}; do kill "$p" 2>/dev/null; done
  bench_stop_server "$server_pid"
  for dir in ${bench_pg_dirs[@]+"${bench_pg_dirs[@]}"}; do pg_stop "$dir"; done
  if [ "${BENCH_KEEP:-0}" = 1 ] || [ -n "${bench_reuse_dir:-}" ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
