#!/usr/bin/env python3
"""The search shapes of bench/search.sh, with values drawn from the loaded data.

  search_queries.py shapes
      prints the shape names, one a line, in report order
  search_queries.py make --data DATA --to-patient N --tenant bench --out DIR [--per-shape 500] [--seed 1]
      reads the pools and patients 1..N of DATA (generate.py's single stream)
      and writes, per shape, DIR/<shape>.txt (queries written `Type?name=value`
      unencoded, the format of tests/differential/medplum_search.mjs) and
      DIR/<shape>.paths (the same queries as URL-encoded request paths under
      /fhir/<tenant>/, for bench/search_shapes.lua), in the same order.
  search_queries.py probe --base http://127.0.0.1:8080/fhir/bench --dir DIR [--first 5]
      runs the first queries of each shape once and prints one JSON line per
      shape: how many answered 200, the mean number of matches and included
      resources per page, and the first errors. Exits 1 on any error.

Every value comes from the data the server holds at that step (patients 1..N),
so each query of a shape is a real, different lookup, not one cached query:
genders and family names of the Patients, LOINC codes and effective months of
a sample of the Observations, practitioners of a sample of the Encounters, and
random patients. The lists are shuffled with --seed.
"""
import argparse
import http.client
import json
import os
import random
import sys
import urllib.parse

from search_load import PATIENT_PREFIX, lines_of

LOINC = "http://loinc.org"

# name -> (label, one search parameter?, template). A template's
# {fields} come from one drawn sample (see draw()).
SHAPES = {
    "patient_gender": ("Patient by gender", True, "Patient?gender={gender}"),
    "patient_family": ("Patient by family prefix", True, "Patient?family={prefix}"),
    "patient_gender_family": ("Patient by gender + family prefix", False, "Patient?gender={gender}&family={prefix}"),
    "obs_code": ("Observation by code", True, "Observation?code=http://loinc.org|{code}"),
    "obs_code_date": ("Observation by code + one-month date range", False,
                      "Observation?code=http://loinc.org|{code}&date=ge{month}-01&date=lt{next_month}-01"),
    "obs_subject": ("Observation by subject", True, "Observation?subject=Patient/{patient}"),
    "enc_patient": ("Encounter by patient", True, "Encounter?patient=Patient/{patient}"),
    "enc_practitioner": ("Encounter by practitioner", True, "Encounter?practitioner=Practitioner/{practitioner}"),
    "cond_chain": ("Condition by subject:Patient.name (chain)", True, "Condition?subject:Patient.name={family}"),
    "obs_include": ("Observation by code + month, _include=Observation:patient", False,
                    "Observation?code=http://loinc.org|{code}&date=ge{month}-01&date=lt{next_month}-01"
                    "&_include=Observation:patient"),
    "obs_total": ("Observation by code, _total=accurate", False, "Observation?code=http://loinc.org|{code}&_total=accurate"),
}


def next_month(month: str) -> str:
    y, m = int(month[:4]), int(month[5:7])
    return f"{y + 1:04d}-01" if m == 12 else f"{y:04d}-{m + 1:02d}"


def scan(path: str, to_patient: int, rng: random.Random, sample: int) -> dict:
    """Values present in the pools and patients 1..to_patient."""
    genders, families, gender_prefix, codes = set(), set(), set(), set()
    code_months, practitioners = [], set()
    # About `sample` Observations and Encounters are parsed, not all of them.
    p_obs = min(1.0, sample / (70.0 * to_patient))
    p_enc = min(1.0, sample / (8.0 * to_patient))
    for line in lines_of(path, 0, to_patient, with_pools=True):
        if line.startswith(PATIENT_PREFIX):
            p = json.loads(line)
            gender = p.get("gender")
            for name in p.get("name", [])[:1]:
                family = name.get("family")
                if family:
                    families.add(family)
                    if gender:
                        genders.add(gender)
                        gender_prefix.add((gender, family[:2]))
            continue
        if line.startswith(b'{"resourceType":"Observation"'):
            if rng.random() >= p_obs:
                continue
            o = json.loads(line)
            c = o["code"]["coding"][0]
            if c.get("system") != LOINC:
                continue
            codes.add(c["code"])
            when = o.get("effectiveDateTime") or o.get("effectivePeriod", {}).get("start", "")
            if len(when) >= 7:
                code_months.append((c["code"], when[:7]))
        elif line.startswith(b'{"resourceType":"Encounter"') and rng.random() < p_enc:
            e = json.loads(line)
            for part in e.get("participant", []):
                ref = part.get("individual", {}).get("reference", "")
                if ref.startswith("Practitioner/"):
                    practitioners.add(ref.split("/", 1)[1])
    return {"genders": sorted(genders), "families": sorted(families), "gender_prefix": sorted(gender_prefix),
            "codes": sorted(codes), "code_months": sorted(set(code_months)), "practitioners": sorted(practitioners),
            "patients": to_patient}


