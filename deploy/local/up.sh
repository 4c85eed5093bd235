#!/usr/bin/env bash
# Builds medgrid and serves it on http://127.0.0.1:${MEDGRID_HTTP_PORT:-8080}
# with a private PostgreSQL and Redis under ${MEDGRID_HOME:-.local}.
#
#   deploy/local/up.sh            # foreground; Ctrl-C stops everything
#   deploy/local/up.sh --detach   # returns once /readyz is 200; stop with down.sh
#
# Safe to run again: it reuses the build and the data, and leaves a running
# instance alone. It never touches a system PostgreSQL or Redis. Ports:
# MEDGRID_HTTP_PORT (8080), MEDGRID_PG_PORT (55432), MEDGRID_REDIS_PORT (56379).
# Requests need bearer tokens: it signs them with a dev key of its own and
# writes admin.jwt, clinician-demo.jwt and system-demo.jwt to $MEDGRID_HOME/tokens/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
source deploy/local/lib.sh

detach=0
for arg in "$@"; do
  case "$arg" in
    --detach) detach=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

home=${MEDGRID_HOME:-$root/.local}
mkdir -p "$home"
home=$(cd "$home" && pwd)
http_port=${MEDGRID_HTTP_PORT:-8080}
pg_port=${MEDGRID_PG_PORT:-55432}
redis_port=${MEDGRID_REDIS_PORT:-56379}

deploy/local/install-deps.sh
package=$(deploy/local/fetch-fhir-package.sh)

echo "up.sh: building (Release)" >&2
cmake --preset release >/dev/null
cmake --build --preset release --target medgrid medgridctl
ctl=build/release/services/medgridctl

# The dev identity provider: a signing key kept under $home/auth, its JWKS
# for the server, and tokens minted with it (re-minted on every run).
issuer="http://127.0.0.1:$http_port/dev-issuer"
audience=medgrid
mkdir -p "$home/auth" "$home/tokens"
chmod 700 "$home/auth" "$home/tokens"
"$ctl" token keygen --key-out "$home/auth/dev-key.pem" --jwks-out "$home/auth/jwks.json" --kid dev-1 >/dev/null
mint() { "$ctl" token mint --key "$home/auth/dev-key.pem" --kid dev-1 --issuer "$issuer" --audience "$audience" "$@"; }

echo "up.sh: starting PostgreSQL on 127.0.0.1:$pg_port and Redis on 127.0.0.1:$redis_port" >&2
pg_start "$home/pg" "$pg_port" \
  || { echo "up.sh: PostgreSQL did not start; if port $pg_port is taken, set MEDGRID_PG_PORT" >&2; exit 1; }
redis_start "$home/redis" "$redis_port" \
  || { echo "up.sh: Redis did not start; if port $redis_port is taken, set MEDGRID_REDIS_PORT" >&2; exit 1; }

pidfile="$home/medgrid.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "up.sh: medgrid is already running (pid $(cat "$pidfile"))" >&2
else
  build/release/services/medgrid \
    --http-port="$http_port" \
    --pg-admin-dsn="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres" \
    --fhir-package-dir="$package" \
    --audit-spool-dir="$home/audit-spool" \
    --export-dir="$home/exports" \
    --jwks="$home/auth/jwks.json" --auth-issuer="$issuer" --auth-audience="$audience" \
    --redis="127.0.0.1:$redis_port" \
    >>"$home/medgrid.log" 2>&1 &
  echo $! >"$pidfile"
fi

if ! wait_http "http://127.0.0.1:$http_port/readyz" 60; then
  echo "up.sh: medgrid did not become ready; last log lines:" >&2
  tail -20 "$home/medgrid.log" >&2
  exit 1
fi

mint --subject admin --scope medgrid/admin --ttl-s 2592000 >"$home/tokens/admin.jwt"
mint --subject clinician-demo --tenant demo --fhir-user Practitioner/clinician-demo --roles physician \
  --scope "openid fhirUser user/*.cruds" --ttl-s 2592000 >"$home/tokens/clinician-demo.jwt"
mint --subject system-demo --tenant demo --client-id system-demo --scope "system/*.cruds" --ttl-s 2592000 \
  >"$home/tokens/system-demo.jwt"

# Tenant demo (Consent opt-out; physicians may break the glass): 201 when
# created, 409 when it already exists.
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$http_port/admin/tenants" \
  -H "Authorization: Bearer $(cat "$home/tokens/admin.jwt")" -H 'Content-Type: application/json' \
  -d '{"id":"demo","region":"local","consentPolicy":"opt-out","btgRoles":["physician"]}')
case "$code" in
  201|409) ;;
  *) echo "up.sh: creating tenant demo failed with HTTP $code" >&2; exit 1 ;;
esac

echo "up.sh: medgrid is serving http://127.0.0.1:$http_port/fhir/demo (logs: $home/medgrid.log)" >&2
echo "up.sh: tokens in $home/tokens: curl -H \"Authorization: Bearer \$(cat $home/tokens/clinician-demo.jwt)\" ..." >&2
if [ "$detach" -eq 1 ]; then exit 0; fi

# Ctrl-C reaches medgrid too (same process group) and it drains and exits;
# either way down.sh then stops PostgreSQL and Redis.
stopping=0
trap 'stopping=1' INT TERM
echo "up.sh: press Ctrl-C to stop" >&2
while [ "$stopping" -eq 0 ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; do
  sleep 1 &
  wait $! || true
done
"$root/deploy/local/down.sh"
[ "$stopping" -eq 1 ] && exit 0
echo "up.sh: medgrid exited unexpectedly; see $home/medgrid.log" >&2
exit 1
