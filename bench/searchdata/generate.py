#!/usr/bin/env python3
"""Seeded, deterministic, Synthea-like FHIR R4 data for search tests and benchmarks.

Every resource has a client-assigned id, so the same data can be loaded into any
FHIR server with `PUT [base]/Type/id`. Per patient, about 100 resources: the
Patient, ~8 Encounters, ~70 Observations (about 33 LOINC codes, vitals and labs,
UCUM quantities, a blood-pressure panel with components, smoking status as a
coded value), ~10 Conditions (SNOMED CT) and ~10 MedicationRequests (RxNorm).
Organizations, Locations and Practitioners (one per 50 patients, at least 5) are
shared pools, written first.

  generate.py --patients 30 --seed 7 > data.ndjson        one stream, in load order
  generate.py --patients 16000 --seed 1 --out DIR          DIR/<Type>.ndjson, one file per type
  generate.py --patients 16000 --seed 1 --out DIR --jobs 8

Output is NDJSON, one resource per line (UTF-8, compact JSON). The single
stream is in dependency order (Organization, Location, Practitioner, then each
patient's Patient, Encounters and the rest), so loading it line by line never
references a resource that is not there yet; with --out, load the files in the
order Organization, Location, Practitioner, Patient, Encounter, then the rest.
A count per resource type goes to stderr.

Determinism: the output depends only on --patients and --seed (never on the
clock, --jobs, or the Python hash seed). Patient i's resources depend only on
(seed, i) and the pool sizes, so the first patients of a larger data set match
a smaller one with the same seed as long as the pools have the same size (up to
250 patients). Dates fall between 2015-01-01 and 2024-12-31 (observations,
encounters) with varying precision: year, year-month, date, dateTime with a UTC
offset, instant with milliseconds, and some Periods; open-ended encounters have
no end.
"""
import argparse
import json
import os
import random
import sys
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta

# --- code systems ---------------------------------------------------------------
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
NPI = "http://hl7.org/fhir/sid/us-npi"
SSN = "http://hl7.org/fhir/sid/us-ssn"
MRN = "https://medgrid.example.org/mrn"
DRIVERS_LICENSE = "urn:oid:2.16.840.1.113883.4.3.25"
TAGS = "https://medgrid.example.org/tags"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
FHIR_SD = "http://hl7.org/fhir/StructureDefinition/"

# --- vocabularies ---------------------------------------------------------------
# Family names: mostly plain, some accented, some with several words or a hyphen.
FAMILY = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
          "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
          "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
          "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
          "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
          "Carter", "Roberts", "Kowalski", "Novak", "Rossi", "Dubois", "Jansen", "O'Connor", "Schmidt",
          "Müller", "García", "Núñez", "Gómez", "Dvořák", "Ødegaard", "Łukasiewicz", "Söderström", "Françoise",
          "van der Berg", "de la Cruz", "García Márquez", "Da Silva", "Smith-Jones", "St. John", "Le Blanc"]
GIVEN_FEMALE = ["Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
                "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Emily", "Olivia", "Emma",
                "Sophia", "Ava", "Mia", "Anna", "Chloé", "Zoë", "Renée", "Inès", "Ana María", "Mary Ann"]
GIVEN_MALE = ["James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
              "Christopher", "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Steven", "Paul", "Andrew",
              "Joshua", "Noah", "Liam", "Lucas", "Ethan", "Jan", "José", "André", "François", "Søren", "Björn",
              "Juan Carlos", "Jean-Luc"]
STREETS = ["Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Pine St", "Elm St", "Washington Blvd", "Lake Rd",
           "Hillcrest Ave", "Park Pl", "River Rd", "Sunset Blvd", "Church St", "Mill Rd", "Highland Ave",
           "Calle Real", "Rue de la Paix"]
# (city, state, zip prefix, (UTC offset in hours outside daylight saving time, observes DST))
CITIES = [("Springfield", "IL", "627", (-6, True)), ("Madison", "WI", "537", (-6, True)),
          ("Portland", "OR", "972", (-8, True)), ("Austin", "TX", "787", (-6, True)),
          ("Columbus", "OH", "432", (-5, True)), ("Boston", "MA", "021", (-5, True)),
          ("Denver", "CO", "802", (-7, True)), ("Raleigh", "NC", "276", (-5, True)),
          ("Sacramento", "CA", "958", (-8, True)), ("Albany", "NY", "122", (-5, True)),
          ("Phoenix", "AZ", "850", (-7, False)), ("Nashville", "TN", "372", (-6, True)),
          ("San José", "CA", "951", (-8, True)), ("Salt Lake City", "UT", "841", (-7, True)),
          ("St. Louis", "MO", "631", (-6, True)), ("Coeur d'Alene", "ID", "838", (-8, True)),
          ("New York", "NY", "100", (-5, True)), ("Honolulu", "HI", "968", (-10, False))]
