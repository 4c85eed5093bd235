#!/usr/bin/env bash
# The medgridctl binary end to end: leaves on stdin, the answer on stdout,
# impossible arguments a non-zero exit with a message; and `audit
# verify-archive` on an archive made here with openssl, gzip and `ledger
# inclusion` rather than medgrid's own writer (skipped without openssl).
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
# `audit` commands that need no database.
for args in "" "nope" "verify" "archive --tenant t1" "verify-archive" "retention --tenant t1 --hot-days 0"; do
  # shellcheck disable=SC2086
  if err=$("$ctl" audit $args 2>&1 >/dev/null); then fail "'audit $args' exited 0"; else status=$?; fi
  [ "$status" = 2 ] || fail "'audit $args' exited $status, not 2"
  [ -n "$err" ] || fail "'audit $args' gave no message"
done

if ! command -v openssl >/dev/null 2>&1; then
  echo "medgridctl ledger: ok (audit verify-archive skipped: no openssl)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hex() { od -An -tx1 | tr -d ' \n'; }
entries=('{"n":0}' '{"n":1}' '{"n":2}')
for e in "${entries[@]}"; do printf '%s' "$e" | hex; echo; done >"$tmp/leaves"
root=$("$ctl" ledger root <"$tmp/leaves")
openssl genpkey -algorithm ed25519 -out "$tmp/key.pem" 2>/dev/null
openssl pkey -in "$tmp/key.pem" -pubout -outform DER | tail -c 32 >"$tmp/pub"
pub=$(hex <"$tmp/pub")
key_id=$(sha256sum <"$tmp/pub" | cut -c1-16)
printf 'medgrid-sth-v1\nt1\n3\n%s\n1700000000000000\n' "$root" >"$tmp/sth"
sig=$(openssl pkeyutl -sign -inkey "$tmp/key.pem" -rawin -in "$tmp/sth" | hex)
# archive FILE ENTRY1: entries 0 to 2, entry 1's bytes given.
archive() {
  printf '{"format":"medgrid-ledger-archive-v1","tenant":"t1","first":0,"end":3,"head":{"size":3,"root":"%s",' "$root"
  printf '"signed_at_us":1700000000000000,"key_id":"%s","signature":"%s","public_key":"%s"}}\n' "$key_id" "$sig" "$pub"
  for i in 0 1 2; do
    local entry=${entries[$i]}
    [ "$i" = 1 ] && entry=$1
    local leaf proof
    leaf=$(printf '%s' "${entries[$i]}" | hex | "$ctl" ledger root)
    proof=$("$ctl" ledger inclusion --index "$i" --size 3 <"$tmp/leaves" | sed 's/.*/"&"/' | paste -sd, -)
    printf '{"seq":%d,"recorded_us":%d,"event_id":null,"entry":"%s","leaf_hash":"%s","proof":[%s]}\n' \
      "$i" "$i" "$(printf '%s' "$entry" | base64 -w0)" "$leaf" "$proof"
  done
}
archive '{"n":1}' | gzip -c >"$tmp/good.gz"
archive '{"n":9}' | gzip -c >"$tmp/bad.gz"
out=$("$ctl" audit verify-archive "$tmp/good.gz" --public-key "$pub") || fail "verify-archive of a good file: $out"
grep -q '^3 entries read$' <<<"$out" || fail "verify-archive: $out"
if out=$("$ctl" audit verify-archive "$tmp/bad.gz" --public-key "$pub"); then fail "a tampered archive verified"; fi
grep -q 'first bad entry 1$' <<<"$out" || fail "verify-archive of a tampered file: $out"
if "$ctl" audit verify-archive "$tmp/none.gz" 2>/dev/null; then fail "a missing archive verified"; else status=$?; fi
[ "$status" = 2 ] || fail "a missing archive exited $status, not 2"
echo "medgridctl ledger and audit: ok"
