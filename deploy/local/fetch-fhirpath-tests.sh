#!/usr/bin/env bash
# Fetches the official FHIRPath R4 test suite (HL7's tests-fhir-r4.xml) into a
# cache outside the source tree, once, and prints the path of the XML file.
# Nothing of it is committed.
#
# The suite comes from the npm registry: fhirpath.js (package "fhirpath")
# 3.15.1 ships a verbatim copy of HL7's tests-fhir-r4.xml as
# converter/dataset/fhir-r4.xml (the input of its YAML converter). 3.15.1 is
# the last release that still ships it; later ones publish only src/. The
# checksum pins the file, so a changed tarball cannot change the suite.
set -euo pipefail
version=3.15.1
sha256=a548329cc0169f3c5377505c05ad0ef4e51086bd7ad59dd2f07d89f860abb7d0
cache="${MEDGRID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/medgrid}/fhirpath/fhirpath-$version"
file="$cache/tests-fhir-r4.xml"
if [ ! -f "$file" ] || ! echo "$sha256  $file" | sha256sum --check --status; then
  mkdir -p "$cache"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "fhirpath@$version" >/dev/null)
  tar -xzf "$tmp/fhirpath-$version.tgz" -C "$tmp" package/converter/dataset/fhir-r4.xml
  if ! echo "$sha256  $tmp/package/converter/dataset/fhir-r4.xml" | sha256sum --check --status; then
    echo "fetch-fhirpath-tests: fhirpath@$version: converter/dataset/fhir-r4.xml has an unexpected checksum" >&2
    exit 1
  fi
  mv "$tmp/package/converter/dataset/fhir-r4.xml" "$file.tmp"
  mv "$file.tmp" "$file"
fi
echo "$file"
