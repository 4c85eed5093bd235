#!/usr/bin/env bash
# Installs the Debian packages medgrid needs to build, test and run, and only
# those that are missing. Safe to run again. Needs root or sudo.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config make
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libpqxx-dev libpq-dev libhiredis-dev librdkafka-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev prometheus-cpp-dev libssl-dev libabsl-dev libicu-dev zlib1g-dev
  libgtest-dev libgmock-dev
  postgresql-15 postgresql-contrib pgbouncer redis-server redis-tools
  wrk curl ca-certificates python3
)
# Node.js and npm fetch the official FHIR R4 package (test and registry data).
# A machine may already carry a newer Node.js than Debian's; keep it.
if ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
