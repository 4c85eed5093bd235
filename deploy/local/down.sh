#!/usr/bin/env bash
# Stops everything deploy/local/up.sh started under ${MEDGRID_HOME:-.local}.
# Data stays; up.sh starts it again.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/deploy/local/lib.sh"
home=${MEDGRID_HOME:-$root/.local}
[ -d "$home" ] || exit 0

pidfile="$home/medgrid.pid"
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"  # graceful drain
    for _ in $(seq 1 350); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
fi
redis_stop "$home/redis"
pg_stop "$home/pg"
echo "down.sh: stopped" >&2
