#!/usr/bin/env bash
# Fetches the official FHIR R4 package hl7.fhir.r4.examples 4.0.1 from the npm
# registry into a cache outside the source tree, once, and prints the path of
# its package/ folder. Nothing of it is committed.
set -euo pipefail
version=4.0.1
cache="${MEDGRID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medgrid}/fhir/hl7.fhir.r4.examples-$version"
if [ ! -f "$cache/package/Bundle-resources.json" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "hl7.fhir.r4.examples@$version" >/dev/null)
  tar -xzf "$tmp"/hl7.fhir.r4.examples-$version.tgz -C "$tmp"
  rm -rf "$cache/package"
  mv "$tmp/package" "$cache/package"
fi
echo "$cache/package"
