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
source bench/lib.sh

say() { printf '[outbox] %s\n' "$*" >&2; }
die() { printf '[outbox] FAILED: %s\n' "$*" >&2; exit 1; }

bench_with_private_pg outbox_bench postgres --changes "${BENCH_CHANGES:-100000}" \
  --writers "${BENCH_WRITERS:-8}" --duration-s "${BENCH_DURATION:-15}" --seed "${BENCH_SEED:-42}"
