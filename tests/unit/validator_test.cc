// Tests for the StructureRegistry and the structural Validator, against the
// official R4 definitions and examples (MEDGRID_FHIR_PACKAGE).
#include "medgrid/fhir/validator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/official_examples.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/structure.h"

namespace medgrid::fhir {

// Readable failure output; found by argument-dependent lookup.
void PrintTo(const ValidationIssue& issue, std::ostream* os) {
  *os << "[" << issue.code << "] " << issue.path << ": " << issue.message;
}

namespace {

namespace json = boost::json;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// An issue with this code and path whose message names the path.
::testing::Matcher<const ValidationIssue&> IssueAt(const std::string& code, const std::string& path) {
  return AllOf(Field("code", &ValidationIssue::code, code), Field("path", &ValidationIssue::path, path),
               Field("message", &ValidationIssue::message, HasSubstr(path)));
}

std::string Describe(const std::vector<ValidationIssue>& issues) {
  std::string out;
  for (const ValidationIssue& i : issues) out += "  [" + i.code + "] " + i.path + ": " + i.message + "\n";
  return out;
}

// The registry is loaded once for the whole binary: it is immutable, and
// loading it per test would dominate the run time.
class ValidatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (registry_ != nullptr || !load_error_.empty()) return;
    const char* dir = std::getenv("MEDGRID_FHIR_PACKAGE");
    if (dir == nullptr || *dir == '\0') {
      load_error_ = "MEDGRID_FHIR_PACKAGE is not set; it must name the package/ folder of hl7.fhir.r4.examples 4.0.1";
      return;
    }
    package_dir_ = dir;
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<const StructureRegistry>> loaded = StructureRegistry::LoadFromPackage(dir);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    if (!loaded.ok()) {
      load_error_ = loaded.status().ToString();
      return;
    }
    registry_ = *std::move(loaded);
    // Reported, never asserted: tests do not depend on wall-clock speed.
    std::printf("StructureRegistry::LoadFromPackage took %lld ms\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()));
  }

  void SetUp() override { ASSERT_NE(registry_, nullptr) << load_error_; }

  const StructureRegistry& registry() const { return *registry_; }

  std::vector<ValidationIssue> Validate(std::string_view text, std::size_t max_issues = 20) const {
    absl::StatusOr<json::value> doc = ParseJson(text);
    if (!doc.ok()) {
      ADD_FAILURE() << "test JSON does not parse: " << doc.status() << "\n" << text;
      return {};
    }
    return Validator(*registry_).Validate(*doc, max_issues);
  }

