#!/usr/bin/env python3
"""Seeded generator of FHIR search queries over a generated data set, for compare.py.

  bench/searchdata/generate.py --patients 30 --seed 7 > /tmp/data.ndjson
  tests/differential/gen_queries.py --data /tmp/data.ndjson --seed 7 > /tmp/queries.txt

Reads the data (an NDJSON file or a folder of them) and writes about 400 queries,
one per line in the format of harness.py, grouped under `# <group>` comments.
Values are drawn from the data with the seed, so most queries match something,
plus some that match nothing. It covers each parameter type (string with :exact
and :contains; token as system|code, |code, code, system|, :not, :text, :of-type;
date with eq ne gt lt ge le sa eb ap at year, month, day, second and millisecond
precision, with a UTC offset or Z; quantity with prefixes, with and
without units; reference as Type/id and as a bare id, with a :Type modifier;
uri), :missing, AND (repeated parameters), OR (commas), chains, _has, _id,
_tag, _profile, _include and _revinclude, and two malformed dates that every
server must reject. _lastUpdated is never used: servers assign it.

Same data and seed, same output. Exits non-zero if it cannot produce 300.
"""
import argparse
import random
import sys
import unicodedata
from collections import defaultdict
from datetime import datetime, timezone

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from harness import iter_resources

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
MIN_QUERIES = 300


