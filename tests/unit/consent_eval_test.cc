// Tests for the Consent decision engine: one table of requests against the
// official R4 Consent examples (MEDGRID_FHIR_PACKAGE) and hand-written
// Consents, then the helpers, then a sweep that breaks every element of the
// official examples in turn.
//
// Each row is built so that breaking the rule it is about changes the
// effect, not only the deciding Consent: a row where a Consent must be
// ignored uses the default policy opposite to that Consent's effect.
#include "medgrid/consent/evaluator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/json.hpp"
#include "medgrid/core/clock.h"
#include "medgrid/fhir/json.h"
#include "medgrid/search/date_range.h"

namespace medgrid::consent {

// gtest prints these in failure messages; ADL finds them here.
void PrintTo(Effect e, std::ostream* os) { *os << (e == Effect::kPermit ? "permit" : "deny"); }
void PrintTo(DefaultPolicy p, std::ostream* os) { *os << (p == DefaultPolicy::kOptIn ? "opt-in" : "opt-out"); }

namespace {

namespace json = boost::json;

constexpr char kParticipation[] = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
constexpr char kActReason[] = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
constexpr char kConsentAction[] = "http://terminology.hl7.org/CodeSystem/consentaction";

Coding Role(const char* code) { return {kParticipation, code}; }
Coding Purpose(const char* code) { return {kActReason, code}; }
Coding Action(const char* code) { return {kConsentAction, code}; }

constexpr auto kOptIn = DefaultPolicy::kOptIn;
constexpr auto kOptOut = DefaultPolicy::kOptOut;
constexpr auto kPermit = Effect::kPermit;
constexpr auto kDeny = Effect::kDeny;

core::TimePoint At(std::string_view text) {
  std::optional<search::DateRange> r = search::ParseDateRange(text);
  if (!r) ADD_FAILURE() << "bad time in test: " << text;
  return core::FromUnixMicros(r ? r->lo : 0);
}

// ---------------------------------------------------------------------------
// Fixtures.

// Every hand-written Consent is this one (an active privacy Consent of
// Patient/p1 issued 2026-01-01 under policyRule OPTOUT, so an untyped root
// provision permits) with members laid over it; a null member removes it.
constexpr std::string_view kBaseConsent = R"({
  "resourceType": "Consent", "status": "active",
  "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
  "patient": {"reference": "Patient/p1"},
  "dateTime": "2026-01-01",
  "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]}})";

#define RT R"("system": "http://hl7.org/fhir/resource-types")"
#define LOINC R"("system": "http://loinc.org")"
#define CONF R"("system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality")"
#define PRCP R"({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]})"
#define REASON R"("system": "http://terminology.hl7.org/CodeSystem/v3-ActReason")"
#define P1 R"({"reference": {"reference": "Practitioner/p1"}})"

// name (also the Consent's id) -> members over kBaseConsent.
const std::vector<std::pair<std::string, std::string>>& HandConsents() {
  static const auto* kConsents = new std::vector<std::pair<std::string, std::string>>{
      {"deny_all", R"({"provision": {"type": "deny"}})"},
      {"permit_all", R"({"provision": {"type": "permit"}})"},
      // Nesting.
      {"nest2", R"({"provision": {"type": "permit", "actor": [)" P1 R"(],
          "provision": [{"type": "deny", "class": [{)" RT R"(, "code": "Observation"}]}]}})"},
      {"nest3", R"({"provision": {"type": "permit", "actor": [)" P1 R"(],
          "provision": [{"type": "deny", "class": [{)" RT R"(, "code": "Observation"}],
            "provision": [{"type": "permit", "code": [{"coding": [{)" LOINC R"(, "code": "8867-4"}]}]}]}]}})"},
      {"untyped", R"({"provision": {"actor": [)" P1 R"(],
          "provision": [{"purpose": [{)" REASON R"(, "code": "HMARKT"}]}]}})"},
      {"siblings", R"({"provision": {"type": "permit", "actor": [)" P1 R"(],
          "provision": [{"type": "permit", "code": [{"coding": [{)" LOINC R"(, "code": "8867-4"}]}]},
                        {"type": "deny", "securityLabel": [{)" CONF R"(, "code": "R"}]}]}})"},
      // Periods.
      {"period", R"({"provision": {"type": "deny", "period": {"start": "2026-01-10", "end": "2026-01-31"}}})"},
      {"period_dt", R"({"provision": {"type": "deny",
          "period": {"start": "2026-03-01T08:00:00+01:00", "end": "2026-03-01T12:00:00Z"}}})"},
      {"nested_period", R"({"provision": {"type": "permit", "actor": [)" P1 R"(],
          "provision": [{"type": "deny", "period": {"start": "2026-06-01", "end": "2026-06-30"}}]}})"},
      // Actors.
      {"actor_role", R"({"provision": {"type": "deny", "actor": [{"role": )" PRCP R"(}]}})"},
      {"actor_ref", R"({"provision": {"type": "deny", "actor": [)" P1 R"(]}})"},
      {"actor_both", R"({"provision": {"type": "deny",
          "actor": [{"role": )" PRCP R"(, "reference": {"reference": "Organization/o1"}}]}})"},
      {"actor_identifier", R"({"provision": {"type": "deny",
          "actor": [{"role": )" PRCP R"(, "reference": {"identifier": {"value": "123"}}}]}})"},
      // Purpose, labels, class, code, data period, data.
      {"purpose_treat", R"({"provision": {"type": "deny", "purpose": [{)" REASON R"(, "code": "TREAT"}]}})"},
      {"label_r", R"({"provision": {"type": "deny", "securityLabel": [{)" CONF R"(, "code": "R"}]}})"},
      {"label_n", R"({"provision": {"type": "deny", "securityLabel": [{)" CONF R"(, "code": "N"}]}})"},
      {"class_obs", R"({"provision": {"type": "deny", "class": [{)" RT R"(, "code": "Observation"}]}})"},
      {"class_profile",
       R"({"provision": {"type": "deny", "class": [{"system": "http://hl7.org/fhir/StructureDefinition",
          "code": "http://example.org/StructureDefinition/mental-health-obs"}]}})"},
      {"code", R"({"provision": {"type": "deny", "code": [
          {"coding": [{)" LOINC R"(, "code": "8867-4"}]},
          {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}]}})"},
      {"data_period", R"({"provision": {"type": "deny", "dataPeriod": {"start": "2020-01-01", "end": "2020-12-31"}}})"},
      {"data_instance", R"({"provision": {"type": "deny",
          "data": [{"meaning": "instance", "reference": {"reference": "https://ehr.example/fhir/Observation/hr1"}}]}})"},
      {"data_authoredby", R"({"provision": {"type": "deny",
          "data": [{"meaning": "authoredby", "reference": {"reference": "Practitioner/author9"}}]}})"},
      // Consents that do not count.
      {"draft", R"({"status": "draft", "provision": {"type": "deny"}})"},
      {"inactive", R"({"status": "inactive", "provision": {"type": "deny"}})"},
      {"rejected", R"({"status": "rejected", "provision": {"type": "deny"}})"},
      {"research", R"({"scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
          "code": "research"}]}, "provision": {"type": "deny"}})"},
      {"other_patient", R"({"patient": {"reference": "Patient/p2"}, "provision": {"type": "deny"}})"},
      {"absolute_patient", R"({"patient": {"reference": "https://ehr.example/fhir/Patient/p1/_history/2"},
          "provision": {"type": "deny"}})"},
      // Several Consents.
      {"old_permit", R"({"dateTime": "2025-01-01", "provision": {"type": "permit"}})"},
      {"old_deny", R"({"dateTime": "2025-01-01", "provision": {"type": "deny"}})"},
      {"new_permit", R"({"dateTime": "2026-01-01T10:00:00Z", "provision": {"type": "permit"}})"},
      {"new_deny", R"({"dateTime": "2026-01-01T10:00:00Z", "provision": {"type": "deny"}})"},
      {"updated_permit", R"({"dateTime": null, "meta": {"lastUpdated": "2026-05-01T00:00:00Z"},
          "provision": {"type": "permit"}})"},
      {"tie_permit", R"({"dateTime": "2026-02-02", "provision": {"type": "permit"}})"},
      {"tie_deny", R"({"dateTime": "2026-02-02", "provision": {"type": "deny"}})"},
      {"tie_permit_updated", R"({"dateTime": "2026-02-02", "meta": {"lastUpdated": "2026-02-03T00:00:00Z"},
          "provision": {"type": "permit"}})"},
      // Base policy without provision or without root type.
      {"bare_optout", "{}"},
      {"bare_optin", R"({"policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
          "code": "OPTIN"}]}})"},
      {"bare_nopolicy", R"({"policyRule": null})"},
      {"nopolicy_nested", R"({"policyRule": null, "provision": {"actor": [)" P1 R"(],
          "provision": [{"type": "permit", "class": [{)" RT R"(, "code": "Observation"}]}]}})"},
      // Malformed.
      {"bad_provision", R"({"provision": "deny"})"},
      {"bad_period", R"({"provision": {"type": "deny", "period": {"start": "2026-13-01"}}})"},
      {"bad_actor", R"({"provision": {"type": "deny", "actor": {"role": )" PRCP R"(}}})"},
      {"bad_empty_actor", R"({"provision": {"type": "deny", "actor": [{}]}})"},
      {"bad_type", R"({"provision": {"type": "maybe"}})"},
      // Read leniently, the second role coding would match.
      {"bad_code", R"({"provision": {"type": "deny", "actor": [{"role": {"coding": [
          {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": 5},
          {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]}}]}})"},
      {"bad_data", R"({"provision": {"type": "deny", "data": [{"reference": {"reference": "Observation/hr1"}}]}})"},
      {"bad_datetime", R"({"dateTime": "yesterday", "provision": {"type": "deny"}})"},
      {"bad_nested", R"({"provision": {"type": "deny", "provision": [3]}})"},
      {"bad_scope", R"({"scope": "patient-privacy", "provision": {"type": "deny"}})"},
      {"no_id", R"({"id": null, "provision": {"type": "deny"}})"},
  };
  return *kConsents;
}

