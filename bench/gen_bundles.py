#!/usr/bin/env python3
"""Seeded, deterministic, Synthea-like FHIR R4 transaction Bundles: one per patient.

  gen_bundles.py --seed 42 --patients 40 --out DIR
      writes DIR/bundle-00001.json .. DIR/bundle-00040.json and prints a count
      per resource type to stderr
  gen_bundles.py --check DIR
      checks the bundles of DIR (below) and prints one JSON line of totals

Each bundle is `{"resourceType": "Bundle", "type": "transaction", ...}` with
100 to 1,000 entries (the size drawn per patient): the Patient, then per
encounter the Encounter and what was recorded in it: vital signs (LOINC codes,
UCUM quantities, a blood-pressure panel with components), lab Observations
with the DiagnosticReport of their panel (`result` references them), a smoking
status, Conditions (SNOMED CT), Procedures, MedicationRequests (RxNorm) and
Immunizations (CVX). Every entry is `request: {method: POST, url: <Type>}` with
`fullUrl: urn:uuid:<uuid>`, resources carry no id, and every reference
(subject, patient, encounter, result, reasonReference) is the urn:uuid fullUrl
of another entry of the same bundle, so a bundle needs nothing from the server.

Resources are kept to strict R4 JSON (no extensions, no profiles claimed, the
choice types' own names, required elements present), because the server
rejects unknown elements. Every bundle is checked as it is written (check_bundle:
references resolve, the required elements of each type are there, entry count
in range); generation fails on the first problem.

Determinism: the output depends only on --seed and --patients, never on the
clock or the Python hash seed: patient i's bundle comes from
random.Random("medgrid-bundles/<seed>/<i>"), uuids included, so the first
bundles of a larger run equal those of a smaller one. Vocabularies and small
helpers are those of searchdata/generate.py.
"""
import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from searchdata import generate as sd  # noqa: E402  (vocabularies and helpers)

MIN_ENTRIES, MAX_ENTRIES = 100, 1000

CVX = "http://hl7.org/fhir/sid/cvx"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
BCP47 = "urn:ietf:bcp:47"

# Lab panels: DiagnosticReport code -> the LOINC codes of sd.LABS it reports.
PANELS = [
    ("51990-0", "Basic metabolic panel - Blood",
     ["2339-0", "3094-0", "2160-0", "17861-6", "2951-2", "2823-3", "2075-0", "2028-9"]),
    ("57698-3", "Lipid panel with direct LDL - Serum or Plasma", ["2093-3", "2571-8", "2085-9", "18262-6"]),
    ("58410-2", "CBC panel - Blood by Automated count", ["6690-2", "718-7", "4544-3", "777-3"]),
    ("24325-3", "Hepatic function panel - Serum or Plasma", ["1742-6"]),
]
# Labs ordered on their own, without a report.
SINGLE_LABS = ["4548-4", "33914-3", "3016-3"]
LAB_BY_CODE = {row[0]: row for row in sd.LABS}

