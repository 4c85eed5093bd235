#!/usr/bin/env python3
"""Differential test of a FHIR server's search against Medplum's in-memory search.

  compare.py --base http://127.0.0.1:8080/fhir/difftest --data DATA --queries QUERIES

1. Loads DATA (NDJSON file or folder, bench/searchdata/generate.py) into the
   server with `PUT [base]/Type/id`, type by type in dependency order
   (Organization, Location, Practitioner, Patient, Encounter, then the rest),
   in parallel within a type. Use a fresh, empty tenant: anything else in it
   shows up as a divergence. --skip-load reuses what a previous run loaded.
2. Runs every query against the server, following Bundle.link[next] to the last
   page (--count N adds _count=N to force many pages), and keeps the ids of the
   entries with search.mode "match" apart from the included ones.
3. Runs medplum_search.mjs on the same data and queries (or reads its output
   from --medplum-results).
4. Compares, per query, the matched ids and the included ids, and prints a
   report: agreeing queries, divergences with the ids only one side returned,
   and queries that one side rejected and the other answered.

known_divergences.json (beside this script; --known to use another) excuses
divergences the team has judged: a JSON list of
  {"query_pattern": "<Python regex, searched in the query line>",
   "reason": "<why the two sides differ and which is right>",
   "spec_section": "<the FHIR R4 section that decides, e.g. 3.1.1.5.1 or https://hl7.org/fhir/R4/search.html#string>"}
A divergence, or a query one side rejects and the other answers, is covered
when a pattern matches its query line. Entries that cover nothing are listed
as stale.

Exit status: 0 when every difference is covered and at least --min-queries
(300) queries were compared; 1 otherwise; 2 when the harness itself could not
run (bad arguments, the load failed, Medplum failed).
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from harness import DEPENDENCY_ORDER, encode_query, iter_resources, read_queries

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_PAGES = 10_000


def die(message: str) -> None:
    print(f"compare.py: {message}", file=sys.stderr)
    sys.exit(2)


# --- HTTP -------------------------------------------------------------------------
class Client:
    """Keep-alive HTTP(S) connections, one per thread, to the origin of `base`."""

    def __init__(self, base: str, headers: dict[str, str], timeout: float):
        self.base = base.rstrip("/") + "/"
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https"):
            die(f"--base must be an http(s) URL, got {base}")
        self.scheme, self.netloc = parts.scheme, parts.netloc
        self.headers = headers
        self.timeout = timeout
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.netloc, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """`url` is absolute or relative to the base. Retries once on a dropped keep-alive connection."""
        target = urljoin(self.base, url)
        parts = urlsplit(target)
        if (parts.scheme, parts.netloc) != (self.scheme, self.netloc):
            raise ValueError(f"{target} is not on the server's origin {self.scheme}://{self.netloc}")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        all_headers = {"Accept": "application/fhir+json", **self.headers, **(headers or {})}
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def outcome_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        return "; ".join(i.get("diagnostics") or i.get("details", {}).get("text") or i.get("code", "?")
                         for i in doc.get("issue", []))
    return json.dumps(doc)[:200]


# --- load -------------------------------------------------------------------------
def load(client: Client, data: str, concurrency: int) -> None:
    by_type: dict[str, list[dict]] = defaultdict(list)
    for r in iter_resources(data):
        by_type[r["resourceType"]].append(r)
    order = [t for t in DEPENDENCY_ORDER if t in by_type] + sorted(t for t in by_type if t not in DEPENDENCY_ORDER)
    failures: list[str] = []
    total = 0
    t0 = time.monotonic()

    def put(r: dict) -> str | None:
        body = json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            status, resp = client.request("PUT", f"{r['resourceType']}/{r['id']}", body,
                                          {"Content-Type": "application/fhir+json"})
        except (OSError, http.client.HTTPException) as e:
            return f"PUT {r['resourceType']}/{r['id']}: {e}"
        if status not in (200, 201):
            return f"PUT {r['resourceType']}/{r['id']}: HTTP {status}: {outcome_text(resp)}"
        return None

    with ThreadPoolExecutor(max_workers=concurrency) as ex:
        for rtype in order:
            # A barrier between types: every reference points to a type loaded before it.
            failures.extend(f for f in ex.map(put, by_type[rtype]) if f)
            total += len(by_type[rtype])
    elapsed = time.monotonic() - t0
    if failures:
        for f in failures[:10]:
            print(f"  {f}", file=sys.stderr)
        die(f"{len(failures)} of {total} PUTs failed")
    counts = ", ".join(f"{t} {len(by_type[t])}" for t in order)
    print(f"[compare] loaded {total} resources ({counts}) in {elapsed:.1f} s", file=sys.stderr)


# --- search -------------------------------------------------------------------------
@dataclass
class Result:
    ids: list[str] = field(default_factory=list)
    included: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    pages: int = 0


def server_search(client: Client, query: str, count: int | None) -> Result:
    rtype = query.partition("?")[0]
    url = encode_query(query)
    if count is not None:
        url += ("&" if "?" in url else "?") + f"_count={count}"
    res = Result()
    matched: dict[str, int] = {}
    included: set[str] = set()
    seen_urls = set()
    while url:
        if url in seen_urls or res.pages >= MAX_PAGES:
            res.error = f"paging does not end: next link {url} repeats or over {MAX_PAGES} pages"
            return res
        seen_urls.add(url)
        try:
            status, body = client.request("GET", url)
        except (OSError, ValueError, http.client.HTTPException) as e:
            res.error = f"GET {url}: {e}"
            return res
        res.pages += 1
        if status != 200:
            res.error = f"HTTP {status}: {outcome_text(body)}"
            return res
        try:
            bundle = json.loads(body)
        except ValueError:
            res.error = f"page {res.pages} is not JSON"
            return res
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
            res.error = f"page {res.pages} is not a searchset Bundle"
            return res
        for entry in bundle.get("entry", []):
            r = entry.get("resource") or {}
            key = f"{r.get('resourceType')}/{r.get('id')}"
            mode = (entry.get("search") or {}).get("mode")
            if mode == "outcome":
                continue
            if mode == "include" or (mode is None and r.get("resourceType") != rtype):
                included.add(key)
            else:
                matched[key] = matched.get(key, 0) + 1
        url = next((link.get("url") for link in bundle.get("link", []) if link.get("relation") == "next"), None)
    res.ids = sorted(matched)
    res.duplicates = sorted(k for k, n in matched.items() if n > 1)
    # An _include'd resource that also matched is reported once, as a match.
    res.included = sorted(included - set(matched))
    return res


def medplum_search(args, queries: list[str]) -> list[Result]:
    if args.medplum_results:
        path = args.medplum_results
    else:
        fd, path = tempfile.mkstemp(prefix="medplum-", suffix=".jsonl")
        os.close(fd)
        cmd = [args.node, os.path.join(HERE, "medplum_search.mjs"), "--data", args.data, "--queries", args.queries,
               "--out", path]
        if args.modules:
            cmd += ["--modules", args.modules]
        proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode != 0:
            die(f"medplum_search.mjs failed (exit {proc.returncode})")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not args.medplum_results:
        os.unlink(path)
    if [r["query"] for r in rows] != queries:
        die("the Medplum results do not list the same queries in the same order")
    return [Result(ids=r.get("ids", []), included=r.get("included", []), error=r.get("error"),
                   notes=r.get("notes", [])) for r in rows]


# --- known divergences --------------------------------------------------------------------
@dataclass
class Known:
    pattern: re.Pattern
    reason: str
    spec_section: str
    used: int = 0


def read_known(path: str) -> list[Known]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        die(f"{path}: {e}")
    if not isinstance(doc, list):
        die(f"{path}: must be a JSON list")
    known = []
    keys = {"query_pattern", "reason", "spec_section"}
    for i, item in enumerate(doc):
        if not isinstance(item, dict) or set(item) != keys or not all(isinstance(item[k], str) for k in keys):
            die(f"{path}: entry {i} must have exactly the string fields {sorted(keys)}")
        try:
            pattern = re.compile(item["query_pattern"])
        except re.error as e:
            die(f"{path}: entry {i}: bad query_pattern: {e}")
        known.append(Known(pattern, item["reason"], item["spec_section"]))
    return known


def covering(known: list[Known], query: str) -> Known | None:
    for k in known:
        if k.pattern.search(query):
            k.used += 1
            return k
    return None


# --- report ------------------------------------------------------------------------------
def ids_line(label: str, ids: list[str], limit: int) -> str:
    shown = ", ".join(ids[:limit]) + (f", ... and {len(ids) - limit} more" if len(ids) > limit else "")
    return f"    {label} ({len(ids)}): {shown}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="FHIR base URL of the server, e.g. http://127.0.0.1:8080/fhir/t1")
    ap.add_argument("--data", required=True, help="NDJSON file or folder")
    ap.add_argument("--queries", required=True, help="queries file (gen_queries.py)")
    ap.add_argument("--known", default=os.path.join(HERE, "known_divergences.json"))
    ap.add_argument("--skip-load", action="store_true", help="the server already holds the data")
    ap.add_argument("--concurrency", type=int, default=8, help="parallel requests (load and queries)")
    ap.add_argument("--count", type=int, help="add _count=N to every server query, to exercise paging")
    ap.add_argument("--header", action="append", default=[], metavar="'Name: value'",
                    help="extra request header, e.g. Authorization (repeatable)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per request")
    ap.add_argument("--medplum-results", help="use this medplum_search.mjs output instead of running it")
    ap.add_argument("--node", default=os.environ.get("NODE", "node"))
    ap.add_argument("--modules", help="folder of the Medplum install (default: what install.sh prints)")
    ap.add_argument("--min-queries", type=int, default=300)
    ap.add_argument("--max-ids", type=int, default=20, help="ids shown per side and divergence")
    ap.add_argument("--verbose", action="store_true", help="also detail the covered divergences")
    ap.add_argument("--json-report", help="write every query's outcome here as JSON")
    args = ap.parse_args()

    headers = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            die(f"--header must be 'Name: value', got {h!r}")
        headers[name.strip()] = value.strip()
    known = read_known(args.known)
    queries = read_queries(args.queries)
    if not queries:
        die(f"{args.queries} holds no query")
    client = Client(args.base, headers, args.timeout)

    if not args.skip_load:
        load(client, args.data, args.concurrency)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as ex:
        mine = list(ex.map(lambda q: server_search(client, q, args.count), queries))
    pages = sum(r.pages for r in mine)
    print(f"[compare] ran {len(queries)} queries on the server in {time.monotonic() - t0:.1f} s ({pages} pages)",
          file=sys.stderr)
    theirs = medplum_search(args, queries)

    rows = []
    tally = defaultdict(int)
    for query, a, b in zip(queries, mine, theirs):
        row = {"query": query, "medgrid": {"ids": a.ids, "included": a.included, "error": a.error,
                                           "duplicates": a.duplicates, "pages": a.pages},
               "medplum": {"ids": b.ids, "included": b.included, "error": b.error, "notes": b.notes}}
        if a.error and b.error:
            row["outcome"] = "both_rejected"
        elif a.error or b.error:
            row["outcome"] = "one_sided_error"
        elif set(a.ids) != set(b.ids) or set(a.included) != set(b.included) or a.duplicates:
            row["outcome"] = "diverge"
        else:
            row["outcome"] = "agree"
        if row["outcome"] in ("diverge", "one_sided_error"):
            k = covering(known, query)
            if k:
                row["known"] = {"reason": k.reason, "spec_section": k.spec_section}
        tally[row["outcome"] + ("_known" if "known" in row else "")] += 1
        rows.append(row)

    uncovered = [r for r in rows if r["outcome"] in ("diverge", "one_sided_error") and "known" not in r]
    covered = [r for r in rows if "known" in r]

    def detail(r: dict) -> None:
        a, b = r["medgrid"], r["medplum"]
        if r["outcome"] == "one_sided_error":
            print(f"  ERROR ON ONE SIDE  {r['query']}")
            for side, x in (("medgrid", a), ("medplum", b)):
                print(f"    {side}: " + (f"rejected: {x['error']}" if x["error"] else
                                         f"answered {len(x['ids'])} matches"))
        else:
            print(f"  DIVERGE  {r['query']}   (medgrid {len(a['ids'])}, medplum {len(b['ids'])} matches)")
            only_a = sorted(set(a["ids"]) - set(b["ids"]))
            only_b = sorted(set(b["ids"]) - set(a["ids"]))
            if only_a or only_b:
                print(ids_line("only in medgrid", only_a, args.max_ids))
                print(ids_line("only in medplum", only_b, args.max_ids))
            inc_a = sorted(set(a["included"]) - set(b["included"]))
            inc_b = sorted(set(b["included"]) - set(a["included"]))
            if inc_a or inc_b:
                print(ids_line("included only by medgrid", inc_a, args.max_ids))
                print(ids_line("included only by medplum", inc_b, args.max_ids))
            if a["duplicates"]:
                print(ids_line("medgrid returned more than once (paging)", a["duplicates"], args.max_ids))
        for n in b["notes"]:
            print(f"    medplum note: {n}")
        if "known" in r:
            print(f"    known: {r['known']['reason']} [{r['known']['spec_section']}]")

    print(f"\n## Differential search: {args.base} vs Medplum (MemoryRepository)\n")
    if uncovered:
        print(f"Not covered by {os.path.basename(args.known)} ({len(uncovered)}):")
        for r in uncovered:
            detail(r)
        print()
    if covered:
        print(f"Covered by {os.path.basename(args.known)} ({len(covered)}):")
        for r in covered:
            if args.verbose:
                detail(r)
            else:
                kind = "ERROR ON ONE SIDE" if r["outcome"] == "one_sided_error" else "DIVERGE"
                print(f"  {kind}  {r['query']}  -- {r['known']['reason']}")
        print()
    stale = [k for k in known if k.used == 0]
    for k in stale:
        print(f"Stale known divergence (covers nothing): {k.pattern.pattern}")
    compared = len(rows)
    agree = tally["agree"] + tally["both_rejected"]
    print(f"compared {compared} queries: {agree} agree ({tally['both_rejected']} rejected by both), "
          f"{tally['diverge'] + tally['diverge_known']} diverge ({tally['diverge_known']} known), "
          f"{tally['one_sided_error'] + tally['one_sided_error_known']} rejected by one side only "
          f"({tally['one_sided_error_known']} known)")

    if args.json_report:
        with open(args.json_report, "w", encoding="utf-8") as f:
            json.dump(rows, f, ensure_ascii=False, indent=1)
    failed = False
    if uncovered:
        print(f"FAILED: {len(uncovered)} differences not covered by {args.known}")
        failed = True
    if compared < args.min_queries:
        print(f"FAILED: only {compared} queries compared, fewer than {args.min_queries}")
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