  static std::unique_ptr<const StructureRegistry> registry_;
  static std::string load_error_;
  static std::string package_dir_;
};

std::unique_ptr<const StructureRegistry> ValidatorTest::registry_;
std::string ValidatorTest::load_error_;
std::string ValidatorTest::package_dir_;

// ---------------------------------------------------------------------------
// Registry

TEST_F(ValidatorTest, RegistryKnowsConcreteResourceTypes) {
  EXPECT_TRUE(registry().IsResourceType("Patient"));
  EXPECT_TRUE(registry().IsResourceType("Bundle"));
  EXPECT_TRUE(registry().IsResourceType("Parameters"));
  EXPECT_FALSE(registry().IsResourceType("Resource"));
  EXPECT_FALSE(registry().IsResourceType("DomainResource"));
  EXPECT_FALSE(registry().IsResourceType("MetadataResource"));  // a logical model
  EXPECT_FALSE(registry().IsResourceType("HumanName"));
  EXPECT_FALSE(registry().IsResourceType("patient"));
  const std::vector<std::string>& types = registry().ResourceTypes();
  EXPECT_TRUE(std::is_sorted(types.begin(), types.end()));
  // R4 (4.0.1) defines 146 concrete resource types.
  EXPECT_THAT(types, SizeIs(146));
}

TEST_F(ValidatorTest, RegistryKnowsPrimitiveAndComplexTypes) {
  for (const char* p : {"boolean",      "integer",  "string",      "decimal",     "uri",  "url",  "canonical",
                        "base64Binary", "instant",  "date",        "dateTime",    "time", "code", "oid",
                        "id",           "markdown", "unsignedInt", "positiveInt", "uuid", "xhtml"}) {
    EXPECT_TRUE(registry().IsPrimitiveType(p)) << p;
  }
  EXPECT_FALSE(registry().IsPrimitiveType("HumanName"));
  EXPECT_NE(registry().Root("HumanName"), nullptr);
  EXPECT_NE(registry().Root("Element"), nullptr);
  EXPECT_NE(registry().Root("BackboneElement"), nullptr);
  // Profiles constrain a type rather than define one.
  EXPECT_EQ(registry().Root("SimpleQuantity"), nullptr);
  EXPECT_EQ(registry().Root("MoneyQuantity"), nullptr);
}

TEST_F(ValidatorTest, RegistryDescribesElements) {
  const ElementNode* patient = registry().Root("Patient");
  ASSERT_NE(patient, nullptr);
  EXPECT_EQ(patient->path, "Patient");
  EXPECT_EQ(patient->kind, NodeKind::kResource);

  const ElementDef& name = patient->elements.at(patient->by_name.at("name"));
  EXPECT_EQ(name.min, 0);
  EXPECT_EQ(name.max, -1);
  EXPECT_THAT(name.types, ElementsAre("HumanName"));
  EXPECT_EQ(name.type_nodes.at(0), registry().Root("HumanName"));
  EXPECT_EQ(name.children, nullptr);

  // Inherited from Resource and DomainResource.
  EXPECT_TRUE(patient->by_name.contains("id"));
  EXPECT_TRUE(patient->by_name.contains("contained"));

  const ElementDef& contact = patient->elements.at(patient->by_name.at("contact"));
  ASSERT_NE(contact.children, nullptr);
  EXPECT_EQ(contact.children->path, "Patient.contact");
  EXPECT_TRUE(contact.children->by_name.contains("modifierExtension"));

  const ElementDef& deceased = patient->elements.at(patient->by_name.at("deceased"));
  EXPECT_TRUE(deceased.is_choice);
  EXPECT_THAT(deceased.types, ElementsAre("boolean", "dateTime"));
  EXPECT_TRUE(patient->choice_by_name.contains("deceasedBoolean"));
  EXPECT_TRUE(patient->choice_by_name.contains("deceasedDateTime"));

  const ElementNode* observation = registry().Root("Observation");
  ASSERT_NE(observation, nullptr);
  const ElementDef& status = observation->elements.at(observation->by_name.at("status"));
  EXPECT_EQ(status.min, 1);
  EXPECT_EQ(status.max, 1);
  EXPECT_THAT(status.types, ElementsAre("code"));
}

TEST_F(ValidatorTest, RegistryFollowsContentReferences) {
  const ElementNode* questionnaire = registry().Root("Questionnaire");
  ASSERT_NE(questionnaire, nullptr);
  const ElementDef& item = questionnaire->elements.at(questionnaire->by_name.at("item"));
  ASSERT_NE(item.children, nullptr);
  const ElementDef& nested = item.children->elements.at(item.children->by_name.at("item"));
  EXPECT_EQ(nested.children, item.children);
}

TEST_F(ValidatorTest, RegistryMapsSystemTypes) {
  const ElementNode* extension = registry().Root("Extension");
  ASSERT_NE(extension, nullptr);
  const ElementDef& url = extension->elements.at(extension->by_name.at("url"));
  EXPECT_THAT(url.types, ElementsAre("uri"));
  EXPECT_TRUE(url.plain_value);
  const ElementDef& value = extension->elements.at(extension->by_name.at("value"));
  EXPECT_TRUE(value.is_choice);
  EXPECT_THAT(value.types, SizeIs(50));

  const ElementNode* patient = registry().Root("Patient");
  ASSERT_NE(patient, nullptr);
  const ElementDef& id = patient->elements.at(patient->by_name.at("id"));
  EXPECT_THAT(id.types, ElementsAre("id"));
}

TEST(StructureRegistryTest, MissingPackageIsNotFound) {
  absl::StatusOr<std::unique_ptr<const StructureRegistry>> r =
      StructureRegistry::LoadFromPackage("/nonexistent/medgrid/package");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------
// Valid resources

TEST_F(ValidatorTest, MinimalResourcesAreValid) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient"})"), IsEmpty());
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final","code":{"text":"Weight"}})"), IsEmpty());
  EXPECT_THAT(Validate(R"({"resourceType":"Binary","contentType":"text/plain","data":"aGVsbG8="})"), IsEmpty());
}

