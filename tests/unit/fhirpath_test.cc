// Tests for the FHIRPath evaluator: hand-written cases with exact results,
// and every expression of the official R4 search parameters parsed and
// evaluated on the official examples (MEDGRID_FHIR_PACKAGE).
#include "medgrid/fhir/fhirpath.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/official_examples.h"
#include "medgrid/fhir/json.h"

namespace medgrid::fhir {
namespace {

namespace json = boost::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

json::value Json(std::string_view text) {
  absl::StatusOr<json::value> v = ParseJson(text);
  EXPECT_TRUE(v.ok()) << v.status() << "\n" << text;
  return v.ok() ? *std::move(v) : json::value();
}

// The results of `expression` on `resource`, each serialized as JSON; a
// failure to parse or evaluate is a test failure.
std::vector<std::string> Eval(std::string_view expression, const json::value& resource) {
  absl::StatusOr<FhirPath> path = FhirPath::Parse(expression);
  if (!path.ok()) {
    ADD_FAILURE() << expression << ": " << path.status();
    return {};
  }
  absl::StatusOr<std::vector<FhirPathItem>> items = path->Evaluate(resource);
  if (!items.ok()) {
    ADD_FAILURE() << expression << ": " << items.status();
    return {};
  }
  std::vector<std::string> out;
  for (const FhirPathItem& item : *items) out.push_back(SerializeJson(*item.value));
  return out;
}

// The type hints of the results.
std::vector<std::string> Types(std::string_view expression, const json::value& resource) {
  absl::StatusOr<FhirPath> path = FhirPath::Parse(expression);
  EXPECT_TRUE(path.ok()) << path.status();
  if (!path.ok()) return {};
  absl::StatusOr<std::vector<FhirPathItem>> items = path->Evaluate(resource);
  EXPECT_TRUE(items.ok()) << items.status();
  if (!items.ok()) return {};
  std::vector<std::string> out;
  for (const FhirPathItem& item : *items) out.emplace_back(item.type);
  return out;
}

const json::value& Patient() {
  static const json::value kPatient = Json(R"({
    "resourceType": "Patient", "id": "p1",
    "extension": [
      {"url": "http://example.org/fhir/eye-colour", "valueCodeableConcept": {"text": "blue"}},
      {"url": "http://example.org/fhir/other", "valueString": "x"}],
    "name": [
      {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
      {"use": "usual", "given": ["Jim"]}],
    "telecom": [{"system": "phone", "value": "555-1234"}, {"system": "email", "value": "p@example.org"}],
    "deceasedBoolean": false
  })");
  return kPatient;
}

const json::value& Observation() {
  static const json::value kObservation = Json(R"({
    "resourceType": "Observation", "id": "o1", "status": "final",
    "contained": [{"resourceType": "Organization", "id": "org", "name": "Acme"}],
    "code": {"text": "weight"},
    "subject": {"reference": "Patient/p1"},
    "performer": [
      {"reference": "Practitioner/x"},
      {"reference": "http://example.org/fhir/Patient/p2/_history/3"},
      {"reference": "#org"},
      {"display": "no reference"},
      {"type": "RelatedPerson", "identifier": {"value": "r1"}}],
    "valueQuantity": {"value": 72.50, "unit": "kg"},
    "component": [
      {"code": {"text": "a"}, "valueQuantity": {"value": 1}},
      {"code": {"text": "b"}, "valueString": "s"},
      {"code": {"text": "c"}, "valueCodeableConcept": {"text": "cc"}}]
  })");
  return kObservation;
}

// ---------------------------------------------------------------------------
// Navigation

TEST(FhirPathTest, NavigatesAndFlattensArrays) {
  EXPECT_THAT(Eval("Patient.name.given", Patient()), ElementsAre("\"Peter\"", "\"James\"", "\"Jim\""));
  EXPECT_THAT(Eval("name.family", Patient()), ElementsAre("\"Chalmers\""));
  EXPECT_THAT(Eval("Patient.photo", Patient()), IsEmpty());
}

TEST(FhirPathTest, LeadingTypeNameFiltersTheResource) {
  EXPECT_THAT(Eval("Patient.id", Patient()), ElementsAre("\"p1\""));
  EXPECT_THAT(Eval("Resource.id", Patient()), ElementsAre("\"p1\""));
  EXPECT_THAT(Eval("DomainResource.id", Patient()), ElementsAre("\"p1\""));
  EXPECT_THAT(Eval("Observation.id", Patient()), IsEmpty());
  EXPECT_THAT(Eval("DomainResource.id", Json(R"({"resourceType": "Bundle", "id": "b"})")), IsEmpty());
  EXPECT_THAT(Eval("Resource.id", Json(R"({"resourceType": "Bundle", "id": "b"})")), ElementsAre("\"b\""));
}

TEST(FhirPathTest, WhereFiltersItems) {
  EXPECT_THAT(Eval("Patient.name.where(use='official').family", Patient()), ElementsAre("\"Chalmers\""));
  EXPECT_THAT(Eval("Patient.telecom.where(system='email').value", Patient()), ElementsAre("\"p@example.org\""));
  EXPECT_THAT(Eval("Patient.name.given.where($this = 'Jim')", Patient()), ElementsAre("\"Jim\""));
  EXPECT_THAT(Eval("Patient.telecom.where(value.startsWith('555')).system", Patient()), ElementsAre("\"phone\""));
  EXPECT_THAT(Eval("Patient.name.where(use='temp')", Patient()), IsEmpty());
}

TEST(FhirPathTest, Indexer) {
  EXPECT_THAT(Eval("Patient.name[1].given", Patient()), ElementsAre("\"Jim\""));
  EXPECT_THAT(Eval("Patient.name.given[1]", Patient()), ElementsAre("\"James\""));  // of the flattened list
  EXPECT_THAT(Eval("Patient.name[2]", Patient()), IsEmpty());
  const json::value bundle = Json(R"({"resourceType": "Bundle", "type": "document", "entry": [
      {"resource": {"resourceType": "Composition", "id": "c1"}},
      {"resource": {"resourceType": "Patient", "id": "p1"}}]})");
  EXPECT_THAT(Eval("Bundle.entry[0].resource", bundle), ElementsAre(R"({"resourceType":"Composition","id":"c1"})"));
  EXPECT_THAT(Eval("Bundle.entry[1].resource.id", bundle), ElementsAre("\"p1\""));
  EXPECT_THAT(Eval("Bundle.entry.resource.ofType(Patient).id", bundle), ElementsAre("\"p1\""));
  EXPECT_THAT(Eval("Bundle.entry[0].resource.as(Composition).id", bundle), ElementsAre("\"c1\""));
  EXPECT_THAT(Eval("Bundle.entry[0].resource is DomainResource", bundle), ElementsAre("true"));
}

