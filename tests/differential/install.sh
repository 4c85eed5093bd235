#!/usr/bin/env bash
# Installs the reference FHIR search implementation of the differential tests
# (@medplum/fhir-router and @medplum/core, exact versions from package.json and
# package-lock.json) into a cache outside the source tree, once, and prints the
# folder that holds its node_modules/ and bin/node (Node.js >= 20). Nothing of
# it is committed.
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

node_version=20.20.2

# $cache/bin/node: Node.js >= 20, which the Medplum packages need. The system
# one if it is new enough (Debian 12 ships 18), else the official build that
# the npm registry publishes as node-linux-<arch>.
ensure_node() {
  local bin="$cache/bin/node"
  if [ -x "$bin" ] && "$bin" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
    return
  fi
  mkdir -p "$cache/bin"
  local system
  system=$(command -v node || true)
  if [ -n "$system" ] && "$system" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
    ln -sfn "$system" "$bin"
    return
  fi
  local arch
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "install.sh: no Node.js >= 20 for $(uname -m)" >&2; exit 1 ;;
  esac
  local dl
  dl=$(mktemp -d)
  (cd "$dl" && "$npm" pack "node-linux-$arch@$node_version" --silent >/dev/null && tar xzf ./*.tgz)
  install -m 755 "$dl/package/bin/node" "$bin.tmp"
  mv "$bin.tmp" "$bin"
  rm -rf "$dl"
}

stamp=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ -f "$cache/.installed" ] && [ "$(cat "$cache/.installed")" = "$stamp" ] \
   && [ -f "$cache/node_modules/@medplum/fhir-router/package.json" ]; then
  ensure_node
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
ensure_node
echo "$cache"
