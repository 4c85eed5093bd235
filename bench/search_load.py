#!/usr/bin/env python3
"""Loads a slice of bench/searchdata/generate.py output into a FHIR server with PUT.

The generator's single stream holds the shared pools (Organization, Location,
Practitioner) first, then patient 1's Patient and the rest of its resources,
then patient 2's, and so on; patient i's resources depend only on (seed, i)
and the pool sizes. So one stream generated for the largest step serves every
step of a ladder: step k loads the patients (previous step, k], and the
lower steps are exact prefixes of the higher ones.

  search_load.py load --data DATA --base http://127.0.0.1:8080/fhir/bench \\
      --from-patient 0 --to-patient 1000 [--processes 2 --connections 32]
      PUTs [base]/Type/id for every resource of patients (from, to], and the
      pools too when --from-patient is 0. Prints one JSON object: resources,
      seconds, per_s, failures (status -> count) and the first few failure
      bodies. Exits 1 if any PUT did not answer 200 or 201.
  search_load.py subset --data DATA --to-patient 1000 > subset.ndjson
      writes the pools and patients 1..to: the data a server holds after the
      step, for the reference side (tests/differential/medplum_search.mjs).

Workers: --processes processes, each with connections/processes threads, one
keep-alive http.client connection per thread. Each process reads DATA itself
and takes every processes-th block of lines, so no resource bodies cross
processes.
"""
import argparse
import http.client
import json
import multiprocessing as mp
import queue
import re
import sys
import threading
import time
import urllib.parse

HEAD = re.compile(rb'^\{"resourceType":"([A-Za-z]+)","id":"([^"]+)"')
PATIENT_PREFIX = b'{"resourceType":"Patient","id":"pat-'
BLOCK = 64  # lines per unit of work


def lines_of(path: str, lo: int, hi: int, with_pools: bool):
    """The lines of the pools (if with_pools) and of patients lo < i <= hi, in stream order."""
    patient = 0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(PATIENT_PREFIX):
                patient = int(line[len(PATIENT_PREFIX):len(PATIENT_PREFIX) + 6])
                if patient > hi:
                    return
            if (patient == 0 and with_pools) or lo < patient <= hi:
                yield line


def worker(args, w: int, results) -> None:
    url = urllib.parse.urlsplit(args.base)
    prefix = url.path.rstrip("/")
    threads = max(1, args.connections // args.processes + (1 if w < args.connections % args.processes else 0))
    work: queue.Queue = queue.Queue(maxsize=threads * 4)
    lock = threading.Lock()
    stats = {"resources": 0, "failures": {}, "samples": []}

    def send() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        ok = 0
        failures: dict = {}
        samples = []
        while True:
            block = work.get()
            if block is None:
                break
            for line in block:
                m = HEAD.match(line)
                if not m:
                    failures["unparsable"] = failures.get("unparsable", 0) + 1
                    continue
                path = f"{prefix}/{m.group(1).decode()}/{m.group(2).decode()}"
                body = line.rstrip(b"\n")
                for attempt in (1, 2):
                    try:
                        conn.request("PUT", path, body, {"Content-Type": "application/fhir+json",
                                                         "Accept": "application/fhir+json"})
                        r = conn.getresponse()
                        data = r.read()
                        status = r.status
                        break
                    except (OSError, http.client.HTTPException) as e:
                        conn.close()
                        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
                        status, data = f"{type(e).__name__}", str(e).encode()
                        if attempt == 2:
                            break
                if status in (200, 201):
                    ok += 1
                else:
                    failures[str(status)] = failures.get(str(status), 0) + 1
                    if len(samples) < 3:
                        samples.append(f"PUT {path}: {status} {data[:300].decode(errors='replace')}")
        conn.close()
        with lock:
            stats["resources"] += ok
            for k, n in failures.items():
                stats["failures"][k] = stats["failures"].get(k, 0) + n
            stats["samples"].extend(samples)

    pool = [threading.Thread(target=send, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    block, n = [], 0
    for line in lines_of(args.data, args.from_patient, args.to_patient, args.from_patient == 0):
        if (n // BLOCK) % args.processes == w:
            block.append(line)
            if len(block) == BLOCK:
                work.put(block)
                block = []
        n += 1
    if block:
        work.put(block)
    for _ in pool:
        work.put(None)
    for t in pool:
        t.join()
    results.put(stats)


def load(args) -> int:
    results: mp.Queue = mp.Queue()
    t0 = time.monotonic()
    procs = [mp.Process(target=worker, args=(args, w, results)) for w in range(args.processes)]
    for p in procs:
        p.start()
    total = {"resources": 0, "failures": {}, "samples": []}
    for _ in procs:
        s = results.get()
        total["resources"] += s["resources"]
        for k, n in s["failures"].items():
            total["failures"][k] = total["failures"].get(k, 0) + n
        total["samples"].extend(s["samples"])
    for p in procs:
        p.join()
    seconds = time.monotonic() - t0
    total["samples"] = total["samples"][:5]
    out = {"from_patient": args.from_patient, "to_patient": args.to_patient, "resources": total["resources"],
           "seconds": round(seconds, 2), "per_s": round(total["resources"] / seconds, 1),
           "connections": args.connections, "failures": total["failures"], "failure_samples": total["samples"]}
    print(json.dumps(out))
    return 1 if total["failures"] or any(p.exitcode for p in procs) else 0


def subset(args) -> int:
    out = sys.stdout.buffer
    for line in lines_of(args.data, 0, args.to_patient, True):
        out.write(line)
    out.flush()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load", help="PUT patients (from, to] (and the pools when from is 0)")
    lp.add_argument("--data", required=True, help="NDJSON stream of generate.py (no --out)")
    lp.add_argument("--base", required=True, help="FHIR base, e.g. http://127.0.0.1:8080/fhir/bench")
    lp.add_argument("--from-patient", type=int, default=0)
    lp.add_argument("--to-patient", type=int, required=True)
    lp.add_argument("--processes", type=int, default=2)
    lp.add_argument("--connections", type=int, default=32)
    sp = sub.add_parser("subset", help="write the pools and patients 1..to to stdout")
    sp.add_argument("--data", required=True)
    sp.add_argument("--to-patient", type=int, required=True)
    args = ap.parse_args()
    if args.cmd == "load":
        if args.processes < 1 or args.connections < args.processes:
            ap.error("need 1 <= --processes <= --connections")
        return load(args)
    return subset(args)


if __name__ == "__main__":
    sys.exit(main())
