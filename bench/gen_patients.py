#!/usr/bin/env python3
"""Deterministic generator of realistic-looking FHIR R4 Patient resources.

The same --seed always yields byte-identical output, so runs stay comparable.

  gen_patients.py --count 10000 --dir DIR --base-url http://127.0.0.1:8080/fhir/bench
      writes DIR/p<i>.json (i = 1..count, each with "id": "p<i>") and
      DIR/load.curl, a curl config that PUTs every file to <base-url>/Patient/p<i>
      (run it with: curl -sS -Z --parallel-max 32 -K DIR/load.curl)
  gen_patients.py --create-body
      prints one Patient without an id: the body of the create benchmark
"""
import argparse
import json
import os
import random

FAMILY = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
          "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
          "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez",
          "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
          "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
          "Carter", "Roberts", "Müller", "Schmidt", "Novak", "Kowalski", "Rossi", "Dubois", "Jansen"]
GIVEN_FEMALE = ["Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
                "Karen", "Lisa", "Nancy", "Betty", "Sandra", "Margaret", "Ashley", "Emily", "Olivia", "Emma",
                "Sophia", "Ava", "Mia", "Chloé", "Anna", "Zoe"]
GIVEN_MALE = ["James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
              "Christopher", "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Steven", "Paul", "Andrew",
              "Joshua", "Noah", "Liam", "Lucas", "Ethan", "José", "Jan"]
STREETS = ["Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Pine St", "Elm St", "Washington Blvd", "Lake Rd",
           "Hillcrest Ave", "Park Pl", "River Rd", "Sunset Blvd", "Church St", "Mill Rd", "Highland Ave"]
CITIES = [("Springfield", "IL", "627"), ("Madison", "WI", "537"), ("Portland", "OR", "972"),
          ("Austin", "TX", "787"), ("Columbus", "OH", "432"), ("Boston", "MA", "021"),
          ("Denver", "CO", "802"), ("Raleigh", "NC", "276"), ("Sacramento", "CA", "958"),
          ("Albany", "NY", "122"), ("Phoenix", "AZ", "850"), ("Nashville", "TN", "372")]


def patient(rng: random.Random, pid: str | None) -> dict:
    gender = rng.choices(["female", "male", "other", "unknown"], weights=[49, 49, 1, 1])[0]
    given_pool = GIVEN_FEMALE if gender == "female" else GIVEN_MALE if gender == "male" else GIVEN_FEMALE + GIVEN_MALE
    given = [rng.choice(given_pool)]
    if rng.random() < 0.6:
        given.append(rng.choice(given_pool))
    city, state, zip3 = rng.choice(CITIES)
    year = rng.randint(1930, 2023)
    p = {"resourceType": "Patient"}
    if pid is not None:
        p["id"] = pid
    p["identifier"] = [
        {"use": "usual",
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
         "system": "https://hospital.example.org/mrn", "value": f"MRN{rng.randint(0, 99_999_999):08d}"},
        {"system": "http://hl7.org/fhir/sid/us-ssn",
         "value": f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"},
    ]
    p["active"] = rng.random() < 0.95
    p["name"] = [{"use": "official", "family": rng.choice(FAMILY), "given": given}]
    p["telecom"] = [{"system": "phone", "value": f"+1 {rng.randint(200, 999)}-555-{rng.randint(0, 9999):04d}",
                     "use": rng.choice(["home", "mobile", "work"])}]
    if rng.random() < 0.5:
        p["telecom"].append({"system": "email", "value": f"{given[0].lower()}.{rng.randint(1, 999)}@example.com"})
    p["gender"] = gender
    p["birthDate"] = f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    p["address"] = [{"use": "home", "type": "both",
                     "line": [f"{rng.randint(1, 9999)} {rng.choice(STREETS)}"],
                     "city": city, "state": state, "postalCode": f"{zip3}{rng.randint(0, 99):02d}",
                     "country": "US"}]
    p["maritalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                      "code": rng.choice(["M", "S", "D", "W"])}]}
    return p


def dump(p: dict) -> str:
    return json.dumps(p, ensure_ascii=False, separators=(",", ":"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dir", help="write p<i>.json files and load.curl here")
    ap.add_argument("--base-url", help="tenant base, e.g. http://127.0.0.1:8080/fhir/bench")
    ap.add_argument("--create-body", action="store_true", help="print one Patient without id and exit")
    args = ap.parse_args()

    if args.create_body:
        # A seed of its own, so the body does not change with --count.
        print(dump(patient(random.Random(args.seed * 7919 + 1), None)))
        return
    if not args.dir or not args.base_url:
        ap.error("--dir and --base-url are required unless --create-body")
    rng = random.Random(args.seed)
    os.makedirs(args.dir, exist_ok=True)
    base = args.base_url.rstrip("/")
    with open(os.path.join(args.dir, "load.curl"), "w", encoding="utf-8") as cfg:
        for i in range(1, args.count + 1):
            path = os.path.join(args.dir, f"p{i}.json")
            with open(path, "w", encoding="utf-8") as f:
                f.write(dump(patient(rng, f"p{i}")))
            # Options reset at each "next", so every transfer repeats them.
            cfg.write(f'url = "{base}/Patient/p{i}"\n'
                      'request = "PUT"\n'
                      'header = "Content-Type: application/fhir+json"\n'
                      f'data-binary = "@{path}"\n'
                      'output = "/dev/null"\n'
                      'write-out = "%{http_code}\\n"\n')
            if i != args.count:
                cfg.write("next\n")


if __name__ == "__main__":
    main()
