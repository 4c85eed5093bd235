#!/usr/bin/env bash
# Failover benchmark: request p99 and error rate while the primary crashes
# and its standby is promoted, against the same load without a fault, in
# one run on one server.
#
# Starts a private primary PostgreSQL and a streaming replica of it
# (deploy/local/lib.sh: pg_start, pg_replica_create = pg_basebackup -R),
# commits synchronously to the replica (synchronous_standby_names '*'), and
# the release server with --auth=off, the primary DSN naming both nodes
# (libpq picks the writable one) and the replica as read replica. Seeds
# BENCH_N Organizations, then runs bench/failover_load.py (BENCH_CONNECTIONS
# closed-loop connections, reads by id and BENCH_WRITE_SHARE creates) twice
# for BENCH_DURATION seconds:
#   baseline  no fault
#   failover  BENCH_CRASH_AT s in: pg_ctl stop -m immediate on the primary;
#             BENCH_PROMOTE_AFTER s later: pg_ctl promote on the replica
# Prints, per phase and for reads and writes, requests, error rate, p50 and
# p99, the ratios failover/baseline, how long writes were refused, and
# checks that every acknowledged create is on the promoted node (exits
# non-zero if one is missing). The server runs with its defaults: level 4
# (read-only) holds for --degradation-recovery-s (30 s) after the primary
# is back, so writes are refused for about that long after the promotion.
#
#   bench/failover.sh
#   BENCH_DURATION=20 BENCH_OUT=/tmp/failover.md bench/failover.sh
#
# Environment: BENCH_N (2000), BENCH_DURATION (60), BENCH_CONNECTIONS (16),
# BENCH_WRITE_SHARE (0.2), BENCH_CRASH_AT (10), BENCH_PROMOTE_AFTER (5),
# BENCH_OUT (markdown file), BENCH_SERVER_BIN, BENCH_KEEP=1,
# BENCH_SERVER_FLAGS (extra server flags, e.g. --degradation-recovery-s=5).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source-path=SCRIPTDIR/..
source deploy/local/lib.sh
source bench/lib.sh

n=${BENCH_N:-2000}
duration=${BENCH_DURATION:-60}
conns=${BENCH_CONNECTIONS:-16}
write_share=${BENCH_WRITE_SHARE:-0.2}
crash_at=${BENCH_CRASH_AT:-10}
promote_after=${BENCH_PROMOTE_AFTER:-5}
out=${BENCH_OUT:-}
bin=${BENCH_SERVER_BIN:-$root/build/release/services/medgrid}
tenant=bench

say() { printf '[failover] %s\n' "$*" >&2; }
die() { printf '[failover] FAILED: %s\n' "$*" >&2; exit 1; }

bench_prepare failover psql curl python3

# --- the primary, its replica and the server ------------------------------------
pg_port=$(free_port)
replica_port=$(free_port)
bench_start_pg "$tmp/primary" "$pg_port"
bench_pg_dirs+=("$tmp/replica")
pg_replica_create "$pg_port" "$tmp/replica" || die "pg_basebackup failed"
pg_start "$tmp/replica" "$replica_port" || die "the replica did not start"
for _ in $(seq 1 100); do
  [ "$(psql_db postgres -Atc "select count(*) from pg_stat_replication where state = 'streaming'")" = 1 ] && break
  sleep 0.1
done
pg_sync_standbys "$pg_port" '*'

# shellcheck disable=SC2086
bench_start_server --auth=off --log-level=warn \
  --pg-admin-dsn="host=127.0.0.1,127.0.0.1 port=$pg_port,$replica_port user=postgres dbname=postgres" \
  --pg-replica-admin-dsn="host=127.0.0.1 port=$replica_port user=postgres dbname=postgres" \
  ${BENCH_SERVER_FLAGS:-}
bench_create_tenant "$base" "$tenant"

say "seeding $n Organizations"
python3 - "$base" "$tenant" "$n" <<'EOF' || die "seeding failed"
import http.client, json, sys, urllib.parse
base, tenant, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(base)
c = http.client.HTTPConnection(u.hostname, u.port)
for i in range(n):
    body = json.dumps({"resourceType": "Organization", "id": f"o{i}", "name": f"org {i}"})
    c.request("PUT", f"/fhir/{tenant}/Organization/o{i}", body, {"Content-Type": "application/fhir+json"})
    r = c.getresponse(); r.read()
    if r.status not in (200, 201):
        sys.exit(f"PUT o{i}: {r.status}")
EOF