#undef RT
#undef LOINC
#undef CONF
#undef PRCP
#undef REASON
#undef P1

// name -> resource JSON. "official:X" names load package/X.json instead.
const std::map<std::string, std::string>& HandResources() {
  static const auto* kResources = new std::map<std::string, std::string>{
      {"patient", R"({"resourceType": "Patient", "id": "p1"})"},
      {"obs_hr", R"({"resourceType": "Observation", "id": "hr1",
          "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})"},
      {"obs_hr_r", R"({"resourceType": "Observation", "id": "hr1",
          "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]},
          "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})"},
      {"obs_other", R"({"resourceType": "Observation", "id": "wt1",
          "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}})"},
      {"obs_l", R"({"resourceType": "Observation", "id": "wt1", "meta": {"security": [
          {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "L"}]}})"},
      {"obs_n", R"({"resourceType": "Observation", "id": "wt1", "meta": {"security": [
          {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}})"},
      {"obs_r", R"({"resourceType": "Observation", "id": "wt1", "meta": {"security": [
          {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}})"},
      {"obs_v", R"({"resourceType": "Observation", "id": "wt1", "meta": {"security": [
          {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}]}})"},
      {"obs_n_psy", R"({"resourceType": "Observation", "id": "wt1", "meta": {"security": [
          {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"},
          {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}})"},
      {"obs_profile", R"({"resourceType": "Observation", "id": "wt1",
          "meta": {"profile": ["http://example.org/StructureDefinition/mental-health-obs|1.0"]}})"},
      {"obs_authored", R"({"resourceType": "Observation", "id": "wt1",
          "performer": [{"reference": "Practitioner/author9"}]})"},
      {"condition_pl", R"({"resourceType": "Condition", "id": "c1",
          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                    "code": "problem-list-item"}]}],
          "code": {"coding": [{"system": "http://snomed.info/sct", "code": "39065001"}]}})"},
      {"condition", R"({"resourceType": "Condition", "id": "c2",
          "code": {"coding": [{"system": "http://snomed.info/sct", "code": "39065001"}]}})"},
      {"obs_2019_last_second",
       R"({"resourceType": "Observation", "id": "d1", "effectiveDateTime": "2019-12-31T23:59:59Z"})"},
      {"obs_2019_last_day", R"({"resourceType": "Observation", "id": "d1", "effectiveDateTime": "2019-12-31"})"},
      {"obs_2020_first", R"({"resourceType": "Observation", "id": "d1", "effectiveDateTime": "2020-01-01T00:00:00Z"})"},
      {"obs_2020_last",
       R"({"resourceType": "Observation", "id": "d1", "effectiveDateTime": "2020-12-31T23:59:59.999Z"})"},
      {"obs_2021_first", R"({"resourceType": "Observation", "id": "d1", "effectiveDateTime": "2021-01-01T00:00:00Z"})"},
      {"obs_straddle", R"({"resourceType": "Observation", "id": "d1",
          "effectivePeriod": {"start": "2019-12-30", "end": "2020-01-01"}})"},
      {"obs_issued_2020", R"({"resourceType": "Observation", "id": "d1", "issued": "2020-03-03T10:00:00Z"})"},
      {"obs_updated_2020",
       R"({"resourceType": "Observation", "id": "d1", "meta": {"lastUpdated": "2020-06-01T10:00:00Z"}})"},
      {"obs_effective_2019_updated_2020", R"({"resourceType": "Observation", "id": "d1",
          "effectiveDateTime": "2019-05-05", "meta": {"lastUpdated": "2020-06-01T10:00:00Z"}})"},
      {"obs_undated", R"({"resourceType": "Observation", "id": "d1"})"},
      {"medreq", R"({"resourceType": "MedicationRequest", "id": "m1"})"},
      {"cda_doc", R"({"resourceType": "DocumentReference", "id": "doc1",
          "type": {"coding": [{"system": "http://loinc.org", "code": "34133-9"}]},
          "content": [{"attachment": {"contentType": "application/hl7-cda+xml"}}]})"},
  };
  return *kResources;
}