PROCEDURES = [
    ("430193006", "Medication Reconciliation (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("171207006", "Depression screening (procedure)"),
    ("428191000124101", "Documentation of current medications (procedure)"),
    ("73761001", "Colonoscopy (procedure)"),
    ("117015009", "Throat culture (procedure)"),
    ("76601001", "Intramuscular injection (procedure)"),
    ("399208008", "Plain chest X-ray (procedure)"),
    ("23426006", "Measurement of respiratory function (procedure)"),
    ("268556000", "Urine screening for glucose (procedure)"),
    ("252160004", "Standard pure tone audiometry (procedure)"),
    ("36969009", "Placement of stent in coronary artery (procedure)"),
]
VACCINES = [
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("113", "Td (adult) preservative free"),
    ("115", "Tdap"),
    ("133", "Pneumococcal conjugate PCV 13"),
    ("33", "pneumococcal polysaccharide vaccine, 23 valent"),
    ("121", "zoster"),
    ("43", "Hep B, adult"),
    ("83", "Hep A, ped/adol, 2 dose"),
    ("208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose"),
]
DOSAGES = [("Take one tablet by mouth daily", 1, 1, "d", False),
           ("Take one tablet by mouth twice daily", 2, 1, "d", False),
           ("Take one tablet every 6 hours as needed for pain", 1, 6, "h", True),
           ("Inhale two puffs every 4 hours as needed", 1, 4, "h", True)]
ENCOUNTER_CLASSES = [c[:2] for c in sd.ENCOUNTER_CLASSES]
ENCOUNTER_WEIGHTS = [c[2] for c in sd.ENCOUNTER_CLASSES]

# Required elements per type (beyond resourceType), for check_bundle.
REQUIRED = {
    "Patient": [],
    "Encounter": ["status", "class", "subject"],
    "Observation": ["status", "code", "subject"],
    "DiagnosticReport": ["status", "code", "subject"],
    "Condition": ["subject", "code"],
    "Procedure": ["status", "subject", "code"],
    "MedicationRequest": ["status", "intent", "subject", "medicationCodeableConcept"],
    "Immunization": ["status", "vaccineCode", "patient", "occurrenceDateTime"],
}
TYPES = list(REQUIRED)

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


class Bundle:
    """The entries of one transaction Bundle under construction."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.entries: list[dict] = []

    def full_url(self) -> str:
        return f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"

    def add(self, resource: dict) -> dict:
        """Appends `resource` as a POST entry; returns a Reference to it."""
        url = self.full_url()
        self.entries.append({"fullUrl": url, "resource": resource,
                             "request": {"method": "POST", "url": resource["resourceType"]}})
        return {"reference": url}


def cc(system: str, code: str, display: str, text: str | None = None) -> dict:
    return {"coding": [sd.coding(system, code, display)], "text": text or display}


def patient(rng: random.Random, index: int) -> tuple[dict, datetime, tuple]:
    gender = rng.choice(["female", "male"])
    city_row = rng.choice(sd.CITIES)
    birth = datetime(1935, 1, 1) + timedelta(days=rng.randrange(365 * 60))
    name = sd.person_name(rng, gender, rng.random() < 0.5)
    p = {
        "resourceType": "Patient",
        "identifier": [
            {"type": cc(sd.V2_0203, "MR", "Medical Record Number"), "system": sd.MRN,
             "value": f"B{index:08d}-{rng.randrange(16 ** 6):06x}"},
            {"type": cc(sd.V2_0203, "SS", "Social Security number"), "system": sd.SSN,
             "value": f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"},
        ],
        "name": [name],
        "telecom": [{"system": "phone", "value": sd.phone(rng), "use": "home"}],
        "gender": gender,
        "birthDate": birth.strftime("%Y-%m-%d"),
        "address": [sd.address(rng, city_row)],
        "maritalStatus": cc(sd.MARITAL, *rng.choice([("M", "Married"), ("S", "Never Married"),
                                                     ("D", "Divorced"), ("W", "Widowed")])),
        "multipleBirthBoolean": rng.random() < 0.02,
        "communication": [{"language": cc(BCP47, "en-US", "English (United States)", "English")}],
    }
    return p, birth, city_row[3]


def encounter_group(b: Bundle, subject: dict, start: datetime, tz: tuple, conditions: list) -> None:
    """An Encounter at `start` and what was recorded in it. `conditions`
    (Reference, is chronic) are the patient's so far; new ones are added."""
    rng = b.rng
    cls, cls_display = rng.choices(ENCOUNTER_CLASSES, ENCOUNTER_WEIGHTS)[0]
    tcode, tdisplay = rng.choice(sd.ENCOUNTER_TYPES[cls])
    minutes = rng.choice((15, 20, 30, 45, 60)) if cls in ("AMB", "VR", "HH") else rng.randint(90, 60 * 24 * 4)
    end = start + timedelta(minutes=minutes)
    enc = {"resourceType": "Encounter", "status": "finished",
           "class": sd.coding(sd.ACT_CODE, cls, cls_display),
           "type": [cc(sd.SNOMED, tcode, tdisplay, tdisplay.rsplit(" (", 1)[0])],
           "subject": subject,
           "period": {"start": sd.fmt_datetime(start, tz), "end": sd.fmt_datetime(end, tz)}}
    if conditions and rng.random() < 0.3:
        enc["reasonReference"] = [rng.choice(conditions)[0]]
    encounter = b.add(enc)

    def when(lo: int = 0, hi: int | None = None) -> datetime:
        return start + timedelta(minutes=rng.randint(lo, minutes if hi is None else hi), seconds=rng.randrange(60))

    def observation(code: str, display: str, category: str, at: datetime) -> dict:
        return {"resourceType": "Observation", "status": "final",
                "category": [cc(sd.OBS_CATEGORY, category, sd.CATEGORY_DISPLAY[category])],
                "code": cc(sd.LOINC, code, display), "subject": subject, "encounter": encounter,
                "effectiveDateTime": sd.fmt_datetime(at, tz),
                "issued": sd.fmt_instant_utc(at, tz, rng.randrange(1000))}

    # Vital signs, all taken at one moment.
    at = when(0, min(minutes, 20))
    if rng.random() < 0.9:
        o = observation(sd.BP_PANEL[0], sd.BP_PANEL[1], sd.VITAL, at)
        o["component"] = [
            {"code": cc(sd.LOINC, code, display),
             "valueQuantity": sd.quantity(sd.clamp(rng.gauss(mean, sd_), lo, hi), 0, "mm[Hg]", "mm[Hg]")}
            for code, display, mean, sd_, lo, hi in (sd.SYSTOLIC, sd.DIASTOLIC)]
        b.add(o)
    for code, display, category, unit, ucum, mean, sd_, dec, lo, hi, _ in sd.VITALS:
        if rng.random() < 0.2:
            continue
        o = observation(code, display, category, at)
        o["valueQuantity"] = sd.quantity(sd.clamp(rng.gauss(mean, sd_), lo, hi), dec, unit, ucum)
        b.add(o)
    if rng.random() < 0.4:
        o = observation(sd.SMOKING[0], sd.SMOKING[1], sd.SOCIAL, at)
        scode, sdisplay = rng.choice(sd.SMOKING_VALUES)
        o["valueCodeableConcept"] = cc(sd.SNOMED, scode, sdisplay)
        b.add(o)

    # Labs: panels with their report, and single tests.
    if rng.random() < 0.4:
        for code, display, members in rng.sample(PANELS, rng.randint(1, 2)):
            drawn = when()
            issued = drawn + timedelta(hours=rng.randint(1, 30))
            results = []
            for lab in members:
                lcode, ldisplay, category, unit, ucum, mean, sd_, dec, lo, hi = LAB_BY_CODE[lab]
                o = observation(lcode, ldisplay, category, drawn)
                o["issued"] = sd.fmt_instant_utc(issued, tz, rng.randrange(1000))
                o["valueQuantity"] = sd.quantity(sd.clamp(rng.gauss(mean, sd_), lo, hi), dec, unit, ucum)
                value = o["valueQuantity"]["value"]
                if value > mean + 1.5 * sd_ or value < mean - 1.5 * sd_:
                    high = value > mean
                    o["interpretation"] = [cc("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                              "H" if high else "L", "High" if high else "Low")]
                results.append(b.add(o))
            b.add({"resourceType": "DiagnosticReport", "status": "final",
                   "category": [cc(V2_0074, "LAB", "Laboratory")],
                   "code": cc(sd.LOINC, code, display), "subject": subject, "encounter": encounter,
                   "effectiveDateTime": sd.fmt_datetime(drawn, tz),
                   "issued": sd.fmt_instant_utc(issued, tz, rng.randrange(1000)),
                   "result": results})
    if rng.random() < 0.2:
        lcode, ldisplay, category, unit, ucum, mean, sd_, dec, lo, hi = LAB_BY_CODE[rng.choice(SINGLE_LABS)]
        o = observation(lcode, ldisplay, category, when())
        o["valueQuantity"] = sd.quantity(sd.clamp(rng.gauss(mean, sd_), lo, hi), dec, unit, ucum)
        b.add(o)

    # Diagnoses made in this encounter.
    for _ in range(rng.choices((0, 1, 2), (65, 28, 7))[0]):
        code, display, chronic = rng.choice(sd.CONDITIONS)
        onset = start - timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 12))
        clinical = "active" if chronic or rng.random() < 0.2 else "resolved"
        cond = {"resourceType": "Condition",
                "clinicalStatus": cc(sd.COND_CLINICAL, clinical, clinical.capitalize()),
                "verificationStatus": cc(sd.COND_VER, "confirmed", "Confirmed"),
                "category": [cc(sd.COND_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")],
                "code": cc(sd.SNOMED, code, display, display.rsplit(" (", 1)[0]),
                "subject": subject, "encounter": encounter,
                "onsetDateTime": sd.fmt_datetime(onset, tz)}
        if clinical == "resolved":
            cond["abatementDateTime"] = sd.fmt_datetime(start + timedelta(days=rng.randint(3, 60)), tz)
        cond["recordedDate"] = sd.fmt_datetime(start, tz)
        conditions.append((b.add(cond), chronic))

    for _ in range(rng.choices((0, 1, 2, 3), (50, 30, 15, 5))[0]):
        code, display = rng.choice(PROCEDURES)
        begin = when()
        proc = {"resourceType": "Procedure", "status": "completed",
                "code": cc(sd.SNOMED, code, display, display.rsplit(" (", 1)[0]),
                "subject": subject, "encounter": encounter,
                "performedPeriod": {"start": sd.fmt_datetime(begin, tz),
                                    "end": sd.fmt_datetime(begin + timedelta(minutes=rng.randint(5, 90)), tz)}}
        if conditions and rng.random() < 0.4:
            proc["reasonReference"] = [rng.choice(conditions)[0]]
        b.add(proc)

    for _ in range(rng.choices((0, 1, 2, 3), (45, 30, 18, 7))[0]):
        code, display = rng.choice(sd.MEDICATIONS)
        text, frequency, period, unit, as_needed = rng.choice(DOSAGES)
        chronic = [c for c in conditions if c[1]]
        mr = {"resourceType": "MedicationRequest",
              "status": rng.choices(["active", "completed", "stopped"], (40, 50, 10))[0], "intent": "order",
              "medicationCodeableConcept": cc(sd.RXNORM, code, display),
              "subject": subject, "encounter": encounter,
              "authoredOn": sd.fmt_datetime(when(), tz)}
        if chronic and rng.random() < 0.6:
            mr["reasonReference"] = [rng.choice(chronic)[0]]
        mr["dosageInstruction"] = [{
            "sequence": 1, "text": text,
            "timing": {"repeat": {"frequency": frequency, "period": period, "periodUnit": unit}},
            "asNeededBoolean": as_needed,
            "doseAndRate": [{"doseQuantity": {"value": 1}}]}]
        b.add(mr)

    if rng.random() < 0.25:
        for code, display in rng.sample(VACCINES, rng.choices((1, 2), (80, 20))[0]):
            b.add({"resourceType": "Immunization", "status": "completed",
                   "vaccineCode": cc(CVX, code, display), "patient": subject, "encounter": encounter,
                   "occurrenceDateTime": sd.fmt_datetime(when(), tz), "primarySource": True,
                   "lotNumber": f"{rng.randrange(36 ** 6):06X}"})


def patient_bundle(seed: int, index: int) -> dict:
    """The transaction Bundle of patient `index` (from 1)."""
    rng = random.Random(f"medgrid-bundles/{seed}/{index}")
    target = rng.randint(MIN_ENTRIES, MAX_ENTRIES)
    b = Bundle(rng)
    p, birth, tz = patient(rng, index)
    subject = b.add(p)
    # Encounters from the patient's adulthood on, a few weeks apart, until
    # the bundle reaches its drawn size; a group that would pass the maximum
    # is left out (a group is far smaller than MAX_ENTRIES - MIN_ENTRIES).
    when = max(birth + timedelta(days=18 * 365), datetime(2010, 1, 1)) + timedelta(days=rng.randrange(60))
    conditions: list = []
    while len(b.entries) < target:
        group = Bundle(rng)
        encounter_group(group, subject, when.replace(hour=rng.randint(7, 18), minute=rng.choice((0, 15, 30, 45))),
                        tz, conditions)
        if len(b.entries) + len(group.entries) > MAX_ENTRIES:
            break
        b.entries.extend(group.entries)
        when += timedelta(days=rng.randint(10, 45))
    return {"resourceType": "Bundle", "type": "transaction", "entry": b.entries}


def references(value, path: str = ""):
    """(path, reference) for every Reference.reference inside `value`."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                yield path, v
            else:
                yield from references(v, f"{path}.{k}")
    elif isinstance(value, list):
        for v in value:
            yield from references(v, path)


def check_bundle(bundle: dict) -> list[str]:
    """Problems of a generated transaction Bundle (empty when it is fine)."""
    problems = []
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        problems.append("not a transaction Bundle")
    entries = bundle.get("entry", [])
    if not MIN_ENTRIES <= len(entries) <= MAX_ENTRIES:
        problems.append(f"{len(entries)} entries, outside [{MIN_ENTRIES}, {MAX_ENTRIES}]")
    urls = [e.get("fullUrl") for e in entries]
    known = set(urls)
    if len(known) != len(urls):
        problems.append("duplicate fullUrl")
    types_by_url = {}
    for i, e in enumerate(entries):
        r = e.get("resource", {})
        rtype = r.get("resourceType")
        if not str(e.get("fullUrl", "")).startswith("urn:uuid:") or len(e.get("fullUrl", "")) != 45:
            problems.append(f"entry {i}: fullUrl {e.get('fullUrl')!r} is not urn:uuid:<uuid>")
        if e.get("request") != {"method": "POST", "url": rtype}:
            problems.append(f"entry {i}: request {e.get('request')!r}")
        if rtype not in REQUIRED:
            problems.append(f"entry {i}: unexpected type {rtype}")
            continue
        if "id" in r:
            problems.append(f"entry {i}: {rtype} has an id")
        for field in REQUIRED[rtype]:
            if field not in r:
                problems.append(f"entry {i}: {rtype} without {field}")
        types_by_url[e.get("fullUrl")] = rtype
    patients = [u for u, t in types_by_url.items() if t == "Patient"]
    if len(patients) != 1:
        problems.append(f"{len(patients)} Patients")
    for i, e in enumerate(entries):
        r = e.get("resource", {})
        for path, target in references(r):
            if target not in known:
                problems.append(f"entry {i}: {r.get('resourceType')}{path} -> {target} is not in the bundle")
            elif path in (".subject", ".patient") and types_by_url[target] != "Patient":
                problems.append(f"entry {i}: {path} -> a {types_by_url[target]}")
            elif path == ".encounter" and types_by_url[target] != "Encounter":
                problems.append(f"entry {i}: .encounter -> a {types_by_url[target]}")
            elif path == ".result" and types_by_url[target] != "Observation":
                problems.append(f"entry {i}: .result -> a {types_by_url[target]}")
            elif path == ".reasonReference" and types_by_url[target] != "Condition":
                problems.append(f"entry {i}: .reasonReference -> a {types_by_url[target]}")
        if r.get("resourceType") == "Observation":
            if ("valueQuantity" in r) + ("valueCodeableConcept" in r) + ("component" in r) != 1:
                problems.append(f"entry {i}: Observation without exactly one of value[x] and component")
            q = r.get("valueQuantity")
            if q is not None and (q.get("system") != sd.UCUM or not q.get("code")):
                problems.append(f"entry {i}: valueQuantity without a UCUM code")
            if any(c.get("system") != sd.LOINC for c in r["code"]["coding"]):
                problems.append(f"entry {i}: Observation code not LOINC")
    return problems


def write(seed: int, patients: int, out: str) -> None:
    t0 = time.monotonic()
    os.makedirs(out, exist_ok=True)
    counts = {t: 0 for t in TYPES}
    sizes = []
    for i in range(1, patients + 1):
        bundle = patient_bundle(seed, i)
        problems = check_bundle(bundle)
        if problems:
            sys.exit(f"[gen_bundles] bundle {i} (seed {seed}): " + "; ".join(problems[:10]))
        for e in bundle["entry"]:
            counts[e["resource"]["resourceType"]] += 1
        sizes.append(len(bundle["entry"]))
        with open(os.path.join(out, f"bundle-{i:05d}.json"), "w", encoding="utf-8", newline="\n") as f:
            f.write(_encode(bundle))
    total = sum(counts.values())
    summary = ", ".join(f"{t} {n}" for t, n in counts.items())
    print(f"[gen_bundles] {patients} bundles, seed {seed}: {total} entries ({summary}); entries per bundle "
          f"{min(sizes)}-{max(sizes)}, in {time.monotonic() - t0:.1f} s", file=sys.stderr)


def check_dir(path: str) -> int:
    names = sorted(n for n in os.listdir(path) if n.startswith("bundle-") and n.endswith(".json"))
    bad = 0
    entries = 0
    for n in names:
        with open(os.path.join(path, n), encoding="utf-8") as f:
            bundle = json.load(f)
        entries += len(bundle.get("entry", []))
        problems = check_bundle(bundle)
        if problems:
            bad += 1
            print(f"{n}: " + "; ".join(problems[:10]), file=sys.stderr)
    print(json.dumps({"bundles": len(names), "entries": entries, "bad_bundles": bad}))
    return 1 if bad or not names else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=42, help="the seed every value derives from (default 42)")
    ap.add_argument("--patients", type=int, help="number of bundles, one per patient (>= 1)")
    ap.add_argument("--out", help="directory to write bundle-<i>.json into")
    ap.add_argument("--check", metavar="DIR", help="check the bundles of DIR instead of writing")
    args = ap.parse_args()
    if args.check:
        sys.exit(check_dir(args.check))
    if not args.out or args.patients is None or args.patients < 1:
        ap.error("--patients (>= 1) and --out are required")
    write(args.seed, args.patients, args.out)


if __name__ == "__main__":
    main()
