"""What gen_queries.py and compare.py share: the data and query file formats.

Data: NDJSON, one resource per line with its id; a single file in load order,
or a folder of <Type>.ndjson files (bench/searchdata/generate.py writes both).

Queries: one per line, `Type?name=value&name=value`, written unencoded (a value
may hold any character but `&`; `+` is a plus sign, not a space); blank lines
and lines starting with `#` are skipped. medplum_search.mjs reads the same
format.
"""
import json
import os
from collections.abc import Iterator
from urllib.parse import quote

# The order in which a server can load the generated data without a dangling reference.
DEPENDENCY_ORDER = ["Organization", "Location", "Practitioner", "Patient", "Encounter", "Observation",
                    "Condition", "MedicationRequest"]


def data_files(path: str) -> list[str]:
    """The NDJSON files of `path` (a file, or a folder of *.ndjson) in load order."""
    if not os.path.isdir(path):
        return [path]
    names = [n for n in os.listdir(path) if n.endswith(".ndjson")]

    def rank(name: str) -> tuple[int, str]:
        t = name[:-len(".ndjson")]
        return (DEPENDENCY_ORDER.index(t) if t in DEPENDENCY_ORDER else len(DEPENDENCY_ORDER), name)

    return [os.path.join(path, n) for n in sorted(names, key=rank)]


def iter_resources(path: str) -> Iterator[dict]:
    for file in data_files(path):
        with open(file, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    r = json.loads(line)
                    if not r.get("resourceType") or not r.get("id"):
                        raise ValueError(f"{file}:{line_no}: a resource needs resourceType and id")
                    yield r


def read_queries(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [s for s in (line.strip() for line in f) if s and not s.startswith("#")]


def split_query(query: str) -> tuple[str, list[tuple[str, str]]]:
    """`Type?a=1&b=2` -> ("Type", [("a", "1"), ("b", "2")]), without any decoding."""
    rtype, _, rest = query.partition("?")
    pairs = []
    for part in rest.split("&") if rest else []:
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return rtype, pairs


def encode_query(query: str) -> str:
    """The query as a URL path and query string: every name and value percent-encoded, except for the
    characters FHIR search syntax uses (`:` `.` `|` `,` `/` `$`), which stay readable in logs."""
    rtype, pairs = split_query(query)
    if not pairs:
        return quote(rtype, safe="")
    return quote(rtype, safe="") + "?" + "&".join(
        f"{quote(n, safe=':._-~')}={quote(v, safe=':|,/$')}" for n, v in pairs)
