#!/usr/bin/env bash
# The medgridctl binary end to end: leaves on stdin, the answer on stdout,
# impossible arguments a non-zero exit with a message.
# Usage: medgridctl_test.sh PATH_TO_MEDGRIDCTL
set -euo pipefail
ctl=$1
fail() { echo "FAIL: $*" >&2; exit 1; }

root=$(printf '\n00\n' | "$ctl" ledger root)
[ "$root" = fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125 ] || fail "root: $root"
[ "$("$ctl" ledger root </dev/null)" = e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ] \
  || fail "empty tree"
path=$(printf '\n00\n10\n' | "$ctl" ledger inclusion --index 2 --size 3)
[ "$path" = fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125 ] || fail "inclusion: $path"
[ "$(printf '\n00\n10\n' | "$ctl" ledger consistency --old 2 --new 3 | wc -l)" = 1 ] || fail "consistency"

for args in "inclusion --index 3 --size 3" "consistency --old 3 --new 2" "inclusion --index 0 --size 9" "nope"; do
  # shellcheck disable=SC2086
  if err=$(printf '\n00\n10\n' | "$ctl" ledger $args 2>&1 >/dev/null); then fail "'$args' exited 0"; fi
  [ -n "$err" ] || fail "'$args' gave no message"
done
echo "medgridctl ledger: ok"
