# Shared by up.sh, down.sh and tests/run.sh: private PostgreSQL and Redis
# servers under a state directory, never the system's own.
# shellcheck shell=bash

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# Runs a command as the unprivileged owner of the PostgreSQL files: the
# postgres user when we are root (PostgreSQL refuses to run as root).
as_pg_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_dir DIR: the directory the PostgreSQL files of state directory DIR live
# in. Normally DIR itself. As root, PostgreSQL runs as the postgres user,
# which cannot enter a home such as /root; then the files go to
# /var/lib/medgrid/pg-<hash of DIR> and DIR becomes a symlink to it.
pg_dir() {
  local dir=$1 real
  if [ -L "$dir" ]; then readlink -f "$dir"; return 0; fi
  mkdir -p "$dir"
  if [ "$(id -u)" -ne 0 ]; then echo "$dir"; return 0; fi
  chown postgres "$dir"
  if runuser -u postgres -- test -w "$dir" 2>/dev/null; then echo "$dir"; return 0; fi
  real=/var/lib/medgrid/pg-$(printf %s "$dir" | sha256sum | cut -c1-16)
  if ! rmdir "$dir" 2>/dev/null; then
    echo "PostgreSQL (user postgres) cannot reach $dir; set MEDGRID_HOME to a directory it can reach" >&2
    return 1
  fi
  mkdir -p "$real"
  chown postgres "$real"
  ln -s "$real" "$dir"
  echo "$real"
}

# pg_start DIR PORT: initdb on first use, then start on 127.0.0.1:PORT.
pg_start() {
  local dir port=$2
  dir=$(pg_dir "$1") || return 1
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
  fi
  if as_pg_owner "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then return 0; fi
  as_pg_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c max_connections=200 -c shared_buffers=${MEDGRID_PG_SHARED_BUFFERS:-256MB} -c autovacuum_naptime=2s -c fsync=${MEDGRID_PG_FSYNC:-on}" >/dev/null \
    || { tail -20 "$dir/postgres.log" >&2; return 1; }
}

pg_stop() {
  local dir
  [ -e "$1" ] || return 0
  dir=$(readlink -f "$1")
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# pg_replica_create PRIMARY_PORT DIR: a streaming replica of the server on
# 127.0.0.1:PRIMARY_PORT under state directory DIR (pg_basebackup -R: a hot
# standby that follows the primary). Start it with pg_start DIR PORT.
# The primary needs wal_level replica and max_wal_senders (PostgreSQL 15's
# defaults) and replication in pg_hba.conf (initdb's trust default).
pg_replica_create() {
  local primary_port=$1 dir
  dir=$(pg_dir "$2") || return 1
  [ -f "$dir/data/PG_VERSION" ] && return 0
  as_pg_owner "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$dir/data" -R -X stream \
    -c fast >"$dir/basebackup.log" 2>&1 || { cat "$dir/basebackup.log" >&2; return 1; }
}

# pg_sync_standbys PORT NAMES: sets synchronous_standby_names on the server on
# 127.0.0.1:PORT (e.g. '*': a commit is acknowledged once a standby has
# flushed it). Set it after pg_replica_create, so the standby does not copy
# it: promoted, it would wait for a standby of its own.
pg_sync_standbys() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres \
    -c "ALTER SYSTEM SET synchronous_standby_names = '$2'" -c "SELECT pg_reload_conf()" >/dev/null
}

# pg_crash DIR: stops the server at once, as a crash would (no checkpoint;
# sessions are cut).
pg_crash() {
  local dir
  [ -e "$1" ] || return 0
  dir=$(readlink -f "$1")
  as_pg_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}

# pg_promote DIR: promotes the standby of DIR to a primary and waits for it.
pg_promote() {
  as_pg_owner "$PG_BIN/pg_ctl" -D "$(readlink -f "$1")/data" -w -t 60 promote >/dev/null
}

# redis_start DIR PORT
redis_start() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then return 0; fi
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" \
    --logfile "$dir/redis.log" --save "" --appendonly no >/dev/null
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis did not start; see $dir/redis.log" >&2
  return 1
}

# redis_stop DIR: stops it and waits (up to 10 s) until it has exited, so
# that its port is free for the next start.
redis_stop() {
  local dir=$1 pid
  if [ -f "$dir/redis.pid" ]; then
    pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/redis.pid"
  fi
}

# free_port: a loopback TCP port nobody listens on right now.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
  local url=$1 secs=$2
  for _ in $(seq 1 $((secs * 10))); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" = "200" ]; then return 0; fi
    sleep 0.1
  done
  return 1
}
