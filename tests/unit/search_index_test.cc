// Tests for search index extraction: hand-checked entries of official R4
// examples (MEDGRID_FHIR_PACKAGE), a few of them edited to reach shapes the
// examples lack, and a run over every clinical and administrative example.
#include "medgrid/search/index.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/official_examples.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/search_params.h"
#include "medgrid/fhir/structure.h"
#include "medgrid/search/date_range.h"
#include "medgrid/search/text.h"

namespace medgrid::search {
namespace {

namespace json = boost::json;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

// Microseconds since the epoch of a UTC time.
int64_t Us(int64_t year, unsigned month, unsigned day, int64_t hour = 0, int64_t minute = 0, int64_t second = 0) {
  return ((DaysFromCivil(year, month, day) * 24 + hour) * 60 * 60 + minute * 60 + second) * 1'000'000;
}

// One-line descriptions of entries, so that expectations read like the
// search syntax and failures print what was indexed.
std::string Describe(const StringEntry& e) { return core::StrCat(e.exact, " / ", e.folded); }
std::string Describe(const TokenEntry& e) {
  std::string out = e.system ? core::StrCat(*e.system, "|", e.code) : e.code;
  if (!e.text.empty()) core::StrAppend(out, " text=", e.text);
  if (e.type_system || e.type_code) {
    core::StrAppend(out, " type=", e.type_system.value_or("-"), "|", e.type_code.value_or("-"));
  }
  return out;
}
std::string Describe(const DateEntry& e) {
  return core::StrCat(e.lo == DateRange::kMin ? std::string("-inf") : std::to_string(e.lo), "..",
                      e.hi == DateRange::kMax ? std::string("+inf") : std::to_string(e.hi));
}
std::string Describe(const ReferenceEntry& e) {
  std::string out = core::StrCat(e.target_type, "/", e.target_id);
  if (!e.url.empty()) core::StrAppend(out, " url=", e.url);
  if (!e.version.empty()) core::StrAppend(out, " version=", e.version);
  return out;
}
std::string Describe(const QuantityEntry& e) {
  return core::StrCat(e.low, "..", e.high, " ", e.system, "|", e.code, " ", e.unit);
}
std::string Describe(const UriEntry& e) { return e.uri; }

std::string Range(int64_t lo, int64_t hi) { return Describe(DateEntry{"", 0, lo, hi}); }

// The descriptions of the entries of `param`.
template <typename T>
std::vector<std::string> Of(const std::vector<T>& entries, std::string_view param) {
  std::vector<std::string> out;
  for (const T& e : entries) {
    if (e.param == param) out.push_back(Describe(e));
  }
  return out;
}

// Every entry of the composite `code` by group: "param: description".
std::map<int, std::vector<std::string>> Groups(const IndexEntries& idx, std::string_view code) {
  std::map<int, std::vector<std::string>> out;
  const std::string prefix = core::StrCat(code, "$");
  auto add = [&](const auto& entries) {
    for (const auto& e : entries) {
      if (e.param.starts_with(prefix)) out[e.group].push_back(core::StrCat(e.param, ": ", Describe(e)));
    }
  };
  add(idx.strings);
  add(idx.tokens);
  add(idx.dates);
  add(idx.references);
  add(idx.quantities);
  add(idx.uris);
  return out;
}

// Every parameter code with at least one entry.
std::set<std::string> Params(const IndexEntries& idx) {
  std::set<std::string> out;
  auto add = [&](const auto& entries) {
    for (const auto& e : entries) out.insert(e.param);
  };
  add(idx.strings);
  add(idx.tokens);
  add(idx.dates);
  add(idx.references);
  add(idx.quantities);
  add(idx.uris);
  return out;
}

// Everything extracted, one line per entry, for comparing two extractions.
std::vector<std::string> Dump(const IndexEntries& idx) {
  std::vector<std::string> out;
  auto add = [&](std::string_view kind, const auto& entries) {
    for (const auto& e : entries) out.push_back(core::StrCat(kind, " ", e.param, " ", e.group, " ", Describe(e)));
  };
  add("string", idx.strings);
  add("token", idx.tokens);
  add("date", idx.dates);
  add("reference", idx.references);
  add("quantity", idx.quantities);
  add("uri", idx.uris);
  out.push_back(core::StrCat("content ", idx.content));
  out.push_back(core::StrCat("narrative ", idx.narrative));
  return out;
}

// True if `xhtml` has a non-space character outside its tags.
bool HasTextOutsideTags(std::string_view xhtml) {
  bool in_tag = false;
  for (char c : xhtml) {
    if (c == '<') {
      in_tag = true;
    } else if (c == '>') {
      in_tag = false;
    } else if (!in_tag && c != ' ' && c != '\n' && c != '\t' && c != '\r') {
      return true;
    }
  }
  return false;
}

class SearchIndexTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("MEDGRID_FHIR_PACKAGE");
    ASSERT_NE(dir, nullptr) << "MEDGRID_FHIR_PACKAGE must name the package/ folder of hl7.fhir.r4.examples";
    dir_ = new std::string(dir);
    auto structures = fhir::StructureRegistry::LoadFromPackage(dir);
    ASSERT_TRUE(structures.ok()) << structures.status();
    structures_ = structures->release();
    auto params = fhir::SearchParamRegistry::LoadFromPackage(dir, *structures_);
    ASSERT_TRUE(params.ok()) << params.status();
    params_ = params->release();
  }
  static void TearDownTestSuite() {
    delete params_;
    delete structures_;
    delete dir_;
  }