TEST_F(ValidatorTest, RichPatientIsValid) {
  const auto issues = Validate(R"({
    "resourceType": "Patient",
    "id": "example-1.a",
    "meta": {"versionId": "1", "lastUpdated": "2020-01-02T03:04:05.678+01:00", "tag": [{"system": "urn:x", "code": "t"}]},
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Hi</div>"},
    "contained": [{"resourceType": "Organization", "id": "org", "name": "Acme"}],
    "extension": [{"url": "http://example.org/ext", "valueQuantity": {"value": 1.50, "unit": "kg"}},
                  {"url": "http://example.org/complex", "extension": [{"url": "a", "valueString": "x"}]}],
    "identifier": [{"system": "urn:oid:1.2.3", "value": "123", "period": {"start": "2001"}}],
    "active": true,
    "name": [{"use": "official", "family": "Doe", "given": ["Jane", null, "Q"],
              "_given": [null, {"extension": [{"url": "http://example.org/x", "valueCode": "absent"}]}, null]}],
    "gender": "female",
    "_gender": {"id": "g1"},
    "birthDate": "1970-02-28",
    "deceasedBoolean": false,
    "multipleBirthInteger": 2,
    "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
                 "name": {"family": "Doe"}}],
    "managingOrganization": {"reference": "#org"}
  })");
  EXPECT_THAT(issues, IsEmpty()) << Describe(issues);
}

TEST_F(ValidatorTest, ObservationWithChoicesAndDecimalsIsValid) {
  const auto issues = Validate(R"({
    "resourceType": "Observation", "status": "final", "code": {"text": "BP"},
    "effectiveDateTime": "2021-03-04T05:06:07Z",
    "issued": "2021-03-04T05:06:07.123-05:00",
    "valueQuantity": {"value": 120, "comparator": "<", "unit": "mm[Hg]"},
    "referenceRange": [{"low": {"value": 0.5e1}, "high": {"value": 140}}],
    "component": [{"code": {"text": "x"}, "valueInteger": -2147483648},
                  {"code": {"text": "y"}, "valueTime": "23:59:60.5"},
                  {"code": {"text": "z"}, "valueSampledData": {"origin": {"value": 0}, "period": 1.5, "dimensions": 1}}]
  })");
  EXPECT_THAT(issues, IsEmpty()) << Describe(issues);
}

TEST_F(ValidatorTest, NestedResourcesInBundleAndParametersAreValidated) {
  EXPECT_THAT(Validate(R"({"resourceType": "Bundle", "type": "collection",
      "entry": [{"fullUrl": "urn:uuid:6f4b4a52-6f3c-4a4f-9c1f-3d0c9d5e1a2b", "resource": {"resourceType": "Patient"}}]})"),
              IsEmpty());
  EXPECT_THAT(Validate(R"({"resourceType": "Parameters", "parameter": [
      {"name": "p", "resource": {"resourceType": "Patient", "active": true}},
      {"name": "q", "part": [{"name": "r", "valueInteger": 1}, {"name": "s", "part": [{"name": "t"}]}]}]})"),
              IsEmpty());

  EXPECT_THAT(
      Validate(
          R"({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "foo": 1}}]})"),
      ElementsAre(IssueAt("structure", "Bundle.entry[0].resource.foo")));
  EXPECT_THAT(Validate(R"({"resourceType": "Parameters", "parameter": [
      {"name": "q", "part": [{"name": "s", "part": [{"name": "t", "valueFoo": 1}]}]}]})"),
              ElementsAre(IssueAt("structure", "Parameters.parameter[0].part[0].part[0].valueFoo")));
}