// ---------------------------------------------------------------------------
// Choice elements and types

TEST(FhirPathTest, ChoiceElementsAndAs) {
  const std::string quantity = R"({"value":72.50,"unit":"kg"})";
  EXPECT_THAT(Eval("Observation.value", Observation()), ElementsAre(quantity));
  EXPECT_THAT(Types("Observation.value", Observation()), ElementsAre("Quantity"));
  EXPECT_THAT(Eval("Observation.value as Quantity", Observation()), ElementsAre(quantity));
  EXPECT_THAT(Eval("(Observation.value as Quantity).unit", Observation()), ElementsAre("\"kg\""));
  EXPECT_THAT(Eval("Observation.value.as(Quantity)", Observation()), ElementsAre(quantity));
  EXPECT_THAT(Eval("Observation.value.as(FHIR.Quantity)", Observation()), ElementsAre(quantity));
  EXPECT_THAT(Eval("Observation.value.ofType(Quantity)", Observation()), ElementsAre(quantity));
  EXPECT_THAT(Eval("Observation.value as string", Observation()), IsEmpty());
  EXPECT_THAT(Eval("Observation.value is Quantity", Observation()), ElementsAre("true"));
  EXPECT_THAT(Eval("Observation.value.is(CodeableConcept)", Observation()), ElementsAre("false"));
  // 'as' filters a collection of several items, as search indexing needs.
  EXPECT_THAT(Eval("(Observation.component.value as Quantity) | (Observation.component.value as CodeableConcept)",
                   Observation()),
              ElementsAre(R"({"value":1})", R"({"text":"cc"})"));
  EXPECT_THAT(Eval("(Observation.value as string) | (Observation.component.value as string)", Observation()),
              ElementsAre("\"s\""));
}