  void SetUp() override { ASSERT_NE(params_, nullptr) << "the registry did not load"; }

  // The text of an official example file.
  static std::string Text(const std::string& file) {
    std::ifstream in(*dir_ + "/" + file);
    EXPECT_TRUE(in.good()) << file;
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  static json::value Parse(const std::string& text) {
    absl::StatusOr<json::value> v = fhir::ParseJson(text);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *std::move(v) : json::value();
  }

  // An official example, with each `from` replaced by `to` (which must occur:
  // an edit that no longer applies would silently test the original).
  static json::value Load(const std::string& file, std::vector<std::pair<std::string, std::string>> edits = {}) {
    std::string text = Text(file);
    for (const auto& [from, to] : edits) {
      EXPECT_NE(text.find(from), std::string::npos) << file << " lacks " << from;
      text = core::StrReplaceAll(text, from, to);
    }
    return Parse(text);
  }

  static IndexEntries Index(const json::value& resource) {
    return ExtractIndex(resource, resource.at("resourceType").as_string().c_str(), *params_);
  }

  static std::string* dir_;
  static const fhir::StructureRegistry* structures_;
  static const fhir::SearchParamRegistry* params_;
};
std::string* SearchIndexTest::dir_ = nullptr;
const fhir::StructureRegistry* SearchIndexTest::structures_ = nullptr;
const fhir::SearchParamRegistry* SearchIndexTest::params_ = nullptr;

// ---------------------------------------------------------------------------
// string

TEST_F(SearchIndexTest, PatientNamesAndAddressesAreStrings) {
  const IndexEntries idx = Index(Load("Patient-example.json"));
  // Every part of the three names, each once although "Peter" and "James"
  // occur in two names.
  EXPECT_THAT(Of(idx.strings, "name"), UnorderedElementsAre("Chalmers / chalmers", "Peter / peter", "James / james",
                                                            "Jim / jim", "Windsor / windsor"));
  EXPECT_THAT(Of(idx.strings, "family"), UnorderedElementsAre("Chalmers / chalmers", "Windsor / windsor"));
  EXPECT_THAT(Of(idx.strings, "given"), UnorderedElementsAre("Peter / peter", "James / james", "Jim / jim"));
  EXPECT_THAT(Of(idx.strings, "address"),
              UnorderedElementsAre("534 Erewhon St PeasantVille, Rainbow, Vic  3999 / 534 erewhon st peasantville, "
                                   "rainbow, vic 3999",
                                   "534 Erewhon St / 534 erewhon st", "PleasantVille / pleasantville",
                                   "Rainbow / rainbow", "Vic / vic", "3999 / 3999"));
  EXPECT_THAT(Of(idx.strings, "address-city"), ElementsAre("PleasantVille / pleasantville"));
  EXPECT_THAT(Of(idx.strings, "address-postalcode"), ElementsAre("3999 / 3999"));
  for (const StringEntry& e : idx.strings) EXPECT_EQ(e.group, 0) << e.param;
}

TEST_F(SearchIndexTest, NameWithOnlyTextAndAccentsFold) {
  const IndexEntries idx = Index(Load("Patient-example.json", {{R"({
      "use": "usual",
      "given": [
        "Jim"
      ]
    })",
                                                                R"({"use": "usual", "text": "Élodie ÇAĞLAR"})"}}));
  EXPECT_THAT(Of(idx.strings, "name"), Contains("Élodie ÇAĞLAR / elodie caglar"));
  EXPECT_THAT(Of(idx.strings, "name"), Not(Contains("Jim / jim")));
}

// ---------------------------------------------------------------------------
// token

TEST_F(SearchIndexTest, IdentifierWithTypeTelecomAndPrimitiveTokens) {
  const IndexEntries idx = Index(Load("Patient-example.json"));
  EXPECT_THAT(
      Of(idx.tokens, "identifier"),
      ElementsAre("urn:oid:1.2.36.146.595.217.0.1|12345 type=http://terminology.hl7.org/CodeSystem/v2-0203|MR"));
  // ContactPoint values with ContactPoint.system as the token system; the
  // telecom without a value ({"use": "home"}) indexes nothing.
  EXPECT_THAT(Of(idx.tokens, "phone"),
              UnorderedElementsAre("phone|(03) 5555 6473", "phone|(03) 3410 5613", "phone|(03) 5555 8834"));
  EXPECT_THAT(Of(idx.tokens, "telecom"),
              UnorderedElementsAre("phone|(03) 5555 6473", "phone|(03) 3410 5613", "phone|(03) 5555 8834"));
  EXPECT_THAT(Of(idx.tokens, "email"), IsEmpty());
  EXPECT_THAT(Of(idx.tokens, "gender"), ElementsAre("male"));
  EXPECT_THAT(Of(idx.tokens, "active"), ElementsAre("true"));
  EXPECT_THAT(Of(idx.tokens, "deceased"), ElementsAre("false"));
  for (const TokenEntry& e : idx.tokens) {
    if (e.param == "gender") {
      EXPECT_EQ(e.system, std::nullopt) << Describe(e);
    }
    if (e.param == "phone") {
      EXPECT_EQ(e.system, "phone") << Describe(e);
    }
  }
}

