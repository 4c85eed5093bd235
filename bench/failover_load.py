#!/usr/bin/env python3
"""Closed-loop HTTP load for bench/failover.sh: reads by id and creates.

Each of --connections threads keeps one keep-alive connection and sends, for
--duration seconds, GET /fhir/{tenant}/Organization/o<i> (i uniform in
[0, --seeded)) or, with probability --write-share, POST /fhir/{tenant}/Organization.
Reads are sent from --reader-address (127.0.0.2) and writes from 127.0.0.1:
with --auth=off the server tells callers apart by address, and a caller
reads its own writes from the primary (read-your-writes), so readers and
writers are two callers, as separate clients are in production.
Every request is recorded as (start offset s, kind, status, latency s);
status 0 is a transport error. Writes print their ids when --ids is given,
one per line, for the script's check that no acknowledged write was lost.
Prints one JSON line with the records' summary per kind and overall.
"""
import argparse
import http.client
import json
import random
import threading
import time


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def summary(records):
    lat = [r[3] for r in records]
    errors = sum(1 for r in records if not 200 <= r[2] < 300)
    return {
        "requests": len(records),
        "errors": errors,
        "error_rate": errors / len(records) if records else 0.0,
        "p50_ms": (percentile(lat, 50) or 0) * 1000,
        "p99_ms": (percentile(lat, 99) or 0) * 1000,
        "max_ms": (max(lat) if lat else 0) * 1000,
    }


def worker(args, seed, start, records, ids, lock):
    rnd = random.Random(seed)
    def connect(write):
        source = None if write else (args.reader_address, 0)
        return http.client.HTTPConnection(args.host, args.port, timeout=30, source_address=source)

    conns = {True: connect(True), False: connect(False)}
    deadline = start + args.duration
    mine, my_ids = [], []
    body = json.dumps({"resourceType": "Organization", "name": "failover bench"})
    while time.monotonic() < deadline:
        write = rnd.random() < args.write_share
        conn = conns[write]
        t0 = time.monotonic()
        status = 0
        try:
            if write:
                conn.request("POST", f"/fhir/{args.tenant}/Organization", body,
                             {"Content-Type": "application/fhir+json"})
            else:
                conn.request("GET", f"/fhir/{args.tenant}/Organization/o{rnd.randrange(args.seeded)}")
            res = conn.getresponse()
            data = res.read()
            status = res.status
            if write and status == 201:
                my_ids.append(json.loads(data)["id"])
            if res.getheader("Connection", "").lower() == "close":
                conn.close()
                conns[write] = connect(write)
        except (OSError, http.client.HTTPException):
            conn.close()
            conns[write] = connect(write)
        t1 = time.monotonic()
        mine.append((t0 - start, "write" if write else "read", status, t1 - t0))
        if status != 0 and not 200 <= status < 300:
            time.sleep(0.01)  # a refused request: back off a little, as a client would
    with lock:
        records.extend(mine)
        ids.extend(my_ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tenant", default="bench")
    ap.add_argument("--seeded", type=int, required=True)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--write-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--reader-address", default="127.0.0.2")
    ap.add_argument("--ids", help="file to write the ids of acknowledged creates to")
    ap.add_argument("--records", help="file to write every record to (offset kind status latency)")
    args = ap.parse_args()
    records, ids, lock = [], [], threading.Lock()
    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(args, args.seed + i, start, records, ids, lock))
               for i in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if args.ids:
        with open(args.ids, "w") as f:
            f.writelines(i + "\n" for i in ids)
    if args.records:
        with open(args.records, "w") as f:
            for r in sorted(records):
                f.write(f"{r[0]:.3f} {r[1]} {r[2]} {r[3] * 1000:.1f}\n")
    out = {"all": summary(records),
           "read": summary([r for r in records if r[1] == "read"]),
           "write": summary([r for r in records if r[1] == "write"]),
           "acknowledged_writes": len(ids)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