ORG_NAMES = ["General Hospital", "Medical Center", "Community Clinic", "Family Practice", "Health Partners",
             "Regional Medical Center", "Children's Hospital", "Clínica Familiar", "Heart Institute",
             "Urgent Care"]
LOCATION_KINDS = [("Main Campus", "HOSP", "Hospital"), ("Emergency Department", "ER", "Emergency room"),
                  ("Outpatient Clinic", "OF", "Outpatient facility"), ("Primary Care Office", "PC", "primary care clinic"),
                  ("Cardiology Wing", "CARD", "Ambulatory Health Care Facilities; Clinic/Center; Rehabilitation: Cardiac Facilities")]

# Observation codes: code -> (display, category, unit, ucum code, mean, sd, decimals, low, high, profile)
VITAL, LAB, SOCIAL, SURVEY = "vital-signs", "laboratory", "social-history", "survey"
CATEGORY_DISPLAY = {VITAL: "Vital Signs", LAB: "Laboratory", SOCIAL: "Social History", SURVEY: "Survey"}
VITALS = [
    ("8867-4", "Heart rate", VITAL, "/min", "/min", 75, 12, 0, 40, 180, "heartrate"),
    ("9279-1", "Respiratory rate", VITAL, "/min", "/min", 16, 2.5, 0, 8, 40, "resprate"),
    ("8310-5", "Body temperature", VITAL, "Cel", "Cel", 36.9, 0.4, 1, 35.0, 41.0, "bodytemp"),
    ("29463-7", "Body weight", VITAL, "kg", "kg", 78, 18, 1, 3, 200, "bodyweight"),
    ("8302-2", "Body height", VITAL, "cm", "cm", 170, 10, 1, 50, 210, "bodyheight"),
    ("39156-5", "Body mass index (BMI) [Ratio]", VITAL, "kg/m2", "kg/m2", 27, 5, 1, 12, 60, "bmi"),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", VITAL, "%", "%", 97, 1.5, 0, 80, 100,
     "oxygensat"),
    ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", SURVEY, "{score}", "{score}",
     2, 2.2, 0, 0, 10, None),
]
LABS = [
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", LAB, "%", "%", 6.0, 1.0, 1, 4.0, 14.0),
    ("2339-0", "Glucose [Mass/volume] in Blood", LAB, "mg/dL", "mg/dL", 105, 25, 0, 50, 400),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", LAB, "mg/dL", "mg/dL", 190, 35, 0, 100, 350),
    ("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", LAB, "mg/dL", "mg/dL",
     110, 30, 0, 30, 250),
    ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", LAB, "mg/dL", "mg/dL", 52, 12, 0, 20, 110),
    ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", LAB, "mg/dL", "mg/dL", 140, 50, 0, 40, 600),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", LAB, "mg/dL", "mg/dL", 1.0, 0.25, 2, 0.4, 6.0),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", LAB, "mg/dL", "mg/dL", 15, 4, 0, 4, 60),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", LAB, "mmol/L", "mmol/L", 140, 3, 0, 125, 155),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", LAB, "mmol/L", "mmol/L", 4.2, 0.4, 1, 2.8, 6.5),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", LAB, "mmol/L", "mmol/L", 103, 3, 0, 90, 115),
    ("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", LAB, "mmol/L", "mmol/L", 25, 2.5, 0,
     15, 35),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", LAB, "mg/dL", "mg/dL", 9.5, 0.4, 1, 7.5, 12),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", LAB, "g/dL", "g/dL", 14, 1.5, 1, 7, 19),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", LAB, "%", "%", 42, 4, 1, 25, 55),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", LAB, "10*3/uL", "10*3/uL", 7, 2, 1, 2, 20),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", LAB, "10*3/uL", "10*3/uL", 250, 60, 0, 50, 600),
    ("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by "
     "Creatinine-based formula (MDRD)", LAB, "mL/min/{1.73_m2}", "mL/min/{1.73_m2}", 80, 20, 0, 10, 130),
    ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", LAB, "mIU/L", "m[IU]/L", 2.0, 1.0, 2, 0.1, 8),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", LAB, "U/L", "U/L", 25,
     10, 0, 5, 120),
]
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = ("8480-6", "Systolic blood pressure", 125, 15, 85, 200)
DIASTOLIC = ("8462-4", "Diastolic blood pressure", 80, 10, 45, 120)
SPO2_EXTRA = ("2708-6", "Oxygen saturation in Arterial blood")
SMOKING = ("72166-2", "Tobacco smoking status")
SMOKING_VALUES = [("266919005", "Never smoked tobacco (finding)"), ("449868002", "Smokes tobacco daily (finding)"),
                  ("8517006", "Ex-smoker (finding)"), ("266927001", "Tobacco smoking consumption unknown (finding)")]