constexpr const char* kOfficialConsents[] = {"basic",   "Out",     "Emergency", "grantor", "notAuthor", "notOrg",
                                             "notThem", "notThis", "notTime",   "pkb",     "signature", "smartonfhir"};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Built once; immutable afterwards.
struct Fixtures {
  std::string error;  // why the fixtures are incomplete; empty when they are not
  std::map<std::string, json::object> consents;
  std::map<std::string, json::object> resources;
};

json::object ParseObject(std::string_view text, const std::string& what, std::string& error) {
  absl::StatusOr<json::value> v = fhir::ParseJson(text);
  if (!v.ok() || !v->is_object()) {
    error += "cannot parse " + what + "; ";
    return {};
  }
  return std::move(v->get_object());
}

const Fixtures& GetFixtures() {
  static const Fixtures* kFixtures = [] {
    auto* f = new Fixtures;
    json::object base = ParseObject(kBaseConsent, "base consent", f->error);
    for (const auto& [name, members] : HandConsents()) {
      json::object c = base;
      c["id"] = name;
      for (const auto& [key, value] : ParseObject(members, name, f->error)) {
        if (value.is_null()) {
          c.erase(key);
        } else {
          c[key] = value;
        }
      }
      f->consents[name] = std::move(c);
    }
    f->consents["not_a_consent"] = ParseObject(R"({"resourceType": "Patient", "id": "p1"})", "patient", f->error);
    for (const auto& [name, text] : HandResources()) f->resources[name] = ParseObject(text, name, f->error);

    const char* dir = std::getenv("MEDGRID_FHIR_PACKAGE");
    if (dir == nullptr) {
      f->error += "MEDGRID_FHIR_PACKAGE is not set; it must name the package/ folder of hl7.fhir.r4.examples 4.0.1";
      return f;
    }
    for (const char* name : kOfficialConsents) {
      std::string file = std::string("Consent-consent-example-") + name + ".json";
      std::string text = ReadFile(std::string(dir) + "/" + file);
      f->consents[std::string("official:") + name] = ParseObject(text, file, f->error);
    }
    for (const char* name : {"Task-example1", "Task-example3"}) {
      std::string text = ReadFile(std::string(dir) + "/" + name + ".json");
      f->resources[std::string("official:") + name] = ParseObject(text, name, f->error);
    }
    return f;
  }();
  return *kFixtures;
}

// ---------------------------------------------------------------------------
// The table.