TEST_F(SearchIndexTest, IdentifierTypeWithSeveralCodingsAndText) {
  const IndexEntries idx = Index(Load(
      "Patient-example.json", {{R"("coding": [
          {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
            "code": "MR"
          }
        ])",
                                R"("coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"},
                      {"system": "http://example.org/id-types", "code": "hospital"}],
           "text": "Medical Record Number")"}}));
  EXPECT_THAT(Of(idx.tokens, "identifier"),
              UnorderedElementsAre("urn:oid:1.2.36.146.595.217.0.1|12345 text=medical record number "
                                   "type=http://terminology.hl7.org/CodeSystem/v2-0203|MR",
                                   "urn:oid:1.2.36.146.595.217.0.1|12345 text=medical record number "
                                   "type=http://example.org/id-types|hospital"));
}

TEST_F(SearchIndexTest, CodeableConceptCodingsCarryTextOrDisplay) {
  const IndexEntries observation = Index(Load("Observation-example.json"));
  // No CodeableConcept.text: each coding's display is its text.
  EXPECT_THAT(Of(observation.tokens, "code"),
              UnorderedElementsAre("http://loinc.org|29463-7 text=body weight",
                                   "http://loinc.org|3141-9 text=body weight measured",
                                   "http://snomed.info/sct|27113001 text=body weight",
                                   "http://acme.org/devices/clinical-codes|body-weight text=body weight"));
  EXPECT_THAT(Of(observation.tokens, "category"),
              ElementsAre("http://terminology.hl7.org/CodeSystem/observation-category|vital-signs text=vital signs"));

  // With CodeableConcept.text, that text goes on every coding.
  const IndexEntries condition = Index(Load("Condition-example.json"));
  EXPECT_THAT(Of(condition.tokens, "code"), ElementsAre("http://snomed.info/sct|39065001 text=burnt ear"));
  EXPECT_THAT(Of(condition.tokens, "severity"), ElementsAre("http://snomed.info/sct|24484000 text=severe"));
}

TEST_F(SearchIndexTest, CodeableConceptWithOnlyTextAndCodingWithoutSystem) {
  const IndexEntries edited = Index(Load("Condition-example.json", {{R"("coding": [
      {
        "system": "http://snomed.info/sct",
        "code": "24484000",
        "display": "Severe"
      }
    ])",
                                                                     R"("text": "Really Bad")"}}));
  const std::vector<std::string> severity = Of(edited.tokens, "severity");
  ASSERT_THAT(severity, ElementsAre(" text=really bad"));
  for (const TokenEntry& e : edited.tokens) {
    if (e.param == "severity") {
      EXPECT_EQ(e.system, std::nullopt);
    }
  }

  // Encounter.class is a bare Coding.
  const IndexEntries encounter = Index(Load("Encounter-example.json"));
  EXPECT_THAT(Of(encounter.tokens, "class"),
              ElementsAre("http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP text=inpatient encounter"));
  EXPECT_THAT(Of(encounter.tokens, "status"), ElementsAre("in-progress"));
}

// ---------------------------------------------------------------------------
// date

TEST_F(SearchIndexTest, DatesSpanTheirPrecision) {
  const IndexEntries patient = Index(Load("Patient-example.json"));
  EXPECT_THAT(Of(patient.dates, "birthdate"), ElementsAre(Range(Us(1974, 12, 25), Us(1974, 12, 26))));

  const IndexEntries observation = Index(Load("Observation-example.json"));
  EXPECT_THAT(Of(observation.dates, "date"), ElementsAre(Range(Us(2016, 3, 28), Us(2016, 3, 29))));

  // An instant with a zone, to the second.
  const IndexEntries glucose = Index(Load("Observation-f001.json"));
  EXPECT_THAT(Of(glucose.dates, "date"), ElementsAre(Range(Us(2013, 4, 2, 8, 30, 10), DateRange::kMax)));

  // A dateTime without a zone is UTC.
  const IndexEntries unzoned =
      Index(Load("Observation-example.json",
                 {{R"("effectiveDateTime": "2016-03-28")", R"("effectiveDateTime": "2016-03-28T10:15")"}}));
  EXPECT_THAT(Of(unzoned.dates, "date"), ElementsAre(Range(Us(2016, 3, 28, 10, 15), Us(2016, 3, 28, 10, 16))));
}

TEST_F(SearchIndexTest, PeriodsWithAndWithoutEnds) {
  // Both ends, +10:00 converted to UTC; the end's second is included.
  const IndexEntries encounter = Index(Load("Encounter-home.json"));
  EXPECT_THAT(Of(encounter.dates, "date"), ElementsAre(Range(Us(2015, 1, 17, 6, 0, 0), Us(2015, 1, 17, 6, 30, 1))));

  // Only an end: unbounded below.
  const IndexEntries careplan = Index(Load("CarePlan-example.json"));
  EXPECT_THAT(Of(careplan.dates, "date"), ElementsAre(Range(DateRange::kMin, Us(2017, 6, 2))));

  const IndexEntries coverage = Index(Load("Coverage-9876B1.json"));
  // Coverage has no date parameter; its period must not leak elsewhere.
  EXPECT_THAT(coverage.dates, IsEmpty());

  const IndexEntries charge = Index(Load("ChargeItem-example.json"));
  EXPECT_THAT(Of(charge.dates, "occurrence"), ElementsAre(Range(Us(2017, 1, 25, 7, 0, 0), Us(2017, 1, 25, 11, 35, 1))));
}

