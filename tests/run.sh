#!/usr/bin/env bash
# Runs every medgrid test: installs what is missing, builds, starts a private
# PostgreSQL and Redis on free loopback ports in a temporary directory, runs
# ctest (labels unit and integration), and stops everything it started, even
# on failure. Exits non-zero if any test fails.
#
#   tests/run.sh                 # everything
#   tests/run.sh -L unit         # extra arguments go to ctest
#   MEDGRID_SANITIZE=1 tests/run.sh   # the same under AddressSanitizer + UBSan
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source deploy/local/lib.sh

deploy/local/install-deps.sh
package=$(deploy/local/fetch-fhir-package.sh)
fhirpath_tests=$(deploy/local/fetch-fhirpath-tests.sh)
differential=$(tests/differential/install.sh)

preset=release
if [ "${MEDGRID_SANITIZE:-0}" = 1 ]; then
  preset=asan
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"

tmp=$(mktemp -d -t medgrid-test.XXXXXX)
chmod 755 "$tmp"  # the postgres user must reach its data directory
cleanup() {
  redis_stop "$tmp/redis"
  pg_stop "$tmp/pg"
  rm -rf "$tmp"
}
trap cleanup EXIT

pg_port=$(free_port)
# Tests create and drop many databases; durability adds nothing there.
MEDGRID_PG_FSYNC=off pg_start "$tmp/pg" "$pg_port"
redis_port=$(free_port)
redis_start "$tmp/redis" "$redis_port"

export MEDGRID_FHIR_PACKAGE="$package"
export MEDGRID_FHIRPATH_TESTS="$fhirpath_tests"
export MEDGRID_DIFFERENTIAL_DIR="$differential"
export MEDGRID_TEST_PG_DSN="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres"
export MEDGRID_TEST_REDIS="127.0.0.1:$redis_port"

labels=(-L 'unit|integration')
if [ $# -gt 0 ]; then labels=(); fi
ctest --test-dir "build/$preset" --output-on-failure -j2 "${labels[@]}" "$@"