// ---------------------------------------------------------------------------
// Unknown elements

TEST_F(ValidatorTest, UnknownElementAtRoot) {
  const auto issues = Validate(R"({"resourceType":"Patient","foo":"bar"})");
  ASSERT_THAT(issues, ElementsAre(IssueAt("structure", "Patient.foo")));
  EXPECT_EQ(issues[0].message, "Unknown element 'Patient.foo'");
}

TEST_F(ValidatorTest, UnknownElementNested) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"family":"x"},{"family":"y","nickname":"z"}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[1].nickname")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","contact":[{"name":{"family":"x","foo":1}}]})"),
              ElementsAre(IssueAt("structure", "Patient.contact[0].name.foo")));
  // Backbone elements defined through contentReference recurse.
  EXPECT_THAT(Validate(R"({"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group",
                 "item":[{"linkId":"1.1","type":"string","item":[{"linkId":"1.1.1","type":"string","bogus":true}]}]}]})"),
              ElementsAre(IssueAt("structure", "Questionnaire.item[0].item[0].item[0].bogus")));
}

TEST_F(ValidatorTest, UnknownElementInContainedResource) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","contained":[{"resourceType":"Organization","name":"A"},
                 {"resourceType":"Practitioner","id":"p","speciality":"x"}]})"),
              ElementsAre(IssueAt("structure", "Patient.contained[1].speciality")));
}

TEST_F(ValidatorTest, UnknownElementInExtension) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","extension":[{"url":"http://e/x","valueString":"a","foo":1}]})"),
              ElementsAre(IssueAt("structure", "Patient.extension[0].foo")));
  EXPECT_THAT(
      Validate(R"({"resourceType":"Patient","extension":[{"url":"http://e/x","valueCodeableConcept":{"txt":"a"}}]})"),
      ElementsAre(IssueAt("structure", "Patient.extension[0].valueCodeableConcept.txt")));
  EXPECT_THAT(
      Validate(
          R"({"resourceType":"Patient","modifierExtension":[{"url":"http://e/x","extension":[{"url":"a","x":1}]}]})"),
      ElementsAre(IssueAt("structure", "Patient.modifierExtension[0].extension[0].x")));
}

TEST_F(ValidatorTest, UnknownElementInPrimitiveExtension) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","birthDate":"1970","_birthDate":{"foo":1}})"),
              ElementsAre(IssueAt("structure", "Patient.birthDate.foo")));
  EXPECT_THAT(
      Validate(
          R"({"resourceType":"Patient","name":[{"given":["a"],"_given":[{"extension":[{"url":"u","valueFoo":1}]}]}]})"),
      ElementsAre(IssueAt("structure", "Patient.name[0].given[0].extension[0].valueFoo")));
  // Only primitives have "_" twins, and a twin needs a known element.
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","_name":[{"id":"a"}]})"),
              ElementsAre(IssueAt("structure", "Patient._name")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","_foo":{"id":"a"}})"),
              ElementsAre(IssueAt("structure", "Patient._foo")));
  // Element ids and Extension.url are bare JSON values.
  EXPECT_THAT(
      Validate(R"({"resourceType":"Patient","extension":[{"url":"http://e/x","_url":{"id":"a"},"valueString":"a"}]})"),
      ElementsAre(IssueAt("structure", "Patient.extension[0]._url")));
}

TEST_F(ValidatorTest, ResourceTypeOnlyAtResourceRoot) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"resourceType":"HumanName","family":"x"}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0].resourceType")));
}