def fold(s: str) -> str:
    """Lower case without diacritics: what an accent-insensitive search should equate."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).lower()


class Data:
    """The parts of the data set the queries draw their values from."""

    def __init__(self, path: str):
        self.by_type: dict[str, list[dict]] = defaultdict(list)
        for r in iter_resources(path):
            self.by_type[r["resourceType"]].append(r)
        self.obs_by_code: dict[str, list[dict]] = defaultdict(list)
        for o in self.by_type["Observation"]:
            for c in o["code"]["coding"]:
                self.obs_by_code[c["code"]].append(o)

    def all(self, rtype: str) -> list[dict]:
        return self.by_type.get(rtype, [])


class Queries:
    def __init__(self):
        self.groups: list[tuple[str, list[str]]] = []
        self.seen: set[str] = set()

    def group(self, name: str) -> None:
        self.groups.append((name, []))

    def add(self, query: str) -> None:
        if query not in self.seen:
            self.seen.add(query)
            self.groups[-1][1].append(query)

    def count(self) -> int:
        return len(self.seen)


def instant_parts(value: str) -> dict:
    """Precision variants of a full dateTime such as 2019-05-03T10:15:00-04:00."""
    utc = datetime.fromisoformat(value).astimezone(timezone.utc)
    return {"year": value[:4], "month": value[:7], "day": value[:10], "second": value,
            "second_utc": utc.strftime("%Y-%m-%dT%H:%M:%SZ")}


def generate(data: Data, seed: int) -> Queries:
    rng = random.Random(seed)
    q = Queries()
    patients = data.all("Patient")
    pracs = data.all("Practitioner")
    orgs = data.all("Organization")
    locs = data.all("Location")
    encs = data.all("Encounter")
    obs = data.all("Observation")
    conds = data.all("Condition")
    meds = data.all("MedicationRequest")
    if not patients or not obs:
        raise SystemExit("gen_queries.py: the data has no Patients or Observations")

    def pick(seq, k=1):
        seq = list(seq)
        return rng.sample(seq, min(k, len(seq)))

    families = sorted({n["family"] for p in patients for n in p["name"] if "family" in n})
    givens = sorted({g for p in patients for n in p["name"] for g in n.get("given", [])})
    accented = [f for f in families if fold(f) != f.lower()]
    multiword = [f for f in families if " " in f or "-" in f]

    # --- string ------------------------------------------------------------------
    q.group("string: family, given, name (default match is case- and accent-insensitive starts-with)")
    for f in pick(families, 6):
        q.add(f"Patient?family={f}")
    for f in pick([f for f in families if len(f) >= 5], 6):
        q.add(f"Patient?family={f[:rng.randint(3, 4)].rstrip()}")
    for g in pick(givens, 5):
        q.add(f"Patient?given={g}")
    for g in pick([g for g in givens if len(g) >= 4], 3):
        q.add(f"Patient?given={g[:3]}")
    for f in pick(families, 5):
        q.add(f"Patient?name={f[:max(3, len(f) - 2)].rstrip()}")
    for g in pick(givens, 3):
        q.add(f"Patient?name={g}")
    for f in pick(families, 3):
        q.add(f"Patient?name={rng.choice([f.upper(), f.lower()])}")
    for f in pick(accented, 4):
        q.add(f"Patient?name={fold(f)}")  # accent-insensitive: müller finds Müller
        q.add(f"Patient?family={f}")
    for f in pick(multiword, 3):
        q.add(f"Patient?family={f}")
        q.add(f"Patient?family={f.split()[0] if ' ' in f else f.split('-')[0]}")
    for g in pick([g for g in givens if " " in g], 2):
        q.add(f"Patient?given={g}")
    q.add("Patient?family=Zzyzx")
    q.add("Patient?given=Quentinius")
    q.add("Patient?name=son")  # inside many names, at the start of none
    q.group("string: :exact and :contains")
    for f in pick(families, 4):
        q.add(f"Patient?family:exact={f}")
    for f in pick(families, 2):
        q.add(f"Patient?family:exact={f.lower()}")  # case matters for :exact
    for f in pick([f for f in families if len(f) >= 5], 2):
        q.add(f"Patient?family:exact={f[:3].rstrip()}")
    for f in pick(accented, 1):
        q.add(f"Patient?family:exact={fold(f).capitalize()}")  # accents matter for :exact
    for f in pick([f for f in families if len(f) >= 6], 5):
        i = rng.randint(1, len(f) - 4)
        q.add(f"Patient?name:contains={f[i:i + 3].strip()}")
    for f in pick([f for f in families if len(f) >= 6], 3):
        q.add(f"Patient?family:contains={f[-3:].strip().upper()}")
    for g in pick(givens, 2):
        q.add(f"Patient?given:exact={g}")
    q.group("string: addresses and the shared pools")
    cities = sorted({a["city"] for p in patients for a in p.get("address", [])})
    for c in pick(cities, 3):
        q.add(f"Patient?address-city={c}")
    for c in [c for c in cities if fold(c) != c.lower()][:1] + [c for c in cities if " " in c][:1]:
        q.add(f"Patient?address-city={fold(c)}")
        q.add(f"Patient?address-city={c.split()[0]}")
    states = sorted({a["state"] for p in patients for a in p.get("address", [])})
    for s in pick(states, 3):
        q.add(f"Patient?address-state={s}")
    for p in pick(patients, 3):
        q.add(f"Patient?address-postalcode={p['address'][0]['postalCode'][:3]}")
    q.add(f"Patient?address={pick(patients)[0]['address'][0]['line'][0].split()[1]}")
    q.add(f"Patient?address={pick(cities)[0]}")
    for pr in pick(pracs, 3):
        q.add(f"Practitioner?name={pr['name'][0]['family']}")
    for pr in pick(pracs, 2):
        q.add(f"Practitioner?family={pr['name'][0]['family'][:3].rstrip()}")
        q.add(f"Practitioner?given={pr['name'][0]['given'][0]}")
    q.add("Practitioner?name=Dr")  # the prefix is part of the name
    for o in pick(orgs, 3):
        q.add(f"Organization?name={o['name'].split()[0]}")
    q.add("Organization?name=Medical")  # a later word: starts-with does not match it
    q.add(f"Organization?address-city={pick(orgs)[0]['address'][0]['city']}")
    for lo in pick(locs, 2):
        q.add(f"Location?name={lo['name'][:8].rstrip()}")
    q.add(f"Location?address-city={pick(locs)[0]['address']['city']}")
    q.group("string: OR and AND")
    for _ in range(3):
        a, b = pick(families, 2)
        q.add(f"Patient?family={a},{b}")
    for p in pick([p for p in patients if p["name"][0].get("given")], 3):
        n = p["name"][0]
        q.add(f"Patient?given={n['given'][0]}&family={n['family']}")
    for p in pick([p for p in patients if len(p["name"][0].get("given", [])) > 1], 2):
        n = p["name"][0]
        q.add(f"Patient?given={n['given'][0]}&given={n['given'][1]}")
    a, b = pick(families, 2)
    q.add(f"Patient?name={a}&name={b}")

    # --- token -------------------------------------------------------------------
    q.group("token: Observation.code as system|code, code, |code, system|")
    codes = sorted(data.obs_by_code)
    for c in pick(codes, 15):
        q.add(f"Observation?code={LOINC}|{c}")
    for c in pick(codes, 8):
        q.add(f"Observation?code={c}")
    for c in pick(codes, 2):
        q.add(f"Observation?code=|{c}")  # no coding without a system: matches nothing
    q.add(f"Observation?code={LOINC}|")
    q.add(f"Observation?code={SNOMED}|{pick(codes)[0]}")  # wrong system
    q.add("Observation?code=99999-9")
    q.add("Observation?code=59408-5&code=2708-6")  # both codings of one Observation
    q.add("Observation?code=2708-6")
    for _ in range(4):
        a, b = pick(codes, 2)
        q.add(f"Observation?code={LOINC}|{a},{LOINC}|{b}")
    q.add(f"Observation?code=8480-6,{LOINC}|8462-4")
    q.group("token: :not, :text, :of-type")
    for c in pick(codes, 3):
        q.add(f"Observation?code:not={c}")
    q.add(f"Observation?code:not={LOINC}|85354-9")
    q.add("Observation?status:not=final")
    q.add("Encounter?status:not=finished")
    q.add("Condition?clinical-status:not=resolved")  # includes Conditions without a clinical status
    q.add("Patient?gender:not=male")
    q.add("Observation?code:text=Hemoglobin A1c/Hemoglobin.total in Blood")  # the whole text
    q.add("Observation?code:text=body weight")
    q.add("Observation?code:text=Glucose")
    q.add("Observation?code:text=blood pressure")
    q.add("Condition?code:text=Diabetes mellitus type 2")
    q.add("Condition?code:text=sinusitis")
    q.add("MedicationRequest?code:text=Amoxicillin")
    for p in pick(patients, 2):
        mrn = next(i for i in p["identifier"] if i["system"].endswith("/mrn"))
        q.add(f"Patient?identifier:of-type={V2_0203}|MR|{mrn['value']}")
    q.group("token: categories, statuses, genders, booleans")
    for cat in ("vital-signs", "laboratory", "social-history", "survey"):
        q.add(f"Observation?category={cat}")
    q.add(f"Observation?category={OBS_CATEGORY}|laboratory")
    q.add(f"Observation?category={OBS_CATEGORY}|vital-signs,{OBS_CATEGORY}|survey")
    for s in ("final", "amended", "preliminary", "cancelled,entered-in-error"):
        q.add(f"Observation?status={s}")
    q.add("Observation?component-code=8480-6")
    q.add(f"Observation?component-code={LOINC}|8462-4")
    q.add("Observation?combo-code=8480-6")
    q.add("Observation?combo-code=8867-4")
    smoking = sorted({c["code"] for o in data.obs_by_code.get("72166-2", [])
                      for c in o["valueCodeableConcept"]["coding"]})
    for s in smoking[:3]:
        q.add(f"Observation?value-concept={SNOMED}|{s}")
    q.add("Observation?data-absent-reason=not-performed")
    for g in ("male", "female", "other", "unknown", "male,female"):
        q.add(f"Patient?gender={g}")
    q.add("Patient?active=true")
    q.add("Patient?active=false")
    q.add("Organization?active=false")
    q.add("Location?status=inactive")
    q.add(f"Location?type={pick(locs)[0]['type'][0]['coding'][0]['code']}")
    q.add("Organization?type=prov")
    q.add(f"Practitioner?gender={pick(pracs)[0]['gender']}")
    q.group("token: identifiers, telecom, _id, _tag")
    for p in pick(patients, 4):
        mrn = next(i for i in p["identifier"] if i["system"].endswith("/mrn"))
        q.add(f"Patient?identifier={mrn['system']}|{mrn['value']}")
    for p in pick(patients, 2):
        ssn = next(i for i in p["identifier"] if i["system"].endswith("us-ssn"))
        q.add(f"Patient?identifier={ssn['value']}")
    q.add("Patient?identifier=http://hl7.org/fhir/sid/us-ssn|")
    dl = [i for p in patients for i in p["identifier"] if i["system"].startswith("urn:oid:")]
    if dl:
        q.add(f"Patient?identifier={dl[0]['system']}|{dl[0]['value']}")
    q.add("Patient?identifier=https://medgrid.example.org/mrn|MRN99999999")
    for pr in pick(pracs, 2):
        q.add(f"Practitioner?identifier={pr['identifier'][0]['system']}|{pr['identifier'][0]['value']}")
    q.add(f"Organization?identifier={pick(orgs)[0]['identifier'][0]['value']}")
    q.add(f"Encounter?identifier={pick(encs)[0]['identifier'][0]['value']}")
    for p in pick(patients, 2):
        phone = next(t for t in p["telecom"] if t["system"] == "phone")
        q.add(f"Patient?phone={phone['value']}")
        q.add(f"Patient?telecom=phone|{phone['value']}")
    for p in pick([p for p in patients if any(t["system"] == "email" for t in p["telecom"])], 2):
        email = next(t for t in p["telecom"] if t["system"] == "email")
        q.add(f"Patient?email={email['value']}")
    q.add(f"Practitioner?email={pick(pracs)[0]['telecom'][1]['value']}")
    for p in pick(patients, 3):
        q.add(f"Patient?_id={p['id']}")
    for _ in range(2):
        q.add("Patient?_id=" + ",".join(p["id"] for p in pick(patients, 3)))
    q.add("Patient?_id=pat-999999")
    for o in pick(obs, 2):
        q.add(f"Observation?_id={o['id']}")
    q.add("Patient?_tag=https://medgrid.example.org/tags|research-cohort-a")
    q.add("Patient?_tag=research-cohort-a")
    q.group("token: Encounter, Condition, MedicationRequest")
    for cls in ("AMB", "EMER", "IMP"):
        q.add(f"Encounter?class={ACT_CODE}|{cls}")
    q.add("Encounter?class=VR,HH")
    etypes = sorted({c["code"] for e in encs for t in e.get("type", []) for c in t["coding"]})
    for t in pick(etypes, 4):
        q.add(f"Encounter?type={SNOMED}|{t}")
    for s in ("finished", "in-progress", "cancelled"):
        q.add(f"Encounter?status={s}")
    ccodes = sorted({c["code"] for x in conds for c in x["code"]["coding"]})
    for c in pick(ccodes, 6):
        q.add(f"Condition?code={SNOMED}|{c}")
    for c in pick(ccodes, 2):
        q.add(f"Condition?code={c}")
    for s in ("active", "resolved", "inactive"):
        q.add(f"Condition?clinical-status={s}")
    q.add(f"Condition?clinical-status={COND_CLINICAL}|active")
    q.add("Condition?verification-status=confirmed")
    q.add("Condition?verification-status=refuted,entered-in-error")
    q.add("Condition?category=problem-list-item")
    mcodes = sorted({c["code"] for m in meds for c in m["medicationCodeableConcept"]["coding"]})
    for c in pick(mcodes, 6):
        q.add(f"MedicationRequest?code={RXNORM}|{c}")
    for c in pick(mcodes, 2):
        q.add(f"MedicationRequest?code={c}")
    for s in ("active", "completed", "stopped", "active,on-hold"):
        q.add(f"MedicationRequest?status={s}")
    q.add("MedicationRequest?intent=order")
    q.add("MedicationRequest?intent=plan,proposal")
    q.add("MedicationRequest?priority=stat")

    # --- date --------------------------------------------------------------------
    q.group("date: Observation.effective, every prefix at every precision")
    full = [o["effectiveDateTime"] for o in obs if len(o.get("effectiveDateTime", "")) == 25]
    for precision in ("year", "month", "day", "second"):
        for prefix in ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
            value = instant_parts(rng.choice(full))[precision]
            q.add(f"Observation?date={prefix}{value}")
    for prefix in ("", "ge", "lt"):
        q.add(f"Observation?date={prefix}{instant_parts(rng.choice(full))['second_utc']}")
    q.add(f"Observation?date=ap{instant_parts(rng.choice(full))['month']}")
    q.add(f"Observation?date=ap{instant_parts(rng.choice(full))['day']}")
    millis = [o["effectiveDateTime"] for o in obs if "." in o.get("effectiveDateTime", "")]
    if millis:
        q.add(f"Observation?date={millis[0]}")
        q.add(f"Observation?date=ge{millis[-1]}")
    for low in [o["effectiveDateTime"] for o in obs if len(o.get("effectiveDateTime", "")) in (4, 7)][:4]:
        q.add(f"Observation?date={low}")  # an Observation known only to the month or the year
    q.add(f"Observation?date=le{rng.choice(full)[:19]}+02:00")  # a positive offset (a + in the URL)
    q.add(f"Observation?date=lt{rng.choice(full)[:19]}Z")
    periods = [o for o in obs if "effectivePeriod" in o]
    for o in periods[:2]:
        q.add(f"Observation?date=eq{o['effectivePeriod']['start']}")  # a second cannot contain the period
        q.add(f"Observation?date=le{o['effectivePeriod']['start']}")
    q.group("date: ranges (AND) and lists (OR)")
    for year in pick(range(2015, 2025), 3):
        q.add(f"Observation?date=ge{year}-01-01&date=lt{year}-07-01")
    q.add("Observation?date=ge2016-03&date=le2016-03")
    q.add("Observation?date=2016,2019-06")
    q.add("Observation?date=gt2020-02-29T23:59:59-05:00&date=lt2020-03-02")
    q.group("date: birthdate, Encounter.period, Condition onset/abatement/recorded, authoredOn")
    bdays = [p["birthDate"] for p in patients if len(p.get("birthDate", "")) == 10]
    for b in pick(bdays, 3):
        q.add(f"Patient?birthdate={b}")
    q.add(f"Patient?birthdate={rng.choice(bdays)[:4]}")
    q.add(f"Patient?birthdate={rng.choice(bdays)[:7]}")
    for prefix in ("lt", "gt", "ge", "le", "ne", "sa", "eb"):
        q.add(f"Patient?birthdate={prefix}{rng.choice(bdays)[:rng.choice((4, 7, 10))]}")
    for b in [p["birthDate"] for p in patients if len(p.get("birthDate", "")) < 10][:2]:
        q.add(f"Patient?birthdate={b}")
    q.add("Patient?death-date=ge2020")
    starts = [e["period"]["start"] for e in encs]
    for prefix in ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        v = rng.choice(starts)
        q.add(f"Encounter?date={prefix}{v[:rng.choice((4, 7, 10, 25))]}")
    for e in [e for e in encs if "end" not in e["period"]][:2]:
        q.add(f"Encounter?date=sa{e['period']['start'][:10]}")  # open-ended: ends after anything
        q.add(f"Encounter?date=eb2030")
        q.add(f"Encounter?date=ge2030")
    for e in pick([e for e in encs if e["class"]["code"] == "IMP"], 2):
        day_inside = e["period"]["start"][:10]
        q.add(f"Encounter?date={day_inside}")
        q.add(f"Encounter?date=eq{e['period']['start']}")
    onsets = [c["onsetDateTime"] for c in conds if "onsetDateTime" in c]
    for prefix in ("", "ge", "lt", "sa", "eb"):
        v = rng.choice(onsets)
        q.add(f"Condition?onset-date={prefix}{v[:rng.choice((4, 7, 10))]}")
    q.add(f"Condition?abatement-date=ge{rng.choice(onsets)[:4]}")
    q.add(f"Condition?abatement-date=lt{rng.choice(onsets)[:7]}")
    q.add(f"Condition?recorded-date={rng.choice(conds)['recordedDate'][:10]}")
    q.add(f"Condition?recorded-date=gt{rng.choice(conds)['recordedDate']}")
    authored = [m["authoredOn"] for m in meds]
    for prefix in ("", "ne", "gt", "lt", "ge", "le"):
        v = rng.choice(authored)
        q.add(f"MedicationRequest?authoredon={prefix}{v[:rng.choice((4, 7, 10, len(v)))]}")
    q.group("date: malformed (every server must reject these)")
    q.add("Observation?date=2020-13-45")
    q.add("Patient?birthdate=1970-02-30T25:00:00")

    # --- quantity ------------------------------------------------------------------
    q.group("quantity: value-quantity, component-value-quantity")

    def values(code: str) -> list[dict]:
        return [o["valueQuantity"] for o in data.obs_by_code.get(code, []) if "valueQuantity" in o]

    for code in ("4548-4", "2339-0", "2160-0"):
        vq = rng.choice(values(code)) if values(code) else None
        if vq:
            q.add(f"Observation?value-quantity={vq['value']}|{UCUM}|{vq['code']}")
    for code in ("8867-4", "718-7"):
        vq = rng.choice(values(code)) if values(code) else None
        if vq:
            q.add(f"Observation?value-quantity={vq['value']}||{vq['code']}")
            q.add(f"Observation?value-quantity={vq['value']}")
    for prefix, code in (("gt", "2339-0"), ("lt", "2339-0"), ("ge", "4548-4"), ("le", "4548-4"),
                         ("gt", "29463-7"), ("lt", "8310-5"), ("ne", "8867-4"), ("ap", "2093-3"),
                         ("sa", "4548-4"), ("eb", "4548-4")):
        vs = sorted(v["value"] for v in values(code))
        if vs:
            q.add(f"Observation?value-quantity={prefix}{vs[len(vs) // 2]}|{UCUM}|{values(code)[0]['code']}")
    q.add(f"Observation?code={LOINC}|4548-4&value-quantity=gt7")
    q.add(f"Observation?code={LOINC}|2339-0&value-quantity=ge126|{UCUM}|mg/dL")
    q.add("Observation?value-quantity=5.40")  # precision: [5.395, 5.405)
    q.add(f"Observation?value-quantity=gt150|{UCUM}|[lb_av]")
    q.add(f"Observation?value-quantity=70|{UCUM}|kg")
    q.add(f"Observation?component-value-quantity=gt140|{UCUM}|mm[Hg]")
    q.add(f"Observation?component-value-quantity=lt60|{UCUM}|mm[Hg]")
    q.add(f"Observation?combo-value-quantity=ge100|{UCUM}|mm[Hg]")
    q.add(f"Observation?code-value-quantity={LOINC}|4548-4$gt7")
    q.add(f"Observation?component-code-value-quantity={LOINC}|8480-6$gt150")

    # --- reference -----------------------------------------------------------------
    q.group("reference: Type/id, bare id, :Type, several targets")
    for p in pick(patients, 3):
        q.add(f"Observation?subject=Patient/{p['id']}")
    for p in pick(patients, 2):
        q.add(f"Observation?patient=Patient/{p['id']}")
        q.add(f"Observation?patient={p['id']}")
    for p in pick(patients, 2):
        q.add(f"Observation?subject={p['id']}")
    q.add(f"Observation?subject:Patient={pick(patients)[0]['id']}")
    for e in pick(encs, 3):
        q.add(f"Observation?encounter=Encounter/{e['id']}")
    q.add(f"Observation?performer=Practitioner/{pick(pracs)[0]['id']}")
    for pr in pick(pracs, 2):
        q.add(f"Encounter?participant=Practitioner/{pr['id']}")
        q.add(f"Encounter?practitioner={pr['id']}")
    q.add(f"Encounter?practitioner=Practitioner/{pick(pracs)[0]['id']}")
    for o in pick(orgs, 2):
        q.add(f"Encounter?service-provider=Organization/{o['id']}")
    for lo in pick(locs, 2):
        q.add(f"Encounter?location=Location/{lo['id']}")
    q.add(f"Encounter?subject=Patient/{pick(patients)[0]['id']}")
    q.add(f"Encounter?patient={pick(patients)[0]['id']}")
    q.add(f"Condition?subject=Patient/{pick(patients)[0]['id']}")
    q.add(f"Condition?patient={pick(patients)[0]['id']}")
    q.add(f"Condition?encounter=Encounter/{pick(conds)[0]['encounter']['reference'].split('/')[1]}")
    for pr in pick(pracs, 2):
        q.add(f"MedicationRequest?requester=Practitioner/{pr['id']}")
    q.add(f"MedicationRequest?subject=Patient/{pick(patients)[0]['id']}")
    q.add(f"MedicationRequest?encounter=Encounter/{pick(meds)[0]['encounter']['reference'].split('/')[1]}")
    for pr in pick(pracs, 2):
        q.add(f"Patient?general-practitioner=Practitioner/{pr['id']}")
    for o in pick(orgs, 2):
        q.add(f"Patient?organization=Organization/{o['id']}")
    q.add(f"Location?organization=Organization/{pick(orgs)[0]['id']}")
    for _ in range(2):
        a, b = pick(patients, 2)
        q.add(f"Observation?subject=Patient/{a['id']},Patient/{b['id']}")
    q.add("Observation?subject=Patient/pat-999999")
    q.add(f"Observation?subject=Practitioner/{pick(patients)[0]['id']}")  # right id, wrong type

    # --- uri -----------------------------------------------------------------------
    q.group("uri: _profile (exact match)")
    q.add(f"Patient?_profile={US_CORE}us-core-patient")
    q.add("Observation?_profile=http://hl7.org/fhir/StructureDefinition/bp")
    q.add("Observation?_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns")
    q.add(f"Observation?_profile={US_CORE}us-core-observation-lab")
    q.add(f"Encounter?_profile={US_CORE}us-core-encounter")
    q.add(f"Observation?_profile={US_CORE}us-core")  # a prefix is not a match
    q.add(f"Patient?_profile={US_CORE}us-core-observation-lab")

    # --- :missing --------------------------------------------------------------------
    q.group(":missing")
    for query in ("Observation?value-quantity:missing=true", "Observation?value-quantity:missing=false",
                  "Observation?encounter:missing=true", "Observation?performer:missing=false",
                  "Observation?data-absent-reason:missing=false", "Observation?value-concept:missing=false",
                  "Condition?onset-date:missing=true", "Condition?abatement-date:missing=false",
                  "Condition?clinical-status:missing=true", "Encounter?location:missing=true",
                  "Patient?gender:missing=true", "Patient?email:missing=false", "Patient?death-date:missing=false",
                  "Patient?_tag:missing=false", "MedicationRequest?priority:missing=false",
                  "Location?partof:missing=true"):
        q.add(query)

    # --- chains ------------------------------------------------------------------------
    q.group("chains")
    for f in pick(families, 2):
        q.add(f"Observation?subject:Patient.name={f}")
    q.add(f"Observation?subject:Patient.family={pick(families)[0]}")
    q.add(f"Observation?patient.name={pick(families)[0]}")
    q.add("Observation?patient.gender=female")
    q.add("Observation?subject:Patient.birthdate=ge1980")
    p = pick(patients)[0]
    q.add(f"Observation?patient.identifier=https://medgrid.example.org/mrn|{p['identifier'][0]['value']}")
    for pr in pick(pracs, 2):
        q.add(f"Encounter?participant:Practitioner.name={pr['name'][0]['family']}")
    q.add(f"Encounter?practitioner.family={pick(pracs)[0]['name'][0]['family']}")
    q.add(f"Encounter?service-provider.name={pick(orgs)[0]['name'].split()[0]}")
    q.add(f"Encounter?location.address-city={pick(locs)[0]['address']['city']}")
    q.add(f"MedicationRequest?requester:Practitioner.family={pick(pracs)[0]['name'][0]['family']}")
    q.add("Condition?encounter.class=EMER")
    q.add(f"Patient?general-practitioner:Practitioner.name={pick(pracs)[0]['name'][0]['family']}")
    q.add(f"Patient?organization.name={pick(orgs)[0]['name'].split()[0]}")
    q.add(f"Observation?code={LOINC}|29463-7&patient.gender=male")

    # --- _has ----------------------------------------------------------------------------
    q.group("_has (reverse chaining)")
    q.add("Patient?_has:Observation:patient:code=4548-4")
    q.add(f"Patient?_has:Observation:subject:value-concept={SNOMED}|449868002")
    q.add(f"Patient?_has:Observation:patient:code={LOINC}|3016-3")
    q.add(f"Patient?_has:Condition:subject:code={SNOMED}|44054006")
    q.add("Patient?_has:Condition:patient:clinical-status=active")
    q.add("Patient?_has:MedicationRequest:subject:status=active&gender=female")
    q.add("Practitioner?_has:Encounter:participant:class=EMER")
    q.add("Encounter?_has:Observation:encounter:code=4548-4")
    q.add("Patient?_has:Condition:subject:code=does-not-exist")

    # --- _include / _revinclude -----------------------------------------------------------------
    q.group("_include and _revinclude (compared apart from the matches)")
    q.add(f"Observation?code={LOINC}|4548-4&_include=Observation:patient")
    q.add("Observation?code=72166-2&_include=Observation:subject:Patient")
    q.add("Encounter?class=EMER&_include=Encounter:participant:Practitioner")
    q.add("Encounter?class=IMP&_include=Encounter:service-provider")
    q.add(f"Patient?family={pick(families)[0]}&_revinclude=Condition:subject")
    q.add(f"MedicationRequest?code={RXNORM}|{pick(mcodes)[0]}&_include=MedicationRequest:requester")
    q.add(f"Patient?_id={pick(patients)[0]['id']}&_revinclude=Encounter:patient")

    # --- combinations ------------------------------------------------------------------------------
    q.group("combinations of parameters")
    q.add(f"Observation?code={LOINC}|4548-4&date=ge2020")
    q.add("Observation?category=laboratory&status=final&date=lt2018")
    q.add(f"Condition?clinical-status=active&code={SNOMED}|{pick(ccodes)[0]}")
    q.add("Encounter?class=AMB&date=ge2022&status=finished")
    q.add("MedicationRequest?status=active&intent=order&authoredon=ge2021")
    q.add(f"Patient?gender=female&birthdate=lt1960&address-state={pick(states)[0]}")
    for o in pick(obs, 3):
        q.add(f"Observation?patient={o['subject']['reference'].split('/')[1]}&code={LOINC}|{o['code']['coding'][0]['code']}")
    q.add(f"Observation?patient={pick(patients)[0]['id']}&code={LOINC}|{pick(codes)[0]}")
    for p in pick(patients, 2):
        q.add(f"Observation?subject=Patient/{p['id']}&date=ge2020&category=vital-signs")
    q.add(f"Encounter?patient={pick(patients)[0]['id']}&date=lt2019")

    # --- a code with dates (answered from idx_token_date) -------------------------------------
    # A generator of its own, so that the queries above stay as they were.
    q.group("a code with dates: every prefix, ranges, lists, and every precision of the data")
    crng = random.Random(seed + 1)
    dated = [o for o in obs if "effectiveDateTime" in o or "effectivePeriod" in o]
    for o in crng.sample(dated, min(12, len(dated))):
        code = o["code"]["coding"][0]["code"]
        when = o.get("effectiveDateTime") or o["effectivePeriod"]["start"]
        prefix = crng.choice(("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"))
        q.add(f"Observation?code={LOINC}|{code}&date={prefix}{when[:crng.choice((4, 7, 10))]}")
        q.add(f"Observation?code={code}&date=ge{when[:7]}&date=le{when[:7]}")
        q.add(f"Observation?code={LOINC}|{code}&date=ge{when[:10]}&date=lt{int(when[:4]) + 1}")
    code = obs[0]["code"]["coding"][0]["code"]
    q.add(f"Observation?code=|{code}&date=ge2000")  # no coding without a system
    q.add(f"Observation?code={code}&date=lt2016,gt2021")
    q.add(f"Observation?code={code}&date=ge2016&date=lt2016")  # matches only values that span the year's start
    for low in [o for o in obs if len(o.get("effectiveDateTime", "")) in (4, 7)][:3]:
        q.add(f"Observation?code={low['code']['coding'][0]['code']}&date=ge{low['effectiveDateTime']}")
    for o in [o for o in obs if "effectivePeriod" in o][:2]:
        q.add(f"Observation?code={o['code']['coding'][0]['code']}&date=le{o['effectivePeriod']['start']}")
    for c in [c for c in conds if "onsetDateTime" in c][:3]:
        q.add(f"Condition?code={c['code']['coding'][0]['code']}&onset-date=ge{c['onsetDateTime'][:7]}")
    for m in crng.sample(meds, min(3, len(meds))):
        code = m["medicationCodeableConcept"]["coding"][0]["code"]
        q.add(f"MedicationRequest?code={RXNORM}|{code}&authoredon=lt{m['authoredOn'][:4]}")
    for e in [e for e in encs if e.get("type")][:3]:
        q.add(f"Encounter?type={e['type'][0]['coding'][0]['code']}&date=ge{e['period']['start'][:10]}")

    # --- two-character name prefixes (answered from idx_string_prefix in res_id order) ---------
    # A generator of its own, like the one above.
    q.group("string: prefixes of exactly two characters, alone, folded, in lists and with other criteria")
    prng = random.Random(seed + 2)
    long_families = [f for f in families if len(f) >= 3]
    for f in prng.sample(long_families, min(5, len(long_families))):
        q.add(f"Patient?family={f[:2]}")
    for f in prng.sample(accented, min(3, len(accented))):
        q.add(f"Patient?family={f[:2]}")  # the accent inside the two characters, or not
        q.add(f"Patient?family={fold(f)[:2].upper()}")
    for g in prng.sample(givens, min(3, len(givens))):
        q.add(f"Patient?given={g[:2]}&_count=5")
    for f in prng.sample(long_families, min(3, len(long_families))):
        q.add(f"Patient?name={f[:2].lower()}")
        q.add(f"Patient?gender={prng.choice(('female', 'male'))}&family={f[:2]}")
        q.add(f"Patient?family={f[:2]}&birthdate=lt1970")
    a, b = prng.sample(long_families, 2)
    q.add(f"Patient?family={a[:2]},{b[:2]}")
    q.add(f"Patient?family={a[:2]},{b}")
    q.add(f"Patient?family:exact={a[:2]}")
    q.add(f"Practitioner?family={prng.choice(pracs)['name'][0]['family'][:2]}")
    return q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="NDJSON file or folder (bench/searchdata/generate.py)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", help="write here instead of stdout")
    args = ap.parse_args()
    q = generate(Data(args.data), args.seed)
    lines = [f"# {q.count()} queries, gen_queries.py --seed {args.seed}"]
    for name, queries in q.groups:
        if queries:
            lines.append(f"# {name}")
            lines.extend(queries)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    print(f"[gen_queries] {q.count()} queries", file=sys.stderr)
    if q.count() < MIN_QUERIES:
        sys.exit(f"gen_queries.py: only {q.count()} queries, fewer than {MIN_QUERIES}")


if __name__ == "__main__":
    main()