TEST(FhirPathTest, ChoiceTypesHonourSpecializations) {
  const json::value date_onset = Json(R"({"resourceType": "Condition", "onsetDateTime": "2020-01-02"})");
  EXPECT_THAT(Eval("Condition.onset.as(dateTime)", date_onset), ElementsAre("\"2020-01-02\""));
  EXPECT_THAT(Eval("(Condition.onset as dateTime)", date_onset), ElementsAre("\"2020-01-02\""));
  EXPECT_THAT(Eval("Condition.onset.as(dateTime) | Condition.onset.as(Period)", date_onset),
              ElementsAre("\"2020-01-02\""));
  EXPECT_THAT(Eval("Condition.onset.as(Period)", date_onset), IsEmpty());
  EXPECT_THAT(Eval("Condition.onset.as(string)", date_onset), IsEmpty());

  const json::value age_onset = Json(R"({"resourceType": "Condition", "onsetAge": {"value": 52, "unit": "a"}})");
  EXPECT_THAT(Eval("Condition.onset.as(Age)", age_onset), ElementsAre(R"({"value":52,"unit":"a"})"));
  EXPECT_THAT(Eval("Condition.onset.as(Quantity)", age_onset), ElementsAre(R"({"value":52,"unit":"a"})"));
  EXPECT_THAT(Eval("Condition.onset.as(Range)", age_onset), IsEmpty());

  const json::value map = Json(R"({"resourceType": "ConceptMap", "sourceCanonical": "http://x/vs"})");
  EXPECT_THAT(Eval("(ConceptMap.source as canonical)", map), ElementsAre("\"http://x/vs\""));
  EXPECT_THAT(Eval("(ConceptMap.source as uri)", map), ElementsAre("\"http://x/vs\""));  // canonical is a uri
}

// A missing member matches a longer sibling only when the rest of the key is
// a type that a choice element can take.
TEST(FhirPathTest, ChoiceVariantsNeedATypeSuffix) {
  const json::value request = Json(R"({"resourceType": "ServiceRequest", "status": "active",
    "performerType": {"text": "nurse"}})");
  EXPECT_THAT(Eval("ServiceRequest.performer", request), IsEmpty());
  EXPECT_THAT(Eval("ServiceRequest.performerType.text", request), ElementsAre("\"nurse\""));

  const json::value observation = Json(R"({"resourceType": "Observation",
    "statusReason": {"text": "entered late"}, "valueSet": "http://x/vs", "code": {"text": "c"},
    "codeFilter": "x"})");
  EXPECT_THAT(Eval("Observation.status", observation), IsEmpty());
  EXPECT_THAT(Eval("Observation.value", observation), IsEmpty());
  EXPECT_THAT(Eval("Observation.code", observation), ElementsAre(R"({"text":"c"})"));  // the exact key only

  // Genuine choices still resolve, whatever the type's spelling and length.
  const json::value choices = Json(R"({"resourceType": "Observation", "statusReason": {"text": "r"},
    "valueSampledData": {"dimensions": 1}, "effectiveDateTime": "2020-01-02",
    "component": [{"valueCodeableConcept": {"text": "cc"}}, {"valueBase64Binary": "AA=="}]})");
  EXPECT_THAT(Eval("Observation.value", choices), ElementsAre(R"({"dimensions":1})"));
  EXPECT_THAT(Types("Observation.value", choices), ElementsAre("SampledData"));
  EXPECT_THAT(Eval("Observation.effective", choices), ElementsAre("\"2020-01-02\""));
  EXPECT_THAT(Types("Observation.effective", choices), ElementsAre("DateTime"));
  EXPECT_THAT(Types("Observation.component.value", choices), ElementsAre("CodeableConcept", "Base64Binary"));
  EXPECT_THAT(Eval("Observation.status", choices), IsEmpty());
  EXPECT_THAT(Eval("Observation.value", Observation()), ElementsAre(R"({"value":72.50,"unit":"kg"})"));
}