TEST_F(ValidatorTest, ResourceTypeMustBeConcrete) {
  auto issues = Validate(R"({"resourceType":"Foo"})");
  ASSERT_THAT(issues, SizeIs(1));
  EXPECT_EQ(issues[0].code, "invalid");
  EXPECT_THAT(issues[0].message, HasSubstr("'Foo'"));

  issues = Validate(R"({"resourceType":"DomainResource"})");
  ASSERT_THAT(issues, SizeIs(1));
  EXPECT_EQ(issues[0].code, "invalid");

  issues = Validate(R"({"id":"x"})");
  ASSERT_THAT(issues, SizeIs(1));
  EXPECT_EQ(issues[0].code, "required");

  EXPECT_THAT(Validate(R"({"resourceType":"Patient","contained":[{"resourceType":"HumanName"}]})"),
              ElementsAre(IssueAt("invalid", "Patient.contained[0]")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","contained":[{"id":"x"}]})"),
              ElementsAre(IssueAt("required", "Patient.contained[0]")));

  issues = Validate(R"(["Patient"])");
  ASSERT_THAT(issues, SizeIs(1));
  EXPECT_EQ(issues[0].code, "structure");
}

// ---------------------------------------------------------------------------
// JSON shape and cardinality

TEST_F(ValidatorTest, RepeatingElementMustBeArray) {
  const auto issues = Validate(R"({"resourceType":"Patient","name":{"family":"x"}})");
  ASSERT_THAT(issues, ElementsAre(IssueAt("structure", "Patient.name")));
  EXPECT_THAT(issues[0].message, HasSubstr("must be an array"));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"given":"Jane"}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0].given")));
}

TEST_F(ValidatorTest, SingleElementMustNotBeArray) {
  const auto issues = Validate(R"({"resourceType":"Patient","gender":["female"]})");
  ASSERT_THAT(issues, ElementsAre(IssueAt("structure", "Patient.gender")));
  EXPECT_THAT(issues[0].message, HasSubstr("must not be an array"));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","maritalStatus":[{"text":"x"}]})"),
              ElementsAre(IssueAt("structure", "Patient.maritalStatus")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","_gender":[{"id":"x"}]})"),
              ElementsAre(IssueAt("structure", "Patient.gender")));
}

TEST_F(ValidatorTest, ComplexElementMustBeObject) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","maritalStatus":"married"})"),
              ElementsAre(IssueAt("structure", "Patient.maritalStatus")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","contact":[1]})"),
              ElementsAre(IssueAt("structure", "Patient.contact[0]")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","contained":["x"]})"),
              ElementsAre(IssueAt("structure", "Patient.contained[0]")));
}

TEST_F(ValidatorTest, EmptyValuesAreInvalid) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[]})"), ElementsAre(IssueAt("structure", "Patient.name")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0]")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","maritalStatus":{}})"),
              ElementsAre(IssueAt("structure", "Patient.maritalStatus")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"family":""}]})"),
              ElementsAre(IssueAt("value", "Patient.name[0].family")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","active":null})"),
              ElementsAre(IssueAt("structure", "Patient.active")));
}

TEST_F(ValidatorTest, NullsInPrimitiveArraysNeedExtensions) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"given":["a",null]}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0].given[1]")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,null]}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0].given[1]")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"given":["a","b"],"_given":[{"id":"x"}]}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0].given")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"_given":[{"id":"x"},null]}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0].given[1]")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"_given":[{"id":"x"},"y"]}]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0].given[1]")));
  // Nulls are not allowed in arrays of complex types.
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[null]})"),
              ElementsAre(IssueAt("structure", "Patient.name[0]")));
  // Extensions alone satisfy the array.
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"_given":[{"id":"x"}]}]})"), IsEmpty());
}

TEST_F(ValidatorTest, MissingRequiredElements) {
  EXPECT_THAT(Validate(R"({"resourceType":"Observation"})"),
              ElementsAre(IssueAt("required", "Observation.status"), IssueAt("required", "Observation.code")));
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final"})"),
              ElementsAre(IssueAt("required", "Observation.code")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","extension":[{"valueString":"x"}]})"),
              ElementsAre(IssueAt("required", "Patient.extension[0].url")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","link":[{"type":"seealso"}]})"),
              ElementsAre(IssueAt("required", "Patient.link[0].other")));
  // A required choice element is named with [x].
  EXPECT_THAT(Validate(R"({"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"string",
                 "enableWhen":[{"question":"q","operator":"exists"}]}]})"),
              ElementsAre(IssueAt("required", "Questionnaire.item[0].enableWhen[0].answer[x]")));
  // The "_" twin alone satisfies a required primitive.
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","_status":{"extension":[{"url":"http://e/x","valueCode":"u"}]},
                 "code":{"text":"x"}})"),
              IsEmpty());
}

