#!/usr/bin/env bash
# Installs the reference FHIR search implementation of the differential tests
# (@medplum/fhir-router and @medplum/core, exact versions from package.json and
# package-lock.json) into a cache outside the source tree, once, and prints the
# folder that holds its node_modules/. Nothing of it is committed.
#
#   tests/differential/install.sh        # prints e.g. /root/.cache/medgrid/differential
#
# Idempotent and offline-safe: when the cache already holds an install made from
# the same package.json and package-lock.json, it touches neither npm nor the
# network. Otherwise it runs `npm ci` in a temporary folder beside the cache and
# swaps it in only when that succeeded, so an interrupted install leaves the old
# one (or none) in place. Environment: MEDGRID_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/medgrid), NPM (default npm).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache="${MEDGRID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medgrid}/differential"
npm=${NPM:-npm}

stamp=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ -f "$cache/.installed" ] && [ "$(cat "$cache/.installed")" = "$stamp" ] \
   && [ -f "$cache/node_modules/@medplum/fhir-router/package.json" ]; then
  echo "$cache"
  exit 0
fi

command -v "$npm" >/dev/null || { echo "install.sh: $npm is not installed (Node.js >= 20 is needed)" >&2; exit 1; }
mkdir -p "$(dirname "$cache")"
tmp=$(mktemp -d "$cache.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$tmp/"
# The packages declare node >= 22 but run on 20 (see README.md); --ignore-scripts:
# nothing here needs install scripts.
(cd "$tmp" && "$npm" ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
echo "$stamp" >"$tmp/.installed"
rm -rf "$cache"
mv "$tmp" "$cache"
trap - EXIT
echo "$cache"