def draw(values: dict, shape: str, rng: random.Random, k: int) -> list[dict]:
    """Up to k distinct samples of the template fields of a shape, shuffled."""
    if shape == "patient_gender":
        out = [{"gender": g} for g in values["genders"]]
    elif shape == "patient_family":
        out = [{"prefix": p} for p in sorted({f[:2] for f in values["families"]})]
    elif shape == "patient_gender_family":
        out = [{"gender": g, "prefix": p} for g, p in values["gender_prefix"]]
    elif shape in ("obs_code", "obs_total"):
        out = [{"code": c} for c in values["codes"]]
    elif shape in ("obs_code_date", "obs_include"):
        out = [{"code": c, "month": m, "next_month": next_month(m)} for c, m in values["code_months"]]
    elif shape in ("obs_subject", "enc_patient"):
        n = values["patients"]
        ids = rng.sample(range(1, n + 1), min(k, n))
        out = [{"patient": f"pat-{i:06d}"} for i in ids]
    elif shape == "enc_practitioner":
        out = [{"practitioner": p} for p in values["practitioners"]]
    elif shape == "cond_chain":
        out = [{"family": f} for f in values["families"]]
    else:
        raise ValueError(shape)
    rng.shuffle(out)
    return out[:k]


def to_path(tenant: str, query: str) -> str:
    """`Type?a=b&c=d` (unencoded) -> /fhir/<tenant>/Type?a=b&c=d, URL-encoded the way
    tests/differential/compare.py sends it (`: . | , / $` stay as they are)."""
    rtype, _, qs = query.partition("?")
    parts = []
    for pair in qs.split("&"):
        name, _, value = pair.partition("=")
        parts.append(urllib.parse.quote(name, safe=":.|,/$") + "=" + urllib.parse.quote(value, safe=":.|,/$"))
    return f"/fhir/{tenant}/{rtype}?" + "&".join(parts)


def make(args) -> int:
    rng = random.Random(f"medgrid-bench-search/{args.seed}/{args.to_patient}")
    values = scan(args.data, args.to_patient, rng, args.sample)
    os.makedirs(args.out, exist_ok=True)
    counts = {}
    for shape, (_, _, template) in SHAPES.items():
        queries = [template.format(**s) for s in draw(values, shape, rng, args.per_shape)]
        if not queries:
            print(f"search_queries.py: no values for shape {shape}", file=sys.stderr)
            return 1
        with open(os.path.join(args.out, f"{shape}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(q + "\n" for q in queries))
        with open(os.path.join(args.out, f"{shape}.paths"), "w", encoding="utf-8") as f:
            f.write("".join(to_path(args.tenant, q) + "\n" for q in queries))
        counts[shape] = len(queries)
    print(json.dumps({"to_patient": args.to_patient, "queries": counts}))
    return 0


def probe(args) -> int:
    url = urllib.parse.urlsplit(args.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    bad = 0
    for shape in SHAPES:
        with open(os.path.join(args.dir, f"{shape}.paths"), encoding="utf-8") as f:
            paths = [line.strip() for line in f if line.strip()][:args.first]
        ok, matches, included, totals, errors = 0, 0, 0, [], []
        for path in paths:
            conn.request("GET", path, headers={"Accept": "application/fhir+json"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                errors.append(f"{path}: {r.status} {body[:300].decode(errors='replace')}")
                continue
            bundle = json.loads(body)
            if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
                errors.append(f"{path}: not a searchset Bundle")
                continue
            ok += 1
            for e in bundle.get("entry", []):
                if e.get("search", {}).get("mode") == "include":
                    included += 1
                else:
                    matches += 1
            if "total" in bundle:
                totals.append(bundle["total"])
        bad += len(errors)
        n = max(1, ok)
        print(json.dumps({"shape": shape, "probed": len(paths), "ok": ok, "matches_per_page": round(matches / n, 1),
                          "included_per_page": round(included / n, 1),
                          "mean_total": round(sum(totals) / len(totals), 1) if totals else None,
                          "errors": errors[:3]}))
    conn.close()
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("shapes", help="print the shape names")
    mp = sub.add_parser("make", help="write DIR/<shape>.txt and .paths")
    mp.add_argument("--data", required=True)
    mp.add_argument("--to-patient", type=int, required=True)
    mp.add_argument("--tenant", default="bench")
    mp.add_argument("--out", required=True)
    mp.add_argument("--per-shape", type=int, default=500, help="queries per shape at most (default 500)")
    mp.add_argument("--sample", type=int, default=20000,
                    help="Observations and Encounters to read values from (default 20000 each)")
    mp.add_argument("--seed", type=int, default=1)
    pp = sub.add_parser("probe", help="run the first queries of each shape once")
    pp.add_argument("--base", required=True)
    pp.add_argument("--dir", required=True)
    pp.add_argument("--first", type=int, default=5)
    args = ap.parse_args()
    if args.cmd == "shapes":
        print("\n".join(SHAPES))
        return 0
    return make(args) if args.cmd == "make" else probe(args)


if __name__ == "__main__":
    sys.exit(main())
