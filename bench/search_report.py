#!/usr/bin/env python3
"""Reports of bench/search.sh.

  search_report.py wrk FILE        one line from a wrk run of search_shapes.lua
  search_report.py medplum FILE    one line from medplum_search.mjs --bench --out FILE
  search_report.py cpu-snap PID..  CPU ticks of the machine, of PIDs and of their children (JSON)
  search_report.py report --tmp DIR [--explain-out FILE]
      the markdown report of a run from what search.sh left in DIR (meta.tsv,
      loads.jsonl, probe-<step>.jsonl, wrk/<step>-<name>.txt, medplum/<shape>.json,
      explain/<shape>.{txt,query}); with --explain-out, also the plans of the
      last step, with the scans each one uses, as markdown in FILE.

Targets checked, per shape: req/s at the last step >= 0.8 x req/s at the first;
medgrid >= 10 x Medplum at the first step; p99 < 50 ms at the last step for the
shapes with one search parameter.
"""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search_queries import SHAPES  # noqa: E402

SCALE_TARGET = 0.8
MEDPLUM_TARGET = 10.0
P99_TARGET_MS = 50.0
BIG_TABLES = ("resources", "resource_versions")
# Index tables that stay small: the count deltas are folded away every 2 s.
SMALL_INDEX_TABLES = ("idx_token_count_delta",)