TEST(FhirPathTest, PrimitiveTypesFromJson) {
  EXPECT_THAT(Eval("Patient.name.family is System.String", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.family is string", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.deceased is boolean", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("1 is Integer", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("1.5 is decimal", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.first() is HumanName", Patient()), ElementsAre("false"));  // untyped
}

// ---------------------------------------------------------------------------
// resolve()

TEST(FhirPathTest, ResolveTypesReferencesWithoutLoadingThem) {
  EXPECT_THAT(Eval("Observation.subject.where(resolve() is Patient)", Observation()),
              ElementsAre(R"({"reference":"Patient/p1"})"));
  EXPECT_THAT(Eval("Observation.subject.where(resolve() is Group)", Observation()), IsEmpty());
  EXPECT_THAT(Eval("Observation.performer.where(resolve() is Patient).reference", Observation()),
              ElementsAre("\"http://example.org/fhir/Patient/p2/_history/3\""));
  EXPECT_THAT(Eval("Observation.performer.where(resolve() is Practitioner).reference", Observation()),
              ElementsAre("\"Practitioner/x\""));
  EXPECT_THAT(Eval("Observation.performer.where(resolve() is RelatedPerson).identifier.value", Observation()),
              ElementsAre("\"r1\""));  // from Reference.type
  EXPECT_THAT(Types("Observation.performer.resolve()", Observation()),
              ElementsAre("Practitioner", "Patient", "", "RelatedPerson"));
  // A stand-in has no members: resolve() did not load the Patient.
  EXPECT_THAT(Eval("Observation.subject.resolve().reference", Observation()), IsEmpty());
}

TEST(FhirPathTest, ResolveFindsContainedResources) {
  EXPECT_THAT(Eval("Observation.performer.where(resolve() is Organization).reference", Observation()),
              ElementsAre("\"#org\""));
  EXPECT_THAT(Eval("Observation.performer.resolve().name", Observation()), ElementsAre("\"Acme\""));
}

TEST(FhirPathTest, ResolveOnCanonicals) {
  const json::value def = Json(R"({"resourceType": "PlanDefinition", "relatedArtifact": [
      {"type": "depends-on", "resource": "http://example.org/fhir/Library/lib|1.0"},
      {"type": "composed-of", "resource": "http://example.org/fhir/PlanDefinition/sub"}]})");
  EXPECT_THAT(Eval("PlanDefinition.relatedArtifact.where(type='depends-on').resource", def),
              ElementsAre("\"http://example.org/fhir/Library/lib|1.0\""));
  EXPECT_THAT(Eval("PlanDefinition.relatedArtifact.resource.where(resolve() is Library)", def),
              ElementsAre("\"http://example.org/fhir/Library/lib|1.0\""));
}

// ---------------------------------------------------------------------------
// Functions and operators

TEST(FhirPathTest, ExtensionSelectsByUrl) {
  EXPECT_THAT(Eval("Patient.extension('http://example.org/fhir/eye-colour').value", Patient()),
              ElementsAre(R"({"text":"blue"})"));
  EXPECT_THAT(Types("Patient.extension('http://example.org/fhir/eye-colour').value", Patient()),
              ElementsAre("CodeableConcept"));
  EXPECT_THAT(Eval("Patient.extension('http://example.org/fhir/none')", Patient()), IsEmpty());
  EXPECT_THAT(Eval("extension('http://example.org/fhir/other').value as string", Patient()), ElementsAre("\"x\""));
}

TEST(FhirPathTest, ExistsEmptyFirstLastNot) {
  EXPECT_THAT(Eval("Patient.name.exists()", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.photo.exists()", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("Patient.name.exists(use='usual')", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.exists(use='temp')", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("Patient.name.all(given.exists())", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.all(family.exists())", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("Patient.photo.empty()", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.given.first()", Patient()), ElementsAre("\"Peter\""));
  EXPECT_THAT(Eval("Patient.name.given.last()", Patient()), ElementsAre("\"Jim\""));
  EXPECT_THAT(Eval("Patient.photo.first()", Patient()), IsEmpty());
  EXPECT_THAT(Eval("Patient.deceased.not()", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.photo.not()", Patient()), IsEmpty());
  EXPECT_THAT(Eval("Patient.id.hasValue()", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.first().hasValue()", Patient()), ElementsAre("false"));
}

TEST(FhirPathTest, UnionMergesAndRemovesDuplicates) {
  EXPECT_THAT(Eval("Patient.name.family | Patient.telecom.value", Patient()),
              ElementsAre("\"Chalmers\"", "\"555-1234\"", "\"p@example.org\""));
  EXPECT_THAT(Eval("Patient.name.use | Patient.name.use", Patient()), ElementsAre("\"official\"", "\"usual\""));
  EXPECT_THAT(Eval("Patient.telecom.where(system='email') | Person.telecom.where(system='email')", Patient()),
              ElementsAre(R"({"system":"email","value":"p@example.org"})"));
}

TEST(FhirPathTest, EqualityAndMembership) {
  EXPECT_THAT(Eval("'a' = 'a'", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("1 = 1.0", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Observation.value.value = 72.5", Observation()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.given = 'Peter'", Patient()), ElementsAre("false"));  // 3 items vs 1
  EXPECT_THAT(Eval("'1' = 1", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("Patient.photo = 'x'", Patient()), IsEmpty());
  EXPECT_THAT(Eval("Patient.deceased != false", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("'Jim' in Patient.name.given", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.given contains 'Zed'", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("Patient.name.family.contains('alm')", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("Patient.name.family.endsWith('ers')", Patient()), ElementsAre("true"));
}

TEST(FhirPathTest, ThreeValuedLogic) {
  EXPECT_THAT(Eval("true and false", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("true and {}", Patient()), IsEmpty());
  EXPECT_THAT(Eval("{} and false", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("true or {}", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("{} or false", Patient()), IsEmpty());
  EXPECT_THAT(Eval("true xor false", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("true xor {}", Patient()), IsEmpty());
  EXPECT_THAT(Eval("false implies {}", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("{} implies true", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("true implies false", Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval("true or false and false", Patient()), ElementsAre("true"));  // 'and' binds tighter
}

// The one R4 search expression with a boolean result (Patient-deceased).
TEST(FhirPathTest, DeceasedSearchExpression) {
  constexpr std::string_view kExpr = "Patient.deceased.exists() and Patient.deceased != false";
  EXPECT_THAT(Eval(kExpr, Patient()), ElementsAre("false"));
  EXPECT_THAT(Eval(kExpr, Json(R"({"resourceType": "Patient", "deceasedBoolean": true})")), ElementsAre("true"));
  EXPECT_THAT(Eval(kExpr, Json(R"({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"})")),
              ElementsAre("true"));
  EXPECT_THAT(Eval(kExpr, Json(R"({"resourceType": "Patient"})")), ElementsAre("false"));
}

TEST(FhirPathTest, Literals) {
  EXPECT_THAT(Eval(R"('it\'s \u00e9 \\ \n')", Patient()), ElementsAre(R"("it's é \\ \n")"));
  EXPECT_THAT(Eval("42", Patient()), ElementsAre("42"));
  EXPECT_THAT(Eval("1.50", Patient()), ElementsAre("1.50"));  // decimal text kept
  EXPECT_THAT(Eval("true", Patient()), ElementsAre("true"));
  EXPECT_THAT(Eval("{}", Patient()), IsEmpty());
  EXPECT_THAT(Eval("Patient.`name`.given // a comment\n .first()", Patient()), ElementsAre("\"Peter\""));
}

TEST(FhirPathTest, MovedPathKeepsLiteralsValid) {
  absl::StatusOr<FhirPath> parsed = FhirPath::Parse("'kept' | Patient.id");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  FhirPath moved = *std::move(parsed);
  absl::StatusOr<std::vector<FhirPathItem>> items = moved.Evaluate(Patient());
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 2u);
  EXPECT_EQ(SerializeJson(*(*items)[0].value), "\"kept\"");
  EXPECT_EQ((*items)[1].value, Patient().get_object().if_contains("id"));  // points into the resource
  EXPECT_EQ(moved.expression(), "'kept' | Patient.id");
}

// ---------------------------------------------------------------------------
// Errors

TEST(FhirPathTest, SyntaxErrorsReportTheOffset) {
  const std::pair<std::string_view, std::string_view> kCases[] = {
      {"Patient.name.", "offset 13"},   {"Patient.name.where(use = 'x'", "offset 28"},
      {"Patient..name", "offset 8"},    {"Patient.name)", "offset 12"},
      {"'unterminated", "offset 0"},    {"Patient # x", "offset 8"},
      {"'bad \\q escape'", "offset 5"}, {"Patient.name as", "offset 15"},
  };
  for (const auto& [expr, where] : kCases) {
    absl::StatusOr<FhirPath> p = FhirPath::Parse(expr);
    ASSERT_FALSE(p.ok()) << expr;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << expr;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(std::string(where))) << expr << ": " << p.status();
  }
}

TEST(FhirPathTest, UnknownFunctionIsNamed) {
  absl::StatusOr<FhirPath> p = FhirPath::Parse("Patient.name.frobnicate()");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("'frobnicate()' at offset 13"));

  p = FhirPath::Parse("Patient.name.where()");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("'where()' at offset 13 takes 1 argument(s), got 0"));
}

TEST(FhirPathTest, UnsupportedConstructsAreUnimplemented) {
  const std::pair<std::string_view, std::string_view> kCases[] = {
      {"Patient.name.count()", "function 'count()'"},
      {"Patient.code.memberOf('http://x')", "function 'memberOf()'"},
      {"Patient.birthDate < @2020-01-01", "operator '<'"},
      {"Patient.multipleBirth + 1", "operator '+'"},
      {"Patient.name ~ Patient.name", "operator '~'"},
      {"-1", "unary '-'"},
      {"@2020-01-01", "date/time literal"},
      {"4 'mg'", "quantity literal"},
      {"%ucum", "environment variable '%ucum'"},
      {"Patient.name.where($index = 0)", "variable '$index'"},
  };
  for (const auto& [expr, what] : kCases) {
    absl::StatusOr<FhirPath> p = FhirPath::Parse(expr);
    ASSERT_FALSE(p.ok()) << expr;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kUnimplemented) << expr << ": " << p.status();
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(std::string(what))) << expr;
  }
}

TEST(FhirPathTest, EvaluationErrorsFollowSingletonRules) {
  absl::StatusOr<FhirPath> p = FhirPath::Parse("Patient.name.where(given)");  // 2 given names in the first
  ASSERT_TRUE(p.ok()) << p.status();
  absl::StatusOr<std::vector<FhirPathItem>> r = p->Evaluate(Patient());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("Patient.name.where(given)"));

  p = FhirPath::Parse("Patient.name[Patient.name.given]");
  ASSERT_TRUE(p.ok()) << p.status();
  r = p->Evaluate(Patient());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  p = FhirPath::Parse("Patient.name['0']");
  ASSERT_TRUE(p.ok()) << p.status();
  r = p->Evaluate(Patient());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("integer"));
}

// ---------------------------------------------------------------------------
// The official search parameters on the official examples

struct SearchParam {
  std::string id;
  std::string expression;
  std::vector<std::string> bases;
};

// Expressions that Parse may refuse, each with the reason. Empty: every R4
// search expression is supported. Any refusal not listed here fails.
const std::map<std::string, std::string>& AllowedParseFailures() {
  static const std::map<std::string, std::string> kAllowed;
  return kAllowed;
}

class OfficialSearchParamsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!params_.empty() || !load_error_.empty()) return;
    const char* dir = std::getenv("MEDGRID_FHIR_PACKAGE");
    if (dir == nullptr || *dir == '\0') {
      load_error_ = "MEDGRID_FHIR_PACKAGE is not set; it must name the package/ folder of hl7.fhir.r4.examples 4.0.1";
      return;
    }
    const std::string file = std::string(dir) + "/Bundle-searchParams.json";
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) {
      load_error_ = "cannot read " + file;
      return;
    }
    absl::StatusOr<json::value> bundle = ParseJson(text.str());
    if (!bundle.ok()) {
      load_error_ = file + ": " + bundle.status().ToString();
      return;
    }
    for (const json::value& entry : bundle->at("entry").as_array()) {
      const json::object& r = entry.at("resource").as_object();
      const json::value* expression = r.if_contains("expression");
      if (expression == nullptr) continue;  // special parameters without a FHIRPath
      SearchParam p{std::string(r.at("id").as_string()), std::string(expression->as_string()), {}};
      for (const json::value& b : r.at("base").as_array()) p.bases.emplace_back(b.as_string());
      params_.push_back(std::move(p));
    }
    for (testing::ExampleFile& f : testing::ClinicalAndAdministrativeExamples(dir)) {
      absl::StatusOr<json::value> v = ParseJson(f.text);
      if (!v.ok()) {
        load_error_ = f.file + ": " + v.status().ToString();
        return;
      }
      examples_[f.type].push_back(*std::move(v));
    }
  }

  void SetUp() override { ASSERT_TRUE(load_error_.empty()) << load_error_; }

  static std::vector<SearchParam> params_;
  static std::map<std::string, std::vector<json::value>> examples_;  // by resourceType
  static std::string load_error_;
};

std::vector<SearchParam> OfficialSearchParamsTest::params_;
std::map<std::string, std::vector<json::value>> OfficialSearchParamsTest::examples_;
std::string OfficialSearchParamsTest::load_error_;

TEST_F(OfficialSearchParamsTest, EveryExpressionParses) {
  // R4 4.0.1 has 1375 search parameters; three (_content, _query, _text)
  // have no expression.
  EXPECT_EQ(params_.size(), 1372u);
  int parsed = 0;
  std::set<std::string> refused;
  for (const SearchParam& p : params_) {
    absl::StatusOr<FhirPath> path = FhirPath::Parse(p.expression);
    if (path.ok()) {
      ++parsed;
      continue;
    }
    refused.insert(p.expression);
    EXPECT_TRUE(AllowedParseFailures().contains(p.expression))
        << "SearchParameter/" << p.id << ": " << p.expression << "\n  " << path.status();
  }
  for (const auto& [expression, reason] : AllowedParseFailures()) {
    EXPECT_TRUE(refused.contains(expression)) << "allow-listed but parses now: " << expression;
  }
  std::printf("search parameter expressions: %zu, parsed: %d, refused (allow-listed): %zu\n", params_.size(), parsed,
              refused.size());
}

TEST_F(OfficialSearchParamsTest, EveryExpressionEvaluatesOnTheExamplesOfItsBases) {
  std::size_t examples = 0;
  for (const auto& [type, list] : examples_) examples += list.size();
  ASSERT_GT(examples, 500u);

  int evaluations = 0, non_empty = 0, params_run = 0, params_hit = 0;
  for (const SearchParam& p : params_) {
    absl::StatusOr<FhirPath> path = FhirPath::Parse(p.expression);
    if (!path.ok()) continue;  // reported by EveryExpressionParses
    bool run = false, hit = false;
    auto evaluate = [&](const json::value& resource) {
      absl::StatusOr<std::vector<FhirPathItem>> items = path->Evaluate(resource);
      ++evaluations;
      run = true;
      if (!items.ok()) {
        ADD_FAILURE() << "SearchParameter/" << p.id << " on " << resource.at("resourceType").as_string() << "/"
                      << (resource.as_object().contains("id") ? resource.at("id").as_string() : "") << ": "
                      << items.status();
        return;
      }
      for (const FhirPathItem& item : *items) {
        EXPECT_NE(item.value, nullptr) << p.id;
      }
      if (!items->empty()) {
        ++non_empty;
        hit = true;
      }
    };
    for (const std::string& base : p.bases) {
      if (base == "Resource" || base == "DomainResource") {
        for (const auto& [type, list] : examples_) {
          if (base == "DomainResource" && (type == "Bundle" || type == "Binary" || type == "Parameters")) continue;
          for (const json::value& r : list) evaluate(r);
        }
      } else if (auto it = examples_.find(base); it != examples_.end()) {
        for (const json::value& r : it->second) evaluate(r);
      }
    }
    params_run += run ? 1 : 0;
    params_hit += hit ? 1 : 0;
  }
  std::printf(
      "examples: %zu; evaluations: %d, non-empty: %d (%.1f%%); parameters with examples: %d, "
      "with a non-empty result on at least one: %d (%.1f%%)\n",
      examples, evaluations, non_empty, 100.0 * non_empty / evaluations, params_run, params_hit,
      100.0 * params_hit / params_run);
  // Most parameters index optional elements, so many evaluations are empty;
  // a broken navigator, though, would leave nearly all of them empty.
  EXPECT_GT(evaluations, 10000);
  EXPECT_GT(non_empty * 4, evaluations);       // > 25% of evaluations find something
  EXPECT_GT(params_hit * 10, params_run * 7);  // > 70% of parameters find something somewhere
}

// Spot checks on named examples, so that the statistics above cannot hide a
// systematically wrong answer for the common expression shapes.
TEST_F(OfficialSearchParamsTest, KnownExampleResults) {
  auto example = [&](const std::string& type, const std::string& id) -> const json::value& {
    static const json::value kNull;
    for (const json::value& r : examples_[type]) {
      if (r.as_object().contains("id") && r.at("id").as_string() == id) return r;
    }
    ADD_FAILURE() << "no example " << type << "/" << id;
    return kNull;
  };
  EXPECT_THAT(Eval("Patient.name.family | Practitioner.name.family", example("Patient", "example")),
              ElementsAre("\"Chalmers\"", "\"Windsor\""));
  EXPECT_THAT(Eval("Observation.subject.where(resolve() is Patient)", example("Observation", "example")),
              ElementsAre(R"({"reference":"Patient/example"})"));
  EXPECT_THAT(
      Types("(Observation.value as Quantity) | (Observation.value as SampledData)", example("Observation", "example")),
      ElementsAre("Quantity"));
}

}  // namespace
}  // namespace medgrid::fhir