load() {
  python3 bench/failover_load.py --port "$http_port" --tenant "$tenant" --seeded "$n" --connections "$conns" \
    --duration "$duration" --write-share "$write_share" "$@"
}
# metric REGEX: the sum of the /metrics samples whose name and labels match.
metric() { curl -s "$base/metrics" | grep -E "^$1" | awk '{s += $2} END {printf "%d\n", s}'; }

say "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "baseline: ${duration} s, $conns connections, write share $write_share"
replica_reads0=$(metric 'medgrid_db_reads_routed_total[{].*target="replica"')
baseline=$(load --records "$tmp/baseline.txt")
replica_reads1=$(metric 'medgrid_db_reads_routed_total[{].*target="replica"')

say "failover: crash at ${crash_at} s, promote ${promote_after} s later"
load --ids "$tmp/acked.txt" --records "$tmp/failover.txt" >"$tmp/failover.json" &
load_pid=$!
sleep "$crash_at"
pg_crash "$tmp/primary"
max_level=0
promote_at=$(($(date +%s%N) + promote_after * 1000000000))
while [ "$(date +%s%N)" -lt "$promote_at" ]; do
  level=$(curl -s "$base/admin/degradation" | sed -n 's/.*"level":\([0-9]\).*/\1/p')
  [ "${level:-0}" -gt "$max_level" ] && max_level=$level
  sleep 0.2
done
pg_promote "$tmp/replica" || die "promotion failed"
wait "$load_pid"
failover=$(cat "$tmp/failover.json")

# Every acknowledged create must be on the promoted node.
acked=$(wc -l <"$tmp/acked.txt")
python3 - "$tmp/acked.txt" >"$tmp/acked.sql" <<'EOF'
import sys
ids = [l.strip() for l in open(sys.argv[1]) if l.strip()]
print("select count(*) from resources where tenant_id = 'bench' and res_id = any('{" + ",".join(ids) + "}'::text[]);")
EOF
stored=0
for db in medgrid_shard_0 medgrid_shard_1; do
  c=$(psql -X -q -h 127.0.0.1 -p "$replica_port" -U postgres -d "$db" -Atf "$tmp/acked.sql")
  stored=$((stored + c))
done

python3 - "$baseline" "$failover" "$tmp/failover.txt" "$crash_at" "$max_level" "$acked" "$stored" \
  "$((replica_reads1 - replica_reads0))" "$out" "$conns" "$duration" "$write_share" "$promote_after" <<'EOF'
import json, sys
(b, f, records, crash_at, max_level, acked, stored, replica_reads, out, conns, duration, share,
 promote_after) = sys.argv[1:]
b, f = json.loads(b), json.loads(f)
crash_at, promote_after = float(crash_at), float(promote_after)
# Writes refused: from the first failed write after the crash to the last.
failed = [float(l.split()[0]) for l in open(records)
          if l.split()[1] == "write" and not l.split()[2].startswith("2") and float(l.split()[0]) >= crash_at - 1]
window = (max(failed) - min(failed)) if failed else 0.0
resumed = [float(l.split()[0]) for l in open(records)
           if l.split()[1] == "write" and l.split()[2].startswith("2") and float(l.split()[0]) > crash_at]
resumed_at = f"{min(resumed):.1f} s" if resumed else "never (within the phase)"
rows = []
for kind in ("all", "read", "write"):
    x, y = b[kind], f[kind]
    ratio = (y["p99_ms"] / x["p99_ms"]) if x["p99_ms"] else float("nan")
    rows.append(f"| {kind} | {x['requests']} | {x['error_rate']*100:.2f}% | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} "
                f"| {y['requests']} | {y['error_rate']*100:.2f}% | {y['p50_ms']:.1f} | {y['p99_ms']:.1f} | {ratio:.2f} |")
text = "\n".join([
    f"{conns} connections, {duration} s per phase, write share {share}; crash at {crash_at:.0f} s, promotion "
    f"{promote_after:.0f} s later",
    "",
    "| requests | baseline n | errors | p50 ms | p99 ms | failover n | errors | p50 ms | p99 ms | p99 ratio |",
    "|---|---|---|---|---|---|---|---|---|---|",
    *rows,
    "",
    f"highest degradation level seen before promotion: {max_level}; writes refused for {window:.1f} s; "
    f"first acknowledged write after the crash at {resumed_at}; "
    f"reads served by the replica in the baseline: {replica_reads}; acknowledged creates during the failover "
    f"phase: {acked}, on the promoted node: {stored}",
])
print(text)
if out:
    open(out, "w").write(text + "\n")
if int(stored) != int(acked):
    sys.exit(f"{int(acked) - int(stored)} acknowledged writes are missing")
EOF