def read_wrk(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("BENCH "):
                    d = json.loads(line[6:])
                    d["socket_errors"] = d["connect"] + d["read"] + d["write"] + d["timeout"]
                    d["other_cpu"] = other_cpu(path[:-len(".txt")])
                    return d
    except FileNotFoundError:
        pass
    return None


def cpu_snapshot(roots: set[str]) -> dict:
    """Busy CPU ticks of the machine, and ticks of the processes `roots` (the server and
    the postmaster) and of their children (PostgreSQL's backends)."""
    with open("/proc/stat", encoding="ascii") as f:
        cpu = f.readline().split()
    busy = sum(int(cpu[i]) for i in (1, 2, 3, 6, 7, 8))  # user nice system irq softirq steal
    procs = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if pid in roots or fields[1] in roots:
            procs[pid] = int(fields[11]) + int(fields[12])
    return {"busy": busy, "procs": procs, "hz": os.sysconf("SC_CLK_TCK"), "ncpu": os.cpu_count(), "t": time.time()}


def other_cpu(base: str) -> float | None:
    """Share of the machine's CPU that processes other than the server, PostgreSQL and
    the measuring process (wrk or node) used during a measurement (compile jobs and the
    like): BASE.cpu0/.cpu1 are snapshots before and after, BASE.time the measuring
    process's own user and system seconds."""
    try:
        with open(base + ".cpu0", encoding="utf-8") as f:
            a = json.load(f)
        with open(base + ".cpu1", encoding="utf-8") as f:
            b = json.load(f)
        with open(base + ".time", encoding="utf-8") as f:
            wrk_s = sum(float(x) for x in f.read().split()[-2:])
        if "t" in a and "t" in b:
            seconds = b["t"] - a["t"]
        else:
            with open(base + ".txt", encoding="utf-8", errors="replace") as f:
                seconds = next(json.loads(line[6:])["seconds"] for line in f if line.startswith("BENCH "))
    except (OSError, ValueError, StopIteration):
        return None
    ours = sum(b["procs"][p] - a["procs"][p] for p in b["procs"] if p in a["procs"])
    other = (b["busy"] - a["busy"] - ours) / b["hz"] - wrk_s
    return max(0.0, other / (seconds * b["ncpu"]))


def wrk_errors(d: dict) -> str:
    if d["non2xx"] == 0 and d["socket_errors"] == 0:
        return "none"
    return (f"{d['non2xx']} non-2xx, socket errors connect {d['connect']} read {d['read']} "
            f"write {d['write']} timeout {d['timeout']}")


def ms(us: float) -> str:
    v = us / 1000.0
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def md_cell(text: str) -> str:
    """Text for a markdown table cell: a "|" would end the cell, even inside backticks."""
    return text.replace("|", "\\|")


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def num(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, digits)


def jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def scans(plan: str) -> list[tuple[str, str, str]]:
    """(node, index or '', relation) of every scan node in an EXPLAIN text."""
    out = []
    for m in re.finditer(r"(Parallel )?(Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan|Bitmap Heap Scan)"
                         r"(?: Backward)?(?: using (\S+))? on (\S+)", plan):
        node, index, rel = m.group(2), m.group(3) or "", m.group(4)
        if node == "Bitmap Index Scan":
            index, rel = rel, ""
        out.append(((m.group(1) or "") + node, index, rel))
    return out


def is_big(rel: str) -> bool:
    return rel in BIG_TABLES or (rel.startswith("idx_") and rel not in SMALL_INDEX_TABLES)


def explain_summary(plan: str) -> dict:
    found = scans(plan)
    seq = sorted({rel for node, _, rel in found if node.endswith("Seq Scan") and is_big(rel)})
    indexes = sorted({idx for node, idx, _ in found if idx})
    times = [float(t) for t in re.findall(r"Execution Time: ([0-9.]+) ms", plan)]
    # The first Buffers line of each statement is its top node's: all it touched.
    buffers = 0
    for section in re.split(r"^-- .*$", plan, flags=re.M):
        m = re.search(r"Buffers: shared((?: \w+=\d+)+)", section)
        if m:
            buffers += sum(int(v) for v in re.findall(r"(?:hit|read)=(\d+)", m.group(1)))
    return {"seq_big": seq, "indexes": indexes, "index_scan": bool(indexes), "exec_ms": times, "buffers": buffers,
            "ok": bool(found) and "Execution Time" in plan}


def report(args) -> int:
    tmp = args.tmp
    meta = {}
    with open(os.path.join(tmp, "meta.tsv"), encoding="utf-8") as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            meta[k] = v
    steps = [int(s) for s in meta["steps"].split(",")]
    first, last = steps[0], steps[-1]
    loads = {d["step"]: d for d in jsonl(os.path.join(tmp, "loads.jsonl"))}
    probes = {s: {d["shape"]: d for d in jsonl(os.path.join(tmp, f"probe-{s}.jsonl"))} for s in steps}
    wrk = {(s, name): read_wrk(os.path.join(tmp, "wrk", f"{s}-{name}.txt"))
           for s in steps for name in ["livez", *SHAPES]}
    medplum = {}
    for shape in SHAPES:
        p = os.path.join(tmp, "medplum", f"{shape}.json")
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                medplum[shape] = json.loads(f.read())

    o = []
    w = o.append
    w("## medgrid search benchmark")
    w("")
    w(f"- machine: {meta['nproc']} CPUs, {meta['cpu']}, {meta['ram']} RAM; {meta['kernel']}; load generator, "
      "server, PostgreSQL (and Medplum) share these CPUs")
    w(f"- date: {meta['date']}; server: {meta['server']}; PostgreSQL {meta['pg']} ({meta['pg_settings']}) on the "
      "same machine")
    w(f"- data: bench/searchdata/generate.py --patients {meta.get('data_patients', last)} --seed {meta['seed']} "
      f"(the first patients of it), one tenant, steps of {meta['steps']} patients "
      f"loaded incrementally with PUT over {meta['load_connections']} keep-alive connections; VACUUM ANALYZE after "
      "each step")
    w(f"- load: {meta['wrk']}, rotating through up to 500 queries per shape with values drawn from the data loaded")
    w(f"- reference: {meta['medplum']} (in-process calls, no HTTP, one thread), at {first} patients")
    if meta.get("remeasured"):
        w(f"- **re-measured**: the {meta['remeasured']} on the data the first run loaded (`search.sh --reuse`); "
          "the other steps and Medplum are from the first run, so the last/first ratio compares two runs")
    w(f"- server log lines at warn or above: {meta.get('server_warnings', '?')}")
    w("- other CPU: the share of the machine's CPU that processes other than this server, its PostgreSQL and "
      "wrk used during a measurement (other people's compile and test jobs); it lowers req/s")
    w("")
    w("| step (patients) | resources added | load s | resources/s | resources in tenant | database MiB "
      "| VACUUM ANALYZE s | load average at start |")
    w("|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in steps:
        d = loads.get(s)
        if not d:
            w(f"| {s:,} | - | - | - | - | - | - | - |")
            continue
        ld = d["load"]
        w(f"| {s:,} | {ld['resources']:,} | {ld['seconds']:.0f} | {ld['per_s']:,.0f} | {d['resources_in_db']:,} "
          f"| {d['db_bytes'] / 1048576:,.0f} | {d['vacuum_s']} | {d.get('loadavg', '-')} |")
    w("")
    w("| shape | patients | req/s | p50 ms | p95 ms | p99 ms | x /livez | matches (+included) per page "
      "| other CPU | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in ["livez", *SHAPES]:
        label = "GET /livez (baseline)" if name == "livez" else f"{SHAPES[name][0]} (`{name}`)"
        for s in steps:
            d = wrk[(s, name)]
            if d is None:
                w(f"| {label} | {s:,} | - | - | - | - | - | - | - | no result |")
                continue
            lz = wrk[(s, "livez")]
            pr = probes[s].get(name)
            hits = "-"
            if pr:
                hits = f"{pr['matches_per_page']:g}"
                if pr["included_per_page"]:
                    hits += f" (+{pr['included_per_page']:g})"
            rl = ratio(d["rps"], lz["rps"] if lz else None, 3)
            w(f"| {label} | {s:,} | {d['rps']:,.0f} | {ms(d['p50_us'])} | {ms(d['p95_us'])} | {ms(d['p99_us'])} "
              f"| {'-' if name == 'livez' else num(rl, 3)} | {hits} | {pct(d['other_cpu'])} | {wrk_errors(d)} |")
    w("")
    w(f"Targets: req/s at {last:,} >= {SCALE_TARGET} x req/s at {first:,}; medgrid >= {MEDPLUM_TARGET:g} x Medplum "
      f"at {first:,}; p99 < {P99_TARGET_MS:g} ms at {last:,} for shapes with one search parameter (marked 1).")
    w("")
    w(f"| shape | 1 | req/s {first:,} | req/s {last:,} | {last:,} / {first:,} | Medplum req/s ({first:,}; other CPU) "
      f"| medgrid / Medplum | p99 ms {last:,} | scale | vs Medplum | p99 |")
    w("|---|:-:|---:|---:|---:|---:|---:|---:|:-:|:-:|:-:|")
    misses = []
    for name, (label, single, _) in SHAPES.items():
        a, b = wrk[(first, name)], wrk[(last, name)]
        ra, rb = (a["rps"] if a else None), (b["rps"] if b else None)
        scale = ratio(rb, ra)
        mp = medplum.get(name)
        mrate = mp["throughput_per_s"] if mp and not mp.get("errors") else None
        mp_other = other_cpu(os.path.join(tmp, "medplum", name)) if mp else None
        vs = ratio(ra, mrate, 1)
        p99 = b["p99_us"] / 1000 if b else None

        def verdict(ok: bool | None) -> str:
            return "-" if ok is None else ("met" if ok else "**missed**")

        v_scale = verdict(None if scale is None or first == last else scale >= SCALE_TARGET)
        v_mp = verdict(None if vs is None else vs >= MEDPLUM_TARGET)
        v_p99 = verdict(None if p99 is None or not single else p99 < P99_TARGET_MS)
        for what, v in (("scale", v_scale), ("vs Medplum", v_mp), ("p99", v_p99)):
            if "missed" in v:
                misses.append(f"{name} ({what})")
        mp_note = num(mrate, 1) if mrate is not None else ("errors" if mp else "-")
        if mp_other is not None:
            mp_note += f" ({pct(mp_other)})"
        w(f"| {label} | {'1' if single else ''} | {num(ra)} | {num(rb)} | {num(scale, 2)} | {mp_note} "
          f"| {num(vs, 1)} | {num(p99, 1)} | {v_scale} | {v_mp} | {v_p99} |")
    w("")
    w("Targets missed: " + (", ".join(misses) if misses else "none") + ".")
    bad_probes = [f"{s}/{n}: {p['errors'][0]}" for s in steps for n, p in probes[s].items() if p["errors"]]
    empty = [f"{n} at {s}" for s in steps for n, p in probes[s].items() if p["ok"] and p["matches_per_page"] == 0]
    if bad_probes:
        w("")
        w("**Probe errors**: " + "; ".join(bad_probes))
    if empty:
        w("")
        w("Shapes whose probed queries matched nothing: " + ", ".join(empty) + ".")
    if medplum:
        mp_err = [f"{n} ({m['errors']} errors)" for n, m in medplum.items() if m.get("errors")]
        if mp_err:
            w("")
            w("Medplum errors: " + ", ".join(mp_err) + ".")

    # Per shape, the slowest of the explained queries (by total execution time).
    explain_dir = os.path.join(tmp, "explain")
    plans, all_times = {}, {}
    for name in SHAPES:
        candidates = []
        for i in range(1, 100):
            p = os.path.join(explain_dir, f"{name}.{i}.txt")
            if not os.path.exists(p):
                break
            with open(p, encoding="utf-8") as f:
                plan = f.read()
            with open(os.path.join(explain_dir, f"{name}.{i}.query"), encoding="utf-8") as f:
                query = f.read().strip()
            candidates.append((query, plan, explain_summary(plan)))
        if candidates:
            plans[name] = max(candidates, key=lambda c: sum(c[2]["exec_ms"]))
            all_times[name] = [sum(c[2]["exec_ms"]) for c in candidates]
    if plans:
        w("")
        w(f"Plans at {last:,} patients (EXPLAIN (ANALYZE, BUFFERS) of the first five queries per shape; the "
          "slowest is shown):")
        w("")
        w("| shape | execution ms, slowest | all five | buffers (slowest) | index scan | Seq Scan on a big table |")
        w("|---|---:|---|---:|:-:|---|")
        for name, (query, plan, s) in plans.items():
            if not s["ok"]:
                w(f"| {name} | - | - | - | - | no plan: {plan.splitlines()[0] if plan else 'empty'} |")
                continue
            w(f"| {name} | {' + '.join(f'{t:.1f}' for t in s['exec_ms'])} "
              f"| {', '.join(f'{t:.1f}' for t in all_times[name])} | {s['buffers']:,} "
              f"| {'yes' if s['index_scan'] else 'no'} "
              f"| {', '.join('**' + t + '**' for t in s['seq_big']) or 'none'} |")
    print("\n".join(o))

    if args.explain_out:
        e = []
        e.append(f"# Search plans at {last:,} patients")
        e.append("")
        e.append(f"Written by `bench/search.sh` on {meta['date']} (medgrid {meta['revision']}, PostgreSQL "
                 f"{meta['pg']}, {meta['pg_settings']}; {meta['nproc']} CPUs, {meta['ram']} RAM). One tenant "
                 f"holding {last:,} patients of `bench/searchdata/generate.py --seed {meta['seed']}` "
                 f"({loads[last]['resources_in_db']:,} resources) after VACUUM ANALYZE"
                 + (f" ({meta['remeasured']})" if meta.get("remeasured") else "") + ". For each shape, the first "
                 "five of its benchmark queries, each run once to warm the cache, then `GET /admin/explain/{tenant}/"
                 "{Type}?{query}`: EXPLAIN (ANALYZE, BUFFERS) of the page query (and of the count query for "
                 "`_total=accurate`; the `_include` follow-up queries are not shown). The slowest of the five is "
                 "shown.")
        e.append("")
        e.append("Big tables: `resources`, `resource_versions` and every `idx_*` table but "
                 "`idx_token_count_delta` (folded away every 2 s). A Seq Scan on one of them is flagged. "
                 "Execution times are wall-clock on a machine shared with other jobs; the buffers "
                 "(shared hit + read of the top node of each statement) measure the work and do not depend on "
                 "contention.")
        e.append("")
        e.append("| shape | slowest query | execution ms | all five, ms | buffers | indexes used | Seq Scan on a big table |")
        e.append("|---|---|---:|---|---:|---|---|")
        for name, (query, plan, s) in plans.items():
            if not s["ok"]:
                e.append(f"| `{name}` | `{md_cell(query)}` | - | - | - | no plan | - |")
                continue
            e.append(f"| `{name}` | `{md_cell(query)}` | {' + '.join(f'{t:.1f}' for t in s['exec_ms'])} "
                     f"| {', '.join(f'{t:.1f}' for t in all_times[name])} | {s['buffers']:,} "
                     f"| {', '.join(s['indexes']) or 'none'} | {', '.join('**' + t + '**' for t in s['seq_big']) or 'none'} |")
        for name, (query, plan, s) in plans.items():
            e.append("")
            e.append(f"## `{name}`: {SHAPES[name][0]}")
            e.append("")
            e.append(f"`{query}`")
            e.append("")
            e.append("```text")
            e.append(plan.rstrip("\n"))
            e.append("```")
        os.makedirs(os.path.dirname(os.path.abspath(args.explain_out)), exist_ok=True)
        with open(args.explain_out, "w", encoding="utf-8") as f:
            f.write("\n".join(e) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    wp = sub.add_parser("wrk")
    wp.add_argument("file")
    cp = sub.add_parser("cpu-snap")
    cp.add_argument("pids", nargs="+", help="the server's and the postmaster's process ids")
    mp = sub.add_parser("medplum")
    mp.add_argument("file")
    rp = sub.add_parser("report")
    rp.add_argument("--tmp", required=True)
    rp.add_argument("--explain-out")
    args = ap.parse_args()
    if args.cmd == "wrk":
        d = read_wrk(args.file)
        if d is None:
            return 1
        print(f"{d['rps']:,.0f} req/s, p50 {ms(d['p50_us'])} ms, p95 {ms(d['p95_us'])} ms, "
              f"p99 {ms(d['p99_us'])} ms, {d['requests']} requests, other CPU {pct(d['other_cpu'])}, "
              f"errors: {wrk_errors(d)}")
        return 0
    if args.cmd == "cpu-snap":
        print(json.dumps(cpu_snapshot(set(args.pids))))
        return 0
    if args.cmd == "medplum":
        with open(args.file, encoding="utf-8") as f:
            d = json.load(f)
        other = other_cpu(args.file[:-len(".json")])
        print(f"{d['throughput_per_s']} req/s, p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms, {d['calls']} calls, "
              f"other CPU {pct(other)}, errors {d['errors']}")
        return 0
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
