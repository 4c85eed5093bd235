#!/usr/bin/env bash
# Ledger benchmark (bench/ledger_bench.cc), in one run: the Merkle tree in
# memory (appends against hashing alone; proofs at 10^3, 10^5 and 10^6
# leaves against one node hash), then batched appends to PostgreSQL through
# LedgerStore against the same rows into a plain table. Starts a private
# PostgreSQL on a free loopback port in a temporary directory and stops it,
# even on failure.
#
#   bench/ledger.sh
#   BENCH_PG_LEAVES=50000 bench/ledger.sh        # a quicker PostgreSQL part
#
# Environment: BENCH_LEAVES (1000000), BENCH_PG_LEAVES (200000), BENCH_BATCH
# (1000), BENCH_LEAF_BYTES (400), BENCH_SEED (6962), MEDGRID_PG_FSYNC (on).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh

say() { printf '[ledger] %s\n' "$*" >&2; }
die() { printf '[ledger] FAILED: %s\n' "$*" >&2; exit 1; }

bin=$root/build/release/bench/ledger_bench
if [ ! -x "$bin" ]; then
  say "building ledger_bench"
  cmake --preset release >/dev/null
  cmake --build build/release --target ledger_bench >/dev/null
fi

tmp=$(mktemp -d -t medgrid-ledger.XXXXXX)
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
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE ledger_bench" \
  || die "cannot create the database"
say "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" --leaves "${BENCH_LEAVES:-1000000}" --leaf-bytes "${BENCH_LEAF_BYTES:-400}" --seed "${BENCH_SEED:-6962}" \
  --dsn "host=127.0.0.1 port=$port user=postgres dbname=ledger_bench" --pg-leaves "${BENCH_PG_LEAVES:-200000}" \
  --batch "${BENCH_BATCH:-1000}"