TEST_F(SearchIndexTest, TimingEventsElseBoundsPeriod) {
  const IndexEntries preg = Index(Load("CarePlan-preg.json"));
  EXPECT_THAT(Of(preg.dates, "activity-date"),
              UnorderedElementsAre(Range(Us(2013, 2, 14), Us(2013, 3, 1)), Range(Us(2013, 3, 1), Us(2013, 3, 15)),
                                   Range(Us(2013, 9, 1), Us(2013, 9, 15))));

  // Events win over the bounds.
  const IndexEntries events = Index(Load("CarePlan-preg.json", {{R"("scheduledTiming": {
          "repeat": {
            "boundsPeriod": {
              "start": "2013-02-14",
              "end": "2013-02-28"
            }
          }
        })",
                                                                 R"("scheduledTiming": {
          "event": ["2013-02-15T09:00:00Z", "2013-02-16"],
          "repeat": {"boundsPeriod": {"start": "2013-02-14", "end": "2013-02-28"}}
        })"}}));
  EXPECT_THAT(
      Of(events.dates, "activity-date"),
      UnorderedElementsAre(Range(Us(2013, 2, 15, 9), Us(2013, 2, 15, 9, 0, 1)), Range(Us(2013, 2, 16), Us(2013, 2, 17)),
                           Range(Us(2013, 3, 1), Us(2013, 3, 15)), Range(Us(2013, 9, 1), Us(2013, 9, 15))));
}

TEST_F(SearchIndexTest, ChoiceElementsOfOtherTypesAreNoDates) {
  // onsetAge is a quantity, not a date.
  const IndexEntries idx = Index(Load("Condition-f202.json"));
  EXPECT_THAT(Of(idx.dates, "onset-date"), IsEmpty());
  EXPECT_THAT(Of(idx.quantities, "onset-age"), ElementsAre("52..52 http://unitsofmeasure.org|a years"));
  EXPECT_THAT(Of(idx.quantities, "abatement-age"), ElementsAre("54..54 http://unitsofmeasure.org|a years"));

  // Immunization.occurrence (in clinical-date) takes every type of the
  // choice; occurrenceString stays a string even where it reads as a year.
  const IndexEntries historical = Index(Load("Immunization-historical.json"));
  EXPECT_THAT(Of(historical.dates, "date"), IsEmpty());
  const IndexEntries year = Index(Load("Immunization-historical.json",
                                       {{R"("occurrenceString": "January 2012")", R"("occurrenceString": "2012")"}}));
  EXPECT_THAT(Of(year.dates, "date"), IsEmpty());
  const IndexEntries date = Index(Load("Immunization-historical.json",
                                       {{R"("occurrenceString": "January 2012")", R"("occurrenceDateTime": "2012")"}}));
  EXPECT_THAT(Of(date.dates, "date"), ElementsAre(Range(Us(2012, 1, 1), Us(2013, 1, 1))));
}

// ---------------------------------------------------------------------------
// reference

TEST_F(SearchIndexTest, RelativeReferences) {
  const IndexEntries idx = Index(Load("Observation-example.json"));
  EXPECT_THAT(Of(idx.references, "subject"), ElementsAre("Patient/example"));
  EXPECT_THAT(Of(idx.references, "patient"), ElementsAre("Patient/example"));
  const IndexEntries patient = Index(Load("Patient-example.json"));
  EXPECT_THAT(Of(patient.references, "organization"), ElementsAre("Organization/1"));

  // A versioned reference names the resource; the version is not kept.
  const IndexEntries versioned =
      Index(Load("Observation-example.json",
                 {{R"("reference": "Patient/example")", R"("reference": "Patient/example/_history/2")"}}));
  EXPECT_THAT(Of(versioned.references, "subject"), ElementsAre("Patient/example"));
}

TEST_F(SearchIndexTest, AbsoluteContainedAndUrnReferences) {
  const IndexEntries coverage = Index(Load("Coverage-9876B1.json"));
  EXPECT_THAT(Of(coverage.references, "policy-holder"),
              ElementsAre("Organization/CBI35 url=http://benefitsinc.com/FHIR/Organization/CBI35"));
  EXPECT_THAT(Of(coverage.references, "subscriber"), ElementsAre("Patient/4"));

  // The URL does not end in a known type ("claim" is no type name): only the URL.
  const IndexEntries notice = Index(Load("PaymentNotice-77654.json"));
  EXPECT_THAT(Of(notice.references, "request"), ElementsAre("/ url=http://benefitsinc.com/fhir/claim/12345"));

  const IndexEntries careplan = Index(Load("CarePlan-example.json"));
  EXPECT_THAT(Of(careplan.references, "condition"), ElementsAre("/ url=#p1"));

  const IndexEntries urn = Index(
      Load("Observation-example.json",
           {{R"("reference": "Patient/example")", R"("reference": "urn:uuid:04121321-4af5-424c-a0e1-ed3aab1c349d")"}}));
  EXPECT_THAT(Of(urn.references, "subject"), ElementsAre("/ url=urn:uuid:04121321-4af5-424c-a0e1-ed3aab1c349d"));
}