struct Case {
  std::string name = "";
  std::vector<std::string> consents = {};  // fixture names; "null" is a null pointer
  std::string patient = "p1";
  std::string resource = "";  // fixture name; empty for a request without resource
  std::vector<std::string> actors = {"Practitioner/p1"};
  std::vector<Coding> roles = {};
  std::vector<Coding> actions = {};
  std::vector<Coding> purposes = {};
  std::string now = "2026-04-01T12:00:00Z";
  DefaultPolicy policy = kOptOut;
  Effect effect = kDeny;
  std::string consent_id = "";  // empty: the default policy must decide
  std::string reason = "";      // checked when not empty
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> Cases() {
  return {
      // ---- Official examples (rules in evaluator.h; OPTIN roots deny, OPTOUT roots permit).
      {.name = "notThis_denies_the_named_task",
       .consents = {"official:notThis"},
       .patient = "f001",
       .resource = "official:Task-example3",
       .effect = kDeny,
       .consent_id = "consent-example-notThis",
       .reason = "denied by Consent/consent-example-notThis provision 1"},
      {.name = "notThis_other_task_falls_to_default",
       .consents = {"official:notThis"},
       .patient = "f001",
       .resource = "official:Task-example1",
       .effect = kPermit},
      {.name = "notThis_without_resource_says_nothing",
       .consents = {"official:notThis"},
       .patient = "f001",
       .effect = kPermit},
      {.name = "notOrg_denies_the_organization",
       .consents = {"official:notOrg"},
       .patient = "f001",
       .actors = {"Organization/f001"},
       .roles = {Role("PRCP")},
       .effect = kDeny,
       .consent_id = "consent-example-notOrg"},
      {.name = "notOrg_denies_correct_too",
       .consents = {"official:notOrg"},
       .patient = "f001",
       .actors = {"Organization/f001"},
       .roles = {Role("PRCP")},
       .actions = {Action("correct")},
       .effect = kDeny,
       .consent_id = "consent-example-notOrg"},
      {.name = "notOrg_other_organization",
       .consents = {"official:notOrg"},
       .patient = "f001",
       .actors = {"Organization/f002"},
       .roles = {Role("PRCP")},
       .effect = kPermit},
      {.name = "notOrg_unlisted_action",
       .consents = {"official:notOrg"},
       .patient = "f001",
       .actors = {"Organization/f001"},
       .roles = {Role("PRCP")},
       .actions = {Action("disclose")},
       .effect = kPermit},
      {.name = "notOrg_other_patient",
       .consents = {"official:notOrg"},
       .patient = "p1",
       .actors = {"Organization/f001"},
       .roles = {Role("PRCP")},
       .effect = kPermit},
      {.name = "notThem_denies_the_nurse",
       .consents = {"official:notThem"},
       .patient = "f001",
       .actors = {"Practitioner/f204"},
       .roles = {Role("PRCP")},
       .effect = kDeny,
       .consent_id = "consent-example-notThem"},
      {.name = "notThem_absolute_actor_url",
       .consents = {"official:notThem"},
       .patient = "f001",
       .actors = {"https://fhir.example.org/r4/Practitioner/f204"},
       .roles = {Role("PRCP")},
       .effect = kDeny,
       .consent_id = "consent-example-notThem"},
      {.name = "notThem_other_role",
       .consents = {"official:notThem"},
       .patient = "f001",
       .actors = {"Practitioner/f204"},
       .roles = {Role("AUT")},
       .effect = kPermit},
      {.name = "notAuthor_denies_the_custodian",
       .consents = {"official:notAuthor"},
       .patient = "f001",
       .actors = {"Organization/f001"},
       .roles = {Role("CST")},
       .effect = kDeny,
       .consent_id = "consent-example-notAuthor"},
      {.name = "notTime_inside",
       .consents = {"official:notTime"},
       .patient = "f001",
       .now = "2015-01-15T10:00:00Z",
       .effect = kDeny,
       .consent_id = "consent-example-notTime"},
      {.name = "notTime_end_day_included",
       .consents = {"official:notTime"},
       .patient = "f001",
       .now = "2015-02-01T23:59:59.999Z",
       .effect = kDeny,
       .consent_id = "consent-example-notTime"},
      {.name = "notTime_after",
       .consents = {"official:notTime"},
       .patient = "f001",
       .now = "2015-02-02T00:00:00Z",
       .effect = kPermit},
      {.name = "notTime_before",
       .consents = {"official:notTime"},
       .patient = "f001",
       .now = "2014-12-31T23:59:59.999Z",
       .effect = kPermit},
      {.name = "Emergency_etreat_hits_nested_deny",
       .consents = {"official:Emergency"},
       .patient = "f001",
       .actors = {"Organization/f001"},
       .roles = {Role("CST")},
       .purposes = {Purpose("ETREAT")},
       .effect = kDeny,
       .consent_id = "consent-example-Emergency",
       .reason = "denied by Consent/consent-example-Emergency provision 1.1"},
      {.name = "Emergency_treat_outside_root",
       .consents = {"official:Emergency"},
       .patient = "f001",
       .actors = {"Organization/f001"},
       .roles = {Role("CST")},
       .purposes = {Purpose("TREAT")},
       .effect = kPermit},
      {.name = "grantor_permits_read_access",
       .consents = {"official:grantor"},
       .patient = "f001",
       .actors = {"Patient/example"},
       .roles = {Role("PRCP")},
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "consent-example-grantor"},
      {.name = "grantor_not_for_correct",
       .consents = {"official:grantor"},
       .patient = "f001",
       .actors = {"Patient/example"},
       .roles = {Role("PRCP")},
       .actions = {Action("correct")},
       .policy = kOptIn,
       .effect = kDeny},
      {.name = "Out_root_permits_under_optout",
       .consents = {"official:Out"},
       .patient = "f001",
       .actors = {"Organization/f001"},
       .roles = {Role("CST")},
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "consent-example-Out"},
      {.name = "basic_root_denies_under_optin",
       .consents = {"official:basic"},
       .patient = "f001",
       .now = "2015-06-01T00:00:00Z",
       .effect = kDeny,
       .consent_id = "consent-example-basic"},
      {.name = "basic_after_period",
       .consents = {"official:basic"},
       .patient = "f001",
       .now = "2016-01-02T00:00:00Z",
       .effect = kPermit},
      {.name = "pkb_normal_psy_nested_deny",
       .consents = {"official:pkb"},
       .patient = "example",
       .resource = "obs_n_psy",
       .actors = {"Organization/f001"},
       .roles = {Role("PRCP")},
       .policy = kOptIn,
       .effect = kDeny,
       .consent_id = "consent-example-pkb",
       .reason = "denied by Consent/consent-example-pkb provision 1.1"},
      {.name = "pkb_restricted_above_root_label",
       .consents = {"official:pkb"},
       .patient = "example",
       .resource = "obs_r",
       .actors = {"Organization/f001"},
       .roles = {Role("PRCP")},
       .effect = kPermit},
      {.name = "smartonfhir_medication_request_in_window",
       .consents = {"official:smartonfhir"},
       .patient = "xcda",
       .resource = "medreq",
       .actors = {"RelatedPerson/peter"},
       .now = "2016-06-23T07:10:00Z",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "consent-example-smartonfhir",
       .reason = "permitted by Consent/consent-example-smartonfhir provision 1.1"},
      {.name = "smartonfhir_observation_in_window",
       .consents = {"official:smartonfhir"},
       .patient = "xcda",
       .resource = "obs_other",
       .actors = {"RelatedPerson/peter"},
       .now = "2016-06-23T07:10:00Z",
       .effect = kDeny,
       .consent_id = "consent-example-smartonfhir"},
      {.name = "smartonfhir_end_second_included",
       .consents = {"official:smartonfhir"},
       .patient = "xcda",
       .resource = "medreq",
       .actors = {"RelatedPerson/peter"},
       .now = "2016-06-23T07:32:33.999Z",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "consent-example-smartonfhir"},
      {.name = "smartonfhir_after_window",
       .consents = {"official:smartonfhir"},
       .patient = "xcda",
       .resource = "medreq",
       .actors = {"RelatedPerson/peter"},
       .now = "2016-06-23T07:32:34Z",
       .policy = kOptIn,
       .effect = kDeny},
      {.name = "signature_cda_author_permitted",
       .consents = {"official:signature"},
       .patient = "72",
       .resource = "cda_doc",
       .actors = {"Practitioner/13", "Practitioner/xcda-author"},
       .roles = {Role("PRCP"), Role("AUT")},
       .now = "2016-01-01T00:00:00Z",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "consent-example-signature"},
      {.name = "signature_other_document_root_denies",
       .consents = {"official:signature"},
       .patient = "72",
       .resource = "obs_other",
       .actors = {"Practitioner/13", "Practitioner/xcda-author"},
       .roles = {Role("PRCP"), Role("AUT")},
       .now = "2016-01-01T00:00:00Z",
       .effect = kDeny,
       .consent_id = "consent-example-signature"},

      // ---- Nesting: the deepest applicable provision decides.
      {.name = "nest2_root_permits",
       .consents = {"nest2"},
       .resource = "patient",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "nest2",
       .reason = "permitted by Consent/nest2 provision 1"},
      {.name = "nest2_nested_denies",
       .consents = {"nest2"},
       .resource = "obs_other",
       .effect = kDeny,
       .consent_id = "nest2",
       .reason = "denied by Consent/nest2 provision 1.1"},
      {.name = "nest2_nested_needs_root",
       .consents = {"nest2"},
       .resource = "obs_other",
       .actors = {"Practitioner/p2"},
       .effect = kPermit},
      {.name = "nest3_third_level_permits",
       .consents = {"nest3"},
       .resource = "obs_hr",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "nest3",
       .reason = "permitted by Consent/nest3 provision 1.1.1"},
      {.name = "nest3_second_level_denies",
       .consents = {"nest3"},
       .resource = "obs_other",
       .effect = kDeny,
       .consent_id = "nest3",
       .reason = "denied by Consent/nest3 provision 1.1"},
      {.name = "nest3_first_level_permits",
       .consents = {"nest3"},
       .resource = "condition",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "nest3",
       .reason = "permitted by Consent/nest3 provision 1"},
      {.name = "untyped_nested_is_opposite",
       .consents = {"untyped"},
       .purposes = {Purpose("HMARKT")},
       .effect = kDeny,
       .consent_id = "untyped",
       .reason = "denied by Consent/untyped provision 1.1"},
      {.name = "untyped_root_opposite_of_optout",
       .consents = {"untyped"},
       .purposes = {Purpose("TREAT")},
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "untyped"},
      {.name = "siblings_same_depth_deny_wins",
       .consents = {"siblings"},
       .resource = "obs_hr_r",
       .policy = kOptIn,
       .effect = kDeny,
       .consent_id = "siblings",
       .reason = "denied by Consent/siblings provision 1.2"},
      {.name = "siblings_only_permit_applies",
       .consents = {"siblings"},
       .resource = "obs_hr",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "siblings",
       .reason = "permitted by Consent/siblings provision 1.1"},

      // ---- Periods.
      {.name = "period_just_before_start",
       .consents = {"period"},
       .now = "2026-01-09T23:59:59.999Z",
       .effect = kPermit},
      {.name = "period_at_start",
       .consents = {"period"},
       .now = "2026-01-10T00:00:00Z",
       .effect = kDeny,
       .consent_id = "period"},
      {.name = "period_last_instant_of_end_day",
       .consents = {"period"},
       .now = "2026-01-31T23:59:59.999Z",
       .effect = kDeny,
       .consent_id = "period"},
      {.name = "period_just_after_end", .consents = {"period"}, .now = "2026-02-01T00:00:00Z", .effect = kPermit},
      {.name = "period_dt_start_with_offset",
       .consents = {"period_dt"},
       .now = "2026-03-01T07:00:00Z",
       .effect = kDeny,
       .consent_id = "period_dt"},
      {.name = "period_dt_before_offset_start",
       .consents = {"period_dt"},
       .now = "2026-03-01T06:59:59.999Z",
       .effect = kPermit},
      {.name = "period_dt_end_second_included",
       .consents = {"period_dt"},
       .now = "2026-03-01T12:00:00.999Z",
       .effect = kDeny,
       .consent_id = "period_dt"},
      {.name = "period_dt_next_second", .consents = {"period_dt"}, .now = "2026-03-01T12:00:01Z", .effect = kPermit},
      {.name = "nested_period_inside",
       .consents = {"nested_period"},
       .now = "2026-06-15T00:00:00Z",
       .policy = kOptIn,
       .effect = kDeny,
       .consent_id = "nested_period",
       .reason = "denied by Consent/nested_period provision 1.1"},
      {.name = "nested_period_outside",
       .consents = {"nested_period"},
       .now = "2026-07-01T00:00:00Z",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "nested_period",
       .reason = "permitted by Consent/nested_period provision 1"},

      // ---- Actors.
      {.name = "actor_role_only_matches_role",
       .consents = {"actor_role"},
       .actors = {"Practitioner/p9"},
       .roles = {Role("PRCP")},
       .effect = kDeny,
       .consent_id = "actor_role"},
      {.name = "actor_role_only_other_role",
       .consents = {"actor_role"},
       .actors = {"Practitioner/p9"},
       .roles = {Role("AUT")},
       .effect = kPermit},
      {.name = "actor_role_needs_system",
       .consents = {"actor_role"},
       .actors = {"Practitioner/p9"},
       .roles = {Coding{"http://terminology.hl7.org/CodeSystem/v3-RoleCode", "PRCP"}},
       .effect = kPermit},
      {.name = "actor_ref_only_any_role",
       .consents = {"actor_ref"},
       .actors = {"Practitioner/p1"},
       .roles = {Role("AUT")},
       .effect = kDeny,
       .consent_id = "actor_ref"},
      {.name = "actor_ref_absolute_versioned",
       .consents = {"actor_ref"},
       .actors = {"https://ehr.example/fhir/Practitioner/p1/_history/3"},
       .effect = kDeny,
       .consent_id = "actor_ref"},
      {.name = "actor_ref_no_prefix_match",
       .consents = {"actor_ref"},
       .actors = {"Practitioner/p10"},
       .effect = kPermit},
      {.name = "actor_ref_any_of_several",
       .consents = {"actor_ref"},
       .actors = {"Organization/o1", "Practitioner/p1"},
       .effect = kDeny,
       .consent_id = "actor_ref"},
      {.name = "actor_both_match",
       .consents = {"actor_both"},
       .actors = {"Organization/o1"},
       .roles = {Role("PRCP")},
       .effect = kDeny,
       .consent_id = "actor_both"},
      {.name = "actor_both_wrong_role",
       .consents = {"actor_both"},
       .actors = {"Organization/o1"},
       .roles = {Role("AUT")},
       .effect = kPermit},
      {.name = "actor_both_wrong_reference",
       .consents = {"actor_both"},
       .actors = {"Organization/o2"},
       .roles = {Role("PRCP")},
       .effect = kPermit},
      {.name = "actor_identifier_only_never_matches",
       .consents = {"actor_identifier"},
       .actors = {"Practitioner/p1"},
       .roles = {Role("PRCP")},
       .effect = kPermit},

      // ---- Purpose.
      {.name = "purpose_treat",
       .consents = {"purpose_treat"},
       .purposes = {Purpose("TREAT")},
       .effect = kDeny,
       .consent_id = "purpose_treat"},
      {.name = "purpose_etreat_not_subsumed",
       .consents = {"purpose_treat"},
       .purposes = {Purpose("ETREAT")},
       .effect = kPermit},
      {.name = "purpose_hmarkt", .consents = {"purpose_treat"}, .purposes = {Purpose("HMARKT")}, .effect = kPermit},
      {.name = "purpose_any_of_several",
       .consents = {"purpose_treat"},
       .purposes = {Purpose("HMARKT"), Purpose("TREAT")},
       .effect = kDeny,
       .consent_id = "purpose_treat"},
      {.name = "purpose_none_given", .consents = {"purpose_treat"}, .effect = kPermit},

      // ---- Security labels (confidentiality is a high water mark).
      {.name = "label_r_on_restricted",
       .consents = {"label_r"},
       .resource = "obs_r",
       .effect = kDeny,
       .consent_id = "label_r"},
      {.name = "label_r_covers_normal",
       .consents = {"label_r"},
       .resource = "obs_n",
       .effect = kDeny,
       .consent_id = "label_r"},
      {.name = "label_r_not_very_restricted", .consents = {"label_r"}, .resource = "obs_v", .effect = kPermit},
      {.name = "label_r_unlabelled", .consents = {"label_r"}, .resource = "obs_other", .effect = kPermit},
      {.name = "label_n_not_restricted", .consents = {"label_n"}, .resource = "obs_r", .effect = kPermit},
      {.name = "label_n_covers_low",
       .consents = {"label_n"},
       .resource = "obs_l",
       .effect = kDeny,
       .consent_id = "label_n"},

      // ---- Class and code.
      {.name = "class_resource_type",
       .consents = {"class_obs"},
       .resource = "obs_other",
       .effect = kDeny,
       .consent_id = "class_obs"},
      {.name = "class_other_type", .consents = {"class_obs"}, .resource = "condition", .effect = kPermit},
      {.name = "class_without_resource", .consents = {"class_obs"}, .effect = kPermit},
      {.name = "class_profile_unversioned",
       .consents = {"class_profile"},
       .resource = "obs_profile",
       .effect = kDeny,
       .consent_id = "class_profile"},
      {.name = "class_profile_absent", .consents = {"class_profile"}, .resource = "obs_other", .effect = kPermit},
      {.name = "code_observation_code",
       .consents = {"code"},
       .resource = "obs_hr",
       .effect = kDeny,
       .consent_id = "code"},
      {.name = "code_condition_category",
       .consents = {"code"},
       .resource = "condition_pl",
       .effect = kDeny,
       .consent_id = "code"},
      {.name = "code_no_match", .consents = {"code"}, .resource = "condition", .effect = kPermit},

      // ---- dataPeriod.
      {.name = "data_period_last_second_before",
       .consents = {"data_period"},
       .resource = "obs_2019_last_second",
       .effect = kPermit},
      {.name = "data_period_day_before",
       .consents = {"data_period"},
       .resource = "obs_2019_last_day",
       .effect = kPermit},
      {.name = "data_period_at_start",
       .consents = {"data_period"},
       .resource = "obs_2020_first",
       .effect = kDeny,
       .consent_id = "data_period"},
      {.name = "data_period_at_end",
       .consents = {"data_period"},
       .resource = "obs_2020_last",
       .effect = kDeny,
       .consent_id = "data_period"},
      {.name = "data_period_just_after", .consents = {"data_period"}, .resource = "obs_2021_first", .effect = kPermit},
      {.name = "data_period_overlapping_period",
       .consents = {"data_period"},
       .resource = "obs_straddle",
       .effect = kDeny,
       .consent_id = "data_period"},
      {.name = "data_period_issued",
       .consents = {"data_period"},
       .resource = "obs_issued_2020",
       .effect = kDeny,
       .consent_id = "data_period"},
      {.name = "data_period_last_updated_fallback",
       .consents = {"data_period"},
       .resource = "obs_updated_2020",
       .effect = kDeny,
       .consent_id = "data_period"},
      {.name = "data_period_effective_beats_last_updated",
       .consents = {"data_period"},
       .resource = "obs_effective_2019_updated_2020",
       .effect = kPermit},
      {.name = "data_period_undated", .consents = {"data_period"}, .resource = "obs_undated", .effect = kPermit},

      // ---- data references.
      {.name = "data_instance_absolute_reference",
       .consents = {"data_instance"},
       .resource = "obs_hr",
       .effect = kDeny,
       .consent_id = "data_instance"},
      {.name = "data_instance_other_resource",
       .consents = {"data_instance"},
       .resource = "obs_other",
       .effect = kPermit},
      {.name = "data_authoredby_performer",
       .consents = {"data_authoredby"},
       .resource = "obs_authored",
       .effect = kDeny,
       .consent_id = "data_authoredby"},
      {.name = "data_authoredby_other_author",
       .consents = {"data_authoredby"},
       .resource = "obs_other",
       .effect = kPermit},

      // ---- Consents that do not count.
      {.name = "status_draft_ignored", .consents = {"draft"}, .effect = kPermit},
      {.name = "status_inactive_ignored", .consents = {"inactive"}, .effect = kPermit},
      {.name = "status_rejected_ignored", .consents = {"rejected"}, .effect = kPermit},
      {.name = "scope_research_ignored", .consents = {"research"}, .effect = kPermit},
      {.name = "other_patient_ignored", .consents = {"other_patient"}, .effect = kPermit},
      {.name = "absolute_patient_reference",
       .consents = {"absolute_patient"},
       .effect = kDeny,
       .consent_id = "absolute_patient"},
      {.name = "ignored_beside_active",
       .consents = {"draft", "permit_all", "rejected"},
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "permit_all"},

      // ---- Several Consents.
      {.name = "newer_deny_beats_older_permit",
       .consents = {"old_permit", "new_deny"},
       .effect = kDeny,
       .consent_id = "new_deny"},
      {.name = "newer_permit_beats_older_deny",
       .consents = {"new_permit", "old_deny"},
       .effect = kPermit,
       .consent_id = "new_permit"},
      {.name = "last_updated_when_no_date_time",
       .consents = {"new_deny", "updated_permit"},
       .effect = kPermit,
       .consent_id = "updated_permit"},
      {.name = "tie_deny_wins", .consents = {"tie_permit", "tie_deny"}, .effect = kDeny, .consent_id = "tie_deny"},
      {.name = "tie_deny_wins_any_order",
       .consents = {"tie_deny", "tie_permit"},
       .effect = kDeny,
       .consent_id = "tie_deny"},
      {.name = "tie_broken_by_last_updated",
       .consents = {"tie_deny", "tie_permit_updated"},
       .effect = kPermit,
       .consent_id = "tie_permit_updated"},
      {.name = "newer_consent_that_says_nothing",
       .consents = {"old_deny", "class_obs"},
       .resource = "condition",
       .effect = kDeny,
       .consent_id = "old_deny"},

      // ---- Base policy and the default.
      {.name = "default_opt_in", .consents = {}, .policy = kOptIn, .effect = kDeny, .reason = "default opt-in"},
      {.name = "default_opt_out", .consents = {}, .policy = kOptOut, .effect = kPermit, .reason = "default opt-out"},
      {.name = "bare_optout_denies",
       .consents = {"bare_optout"},
       .effect = kDeny,
       .consent_id = "bare_optout",
       .reason = "denied by Consent/bare_optout policyRule OPTOUT"},
      {.name = "bare_optin_permits",
       .consents = {"bare_optin"},
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "bare_optin",
       .reason = "permitted by Consent/bare_optin policyRule OPTIN"},
      {.name = "bare_without_policy_says_nothing", .consents = {"bare_nopolicy"}, .policy = kOptIn, .effect = kDeny},
      {.name = "no_policy_typed_nested_decides",
       .consents = {"nopolicy_nested"},
       .resource = "obs_other",
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "nopolicy_nested"},
      {.name = "no_policy_untyped_root_says_nothing",
       .consents = {"nopolicy_nested"},
       .resource = "patient",
       .policy = kOptIn,
       .effect = kDeny},

      // ---- Malformed Consents are skipped.
      {.name = "malformed_provision_string", .consents = {"bad_provision"}, .effect = kPermit},
      {.name = "malformed_period_date", .consents = {"bad_period"}, .effect = kPermit},
      {.name = "malformed_actor_not_array", .consents = {"bad_actor"}, .roles = {Role("PRCP")}, .effect = kPermit},
      {.name = "malformed_actor_empty", .consents = {"bad_empty_actor"}, .effect = kPermit},
      {.name = "malformed_type", .consents = {"bad_type"}, .effect = kPermit},
      {.name = "malformed_code_number", .consents = {"bad_code"}, .roles = {Role("PRCP")}, .effect = kPermit},
      {.name = "malformed_data_without_meaning", .consents = {"bad_data"}, .resource = "obs_hr", .effect = kPermit},
      {.name = "malformed_date_time", .consents = {"bad_datetime"}, .effect = kPermit},
      {.name = "malformed_nested_not_object", .consents = {"bad_nested"}, .effect = kPermit},
      {.name = "malformed_scope", .consents = {"bad_scope"}, .effect = kPermit},
      {.name = "malformed_no_id", .consents = {"no_id"}, .effect = kPermit},
      {.name = "malformed_newer_skipped_for_older",
       .consents = {"bad_type", "old_permit"},
       .policy = kOptIn,
       .effect = kPermit,
       .consent_id = "old_permit"},
      {.name = "null_and_non_consent_skipped",
       .consents = {"null", "not_a_consent", "deny_all"},
       .effect = kDeny,
       .consent_id = "deny_all"},
      {.name = "only_null_and_non_consent", .consents = {"null", "not_a_consent"}, .policy = kOptIn, .effect = kDeny},
  };
}

class ConsentTableTest : public ::testing::TestWithParam<Case> {};

TEST_P(ConsentTableTest, Decides) {
  const Case& c = GetParam();
  const Fixtures& f = GetFixtures();
  ASSERT_EQ(f.error, "");
  std::vector<const json::object*> consents;
  for (const std::string& name : c.consents) {
    if (name == "null") {
      consents.push_back(nullptr);
      continue;
    }
    auto it = f.consents.find(name);
    ASSERT_NE(it, f.consents.end()) << "no consent fixture " << name;
    consents.push_back(&it->second);
  }
  AccessRequest req;
  req.patient_id = c.patient;
  if (!c.resource.empty()) {
    auto it = f.resources.find(c.resource);
    ASSERT_NE(it, f.resources.end()) << "no resource fixture " << c.resource;
    req.resource = &it->second;
  }
  req.actor_references = c.actors;
  req.actor_roles = c.roles;
  req.actions = c.actions;
  req.purposes = c.purposes;
  req.now = At(c.now);

  Decision d = Evaluate(consents, req, c.policy);
  EXPECT_EQ(d.effect, c.effect) << d.reason;
  EXPECT_EQ(d.consent_id, c.consent_id) << d.reason;
  if (!c.reason.empty()) {
    EXPECT_EQ(d.reason, c.reason);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, ConsentTableTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Every Consent fixture is used by some row, so none is dead weight.
TEST(ConsentTableMetaTest, EveryConsentFixtureIsUsed) {
  std::map<std::string, int> uses;
  for (const Case& c : Cases()) {
    for (const std::string& name : c.consents) ++uses[name];
  }
  EXPECT_GE(Cases().size(), 40u);
  for (const auto& [name, members] : HandConsents()) EXPECT_GT(uses[name], 0) << name;
  for (const char* name : kOfficialConsents) EXPECT_GT(uses[std::string("official:") + name], 0) << name;
}

// ---------------------------------------------------------------------------
// Helpers.

TEST(IsPrivacyConsentTest, OfficialExamplesAndOthers) {
  const Fixtures& f = GetFixtures();
  ASSERT_EQ(f.error, "");
  for (const char* name : kOfficialConsents) {
    EXPECT_TRUE(IsPrivacyConsent(f.consents.at(std::string("official:") + name))) << name;
  }
  EXPECT_FALSE(IsPrivacyConsent(f.consents.at("research")));
  EXPECT_FALSE(IsPrivacyConsent(f.consents.at("bad_scope")));
  EXPECT_FALSE(IsPrivacyConsent(f.consents.at("not_a_consent")));
  json::object other_system = f.consents.at("deny_all");
  other_system["scope"] = json::parse(R"({"coding": [{"system": "http://example.org", "code": "patient-privacy"}]})");
  EXPECT_FALSE(IsPrivacyConsent(other_system));
}

TEST(PatientsOfTest, References) {
  const Fixtures& f = GetFixtures();
  ASSERT_EQ(f.error, "");
  EXPECT_EQ(PatientsOf(f.consents.at("official:notThis")), std::vector<std::string>{"f001"});
  EXPECT_EQ(PatientsOf(f.consents.at("official:signature")), std::vector<std::string>{"72"});
  EXPECT_EQ(PatientsOf(f.consents.at("absolute_patient")), std::vector<std::string>{"p1"});
  json::object c;
  c["patient"] = json::parse(R"({"reference": "Group/g1"})");
  EXPECT_EQ(PatientsOf(c), std::vector<std::string>{});
  c["patient"] = json::parse(R"({"reference": "Patient/"})");
  EXPECT_EQ(PatientsOf(c), std::vector<std::string>{});
  c["patient"] = json::parse(R"({"identifier": {"value": "x"}})");
  EXPECT_EQ(PatientsOf(c), std::vector<std::string>{});
  c["patient"] = "Patient/p1";
  EXPECT_EQ(PatientsOf(c), std::vector<std::string>{});
}

// ---------------------------------------------------------------------------
// Robustness: every element of every official example replaced by every
// JSON kind in turn. Evaluate must return a well-formed decision each time
// (and the ASan build checks memory), and the unbroken example must still
// decide as it did.

void CollectPointers(const json::value& v, const std::string& at, std::vector<std::string>& out) {
  if (v.is_object()) {
    for (const auto& [key, member] : v.get_object()) {
      std::string p = at + "/" + std::string(key);
      out.push_back(p);
      CollectPointers(member, p, out);
    }
  } else if (v.is_array()) {
    for (std::size_t i = 0; i < v.get_array().size(); ++i) {
      std::string p = at + "/" + std::to_string(i);
      out.push_back(p);
      CollectPointers(v.get_array()[i], p, out);
    }
  }
}

TEST(ConsentRobustnessTest, EveryElementReplacedByEveryKind) {
  const Fixtures& f = GetFixtures();
  ASSERT_EQ(f.error, "");
  const std::vector<json::value> replacements = {
      nullptr, 7, true, "x", json::array(), json::object(), fhir::MakeDecimal("1.50"), "2015-13-40"};
  AccessRequest req;
  req.patient_id = "f001";
  req.actor_references = {"Organization/f001", "Practitioner/f204"};
  req.actor_roles = {Role("PRCP"), Role("CST")};
  req.purposes = {Purpose("ETREAT")};
  req.resource = &f.resources.at("official:Task-example3");
  req.now = At("2015-01-15T00:00:00Z");
  int evaluations = 0;
  for (const char* name : kOfficialConsents) {
    const json::value original = f.consents.at(std::string("official:") + name);
    std::vector<std::string> pointers;
    CollectPointers(original, "", pointers);
    for (const std::string& pointer : pointers) {
      for (const json::value& replacement : replacements) {
        json::value broken = original;
        boost::system::error_code ec;
        json::value* target = broken.find_pointer(pointer, ec);
        ASSERT_NE(target, nullptr) << pointer;
        *target = replacement;
        Decision d = Evaluate({&broken.get_object()}, req, DefaultPolicy::kOptIn);
        ++evaluations;
        if (d.consent_id.empty()) {
          EXPECT_EQ(d.reason, "default opt-in") << name << " " << pointer;
          EXPECT_EQ(d.effect, kDeny) << name << " " << pointer;
        } else {
          EXPECT_TRUE(d.reason.starts_with("permitted by Consent/") || d.reason.starts_with("denied by Consent/"))
              << name << " " << pointer << ": " << d.reason;
        }
      }
    }
  }
  EXPECT_GT(evaluations, 1000);
  // The sweep's request is one that notTime and notThem decide unbroken.
  EXPECT_EQ(Evaluate({&f.consents.at("official:notTime")}, req, DefaultPolicy::kOptIn).effect, kDeny);
  EXPECT_EQ(Evaluate({&f.consents.at("official:notThem")}, req, DefaultPolicy::kOptIn).effect, kDeny);
}

}  // namespace
}  // namespace medgrid::consent
