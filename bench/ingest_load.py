#!/usr/bin/env python3
"""The load side of bench/ingest.sh: posts gen_bundles.py's transaction Bundles to a FHIR server.

  ingest_load.py post --dir DIR --base http://127.0.0.1:8080/fhir/bench [--clients 4] [--mode transaction]
      --mode transaction (the default): POSTs each DIR/bundle-*.json to [base]
      as one request (Content-Type application/fhir+json). A bundle counts as
      ingested when the answer is 200 with a Bundle of type
      transaction-response holding one entry per request entry, each with a
      response.status starting "201".
      --mode put: the same resources one request each, PUT [base]/Type/<uuid>
      with the urn:uuid references rewritten to Type/<uuid>, a bundle's
      entries in order by one client; a resource counts when the answer is
      201. For comparison, and for trying the script on a server without
      transactions.
      Bundles are read and prepared before the clock starts and handed out
      largest first (so the run does not end with one large bundle alone).
      Each client is a thread with one keep-alive connection; nothing is
      retried (a retried transaction could create its resources twice).
      Prints one JSON object: bundles, entries, created, seconds, per_s (created
      per second), request latency p50/max in ms, failures (kind -> count) and
      the first few failure bodies. Exits 1 on any failure.
  ingest_load.py cpu-snap PID..
      CPU ticks of each PID with its children, live or reaped (JSON)
  ingest_load.py cpu-diff BEFORE AFTER
      CPU seconds of each PID between two cpu-snap outputs (JSON, PID -> s)
"""
import argparse
import http.client
import json
import os
import queue
import sys
import threading
import time
import urllib.parse


def read_bundles(directory: str) -> list[tuple[str, dict]]:
    names = sorted(n for n in os.listdir(directory) if n.startswith("bundle-") and n.endswith(".json"))
    out = []
    for n in names:
        with open(os.path.join(directory, n), encoding="utf-8") as f:
            out.append((n, json.load(f)))
    return out


def as_puts(prefix: str, bundle: dict) -> list[tuple[str, bytes]]:
    """(path, body) of a PUT per entry, the urn:uuid references rewritten to Type/<uuid>."""
    target = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'][len('urn:uuid:'):]}"
              for e in bundle["entry"]}

    def rewrite(v):
        if isinstance(v, dict):
            return {k: (target.get(x, x) if k == "reference" and isinstance(x, str) else rewrite(x))
                    for k, x in v.items()}
        if isinstance(v, list):
            return [rewrite(x) for x in v]
        return v

    out = []
    for e in bundle["entry"]:
        r = rewrite(e["resource"])
        key = target[e["fullUrl"]]
        body = {"resourceType": r["resourceType"], "id": key.split("/", 1)[1]}
        body.update((k, x) for k, x in r.items() if k != "resourceType")
        out.append((f"{prefix}/{key}", json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()))
    return out


def check_transaction(status: int, data: bytes, n: int) -> tuple[int, str | None]:
    """(entries answered 201, problem or None) of a transaction's answer."""
    if status != 200:
        return 0, f"status {status}"
    try:
        b = json.loads(data)
    except ValueError:
        return 0, "not JSON"
    if b.get("resourceType") != "Bundle" or b.get("type") != "transaction-response":
        return 0, f"not a transaction-response Bundle ({b.get('resourceType')}, {b.get('type')})"
    entries = b.get("entry", [])
    created = sum(1 for e in entries if str(e.get("response", {}).get("status", "")).startswith("201"))
    if len(entries) != n:
        return created, f"{len(entries)} response entries for {n}"
    if created != n:
        other = next(e.get("response", {}).get("status") for e in entries
                     if not str(e.get("response", {}).get("status", "")).startswith("201"))
        return created, f"{n - created} entries not 201 (e.g. {other!r})"
    return created, None