ENCOUNTER_CLASSES = [("AMB", "ambulatory", 70), ("EMER", "emergency", 12), ("IMP", "inpatient encounter", 8),
                     ("HH", "home health", 4), ("VR", "virtual", 6)]
ENCOUNTER_TYPES = {
    "AMB": [("185349003", "Encounter for check up (procedure)"), ("162673000", "General examination of patient (procedure)"),
            ("390906007", "Follow-up encounter (procedure)"), ("185345009", "Encounter for symptom (procedure)"),
            ("698314001", "Consultation for treatment (procedure)")],
    "EMER": [("50849002", "Emergency room admission (procedure)"), ("183452005", "Emergency hospital admission (procedure)")],
    "IMP": [("32485007", "Hospital admission (procedure)"), ("305408004", "Admission to surgical department (procedure)")],
    "HH": [("185347001", "Encounter for problem (procedure)")],
    "VR": [("185317003", "Telephone encounter (procedure)"), ("448337001", "Telemedicine consultation with patient (procedure)")],
}
CONDITIONS = [
    ("44054006", "Diabetes mellitus type 2 (disorder)", True), ("38341003", "Hypertensive disorder, systemic arterial (disorder)", True),
    ("55822004", "Hyperlipidemia (disorder)", True), ("15777000", "Prediabetes (finding)", True),
    ("162864005", "Body mass index 30+ - obesity (finding)", True), ("195967001", "Asthma (disorder)", True),
    ("13645005", "Chronic obstructive lung disease (disorder)", True), ("53741008", "Coronary arteriosclerosis (disorder)", True),
    ("49436004", "Atrial fibrillation (disorder)", True), ("271737000", "Anemia (disorder)", True),
    ("35489007", "Depressive disorder (disorder)", True), ("197480006", "Anxiety disorder (disorder)", True),
    ("431855005", "Chronic kidney disease stage 1 (disorder)", True), ("40055000", "Chronic sinusitis (disorder)", True),
    ("195662009", "Acute viral pharyngitis (disorder)", False), ("10509002", "Acute bronchitis (disorder)", False),
    ("444814009", "Viral sinusitis (disorder)", False), ("233604007", "Pneumonia (disorder)", False),
    ("43878008", "Streptococcal sore throat (disorder)", False), ("65363002", "Otitis media (disorder)", False),
    ("39848009", "Whiplash injury to neck (disorder)", False), ("62106007", "Concussion with no loss of consciousness (disorder)", False),
    ("370247008", "Facial laceration (disorder)", False), ("444470001", "Injury of anterior cruciate ligament (disorder)", False),
    ("68496003", "Polyp of colon (disorder)", False), ("36971009", "Sinusitis (disorder)", False),
]
MEDICATIONS = [
    ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"), ("617314", "atorvastatin 10 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"), ("310965", "Ibuprofen 200 MG Oral Tablet"),
    ("313782", "Acetaminophen 325 MG Oral Tablet"), ("849574", "Naproxen sodium 220 MG Oral Tablet"),
    ("562251", "Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet"), ("308182", "Amoxicillin 250 MG Oral Capsule"),
    ("1049221", "Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet"),
    ("895994", "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler"),
    ("745679", "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("106892", "insulin isophane, human 70 UNT/ML / insulin, regular, human 30 UNT/ML Injectable Suspension [Humulin]"),
    ("310798", "Hydrochlorothiazide 25 MG Oral Tablet"), ("312961", "Simvastatin 20 MG Oral Tablet"),
    ("866924", "Metoprolol Tartrate 25 MG Oral Tablet"), ("855332", "Warfarin Sodium 5 MG Oral Tablet"),
    ("966222", "Levothyroxine Sodium 0.075 MG Oral Tablet"), ("311989", "Nitrofurantoin 50 MG Oral Capsule"),
    ("197319", "Allopurinol 100 MG Oral Tablet"),
]
OBS_STATUS = (["final", "amended", "preliminary", "cancelled", "entered-in-error"], [92, 4, 2, 1, 1])
MED_STATUS = (["active", "completed", "stopped", "on-hold", "cancelled", "entered-in-error"], [30, 50, 10, 4, 4, 2])
MED_INTENT = (["order", "plan", "original-order", "proposal"], [85, 8, 5, 2])

WINDOW_START = datetime(2015, 1, 1)
WINDOW_DAYS = 3652  # through 2024-12-31
DEPENDENCY_ORDER = ["Organization", "Location", "Practitioner", "Patient", "Encounter", "Observation",
                    "Condition", "MedicationRequest"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


# --- small helpers ----------------------------------------------------------------
def pool_sizes(patients: int) -> tuple[int, int, int]:
    """(organizations, locations, practitioners) for a data set of that many patients."""
    practitioners = max(5, -(-patients // 50))
    organizations = max(3, -(-patients // 250))
    return organizations, 2 * organizations, practitioners


def utc_offset_hours(tz: tuple[int, bool], when: datetime) -> int:
    # A rough daylight-saving rule (April to October) is enough for realistic offsets.
    base, dst = tz
    return base + 1 if dst and 4 <= when.month <= 10 else base


def fmt_datetime(when: datetime, tz: tuple[int, bool]) -> str:
    """`when` is local wall-clock time; the result carries its UTC offset."""
    hours = utc_offset_hours(tz, when)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f"{'-' if hours < 0 else '+'}{abs(hours):02d}:00"


def fmt_instant_utc(when: datetime, tz: tuple[int, bool], millis: int) -> str:
    utc = when - timedelta(hours=utc_offset_hours(tz, when))
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def fmt_varying(rng: random.Random, when: datetime, tz: tuple[int, bool]) -> str:
    """A dateTime of varying precision: mostly to the second with an offset."""
    r = rng.random()
    if r < 0.78:
        return fmt_datetime(when, tz)
    if r < 0.84:
        return fmt_instant_utc(when, tz, rng.randrange(1000))
    if r < 0.93:
        return when.strftime("%Y-%m-%d")
    if r < 0.97:
        return when.strftime("%Y-%m")
    return when.strftime("%Y")


def coding(system: str, code: str, display: str | None = None) -> dict:
    c = {"system": system, "code": code}
    if display is not None:
        c["display"] = display
    return c


def ref(resource_type: str, rid: str, display: str | None = None) -> dict:
    r = {"reference": f"{resource_type}/{rid}"}
    if display is not None:
        r["display"] = display
    return r


def quantity(value: float, decimals: int, unit: str, code: str) -> dict:
    v = int(round(value)) if decimals == 0 else round(value, decimals)
    return {"value": v, "unit": unit, "system": UCUM, "code": code}


def clamp(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v


def person_name(rng: random.Random, gender: str, with_prefix: bool) -> dict:
    pool = GIVEN_FEMALE if gender == "female" else GIVEN_MALE if gender == "male" else GIVEN_FEMALE + GIVEN_MALE
    given = [rng.choice(pool)]
    if rng.random() < 0.35:
        given.append(rng.choice(pool))
    name = {"use": "official", "family": rng.choice(FAMILY), "given": given}
    if with_prefix:
        name["prefix"] = [{"female": rng.choice(["Mrs.", "Ms."]), "male": "Mr."}.get(gender, "Mx.")]
    if rng.random() < 0.02:
        name["suffix"] = [rng.choice(["Jr.", "Sr.", "III"])]
    return name


def address(rng: random.Random, city_row: tuple) -> dict:
    city, state, zip3, _ = city_row
    line = [f"{rng.randint(1, 9999)} {rng.choice(STREETS)}"]
    if rng.random() < 0.15:
        line.append(f"Apt {rng.randint(1, 40)}{rng.choice('ABCD')}")
    return {"use": "home", "type": "both", "line": line, "city": city, "state": state,
            "postalCode": f"{zip3}{rng.randint(0, 99):02d}", "country": "US"}


def ascii_fold(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")


def phone(rng: random.Random) -> str:
    return f"+1 {rng.randint(200, 999)}-555-{rng.randint(0, 9999):04d}"


# --- shared pools -------------------------------------------------------------------
def organization_id(i: int) -> str:
    return f"org-{i:04d}"


def location_id(i: int) -> str:
    return f"loc-{i:04d}"


def practitioner_id(i: int) -> str:
    return f"prac-{i:05d}"


def patient_id(i: int) -> str:
    return f"pat-{i:06d}"


def pools(seed: int, patients: int) -> list[dict]:
    n_org, n_loc, n_prac = pool_sizes(patients)
    rng = random.Random(f"medgrid-searchdata/{seed}/pools")
    out = []
    for i in range(n_org):
        city_row = CITIES[i % len(CITIES)]
        out.append({
            "resourceType": "Organization", "id": organization_id(i),
            "meta": {"profile": [US_CORE + "us-core-organization"]},
            "identifier": [{"system": NPI, "value": f"1{rng.randint(0, 999_999_999):09d}"}],
            "active": rng.random() < 0.9,
            "type": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/organization-type", "prov",
                                        "Healthcare Provider")]}],
            "name": f"{city_row[0]} {ORG_NAMES[i % len(ORG_NAMES)]}",
            "telecom": [{"system": "phone", "value": phone(rng), "use": "work"}],
            "address": [dict(address(rng, city_row), use="work")],
        })
    for i in range(n_loc):
        org = i % n_org
        city_row = CITIES[org % len(CITIES)]
        kind, code, display = LOCATION_KINDS[i % len(LOCATION_KINDS)]
        loc = {
            "resourceType": "Location", "id": location_id(i),
            "meta": {"profile": [US_CORE + "us-core-location"]},
            "status": "active" if rng.random() < 0.9 else "inactive",
            "name": f"{city_row[0]} {ORG_NAMES[org % len(ORG_NAMES)]} - {kind}",
            "type": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-RoleCode", code, display)]}],
            "telecom": [{"system": "phone", "value": phone(rng), "use": "work"}],
            "address": dict(address(rng, city_row), use="work"),
            "managingOrganization": ref("Organization", organization_id(org)),
        }
        if rng.random() < 0.3:
            loc["alias"] = [kind.split()[0] + " Building"]
        out.append(loc)
    for i in range(n_prac):
        gender = "female" if rng.random() < 0.5 else "male"
        name = person_name(rng, gender, False)
        name["prefix"] = ["Dr."]
        city_row = CITIES[i % len(CITIES)]
        out.append({
            "resourceType": "Practitioner", "id": practitioner_id(i),
            "meta": {"profile": [US_CORE + "us-core-practitioner"]},
            "identifier": [{"system": NPI, "value": f"{rng.randint(1_000_000_000, 1_999_999_999)}"}],
            "active": rng.random() < 0.95,
            "name": [name],
            "telecom": [{"system": "phone", "value": phone(rng), "use": "work"},
                        {"system": "email", "value": f"{ascii_fold(name['given'][0].split()[0]).lower()}.{i}@medgrid.example.org",
                         "use": "work"}],
            "address": [dict(address(rng, city_row), use="work")],
            "gender": gender,
            "qualification": [{"code": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0360|2.7", "MD",
                                                          "Doctor of Medicine")]}}],
        })
    return out


# --- one patient ----------------------------------------------------------------------
def patient_resources(seed: int, index: int, pool: tuple[int, int, int]) -> list[dict]:
    """All resources of patient `index`: Patient, Encounters, then the clinical resources."""
    n_org, n_loc, n_prac = pool
    rng = random.Random(f"medgrid-searchdata/{seed}/patient/{index}")
    pid = patient_id(index)
    subject = ref("Patient", pid)
    city_row = rng.choice(CITIES)
    tz = city_row[3]
    gender = rng.choices(["female", "male", "other", "unknown", None], weights=[485, 485, 10, 10, 10])[0]

    birth = datetime(1930, 1, 1) + timedelta(days=rng.randrange(365 * 82))
    p = {"resourceType": "Patient", "id": pid, "meta": {"profile": [US_CORE + "us-core-patient"]}}
    if rng.random() < 0.1:
        p["meta"]["tag"] = [coding(TAGS, "research-cohort-a", "Research cohort A")]
    p["identifier"] = [
        {"use": "usual", "type": {"coding": [coding(V2_0203, "MR", "Medical Record Number")], "text": "Medical Record Number"},
         "system": MRN, "value": f"MRN{index:08d}"},
        {"type": {"coding": [coding(V2_0203, "SS", "Social Security number")]},
         "system": SSN, "value": f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"},
    ]
    if rng.random() < 0.3:
        p["identifier"].append({"type": {"coding": [coding(V2_0203, "DL", "Driver's license number")]},
                                "system": DRIVERS_LICENSE, "value": f"S{rng.randint(10_000_000, 99_999_999)}"})
    p["active"] = rng.random() < 0.95
    name = person_name(rng, gender or "unknown", rng.random() < 0.4 and birth.year < 2000)
    p["name"] = [name]
    if gender == "female" and rng.random() < 0.15:
        p["name"].append({"use": "maiden", "family": rng.choice(FAMILY), "given": list(name["given"])})
    p["telecom"] = [{"system": "phone", "value": phone(rng), "use": rng.choice(["home", "mobile", "work"])}]
    if rng.random() < 0.5:
        first = ascii_fold(name["given"][0].split()[0]).lower()
        p["telecom"].append({"system": "email", "value": f"{first}.{index}@example.com", "use": "home"})
    if gender is not None:
        p["gender"] = gender
    r = rng.random()
    p["birthDate"] = (birth.strftime("%Y-%m-%d") if r < 0.97 else birth.strftime("%Y-%m") if r < 0.99
                      else birth.strftime("%Y"))
    deceased_at = None
    if rng.random() < 0.05:
        deceased_at = WINDOW_START + timedelta(days=rng.randrange(WINDOW_DAYS), seconds=rng.randrange(86400))
        p["deceasedDateTime"] = fmt_datetime(deceased_at, tz)
    p["address"] = [address(rng, city_row)]
    p["maritalStatus"] = {"coding": [coding(MARITAL, *rng.choice([("M", "Married"), ("S", "Never Married"),
                                                                   ("D", "Divorced"), ("W", "Widowed")]))]}
    gp = rng.randrange(n_prac)
    p["generalPractitioner"] = [ref("Practitioner", practitioner_id(gp))]
    home_org = rng.randrange(n_org)
    p["managingOrganization"] = ref("Organization", organization_id(home_org))
    out = [p]

    # Encounters: sorted in time within the window, after birth and before death.
    first_day = max(0, (birth - WINDOW_START).days)
    last_day = WINDOW_DAYS - 1 if deceased_at is None else max(first_day, (deceased_at - WINDOW_START).days - 1)
    n_enc = rng.randint(5, 11)
    days = sorted(rng.randint(first_day, last_day) for _ in range(n_enc)) if last_day > first_day else [first_day] * n_enc
    encounters = []  # (id, start datetime, practitioner index, is open)
    enc_classes = [c[0] for c in ENCOUNTER_CLASSES]
    enc_weights = [c[2] for c in ENCOUNTER_CLASSES]
    class_display = {c[0]: c[1] for c in ENCOUNTER_CLASSES}
    for e in range(n_enc):
        eid = f"enc-{index:06d}-{e:02d}"
        cls = rng.choices(enc_classes, enc_weights)[0]
        start = WINDOW_START + timedelta(days=days[e], hours=rng.randint(7, 18), minutes=rng.choice((0, 15, 30, 45)))
        if cls == "IMP":
            end = start + timedelta(days=rng.randint(1, 9), hours=rng.randint(0, 12))
        elif cls == "EMER":
            end = start + timedelta(hours=rng.randint(1, 8), minutes=rng.choice((0, 20, 40)))
        else:
            end = start + timedelta(minutes=rng.choice((15, 20, 30, 45, 60)))
        status = rng.choices(["finished", "cancelled", "in-progress", "entered-in-error"], [93, 4, 2, 1])[0]
        is_last = e == n_enc - 1
        if is_last and deceased_at is None and rng.random() < 0.05:
            status = "in-progress"
        prac = gp if rng.random() < 0.6 else rng.randrange(n_prac)
        org = home_org if rng.random() < 0.7 else rng.randrange(n_org)
        loc = (org * 2 + rng.randrange(2)) % n_loc
        tcode, tdisplay = rng.choice(ENCOUNTER_TYPES[cls])
        period = {"start": fmt_datetime(start, tz)}
        if status != "in-progress":
            period["end"] = fmt_datetime(end, tz)
        enc = {
            "resourceType": "Encounter", "id": eid, "meta": {"profile": [US_CORE + "us-core-encounter"]},
            "identifier": [{"system": "https://medgrid.example.org/encounter", "value": eid.upper()}],
            "status": status,
            "class": coding(ACT_CODE, cls, class_display[cls]),
            "type": [{"coding": [coding(SNOMED, tcode, tdisplay)], "text": tdisplay}],
            "subject": subject,
            "participant": [{"type": [{"coding": [coding(PARTICIPATION, "PPRF", "primary performer")]}],
                             "period": dict(period),
                             "individual": ref("Practitioner", practitioner_id(prac))}],
            "period": period,
            "location": [{"location": ref("Location", location_id(loc))}],
            "serviceProvider": ref("Organization", organization_id(org)),
        }
        if cls in ("EMER", "IMP") and rng.random() < 0.5:
            other = rng.randrange(n_prac)
            if other != prac:
                enc["participant"].append({"type": [{"coding": [coding(PARTICIPATION, "SPRF", "secondary performer")]}],
                                           "individual": ref("Practitioner", practitioner_id(other))})
        if rng.random() < 0.1:
            del enc["location"]
        out.append(enc)
        encounters.append((eid, start, prac, status == "in-progress"))

    obs_seq = 0

    def next_obs_id() -> str:
        nonlocal obs_seq
        obs_seq += 1
        return f"obs-{index:06d}-{obs_seq:03d}"

    def observation(code_codings: list, category: str, enc: tuple, profile: str | None) -> dict:
        eid, start, prac, _ = enc
        when = start + timedelta(minutes=rng.randint(0, 50))
        o = {"resourceType": "Observation", "id": next_obs_id()}
        if profile:
            o["meta"] = {"profile": [profile]}
        o["status"] = rng.choices(*OBS_STATUS)[0]
        o["category"] = [{"coding": [coding(OBS_CATEGORY, category, CATEGORY_DISPLAY[category])]}]
        o["code"] = {"coding": code_codings, "text": code_codings[0]["display"]}
        o["subject"] = subject
        if rng.random() < 0.98:
            o["encounter"] = ref("Encounter", eid)
        if rng.random() < 0.02:
            o["effectivePeriod"] = {"start": fmt_datetime(when, tz),
                                    "end": fmt_datetime(when + timedelta(minutes=rng.randint(5, 90)), tz)}
        else:
            o["effectiveDateTime"] = fmt_varying(rng, when, tz)
        if category == VITAL and rng.random() < 0.5:
            o["performer"] = [ref("Practitioner", practitioner_id(prac))]
        return o

    for enc in encounters:
        if enc[3] and rng.random() < 0.5:
            continue  # an open encounter may have nothing recorded yet
        # Blood pressure: usually the panel with components, sometimes two single observations.
        if rng.random() < 0.9:
            sys_v = round(clamp(rng.gauss(SYSTOLIC[2], SYSTOLIC[3]), SYSTOLIC[4], SYSTOLIC[5]))
            dia_v = round(clamp(rng.gauss(DIASTOLIC[2], DIASTOLIC[3]), DIASTOLIC[4], DIASTOLIC[5]))
            if rng.random() < 0.9:
                o = observation([coding(LOINC, BP_PANEL[0], BP_PANEL[1])], VITAL, enc, FHIR_SD + "bp")
                o["component"] = [
                    {"code": {"coding": [coding(LOINC, SYSTOLIC[0], SYSTOLIC[1])]},
                     "valueQuantity": quantity(sys_v, 0, "mm[Hg]", "mm[Hg]")},
                    {"code": {"coding": [coding(LOINC, DIASTOLIC[0], DIASTOLIC[1])]},
                     "valueQuantity": quantity(dia_v, 0, "mm[Hg]", "mm[Hg]")},
                ]
                out.append(o)
            else:
                for (code, display, *_), v in ((SYSTOLIC, sys_v), (DIASTOLIC, dia_v)):
                    o = observation([coding(LOINC, code, display)], VITAL, enc, FHIR_SD + "vitalsigns")
                    o["valueQuantity"] = quantity(v, 0, "mm[Hg]", "mm[Hg]")
                    out.append(o)
        for code, display, category, unit, ucum, mean, sd, dec, lo, hi, profile in VITALS:
            if rng.random() < 0.25:
                continue
            codings = [coding(LOINC, code, display)]
            if code == "59408-5":
                codings.append(coding(LOINC, *SPO2_EXTRA))
            o = observation(codings, category, enc, FHIR_SD + profile if profile else None)
            value = clamp(rng.gauss(mean, sd), lo, hi)
            if rng.random() < 0.01:
                o["dataAbsentReason"] = {"coding": [coding(DATA_ABSENT, "not-performed", "Not Performed")]}
            elif code == "29463-7" and rng.random() < 0.05:
                o["valueQuantity"] = quantity(value * 2.20462, 1, "lb", "[lb_av]")
            elif code == "8310-5" and rng.random() < 0.05:
                o["valueQuantity"] = quantity(value * 9 / 5 + 32, 1, "degF", "[degF]")
            else:
                o["valueQuantity"] = quantity(value, dec, unit, ucum)
            out.append(o)
        if rng.random() < 0.3:
            for code, display, category, unit, ucum, mean, sd, dec, lo, hi in rng.sample(LABS, rng.randint(3, 7)):
                o = observation([coding(LOINC, code, display)], category, enc, US_CORE + "us-core-observation-lab")
                o["valueQuantity"] = quantity(clamp(rng.gauss(mean, sd), lo, hi), dec, unit, ucum)
                if rng.random() < 0.1:
                    o["interpretation"] = [{"coding": [coding(
                        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "H", "High")]}]
                out.append(o)
    # Smoking status once, on the first encounter.
    o = observation([coding(LOINC, *SMOKING)], SOCIAL, encounters[0], US_CORE + "us-core-smokingstatus")
    scode, sdisplay = rng.choice(SMOKING_VALUES)
    o["valueCodeableConcept"] = {"coding": [coding(SNOMED, scode, sdisplay)], "text": sdisplay}
    out.append(o)

    # Conditions: chronic ones stay active, acute ones mostly resolve.
    for c in range(rng.randint(5, 15)):
        code, display, chronic = rng.choice(CONDITIONS)
        eid, start, _, _ = rng.choice(encounters)
        cond = {"resourceType": "Condition", "id": f"cond-{index:06d}-{c:02d}",
                "meta": {"profile": [US_CORE + "us-core-condition"]}}
        ver = rng.choices(["confirmed", "provisional", "differential", "refuted", "entered-in-error"],
                          [85, 6, 4, 3, 2])[0]
        if ver != "entered-in-error":
            clinical = (rng.choices(["active", "recurrence", "remission"], [90, 5, 5])[0] if chronic else
                        rng.choices(["resolved", "inactive", "active"], [80, 10, 10])[0])
            cond["clinicalStatus"] = {"coding": [coding(COND_CLINICAL, clinical, clinical.capitalize())]}
        else:
            clinical = None
        cond["verificationStatus"] = {"coding": [coding(COND_VER, ver, ver.capitalize())]}
        cond["category"] = [{"coding": [coding(COND_CATEGORY, *rng.choice(
            [("encounter-diagnosis", "Encounter Diagnosis"), ("problem-list-item", "Problem List Item")]))]}]
        cond["code"] = {"coding": [coding(SNOMED, code, display)], "text": display.rsplit(" (", 1)[0]}
        cond["subject"] = subject
        cond["encounter"] = ref("Encounter", eid)
        if rng.random() < 0.9:
            onset = start - timedelta(days=rng.randint(0, 30), hours=rng.randint(0, 10))
            cond["onsetDateTime"] = fmt_varying(rng, onset, tz)
        if clinical in ("resolved", "inactive"):
            cond["abatementDateTime"] = fmt_datetime(start + timedelta(days=rng.randint(3, 60)), tz)
        cond["recordedDate"] = fmt_datetime(start, tz)
        out.append(cond)

    # Medication requests.
    for m in range(rng.randint(5, 15)):
        code, display = rng.choice(MEDICATIONS)
        eid, start, prac, _ = rng.choice(encounters)
        authored = start + timedelta(minutes=rng.randint(5, 55))
        mr = {"resourceType": "MedicationRequest", "id": f"medreq-{index:06d}-{m:02d}",
              "meta": {"profile": [US_CORE + "us-core-medicationrequest"]},
              "status": rng.choices(*MED_STATUS)[0], "intent": rng.choices(*MED_INTENT)[0],
              "medicationCodeableConcept": {"coding": [coding(RXNORM, code, display)], "text": display},
              "subject": subject, "encounter": ref("Encounter", eid),
              "authoredOn": fmt_datetime(authored, tz) if rng.random() < 0.9 else authored.strftime("%Y-%m-%d"),
              "requester": ref("Practitioner", practitioner_id(prac)),
              "dosageInstruction": [{"sequence": 1, "text": rng.choice(
                  ["Take one tablet by mouth daily", "Take one tablet by mouth twice daily",
                   "Take as needed for pain", "Inhale two puffs every 4 hours as needed"])}]}
        if rng.random() < 0.3:
            mr["priority"] = rng.choice(["routine", "urgent", "stat"])
        out.append(mr)
    return out


# --- output ----------------------------------------------------------------------------
def encode_patients(args: tuple[int, int, int, tuple[int, int, int]]) -> list[tuple[str, str]]:
    """(resourceType, JSON line) for patients [first, last): the unit of work of a job."""
    seed, first, last, pool = args
    lines = []
    for i in range(first, last):
        for r in patient_resources(seed, i, pool):
            lines.append((r["resourceType"], _encode(r)))
    return lines


class Sink:
    """Writes lines to stdout, or to DIR/<Type>.ndjson, and counts them per type."""

    def __init__(self, out_dir: str | None):
        self.out_dir = out_dir
        self.files: dict[str, object] = {}
        self.counts: dict[str, int] = {t: 0 for t in DEPENDENCY_ORDER}
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            for t in DEPENDENCY_ORDER:
                self.files[t] = open(os.path.join(out_dir, f"{t}.ndjson"), "w", encoding="utf-8", newline="\n")
        else:
            self.stdout = open(sys.stdout.fileno(), "w", encoding="utf-8", newline="\n", closefd=False,
                               buffering=1 << 20)

    def write(self, rtype: str, line: str) -> None:
        self.counts[rtype] += 1
        (self.files[rtype] if self.out_dir else self.stdout).write(line + "\n")

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if not self.out_dir:
            self.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, required=True, help="number of patients (>= 1)")
    ap.add_argument("--seed", type=int, default=1, help="the seed every value derives from (default 1)")
    ap.add_argument("--out", help="write DIR/<Type>.ndjson; default: one stream on stdout")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (the output does not depend on it)")
    args = ap.parse_args()
    if args.patients < 1:
        ap.error("--patients must be >= 1")
    t0 = time.monotonic()
    pool = pool_sizes(args.patients)
    sink = Sink(args.out)
    for r in pools(args.seed, args.patients):
        sink.write(r["resourceType"], _encode(r))
    block = 250
    # Patients are numbered from 1.
    work = [(args.seed, i, min(i + block, args.patients + 1), pool) for i in range(1, args.patients + 1, block)]
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as ex:
            for lines in ex.map(encode_patients, work):
                for rtype, line in lines:
                    sink.write(rtype, line)
    else:
        for w in work:
            for rtype, line in encode_patients(w):
                sink.write(rtype, line)
    sink.close()
    total = sum(sink.counts.values())
    summary = ", ".join(f"{t} {n}" for t, n in sink.counts.items())
    print(f"[generate] {args.patients} patients, seed {args.seed}: {total} resources ({summary}) "
          f"in {time.monotonic() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