// ---------------------------------------------------------------------------
// Choice types

TEST_F(ValidatorTest, BadChoiceSuffix) {
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueFoo":1})"),
              ElementsAre(IssueAt("structure", "Observation.valueFoo")));
  // The type must be capitalized, and the bare name is not a variant.
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valuestring":"a"})"),
              ElementsAre(IssueAt("structure", "Observation.valuestring")));
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"value":"a"})"),
              ElementsAre(IssueAt("structure", "Observation.value")));
  // A type that exists but is not allowed here.
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","deceasedString":"yes"})"),
              ElementsAre(IssueAt("structure", "Patient.deceasedString")));
}

TEST_F(ValidatorTest, TwoVariantsOfOneChoice) {
  const auto issues = Validate(
      R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"a","valueQuantity":{"value":1}})");
  ASSERT_THAT(issues, ElementsAre(IssueAt("structure", "Observation.valueQuantity")));
  EXPECT_THAT(issues[0].message, HasSubstr("Observation.value[x]"));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","deceasedBoolean":true,"_deceasedDateTime":{"id":"x"}})"),
              ElementsAre(IssueAt("structure", "Patient.deceasedDateTime")));
  // A value and its own extensions are one variant.
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","deceasedBoolean":true,"_deceasedBoolean":{"id":"x"}})"),
              IsEmpty());
}

// ---------------------------------------------------------------------------
// Primitive formats

TEST_F(ValidatorTest, BadDate) {
  const auto issues = Validate(R"({"resourceType":"Patient","birthDate":"2020-13-01"})");
  ASSERT_THAT(issues, ElementsAre(IssueAt("value", "Patient.birthDate")));
  EXPECT_THAT(issues[0].message, HasSubstr("Invalid date '2020-13-01' at Patient.birthDate"));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","birthDate":"2021-02-29"})"),
              ElementsAre(IssueAt("value", "Patient.birthDate")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","birthDate":"1970-01-01T00:00:00Z"})"),
              ElementsAre(IssueAt("value", "Patient.birthDate")));
}

TEST_F(ValidatorTest, BadDateTimeInstantTime) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","deceasedDateTime":"2020-01-01T10:00"})"),
              ElementsAre(IssueAt("value", "Patient.deceasedDateTime")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","deceasedDateTime":"2020-01-01T10:00:00"})"),
              ElementsAre(IssueAt("value", "Patient.deceasedDateTime")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","meta":{"lastUpdated":"2020-01-01"}})"),
              ElementsAre(IssueAt("value", "Patient.meta.lastUpdated")));
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueTime":"24:00:00"})"),
              ElementsAre(IssueAt("value", "Observation.valueTime")));
}

TEST_F(ValidatorTest, BadBooleanAndNumbers) {
  auto issues = Validate(R"({"resourceType":"Patient","active":"true"})");
  ASSERT_THAT(issues, ElementsAre(IssueAt("value", "Patient.active")));
  EXPECT_THAT(issues[0].message, HasSubstr("boolean"));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","multipleBirthInteger":1.5})"),
              ElementsAre(IssueAt("value", "Patient.multipleBirthInteger")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","multipleBirthInteger":2147483648})"),
              ElementsAre(IssueAt("value", "Patient.multipleBirthInteger")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","multipleBirthInteger":"2"})"),
              ElementsAre(IssueAt("value", "Patient.multipleBirthInteger")));
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},
                 "valueQuantity":{"value":"1.0"}})"),
              ElementsAre(IssueAt("value", "Observation.valueQuantity.value")));
  // positiveInt starts at 1, unsignedInt at 0.
  EXPECT_THAT(Validate(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},
                 "valueSampledData":{"origin":{"value":0},"period":1,"dimensions":0}})"),
              ElementsAre(IssueAt("value", "Observation.valueSampledData.dimensions")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","photo":[{"size":-1}]})"),
              ElementsAre(IssueAt("value", "Patient.photo[0].size")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","photo":[{"size":0}]})"), IsEmpty());
}