def post(args) -> int:
    url = urllib.parse.urlsplit(args.base)
    prefix = url.path.rstrip("/")
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    bundles = read_bundles(args.dir)
    if not bundles:
        print(f"no bundle-*.json in {args.dir}", file=sys.stderr)
        return 1
    # Units of work, prepared before the clock starts: (name, entries, requests).
    units = []
    for name, b in bundles:
        n = len(b["entry"])
        if args.mode == "transaction":
            body = json.dumps(b, ensure_ascii=False, separators=(",", ":")).encode()
            units.append((name, n, [(prefix, body)]))
        else:
            units.append((name, n, as_puts(prefix, b)))
    units.sort(key=lambda u: -u[1])
    work: queue.Queue = queue.Queue()
    for u in units:
        work.put(u)
    lock = threading.Lock()
    totals = {"created": 0, "failures": {}, "samples": [], "latencies": []}

    def client() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
        created, failures, samples, latencies = 0, {}, [], []

        def fail(kind: str, sample: str) -> None:
            failures[kind] = failures.get(kind, 0) + 1
            if len(samples) < 3:
                samples.append(sample)

        while True:
            try:
                name, n, requests = work.get_nowait()
            except queue.Empty:
                break
            for path, body in requests:
                method = "POST" if args.mode == "transaction" else "PUT"
                t0 = time.monotonic()
                try:
                    conn.request(method, path, body, headers)
                    r = conn.getresponse()
                    data = r.read()
                    status = r.status
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
                    fail(type(e).__name__, f"{method} {path} ({name}): {e}")
                    continue
                latencies.append(time.monotonic() - t0)
                if args.mode == "transaction":
                    ok, problem = check_transaction(status, data, n)
                    created += ok
                    if problem:
                        fail("unexpected transaction-response" if status == 200 else f"status {status}",
                             f"POST {path} ({name}, {n} entries): {problem}: {data[:400].decode(errors='replace')}")
                elif status == 201:
                    created += 1
                else:
                    fail(f"status {status}", f"PUT {path} ({name}): {status} {data[:400].decode(errors='replace')}")
        conn.close()
        with lock:
            totals["created"] += created
            for k, c in failures.items():
                totals["failures"][k] = totals["failures"].get(k, 0) + c
            totals["samples"].extend(samples)
            totals["latencies"].extend(latencies)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    lat = sorted(totals["latencies"])
    entries = sum(u[1] for u in units)
    out = {"mode": args.mode, "bundles": len(units), "entries": entries, "created": totals["created"],
           "min_entries": min(u[1] for u in units), "max_entries": max(u[1] for u in units),
           "bytes": sum(len(b) for u in units for _, b in u[2]), "clients": args.clients,
           "seconds": round(seconds, 3), "per_s": round(totals["created"] / seconds, 1),
           "requests": len(lat),
           "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
           "max_ms": round(lat[-1] * 1000, 1) if lat else None,
           "failures": totals["failures"], "failure_samples": totals["samples"][:5]}
    print(json.dumps(out))
    return 1 if totals["failures"] or totals["created"] != entries else 0


def cpu_snap(pids: list[str]) -> dict:
    """Ticks of each of `pids`: its own, its reaped children's, and its live children's."""
    stats = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        stats[pid] = stat[stat.rindex(")") + 2:].split()
    out = {}
    for root in pids:
        f = stats.get(root)
        ticks = sum(int(x) for x in f[11:15]) if f else 0  # utime stime cutime cstime
        # A child that exits between two snapshots moves from here into the
        # parent's cutime, so the difference counts it once.
        ticks += sum(int(c[11]) + int(c[12]) for c in stats.values() if c[1] == root)
        out[root] = ticks
    return {"hz": os.sysconf("SC_CLK_TCK"), "ticks": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("post")
    p.add_argument("--dir", required=True, help="the directory of gen_bundles.py's output")
    p.add_argument("--base", required=True, help="the tenant's FHIR base URL")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--mode", choices=("transaction", "put"), default="transaction")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for one answer (default 600)")
    c = sub.add_parser("cpu-snap")
    c.add_argument("pids", nargs="+")
    d = sub.add_parser("cpu-diff")
    d.add_argument("before")
    d.add_argument("after")
    args = ap.parse_args()
    if args.cmd == "post":
        return post(args)
    if args.cmd == "cpu-snap":
        print(json.dumps(cpu_snap(args.pids)))
        return 0
    with open(args.before, encoding="ascii") as f:
        a = json.load(f)
    with open(args.after, encoding="ascii") as f:
        b = json.load(f)
    print(json.dumps({pid: round((b["ticks"][pid] - a["ticks"].get(pid, 0)) / b["hz"], 2) for pid in b["ticks"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
