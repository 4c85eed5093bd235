#!/usr/bin/env bash
# Outbox relay benchmark (bench/outbox_bench.cc), in one run: relay
# throughput to librdkafka's mock cluster against a bare producer of the
# same events, and creates per second with the relay publishing beside them
# against creates with no relay, with the relay's lag meanwhile. Starts a
# private PostgreSQL on a free loopback port in a temporary directory and
# stops it, even on failure. The mock cluster runs inside the benchmark.
#
#   bench/outbox.sh
#   BENCH_CHANGES=20000 BENCH_DURATION=5 bench/outbox.sh      # quick check
#
# Environment: BENCH_CHANGES (100000), BENCH_WRITERS (8), BENCH_DURATION (15),
# BENCH_SEED (42), MEDGRID_PG_FSYNC (on).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh

say() { printf '[outbox] %s\n' "$*" >&2; }
die() { printf '[outbox] FAILED: %s\n' "$*" >&2; exit 1; }

bin=$root/build/release/bench/outbox_bench
if [ ! -x "$bin" ]; then
  say "building outbox_bench"
  cmake --preset release >/dev/null
  cmake --build build/release --target outbox_bench >/dev/null
fi

tmp=$(mktemp -d -t medgrid-outbox.XXXXXX)
chmod 755 "$tmp"  # the postgres user must reach its data directory
cleanup() {
  local rc=$?
  pg_stop "$tmp/pg"
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

port=$(free_port)
pg_start "$tmp/pg" "$port" || die "PostgreSQL did not start"
say "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" --dsn "host=127.0.0.1 port=$port user=postgres dbname=postgres" --changes "${BENCH_CHANGES:-100000}" \
  --writers "${BENCH_WRITERS:-8}" --duration-s "${BENCH_DURATION:-15}" --seed "${BENCH_SEED:-42}"