TEST_F(ValidatorTest, BadStringFormats) {
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","id":"bad id!"})"), ElementsAre(IssueAt("value", "Patient.id")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","gender":"fe male"})"), IsEmpty());  // a valid code
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","gender":" female"})"),
              ElementsAre(IssueAt("value", "Patient.gender")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","implicitRules":"http://a b"})"),
              ElementsAre(IssueAt("value", "Patient.implicitRules")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","text":{"status":"generated","div":"<p>x</p>"}})"),
              ElementsAre(IssueAt("value", "Patient.text.div")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"family":42}]})"),
              ElementsAre(IssueAt("value", "Patient.name[0].family")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","name":[{"family":1.5}]})"),
              ElementsAre(IssueAt("value", "Patient.name[0].family")));
  EXPECT_THAT(Validate(R"({"resourceType":"Binary","contentType":"text/plain","data":"abc"})"),
              ElementsAre(IssueAt("value", "Binary.data")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","extension":[{"url":"u","valueOid":"1.2.3"}]})"),
              ElementsAre(IssueAt("value", "Patient.extension[0].valueOid")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","extension":[{"url":"u","valueUuid":"urn:uuid:123"}]})"),
              ElementsAre(IssueAt("value", "Patient.extension[0].valueUuid")));
  EXPECT_THAT(Validate(R"({"resourceType":"Patient","extension":[{"url":"a b","valueString":"x"}]})"),
              ElementsAre(IssueAt("value", "Patient.extension[0].url")));
}

TEST_F(ValidatorTest, LongValuesAreCutInMessages) {
  const std::string long_date(500, '9');
  const auto issues = Validate(R"({"resourceType":"Patient","birthDate":")" + long_date + R"("})");
  ASSERT_THAT(issues, ElementsAre(IssueAt("value", "Patient.birthDate")));
  EXPECT_LT(issues[0].message.size(), 200u);
}

TEST_F(ValidatorTest, StopsAtMaxIssues) {
  const char* text = R"({"resourceType":"Patient","a":1,"b":2,"c":3,"d":4,"e":5})";
  EXPECT_THAT(Validate(text), SizeIs(5));
  EXPECT_THAT(Validate(text, 2), SizeIs(2));
  EXPECT_THAT(Validate(text, 0), IsEmpty());
}

// ---------------------------------------------------------------------------
// The official examples

TEST_F(ValidatorTest, OfficialExamplesValidate) {
  const std::vector<medgrid::testing::ExampleFile> examples = medgrid::testing::ClinicalAndAdministrativeExamples(package_dir_);
  ASSERT_GT(examples.size(), 700u) << "package at " << package_dir_ << " looks incomplete";

  const Validator validator(registry());
  int validated = 0;
  int known_invalid = 0;
  for (const medgrid::testing::ExampleFile& ex : examples) {
    absl::StatusOr<json::value> doc = ParseJson(ex.text);
    ASSERT_TRUE(doc.ok()) << ex.file << ": " << doc.status();
    ++validated;
    const std::vector<ValidationIssue> issues = validator.Validate(*doc, 100);
    if (auto known = medgrid::testing::KnownInvalidExamples().find(ex.file); known != medgrid::testing::KnownInvalidExamples().end()) {
      EXPECT_FALSE(issues.empty()) << ex.file << " is listed as invalid but validates; remove it from the list";
      ++known_invalid;
      std::printf("Known invalid: %s (%s), %zu issues, first: %s\n", ex.file.c_str(), known->second.c_str(),
                  issues.size(), issues.empty() ? "-" : issues[0].message.c_str());
      continue;
    }
    EXPECT_THAT(issues, IsEmpty()) << ex.file;
  }
  std::printf("Validated %d official examples (%d on the known-invalid list)\n", validated, known_invalid);
  EXPECT_EQ(known_invalid, static_cast<int>(medgrid::testing::KnownInvalidExamples().size()));
}

