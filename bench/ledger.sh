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
source bench/lib.sh

say() { printf '[ledger] %s\n' "$*" >&2; }
die() { printf '[ledger] FAILED: %s\n' "$*" >&2; exit 1; }

bench_with_private_pg ledger_bench ledger_bench --leaves "${BENCH_LEAVES:-1000000}" \
  --leaf-bytes "${BENCH_LEAF_BYTES:-400}" --seed "${BENCH_SEED:-6962}" --pg-leaves "${BENCH_PG_LEAVES:-200000}" \
  --batch "${BENCH_BATCH:-1000}"