TEST_F(SearchIndexTest, CanonicalReferencesSplitTheVersion) {
  const IndexEntries relative = Index(Load("QuestionnaireResponse-gcs.json"));
  EXPECT_THAT(Of(relative.references, "questionnaire"), ElementsAre("Questionnaire/gcs"));

  const IndexEntries versioned = Index(
      Load("QuestionnaireResponse-gcs.json", {{R"("questionnaire": "Questionnaire/gcs")",
                                               R"("questionnaire": "http://hl7.org/fhir/Questionnaire/gcs|3.0")"}}));
  EXPECT_THAT(Of(versioned.references, "questionnaire"),
              ElementsAre("Questionnaire/gcs url=http://hl7.org/fhir/Questionnaire/gcs version=3.0"));

  // A canonical to a contained definition.
  const IndexEntries plan = Index(Load("PlanDefinition-protocol-example.json"));
  EXPECT_THAT(Of(plan.references, "definition"), ElementsAre("/ url=#procedure"));
}

TEST_F(SearchIndexTest, ReferenceIdentifierIsAToken) {
  const IndexEntries idx = Index(Load("Claim-100154.json"));
  EXPECT_THAT(Of(idx.tokens, "insurer"), ElementsAre("http://www.jurisdiction.com/insurers|123456"));
  EXPECT_THAT(Of(idx.references, "insurer"), IsEmpty());
  EXPECT_THAT(Of(idx.tokens, "provider"), ElementsAre("http://www.jurisdiction.com/careorganizations|HOSP12345"));
}

// ---------------------------------------------------------------------------
// quantity and number

TEST_F(SearchIndexTest, QuantitiesKeepTheirText) {
  const IndexEntries weight = Index(Load("Observation-example.json"));
  EXPECT_THAT(Of(weight.quantities, "value-quantity"), ElementsAre("185..185 http://unitsofmeasure.org|[lb_av] lbs"));

  const IndexEntries glucose = Index(Load("Observation-f001.json"));
  EXPECT_THAT(Of(glucose.quantities, "value-quantity"),
              ElementsAre("6.3..6.3 http://unitsofmeasure.org|mmol/L mmol/l"));

  // Trailing zeros and exponents stay as written.
  const IndexEntries precise = Index(Load("Observation-f001.json", {{R"("value": 6.3,)", R"("value": 6.30,)"}}));
  EXPECT_THAT(Of(precise.quantities, "value-quantity"),
              ElementsAre("6.30..6.30 http://unitsofmeasure.org|mmol/L mmol/l"));
  const IndexEntries exponent = Index(Load("Observation-f001.json", {{R"("value": 6.3,)", R"("value": 6.3e-3,)"}}));
  EXPECT_THAT(Of(exponent.quantities, "value-quantity"),
              ElementsAre("6.3e-3..6.3e-3 http://unitsofmeasure.org|mmol/L mmol/l"));

  const IndexEntries encounter = Index(Load("Encounter-f001.json"));
  EXPECT_THAT(Of(encounter.quantities, "length"), ElementsAre("140..140 http://unitsofmeasure.org|min min"));
}

TEST_F(SearchIndexTest, MoneyAndNumbers) {
  const IndexEntries idx = Index(Load("ChargeItem-example.json"));
  EXPECT_THAT(Of(idx.quantities, "price-override"), ElementsAre("40..40 urn:iso:std:iso:4217|EUR "));
  EXPECT_THAT(Of(idx.quantities, "factor-override"), ElementsAre("0.8..0.8 | "));
  EXPECT_THAT(Of(idx.quantities, "quantity"), ElementsAre("1..1 | "));

  const IndexEntries risk = Index(Load("RiskAssessment-genetic.json"));
  const std::vector<std::string> probability = Of(risk.quantities, "probability");
  EXPECT_THAT(probability, Contains("0.000168..0.000168 | "));
  EXPECT_THAT(probability, Contains("0.000368..0.000368 | "));
}

TEST_F(SearchIndexTest, RangesGiveBothEnds) {
  const IndexEntries measure = Index(Load("Measure-measure-cms146-example.json"));
  EXPECT_THAT(Of(measure.quantities, "context-quantity"), ElementsAre("3..18 | a"));

  // A number parameter on a Range has no units and may be open on one side.
  const IndexEntries risk = Index(
      Load("RiskAssessment-cardiac.json",
           {{R"("probabilityDecimal": 0.02)", R"("probabilityRange": {"high": {"value": 0.050, "unit": "%"}})"}}));
  EXPECT_THAT(Of(risk.quantities, "probability"), ElementsAre("..0.050 | "));
}

// ---------------------------------------------------------------------------
// uri

TEST_F(SearchIndexTest, UrisAndMetaProfiles) {
  const IndexEntries definition = Index(Load("ActivityDefinition-citalopramPrescription.json"));
  EXPECT_THAT(Of(definition.uris, "url"),
              ElementsAre("http://motivemi.com/artifacts/ActivityDefinition/citalopramPrescription"));

  const IndexEntries bmi = Index(Load("Observation-bmi.json"));
  EXPECT_THAT(Of(bmi.uris, "_profile"), ElementsAre("http://hl7.org/fhir/StructureDefinition/vitalsigns"));
  EXPECT_THAT(Of(bmi.quantities, "value-quantity"), ElementsAre("16.2..16.2 http://unitsofmeasure.org|kg/m2 kg/m2"));
}

// ---------------------------------------------------------------------------
// composite

TEST_F(SearchIndexTest, CompositeComponentsShareAGroupPerItem) {
  const IndexEntries idx = Index(Load("Observation-blood-pressure.json"));
  std::vector<std::vector<std::string>> groups;
  for (auto& [group, entries] : Groups(idx, "component-code-value-quantity")) {
    EXPECT_GE(group, 1);
    groups.push_back(entries);
  }
  EXPECT_THAT(
      groups,
      UnorderedElementsAre(
          UnorderedElementsAre(
              "component-code-value-quantity$0: http://loinc.org|8480-6 text=systolic blood pressure",
              "component-code-value-quantity$0: http://snomed.info/sct|271649006 text=systolic blood pressure",
              "component-code-value-quantity$0: http://acme.org/devices/clinical-codes|bp-s text=systolic "
              "blood pressure",
              "component-code-value-quantity$1: 107..107 http://unitsofmeasure.org|mm[Hg] mmHg"),
          UnorderedElementsAre("component-code-value-quantity$0: http://loinc.org|8462-4 text=diastolic blood pressure",
                               "component-code-value-quantity$1: 60..60 http://unitsofmeasure.org|mm[Hg] mmHg")));

  // combo- evaluates on the Observation itself too, but that has no value:
  // a group without one of its components could never match, and is left out.
  EXPECT_EQ(Groups(idx, "combo-code-value-quantity").size(), 2u);
  EXPECT_THAT(Groups(idx, "code-value-quantity"), IsEmpty());
  // Groups are unique across the composites of one resource.
  std::set<int> seen;
  for (const char* code : {"component-code-value-quantity", "combo-code-value-quantity", "code-value-quantity",
                           "component-code-value-concept"}) {
    for (auto& [group, entries] : Groups(idx, code)) EXPECT_TRUE(seen.insert(group).second) << code << " " << group;
  }
  // The plain parameters are there too, with group 0.
  EXPECT_THAT(Of(idx.quantities, "component-value-quantity"),
              UnorderedElementsAre("107..107 http://unitsofmeasure.org|mm[Hg] mmHg",
                                   "60..60 http://unitsofmeasure.org|mm[Hg] mmHg"));
  for (const QuantityEntry& e : idx.quantities) {
    EXPECT_EQ(e.group == 0, e.param.find('$') == std::string::npos) << e.param;
  }
}

TEST_F(SearchIndexTest, CompositeOnTheResourceItself) {
  const IndexEntries idx = Index(Load("Observation-example.json"));
  const std::map<int, std::vector<std::string>> groups = Groups(idx, "code-value-quantity");
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_THAT(groups.begin()->second,
              Contains("code-value-quantity$1: 185..185 http://unitsofmeasure.org|[lb_av] lbs"));
  EXPECT_THAT(groups.begin()->second, Contains("code-value-quantity$0: http://loinc.org|29463-7 text=body weight"));
}

TEST_F(SearchIndexTest, CompositeRangeAndComponentsFromTheResource) {
  const IndexEntries measure = Index(Load("Measure-measure-cms146-example.json"));
  std::vector<std::vector<std::string>> groups;
  for (auto& [group, entries] : Groups(measure, "context-type-quantity")) groups.push_back(entries);
  // The useContext with a Range; the other one has a CodeableConcept value,
  // so only context-type-value has a group for it.
  EXPECT_THAT(groups, ElementsAre(UnorderedElementsAre(
                          "context-type-quantity$0: http://terminology.hl7.org/CodeSystem/usage-context-type|age",
                          "context-type-quantity$1: 3..18 | a")));
  std::vector<std::vector<std::string>> values;
  for (auto& [group, entries] : Groups(measure, "context-type-value")) values.push_back(entries);
  EXPECT_THAT(values, ElementsAre(UnorderedElementsAre("context-type-value$0: program",
                                                       "context-type-value$1:  text=eligibile-provider")));

  // "%resource.referenceSeq.referenceSeqId" is the resource's, not the
  // variant's.
  const IndexEntries sequence = Index(Load("MolecularSequence-example-pgx-1.json"));
  std::vector<std::vector<std::string>> coordinates;
  for (auto& [group, entries] : Groups(sequence, "referenceseqid-variant-coordinate")) coordinates.push_back(entries);
  EXPECT_THAT(coordinates, ElementsAre(UnorderedElementsAre(
                               "referenceseqid-variant-coordinate$0: http://www.ncbi.nlm.nih.gov/nuccore|NG_007726.3",
                               "referenceseqid-variant-coordinate$1: 55227976..55227976 | ",
                               "referenceseqid-variant-coordinate$2: 55227977..55227977 | ")));
}

// ---------------------------------------------------------------------------
// _text, _content and what is not indexed

TEST_F(SearchIndexTest, NarrativeAndContent) {
  const IndexEntries idx = Index(Load("Patient-example.json"));
  EXPECT_EQ(idx.narrative,
            "Name Peter James Chalmers (\"Jim\") Address 534 Erewhon, Pleasantville, Vic, 3999 Contacts Home: "
            "unknown. Work: (03) 5555 6473 Id MRN: 12345 (Acme Healthcare)");
  EXPECT_THAT(idx.content, HasSubstr("Chalmers"));
  EXPECT_THAT(idx.content, HasSubstr("urn:oid:1.2.36.146.595.217.0.1"));
  EXPECT_THAT(idx.content, HasSubstr("Bénédicte"));  // contact, though no parameter covers it
  EXPECT_THAT(idx.content, HasSubstr("Acme Healthcare"));
  EXPECT_THAT(idx.content, HasSubstr("generated"));  // text.status is content; text.div is not
  EXPECT_THAT(idx.content, Not(HasSubstr("<")));
}

TEST_F(SearchIndexTest, NarrativeEntitiesAndInlineTags) {
  const IndexEntries idx = Index(Load(
      "Patient-example.json",
      {{R"("status": "generated")", R"("status": "additional")"},
       {R"(<td>Id</td>)",
        R"(<td>A &amp; B &lt;x&gt; &quot;q&quot; &#39;s&#39; a&nbsp;b &#x41;&#66; &bogus; Pe<b>ter</b><br/>Ja<!-- c -->mes</td>)"}}));
  EXPECT_THAT(idx.narrative, HasSubstr("A & B <x> \"q\" 's' a b AB &bogus; Peter Ja mes MRN"));
  EXPECT_THAT(idx.content, HasSubstr("additional"));
  EXPECT_THAT(idx.content, Not(HasSubstr("&amp;")));
}

TEST_F(SearchIndexTest, ServerColumnsAndSpecialParametersAreNotIndexed) {
  for (const char* file : {"Patient-example.json", "Location-1.json", "Observation-bmi.json"}) {
    const IndexEntries idx = Index(Load(file));
    const std::set<std::string> params = Params(idx);
    EXPECT_FALSE(params.contains("_id")) << file;
    EXPECT_FALSE(params.contains("_lastUpdated")) << file;
    EXPECT_FALSE(params.contains("near")) << file;
    EXPECT_FALSE(params.contains("_text")) << file;
    EXPECT_FALSE(params.contains("_content")) << file;
    EXPECT_FALSE(params.empty()) << file;
  }
}

TEST_F(SearchIndexTest, NoDuplicateEntries) {
  // Patient.name and Patient.phonetic read the same names; "Peter" occurs
  // twice in each, and the Observation's subject is also its patient.
  const IndexEntries idx = Index(Load("Patient-example.json"));
  for (const std::string& param : {std::string("name"), std::string("phonetic")}) {
    const std::vector<std::string> values = Of(idx.strings, param);
    EXPECT_EQ(std::set<std::string>(values.begin(), values.end()).size(), values.size()) << param;
  }
  EXPECT_EQ(Of(idx.strings, "phonetic").size(), 5u);
}

TEST_F(SearchIndexTest, MalformedValuesAreSkipped) {
  const IndexEntries idx = Index(Parse(R"({
    "resourceType": "Observation",
    "status": 7,
    "code": {"coding": [{"system": 5}, "junk", {"code": "x"}]},
    "subject": {"reference": ""},
    "effectiveDateTime": "2021-02-30",
    "valueQuantity": {"value": "12", "unit": "mg"},
    "issued": {"start": "nope"},
    "identifier": [{"use": "official"}]
  })"));
  EXPECT_THAT(Of(idx.tokens, "code"), ElementsAre("x"));
  EXPECT_THAT(Of(idx.tokens, "status"), ElementsAre("7"));
  EXPECT_THAT(Of(idx.tokens, "identifier"), IsEmpty());
  EXPECT_THAT(idx.references, IsEmpty());
  EXPECT_THAT(idx.dates, IsEmpty());
  EXPECT_THAT(Of(idx.quantities, "value-quantity"), IsEmpty());
  EXPECT_THAT(idx.narrative, IsEmpty());
}

// ---------------------------------------------------------------------------
// Every official example

class OfficialExamplesTest : public SearchIndexTest {
 protected:
  struct Example {
    std::string file;
    std::string type;
    json::value resource;
  };

  static const std::vector<Example>& Examples() {
    static const std::vector<Example>* examples = [] {
      auto* out = new std::vector<Example>();
      for (medgrid::testing::ExampleFile& f : medgrid::testing::ClinicalAndAdministrativeExamples(*dir_)) {
        out->push_back(Example{f.file, f.type, Parse(f.text)});
      }
      return out;
    }();
    return *examples;
  }
};

TEST_F(OfficialExamplesTest, EveryExampleIndexesItsWellKnownParameters) {
  ASSERT_GT(Examples().size(), 700u);
  int patients_with_names = 0;
  int observations_with_codes = 0;
  int quantities_checked = 0;
  for (const Example& ex : Examples()) {
    SCOPED_TRACE(ex.file);
    const json::value& r = ex.resource;
    const IndexEntries idx = ExtractIndex(r, ex.type, *params_);
    const json::object& obj = r.as_object();

    // Entries name parameters of the type (composite components as "c$i",
    // grouped), never the excluded ones, and never twice.
    std::set<std::string> described;
    auto check = [&](const auto& entries) {
      for (const auto& e : entries) {
        const std::size_t dollar = e.param.find('$');
        const std::string code = e.param.substr(0, dollar);
        const fhir::SearchParamDef* def = params_->Find(ex.type, code);
        ASSERT_NE(def, nullptr) << e.param;
        EXPECT_NE(def->type, "special") << e.param;
        EXPECT_NE(code, "_id");
        EXPECT_NE(code, "_lastUpdated");
        EXPECT_EQ(dollar != std::string::npos, def->type == "composite") << e.param;
        EXPECT_EQ(dollar != std::string::npos, e.group >= 1) << e.param;
        EXPECT_TRUE(described.insert(core::StrCat(e.param, " ", e.group, " ", Describe(e))).second)
            << "duplicate " << e.param << " " << Describe(e);
      }
    };
    check(idx.strings);
    check(idx.tokens);
    check(idx.dates);
    check(idx.references);
    check(idx.quantities);
    check(idx.uris);
    // Every composite group has entries for each of its components.
    std::map<std::pair<std::string, int>, std::set<std::string>> components;  // (code, group) -> params
    for (const std::string& line : described) {
      const std::size_t dollar = line.find('$');
      if (dollar == std::string::npos) continue;
      const std::size_t space = line.find(' ');
      const int group = std::stoi(line.substr(space + 1));
      components[{line.substr(0, dollar), group}].insert(line.substr(0, space));
    }
    std::set<int> groups;
    for (const auto& [key, params] : components) {
      EXPECT_TRUE(groups.insert(key.second).second) << "group " << key.second << " is shared";
      EXPECT_EQ(params.size(), params_->Find(ex.type, key.first)->components.size()) << key.first;
    }
    for (const StringEntry& e : idx.strings) {
      EXPECT_FALSE(e.exact.empty()) << e.param;
      EXPECT_EQ(e.folded, FoldText(e.exact)) << e.param;
    }
    for (const DateEntry& e : idx.dates) EXPECT_LT(e.lo, e.hi) << e.param;

    if (ex.type == "Patient" && obj.contains("name")) {
      ++patients_with_names;
      EXPECT_FALSE(Of(idx.strings, "name").empty());
    }
    if (ex.type == "Observation" && obj.contains("code")) {
      const json::value& code = obj.at("code");
      const std::size_t codings = code.as_object().contains("coding") ? code.at("coding").as_array().size() : 0;
      if (codings > 0) {
        ++observations_with_codes;
        EXPECT_GE(Of(idx.tokens, "code").size(), 1u);
      }
      if (const json::value* q = obj.if_contains("valueQuantity"); q != nullptr && q->as_object().contains("value")) {
        const json::value& value = q->at("value");
        const std::string text =
            fhir::IsDecimal(value) ? std::string(fhir::DecimalText(value)) : std::to_string(value.as_int64());
        bool found = false;
        for (const QuantityEntry& e : idx.quantities) {
          found |= e.param == "value-quantity" && e.low == text && e.high == text;
        }
        EXPECT_TRUE(found) << text;
        ++quantities_checked;
      }
    }
    if (ex.type == "Observation" || ex.type == "Condition" || ex.type == "Encounter") {
      if (const json::value* subject = obj.if_contains("subject");
          subject != nullptr && subject->as_object().contains("reference")) {
        EXPECT_FALSE(Of(idx.references, "subject").empty());
      }
    }
    if (const json::value* text = obj.if_contains("text"); text != nullptr && text->as_object().contains("div")) {
      // Some narratives are only whitespace or an image.
      EXPECT_EQ(idx.narrative.empty(), !HasTextOutsideTags(text->at("div").as_string()));
      EXPECT_THAT(idx.narrative, Not(HasSubstr("<div")));
    }
    EXPECT_FALSE(idx.content.empty());
    EXPECT_THAT(idx.content, Not(HasSubstr("<div")));
  }
  EXPECT_GT(patients_with_names, 15);
  EXPECT_GT(observations_with_codes, 50);
  EXPECT_GT(quantities_checked, 20);
}

TEST_F(OfficialExamplesTest, ConcurrentExtractionMatchesSequential) {
  std::vector<std::vector<std::string>> expected;
  for (const Example& ex : Examples()) expected.push_back(Dump(ExtractIndex(ex.resource, ex.type, *params_)));
  constexpr int kThreads = 4;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread walks the examples from a different start, so that
      // different threads evaluate the same expressions at the same time.
      const std::size_t n = Examples().size();
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (k + static_cast<std::size_t>(t) * n / kThreads) % n;
        if (Dump(ExtractIndex(Examples()[i].resource, Examples()[i].type, *params_)) != expected[i]) ++mismatches[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(mismatches, Each(0));
}

TEST_F(OfficialExamplesTest, PrintsTheAverageExtractionTime) {
  const std::vector<Example>& examples = Examples();  // parsed before the clock starts
  std::size_t entries = 0;
  const auto start = std::chrono::steady_clock::now();
  constexpr int kRounds = 3;
  for (int round = 0; round < kRounds; ++round) {
    for (const Example& ex : examples) {
      const IndexEntries idx = ExtractIndex(ex.resource, ex.type, *params_);
      entries += idx.strings.size() + idx.tokens.size() + idx.dates.size() + idx.references.size() +
                 idx.quantities.size() + idx.uris.size();
    }
  }
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  const double n = static_cast<double>(examples.size()) * kRounds;
  std::printf("ExtractIndex: %zu examples, %.1f us per resource on average, %.1f entries per resource\n",
              examples.size(), us / n, static_cast<double>(entries) / n);
  EXPECT_GT(entries, 0u);
}

}  // namespace
}  // namespace medgrid::search