// Mutates the official examples one place at a time and expects exactly
// that place to be reported, at the right path:
// - an unknown member added to an object;
// - a member's JSON shape flipped: a one-item array unwrapped to its item,
//   or a single value wrapped in an array.
// This proves that the walk reaches every object of real resources
// (contained and bundled resources, backbone elements, extensions and
// primitive extensions) and applies each element's cardinality, which a clean
// run alone cannot show.
class Mutator {
 public:
  Mutator(const Validator& validator, json::value& doc, const std::string& file, int stride)
      : validator_(validator), doc_(doc), file_(file), stride_(stride) {}

  // Returns how many mutations it checked.
  int Run() {
    Visit(doc_, std::string(doc_.get_object().at("resourceType").get_string()));
    return mutated_;
  }

 private:
  void Expect(const std::string& path, std::string_view what) {
    ++mutated_;
    EXPECT_THAT(validator_.Validate(doc_, 100), ElementsAre(IssueAt("structure", path)))
        << file_ << ": " << what << " at " << path;
  }

  // Flips the JSON shape of obj[key] (not a primitive with a "_" twin,
  // whose arrays must stay aligned), validates, and restores it.
  void FlipShape(json::object& obj, std::string_view key, const std::string& path) {
    json::value& v = obj.at(key);
    if (key == "resourceType" || key.starts_with('_') || obj.contains("_" + std::string(key))) return;
    json::value original = v;
    if (json::array* arr = v.if_array()) {
      if (arr->size() != 1 || (*arr)[0].is_null()) return;
      json::value item = (*arr)[0];
      v = std::move(item);
      Expect(path, "unwrapped array");
    } else {
      json::array wrapped;
      wrapped.push_back(v);
      v = std::move(wrapped);
      Expect(path, "wrapped value");
    }
    obj.at(key) = std::move(original);
  }

  void Visit(json::value& v, const std::string& path) {
    if (json::array* arr = v.if_array()) {
      for (std::size_t i = 0; i < arr->size(); ++i) Visit((*arr)[i], path + "[" + std::to_string(i) + "]");
      return;
    }
    json::object* obj = v.if_object();
    if (obj == nullptr) return;
    if (counter_++ % stride_ == 0) {
      (*obj)["zzBogus"] = true;
      Expect(path + ".zzBogus", "unknown member");
      obj->erase("zzBogus");
    }
    std::vector<std::string> keys;
    for (const json::key_value_pair& member : *obj) keys.emplace_back(member.key());
    for (const std::string& key : keys) {
      // Primitive extensions are reported at the primitive's path, and a
      // contained or bundled resource just continues the path.
      const std::string child = path + "." + (key.starts_with('_') ? key.substr(1) : key);
      if (counter_++ % stride_ == 0) FlipShape(*obj, key, child);
      Visit(obj->at(key), child);
    }
  }

  const Validator& validator_;
  json::value& doc_;
  const std::string& file_;
  const int stride_;
  int counter_ = 0;
  int mutated_ = 0;
};

TEST_F(ValidatorTest, MutatedOfficialExamplesAreRejectedAtThePlaceOfTheMutation) {
  const Validator validator(registry());
  int mutated = 0;
  for (const medgrid::testing::ExampleFile& ex : medgrid::testing::ClinicalAndAdministrativeExamples(package_dir_)) {
    if (medgrid::testing::KnownInvalidExamples().contains(ex.file)) continue;
    absl::StatusOr<json::value> doc = ParseJson(ex.text);
    ASSERT_TRUE(doc.ok()) << ex.file;
    // Every 13th place keeps the run short while still covering each kind
    // of object and element many times over.
    mutated += Mutator(validator, *doc, ex.file, 13).Run();
    if (HasFailure()) break;  // one broken file is enough to read
  }
  std::printf("Checked %d mutations\n", mutated);
  EXPECT_GT(mutated, 5000);
}

}  // namespace
}  // namespace medgrid::fhir
