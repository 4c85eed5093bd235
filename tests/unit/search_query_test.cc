#include "medgrid/search/query.h"

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "medgrid/core/status.h"

namespace medgrid::search {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using Params = std::vector<std::pair<std::string, std::string>>;

class SearchQueryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("MEDGRID_FHIR_PACKAGE");
    ASSERT_NE(dir, nullptr) << "MEDGRID_FHIR_PACKAGE must name the package/ folder of hl7.fhir.r4.examples";
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
  }

  static absl::StatusOr<SearchRequest> Parse(const Params& params, std::string_view type = "Observation",
                                             bool lenient = false) {
    return ParseSearch(params, type, *params_, *structures_, lenient);
  }

  // Parses one name=value pair that must succeed, yielding its only criterion.
  static Criterion One(std::string name, std::string value, std::string_view type = "Observation") {
    auto req = Parse({{std::move(name), std::move(value)}}, type);
    EXPECT_TRUE(req.ok()) << req.status();
    if (!req.ok() || req->criteria.size() != 1) {
      ADD_FAILURE() << "expected exactly one criterion";
      return Criterion{};
    }
    return std::move(req->criteria[0]);
  }

  // Parses one value of a parameter that must succeed.
  static Value OneValue(std::string name, std::string value, std::string_view type = "Observation") {
    Criterion c = One(std::move(name), std::move(value), type);
    if (c.values.size() != 1) {
      ADD_FAILURE() << "expected exactly one value, got " << c.values.size();
      return Value{};
    }
    return std::move(c.values[0]);
  }

  // Expects `params` to fail with HTTP 400, issue `issue`, and a message that
  // names `name` first.
  static void ExpectError(const Params& params, std::string_view type, std::string_view issue, const std::string& name,
                          std::string_view detail = "", bool lenient = false) {
    auto req = Parse(params, type, lenient);
    ASSERT_FALSE(req.ok()) << "expected an error for '" << name << "'";
    EXPECT_EQ(req.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(core::HttpStatusOf(req.status()), 400);
    EXPECT_EQ(core::IssueCodeOf(req.status()), std::string(issue)) << req.status();
    const std::string message(req.status().message());
    EXPECT_THAT(message, StartsWith("Parameter '" + name + "': "));
    if (!detail.empty()) {
      EXPECT_THAT(message, HasSubstr(std::string(detail)));
    }
  }
  static void ExpectInvalid(const std::string& name, const std::string& value, std::string_view type = "Observation",
                            std::string_view detail = "") {
    SCOPED_TRACE(name + "=" + value);
    ExpectError({{name, value}}, type, "invalid", name, detail);
  }
  static void ExpectNotSupported(const std::string& name, const std::string& value,
                                 std::string_view type = "Observation", std::string_view detail = "") {
    SCOPED_TRACE(name + "=" + value);
    ExpectError({{name, value}}, type, "not-supported", name, detail);
  }

  static const fhir::SearchParamDef* Def(std::string_view type, std::string_view code) {
    const fhir::SearchParamDef* def = params_->Find(type, code);
    EXPECT_NE(def, nullptr) << type << "." << code;
    return def;
  }

  static const fhir::StructureRegistry* structures_;
  static const fhir::SearchParamRegistry* params_;
};
const fhir::StructureRegistry* SearchQueryTest::structures_ = nullptr;
const fhir::SearchParamRegistry* SearchQueryTest::params_ = nullptr;

// --- Escaping ---------------------------------------------------------------

TEST(SplitEscapedTest, SplitsOnUnescapedSeparatorsAndKeepsEscapes) {
  EXPECT_THAT(SplitEscaped("a,b,c", ','), ElementsAre("a", "b", "c"));
  EXPECT_THAT(SplitEscaped("a\\,b,c", ','), ElementsAre("a\\,b", "c"));
  EXPECT_THAT(SplitEscaped("", ','), ElementsAre(""));
  EXPECT_THAT(SplitEscaped(",", ','), ElementsAre("", ""));
  EXPECT_THAT(SplitEscaped("a,", ','), ElementsAre("a", ""));
  // An escaped backslash does not escape the separator after it.
  EXPECT_THAT(SplitEscaped("a\\\\,b", ','), ElementsAre("a\\\\", "b"));
  // Three backslashes: an escaped backslash, then an escaped comma.
  EXPECT_THAT(SplitEscaped("a\\\\\\,b", ','), ElementsAre("a\\\\\\,b"));
  // Other separators are left alone, escaped or not, for a later split.
  EXPECT_THAT(SplitEscaped("s|c\\|d$x", '|'), ElementsAre("s", "c\\|d$x"));
  EXPECT_THAT(SplitEscaped("a$b\\$c", '$'), ElementsAre("a", "b\\$c"));
  // A trailing lone backslash is kept.
  EXPECT_THAT(SplitEscaped("a\\", ','), ElementsAre("a\\"));
}

TEST(UnescapeTest, RemovesOnlyTheFourEscapes) {
  EXPECT_EQ(Unescape("a\\,b"), "a,b");
  EXPECT_EQ(Unescape("a\\$b"), "a$b");
  EXPECT_EQ(Unescape("a\\|b"), "a|b");
  EXPECT_EQ(Unescape("a\\\\b"), "a\\b");
  EXPECT_EQ(Unescape("a\\nb"), "a\\nb");
  EXPECT_EQ(Unescape("a\\"), "a\\");
  EXPECT_EQ(Unescape("\\\\\\,"), "\\,");
  EXPECT_EQ(Unescape("plain"), "plain");
  EXPECT_EQ(Unescape(""), "");
}

// --- String -----------------------------------------------------------------

TEST_F(SearchQueryTest, StringValuesAreTextAndCommasOr) {
  Criterion c = One("name", "peter,paul", "Patient");
  EXPECT_EQ(c.kind, Criterion::Kind::kValue);
  EXPECT_EQ(c.key, "name");
  EXPECT_EQ(c.param, Def("Patient", "name"));
  EXPECT_EQ(c.modifier, Modifier::kNone);
  ASSERT_EQ(c.values.size(), 2u);
  EXPECT_EQ(c.values[0].text, "peter");
  EXPECT_EQ(c.values[1].text, "paul");
  EXPECT_EQ(c.values[0].prefix, Prefix::kEq);
}

TEST_F(SearchQueryTest, StringEscapesAreRemovedAfterSplitting) {
  Criterion c = One("address", "a\\,b,c\\$d\\|e\\\\f,x\\y", "Patient");
  ASSERT_EQ(c.values.size(), 3u);
  EXPECT_EQ(c.values[0].text, "a,b");
  EXPECT_EQ(c.values[1].text, "c$d|e\\f");
  EXPECT_EQ(c.values[2].text, "x\\y");
}

TEST_F(SearchQueryTest, StringHasNoPrefixes) {
  EXPECT_EQ(OneValue("name", "eqpeter", "Patient").text, "eqpeter");
  EXPECT_EQ(OneValue("name", "gt5", "Patient").prefix, Prefix::kEq);
  EXPECT_EQ(OneValue("name", "gt5", "Patient").text, "gt5");
}

TEST_F(SearchQueryTest, StringModifiers) {
  EXPECT_EQ(One("name:exact", "Peter", "Patient").modifier, Modifier::kExact);
  EXPECT_EQ(OneValue("name:exact", "Peter", "Patient").text, "Peter");
  EXPECT_EQ(One("name:contains", "ete", "Patient").modifier, Modifier::kContains);
  EXPECT_EQ(One("name:contains", "ete", "Patient").key, "name:contains");
  ExpectNotSupported("name:text", "x", "Patient", "':text'");
  ExpectNotSupported("name:below", "x", "Patient", "':below'");
  ExpectNotSupported("name:Patient", "x", "Patient", "':Patient'");
  ExpectNotSupported("name:bogus", "x", "Patient", "':bogus'");
  ExpectInvalid("name:", "x", "Patient", "empty modifier");
}

// --- :missing ---------------------------------------------------------------

TEST_F(SearchQueryTest, MissingOnEveryTypeTakesTrueOrFalse) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Patient", "name"},
      {"Patient", "birthdate"},
      {"Observation", "code"},
      {"Observation", "subject"},
      {"ValueSet", "url"},
      {"RiskAssessment", "probability"},
      {"Observation", "value-quantity"},
      {"Observation", "code-value-quantity"},
  };
  for (const auto& [type, code] : cases) {
    SCOPED_TRACE(type + "." + code);
    Criterion c = One(code + ":missing", "true", type);
    EXPECT_EQ(c.modifier, Modifier::kMissing);
    EXPECT_EQ(c.components.size(), c.param->type == "composite" ? 2u : 0u);
    ASSERT_EQ(c.values.size(), 1u);
    EXPECT_EQ(c.values[0].text, "true");
    EXPECT_EQ(OneValue(code + ":missing", "false", type).text, "false");
    ExpectInvalid(code + ":missing", "yes", type, ":missing takes true or false");
    ExpectInvalid(code + ":missing", "TRUE", type);
  }
}

// --- Number -----------------------------------------------------------------

TEST_F(SearchQueryTest, NumberEveryPrefix) {
  const std::vector<std::pair<std::string, Prefix>> prefixes = {
      {"", Prefix::kEq},   {"eq", Prefix::kEq}, {"ne", Prefix::kNe}, {"gt", Prefix::kGt}, {"lt", Prefix::kLt},
      {"ge", Prefix::kGe}, {"le", Prefix::kLe}, {"sa", Prefix::kSa}, {"eb", Prefix::kEb}, {"ap", Prefix::kAp},
  };
  for (const auto& [text, prefix] : prefixes) {
    SCOPED_TRACE(text);
    Value v = OneValue("probability", text + "0.5", "RiskAssessment");
    EXPECT_EQ(v.prefix, prefix);
    EXPECT_EQ(v.number, "0.5");
  }
}

TEST_F(SearchQueryTest, NumberSyntax) {
  for (const char* ok : {"5", "-3.5", "1e2", "1E-2", "2.50e+10", "0", "100"}) {
    SCOPED_TRACE(ok);
    EXPECT_EQ(OneValue("probability", ok, "RiskAssessment").number, ok);
  }
  for (const char* bad : {"abc", "1.", ".5", "1e", "--1", "+1", "1,5x", "xx5", "gt", "1 2", "5|x|y", "1e2.5"}) {
    SCOPED_TRACE(bad);
    ExpectError({{"probability", bad}}, "RiskAssessment", "invalid", "probability", "");
  }
  ExpectInvalid("probability", "abc", "RiskAssessment", "not a valid number");
}

// --- Date -------------------------------------------------------------------

TEST_F(SearchQueryTest, DateEveryPrefixAndPrecision) {
  const std::vector<std::pair<std::string, Prefix>> prefixes = {
      {"", Prefix::kEq},   {"eq", Prefix::kEq}, {"ne", Prefix::kNe}, {"gt", Prefix::kGt}, {"lt", Prefix::kLt},
      {"ge", Prefix::kGe}, {"le", Prefix::kLe}, {"sa", Prefix::kSa}, {"eb", Prefix::kEb}, {"ap", Prefix::kAp},
  };
  for (const auto& [text, prefix] : prefixes) {
    for (const char* date : {"2020", "2020-03", "2020-03-01", "2020-03-01T10:00", "2020-03-01T10:00:05.25+02:00"}) {
      SCOPED_TRACE(text + date);
      Value v = OneValue("birthdate", text + date, "Patient");
      EXPECT_EQ(v.prefix, prefix);
      EXPECT_EQ(v.date, *ParseDateRange(date));
    }
  }
  // Different precisions give different ranges.
  EXPECT_NE(OneValue("birthdate", "2020", "Patient").date, OneValue("birthdate", "2020-01", "Patient").date);
}

TEST_F(SearchQueryTest, DateErrors) {
  for (const char* bad : {"2021-02-30", "yesterday", "2020-13", "gt", "xx2020", "2020-01-01T25:00", "20"}) {
    SCOPED_TRACE(bad);
    ExpectInvalid("birthdate", bad, "Patient", "is not a valid date");
  }
}

TEST_F(SearchQueryTest, LastUpdatedIsAnOrdinaryDateParameter) {
  Criterion c = One("_lastUpdated", "ge2024-01-01T00:00:00Z");
  EXPECT_EQ(c.param, Def("Observation", "_lastUpdated"));
  ASSERT_EQ(c.values.size(), 1u);
  EXPECT_EQ(c.values[0].prefix, Prefix::kGe);
  EXPECT_EQ(c.values[0].date, *ParseDateRange("2024-01-01T00:00:00Z"));
  ExpectInvalid("_lastUpdated", "soon");
}

// --- Quantity ---------------------------------------------------------------

TEST_F(SearchQueryTest, QuantityForms) {
  Value full = OneValue("value-quantity", "le5.4|http://unitsofmeasure.org|mg");
  EXPECT_EQ(full.prefix, Prefix::kLe);
  EXPECT_EQ(full.number, "5.4");
  EXPECT_EQ(full.system, "http://unitsofmeasure.org");
  EXPECT_EQ(full.code, "mg");

  Value any_system = OneValue("value-quantity", "5.4||mg");
  EXPECT_EQ(any_system.prefix, Prefix::kEq);
  EXPECT_EQ(any_system.number, "5.4");
  EXPECT_EQ(any_system.system, std::nullopt);
  EXPECT_EQ(any_system.code, "mg");

  Value bare = OneValue("value-quantity", "ap1e2");
  EXPECT_EQ(bare.prefix, Prefix::kAp);
  EXPECT_EQ(bare.number, "1e2");
  EXPECT_EQ(bare.system, std::nullopt);
  EXPECT_EQ(bare.code, "");

  // An escaped '|' in the unit code stays part of it.
  Value escaped = OneValue("value-quantity", "5|s|a\\|b");
  EXPECT_EQ(escaped.code, "a|b");
  EXPECT_EQ(escaped.system, "s");
}

TEST_F(SearchQueryTest, QuantityEveryPrefix) {
  const std::vector<std::pair<std::string, Prefix>> prefixes = {
      {"eq", Prefix::kEq}, {"ne", Prefix::kNe}, {"gt", Prefix::kGt}, {"lt", Prefix::kLt}, {"ge", Prefix::kGe},
      {"le", Prefix::kLe}, {"sa", Prefix::kSa}, {"eb", Prefix::kEb}, {"ap", Prefix::kAp},
  };
  for (const auto& [text, prefix] : prefixes) {
    SCOPED_TRACE(text);
    EXPECT_EQ(OneValue("value-quantity", text + "7||kg").prefix, prefix);
  }
}

TEST_F(SearchQueryTest, QuantityErrors) {
  ExpectInvalid("value-quantity", "5.4|mg", "Observation", "not a quantity");
  ExpectInvalid("value-quantity", "5|a|b|c", "Observation", "not a quantity");
  ExpectInvalid("value-quantity", "abc||mg", "Observation", "not a valid number");
  ExpectInvalid("value-quantity", "5|http://unitsofmeasure.org|", "Observation", "no unit code");
  ExpectInvalid("value-quantity", "gt", "Observation", "not a valid number");
}

// --- Token ------------------------------------------------------------------

TEST_F(SearchQueryTest, TokenForms) {
  Value code = OneValue("code", "1234-5");
  EXPECT_EQ(code.text, "1234-5");
  EXPECT_EQ(code.system, std::nullopt);

  Value both = OneValue("code", "http://loinc.org|1234-5");
  EXPECT_EQ(both.system, "http://loinc.org");
  EXPECT_EQ(both.text, "1234-5");

  Value no_system = OneValue("code", "|1234-5");
  ASSERT_TRUE(no_system.system.has_value());
  EXPECT_EQ(*no_system.system, "");
  EXPECT_EQ(no_system.text, "1234-5");

  Value any_code = OneValue("code", "http://loinc.org|");
  EXPECT_EQ(any_code.system, "http://loinc.org");
  EXPECT_EQ(any_code.text, "");

  // "eq" is not a prefix for tokens.
  Value eq = OneValue("code", "eq123");
  EXPECT_EQ(eq.text, "eq123");
  EXPECT_EQ(eq.prefix, Prefix::kEq);

  Value escaped = OneValue("code", "http://x\\|y|a\\,b\\|c");
  EXPECT_EQ(escaped.system, "http://x|y");
  EXPECT_EQ(escaped.text, "a,b|c");

  ExpectInvalid("code", "a|b|c", "Observation", "at most one");
  ExpectInvalid("code", "|", "Observation", "system or a code");
}

TEST_F(SearchQueryTest, IdIsAnOrdinaryTokenParameter) {
  Criterion c = One("_id", "a1,b2", "Patient");
  EXPECT_EQ(c.param, Def("Patient", "_id"));
  ASSERT_EQ(c.values.size(), 2u);
  EXPECT_EQ(c.values[0].text, "a1");
  EXPECT_EQ(c.values[1].text, "b2");
}

TEST_F(SearchQueryTest, TokenModifiers) {
  Criterion text = One("code:text", "blood pressure|x\\,y");
  EXPECT_EQ(text.modifier, Modifier::kText);
  ASSERT_EQ(text.values.size(), 1u);
  EXPECT_EQ(text.values[0].text, "blood pressure|x,y");
  EXPECT_EQ(text.values[0].system, std::nullopt);

  Criterion negated = One("gender:not", "male", "Patient");
  EXPECT_EQ(negated.modifier, Modifier::kNot);
  EXPECT_EQ(negated.values[0].text, "male");
  Value negated_system = OneValue("code:not", "http://loinc.org|1");
  EXPECT_EQ(negated_system.system, "http://loinc.org");
  EXPECT_EQ(negated_system.text, "1");

  Criterion of_type = One("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053", "Patient");
  EXPECT_EQ(of_type.modifier, Modifier::kOfType);
  ASSERT_EQ(of_type.values.size(), 1u);
  EXPECT_EQ(of_type.values[0].system, "http://terminology.hl7.org/CodeSystem/v2-0203");
  EXPECT_EQ(of_type.values[0].code, "MR");
  EXPECT_EQ(of_type.values[0].text, "446053");
  ExpectInvalid("identifier:of-type", "MR|446053", "Patient", "type-system|type-code|value");
  ExpectInvalid("identifier:of-type", "a|b|c|d", "Patient", "type-system|type-code|value");
  ExpectInvalid("identifier:of-type", "sys||446053", "Patient", "type code and a value");

  for (const char* unsupported : {"in", "not-in", "above", "below", "exact", "contains", "identifier"}) {
    ExpectNotSupported(std::string("code:") + unsupported, "x", "Observation", std::string("':") + unsupported + "'");
  }
}

// --- Reference --------------------------------------------------------------

TEST_F(SearchQueryTest, ReferenceForms) {
  Value typed = OneValue("subject", "Patient/123");
  EXPECT_EQ(typed.ref_type, "Patient");
  EXPECT_EQ(typed.text, "123");

  Value id = OneValue("subject", "123");
  EXPECT_EQ(id.ref_type, "");
  EXPECT_EQ(id.text, "123");

  Value absolute = OneValue("subject", "http://example.org/fhir/Patient/123");
  EXPECT_EQ(absolute.text, "http://example.org/fhir/Patient/123");
  EXPECT_EQ(absolute.ref_type, "Patient");

  Value other_absolute = OneValue("subject", "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0");
  EXPECT_EQ(other_absolute.text, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0");
  EXPECT_EQ(other_absolute.ref_type, "");

  Value canonical = OneValue("derived-from", "http://example.org/fhir/PlanDefinition/p1|1.0", "PlanDefinition");
  EXPECT_EQ(canonical.text, "http://example.org/fhir/PlanDefinition/p1");
  EXPECT_EQ(canonical.version, "1.0");
  EXPECT_EQ(canonical.ref_type, "PlanDefinition");

  Value unversioned = OneValue("derived-from", "http://example.org/fhir/PlanDefinition/p1", "PlanDefinition");
  EXPECT_EQ(unversioned.version, "");

  // "eq" is not a prefix for references.
  EXPECT_EQ(OneValue("subject", "eq1").text, "eq1");

  ExpectInvalid("subject", "Spaceship/1", "Observation", "not a reference");
  ExpectInvalid("subject", "Patient/", "Observation", "not a reference");
  ExpectInvalid("subject", "Patient/1/_history/2", "Observation", "not a reference");
  ExpectInvalid("subject", "a|b|c", "Observation", "at most one");
  ExpectInvalid("derived-from", "|1.0", "PlanDefinition", "no canonical URL");
}

TEST_F(SearchQueryTest, ReferenceTypeModifier) {
  Criterion c = One("subject:Patient", "123,Patient/456");
  EXPECT_EQ(c.modifier, Modifier::kType);
  EXPECT_EQ(c.type_modifier, "Patient");
  ASSERT_EQ(c.values.size(), 2u);
  EXPECT_EQ(c.values[0].text, "123");
  EXPECT_EQ(c.values[0].ref_type, "Patient");
  EXPECT_EQ(c.values[1].text, "456");
  EXPECT_EQ(c.values[1].ref_type, "Patient");

  ExpectInvalid("subject:Patient", "Group/1", "Observation", "is an id");
  ExpectInvalid("subject:Patient", "a/b", "Observation", "is an id");
  // Medication is a resource type, but not one subject can refer to.
  ExpectInvalid("subject:Medication", "1", "Observation", "not a target type");
  // Not a resource type at all: an unknown modifier.
  ExpectNotSupported("subject:Spaceship", "1", "Observation", "':Spaceship'");
  for (const char* unsupported : {"above", "below", "exact", "text", "not"}) {
    ExpectNotSupported(std::string("subject:") + unsupported, "1", "Observation", std::string("':") + unsupported);
  }
}

TEST_F(SearchQueryTest, ReferenceWithoutTargetsAcceptsAnyTypeModifier) {
  // RequestGroup.instantiates-canonical is the one R4 reference parameter
  // without target types.
  ASSERT_TRUE(Def("RequestGroup", "instantiates-canonical")->targets.empty());
  EXPECT_EQ(One("instantiates-canonical:PlanDefinition", "1", "RequestGroup").type_modifier, "PlanDefinition");
}

TEST_F(SearchQueryTest, ReferenceIdentifierModifierParsesAToken) {
  Criterion c = One("subject:identifier", "http://acme.org/mrn|12345");
  EXPECT_EQ(c.modifier, Modifier::kIdentifier);
  ASSERT_EQ(c.values.size(), 1u);
  EXPECT_EQ(c.values[0].system, "http://acme.org/mrn");
  EXPECT_EQ(c.values[0].text, "12345");
  EXPECT_EQ(c.values[0].ref_type, "");
  ExpectInvalid("subject:identifier", "a|b|c");
}

// --- URI --------------------------------------------------------------------

TEST_F(SearchQueryTest, UriAndModifiers) {
  Value v = OneValue("url", "http://hl7.org/fhir/ValueSet/x\\,y", "ValueSet");
  EXPECT_EQ(v.text, "http://hl7.org/fhir/ValueSet/x,y");
  EXPECT_EQ(One("url:above", "http://hl7.org/fhir/ValueSet/x", "ValueSet").modifier, Modifier::kAbove);
  EXPECT_EQ(One("url:below", "http://hl7.org/fhir", "ValueSet").modifier, Modifier::kBelow);
  EXPECT_EQ(One("url:contains", "ValueSet", "ValueSet").modifier, Modifier::kContains);
  ExpectNotSupported("url:exact", "x", "ValueSet", "':exact'");
  ExpectNotSupported("url:text", "x", "ValueSet", "':text'");
}

// --- Composite --------------------------------------------------------------

TEST_F(SearchQueryTest, CompositeComponentsAreTypedByTheirDefinitions) {
  Criterion c = One("code-value-quantity", "http://loinc.org|8480-6$gt150||mm[Hg],8462-4$lt90");
  EXPECT_EQ(c.param, Def("Observation", "code-value-quantity"));
  EXPECT_THAT(c.components,
              ElementsAre(params_->ByUrl("http://hl7.org/fhir/SearchParameter/clinical-code"),
                          params_->ByUrl("http://hl7.org/fhir/SearchParameter/Observation-value-quantity")));
  EXPECT_NE(c.components[0], nullptr);
  EXPECT_EQ(c.components[0]->type, "token");
  EXPECT_EQ(c.components[1]->type, "quantity");
  ASSERT_EQ(c.values.size(), 2u);
  const Value& first = c.values[0];
  ASSERT_EQ(first.components.size(), 2u);
  EXPECT_EQ(first.components[0].system, "http://loinc.org");
  EXPECT_EQ(first.components[0].text, "8480-6");
  EXPECT_EQ(first.components[1].prefix, Prefix::kGt);
  EXPECT_EQ(first.components[1].number, "150");
  EXPECT_EQ(first.components[1].code, "mm[Hg]");
  const Value& second = c.values[1];
  ASSERT_EQ(second.components.size(), 2u);
  EXPECT_EQ(second.components[0].text, "8462-4");
  EXPECT_EQ(second.components[0].system, std::nullopt);
  EXPECT_EQ(second.components[1].prefix, Prefix::kLt);
  EXPECT_EQ(second.components[1].number, "90");

  Value date = OneValue("code-value-date", "1234$ge2020-01");
  ASSERT_EQ(date.components.size(), 2u);
  EXPECT_EQ(date.components[1].prefix, Prefix::kGe);
  EXPECT_EQ(date.components[1].date, *ParseDateRange("2020-01"));

  Value str = OneValue("code-value-string", "1234$a\\$b\\,c");
  ASSERT_EQ(str.components.size(), 2u);
  EXPECT_EQ(str.components[1].text, "a$b,c");
}

TEST_F(SearchQueryTest, CompositeErrors) {
  ExpectInvalid("code-value-quantity", "1234", "Observation", "has 1 components");
  ExpectInvalid("code-value-quantity", "1$2$3", "Observation", "has 3 components");
  ExpectInvalid("code-value-quantity", "1234$abc", "Observation", "not a valid number");
  ExpectInvalid("code-value-quantity", "$5", "Observation", "is empty");
  ExpectInvalid("code-value-date", "1234$2021-02-30", "Observation", "not a valid date");
  ExpectNotSupported("code-value-quantity:exact", "1$2", "Observation", "':exact'");
}

// --- Special parameters -----------------------------------------------------

TEST_F(SearchQueryTest, TextAndContentAreWholeText) {
  Value text = OneValue("_text", "chest pain", "Condition");
  EXPECT_EQ(text.text, "chest pain");
  Value content = OneValue("_content", "eq cancer\\|x", "Patient");
  EXPECT_EQ(content.text, "eq cancer|x");
  ExpectNotSupported("_text:exact", "x", "Condition", "':exact'");
  ExpectNotSupported("_content:missing", "true", "Patient", "':missing'");
}

TEST_F(SearchQueryTest, UnsupportedSpecialParameters) {
  ExpectNotSupported("near", "42.256|-83.694|11.20|km", "Location", "not supported");
  for (const char* name : {"_query", "_filter", "_list", "_contained", "_containedType"}) {
    ExpectNotSupported(name, "x", "Observation", "not supported");
  }
}

// --- Chains -----------------------------------------------------------------

TEST_F(SearchQueryTest, ChainWithTypeModifier) {
  Criterion c = One("subject:Patient.name:exact", "peter");
  EXPECT_EQ(c.kind, Criterion::Kind::kChain);
  EXPECT_EQ(c.key, "subject:Patient.name:exact");
  EXPECT_EQ(c.param, Def("Observation", "subject"));
  EXPECT_EQ(c.modifier, Modifier::kType);
  EXPECT_EQ(c.type_modifier, "Patient");
  EXPECT_TRUE(c.values.empty());
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].type, "Patient");
  const Criterion& leaf = *c.targets[0].next;
  EXPECT_EQ(leaf.kind, Criterion::Kind::kValue);
  EXPECT_EQ(leaf.param, Def("Patient", "name"));
  EXPECT_EQ(leaf.modifier, Modifier::kExact);
  ASSERT_EQ(leaf.values.size(), 1u);
  EXPECT_EQ(leaf.values[0].text, "peter");
}

TEST_F(SearchQueryTest, ChainWithoutTypeModifierKeepsTargetsThatDefineTheParameter) {
  // Observation.subject targets Group, Device, Patient and Location; only
  // Patient and Location have "name".
  Criterion c = One("subject.name", "peter");
  EXPECT_EQ(c.kind, Criterion::Kind::kChain);
  EXPECT_EQ(c.modifier, Modifier::kNone);
  EXPECT_EQ(c.type_modifier, "");
  ASSERT_EQ(c.targets.size(), 2u);
  EXPECT_EQ(c.targets[0].type, "Patient");
  EXPECT_EQ(c.targets[1].type, "Location");
  for (const ChainTarget& t : c.targets) {
    EXPECT_EQ(t.next->param, Def(t.type, "name"));
    ASSERT_EQ(t.next->values.size(), 1u);
    EXPECT_EQ(t.next->values[0].text, "peter");
  }
  // Device, Patient and Location have "organization".
  Criterion org = One("subject.organization", "Organization/1");
  ASSERT_EQ(org.targets.size(), 3u);
  EXPECT_EQ(org.targets[0].type, "Device");
  EXPECT_EQ(org.targets[1].type, "Patient");
  EXPECT_EQ(org.targets[2].type, "Location");
  EXPECT_EQ(org.targets[1].next->values[0].ref_type, "Organization");
}

TEST_F(SearchQueryTest, ChainsOfAnyDepth) {
  Criterion c = One("subject:Patient.organization.partof:Organization.name", "acme");
  ASSERT_EQ(c.targets.size(), 1u);
  const Criterion& patient = *c.targets[0].next;
  EXPECT_EQ(patient.kind, Criterion::Kind::kChain);
  EXPECT_EQ(patient.key, "organization.partof:Organization.name");
  EXPECT_EQ(patient.param, Def("Patient", "organization"));
  ASSERT_EQ(patient.targets.size(), 1u);
  EXPECT_EQ(patient.targets[0].type, "Organization");
  const Criterion& org = *patient.targets[0].next;
  EXPECT_EQ(org.kind, Criterion::Kind::kChain);
  EXPECT_EQ(org.param, Def("Organization", "partof"));
  EXPECT_EQ(org.type_modifier, "Organization");
  ASSERT_EQ(org.targets.size(), 1u);
  const Criterion& leaf = *org.targets[0].next;
  EXPECT_EQ(leaf.kind, Criterion::Kind::kValue);
  EXPECT_EQ(leaf.param, Def("Organization", "name"));
  EXPECT_EQ(leaf.values[0].text, "acme");

  // The last link keeps its own modifier and value type.
  Criterion date = One("subject:Patient.birthdate", "lt2000");
  EXPECT_EQ(date.targets[0].next->values[0].prefix, Prefix::kLt);
  Criterion missing = One("subject:Patient.birthdate:missing", "true");
  EXPECT_EQ(missing.targets[0].next->modifier, Modifier::kMissing);
}

TEST_F(SearchQueryTest, ChainErrors) {
  // A chain through a parameter that is not a reference.
  ExpectInvalid("code.name", "x", "Observation", "cannot be chained");
  // An intermediate modifier other than a resource type.
  ExpectInvalid("subject:missing.name", "x", "Observation", "must be a resource type");
  ExpectInvalid("subject:Spaceship.name", "x", "Observation", "must be a resource type");
  // A type that is not a target of the reference.
  ExpectInvalid("subject:Medication.code", "x", "Observation", "not a target type");
  // Unknown links.
  ExpectNotSupported("bogus.name", "x", "Observation", "no search parameter 'bogus'");
  ExpectNotSupported("subject:Patient.bogus", "x", "Observation", "bogus");
  ExpectNotSupported("subject.bogus", "x", "Observation", "no target type of 'subject'");
  // Every target has "name", but none as a reference.
  ExpectInvalid("subject.name.family", "x", "Observation", "cannot be chained");
  // Malformed values and modifiers at the end of a chain.
  ExpectInvalid("subject:Patient.birthdate", "2021-02-30", "Observation", "not a valid date");
  ExpectInvalid("subject.birthdate", "2021-02-30", "Observation", "not a valid date");
  ExpectNotSupported("subject:Patient.name:bogus", "x", "Observation", "':bogus'");
  ExpectInvalid("subject.", "x", "Observation", "empty");
  ExpectInvalid(".name", "x", "Observation", "empty");
}

TEST_F(SearchQueryTest, ChainFanOutIsBounded) {
  // Task.subject may refer to any type; three untyped links reach more than a
  // thousand paths.
  ExpectInvalid("subject.subject.subject.name", "x", "Task", "target paths");
  // Naming the types keeps it small.
  Criterion c = One("subject:Observation.subject:Patient.name", "x", "Task");
  ASSERT_EQ(c.targets.size(), 1u);
  EXPECT_EQ(c.targets[0].next->targets[0].type, "Patient");
}

// --- _has -------------------------------------------------------------------

TEST_F(SearchQueryTest, ReverseChain) {
  Criterion c = One("_has:Observation:patient:code", "1234-5", "Patient");
  EXPECT_EQ(c.kind, Criterion::Kind::kHas);
  EXPECT_EQ(c.key, "_has:Observation:patient:code");
  EXPECT_EQ(c.has_type, "Observation");
  EXPECT_EQ(c.param, Def("Observation", "patient"));
  ASSERT_NE(c.has_next, nullptr);
  EXPECT_EQ(c.has_next->kind, Criterion::Kind::kValue);
  EXPECT_EQ(c.has_next->param, Def("Observation", "code"));
  ASSERT_EQ(c.has_next->values.size(), 1u);
  EXPECT_EQ(c.has_next->values[0].text, "1234-5");

  Criterion modified = One("_has:Observation:patient:code:text", "pressure", "Patient");
  EXPECT_EQ(modified.has_next->modifier, Modifier::kText);
}

TEST_F(SearchQueryTest, NestedReverseChain) {
  Criterion c = One("_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/1", "Patient");
  EXPECT_EQ(c.kind, Criterion::Kind::kHas);
  EXPECT_EQ(c.has_type, "Observation");
  ASSERT_NE(c.has_next, nullptr);
  const Criterion& inner = *c.has_next;
  EXPECT_EQ(inner.kind, Criterion::Kind::kHas);
  EXPECT_EQ(inner.has_type, "AuditEvent");
  EXPECT_EQ(inner.param, Def("AuditEvent", "entity"));
  ASSERT_NE(inner.has_next, nullptr);
  EXPECT_EQ(inner.has_next->param, Def("AuditEvent", "agent"));
  EXPECT_EQ(inner.has_next->values[0].ref_type, "Practitioner");
  EXPECT_EQ(inner.has_next->values[0].text, "1");
}

TEST_F(SearchQueryTest, ReverseChainEndingInAChainAndChainEndingInAReverseChain) {
  Criterion c = One("_has:Observation:patient:performer:Practitioner.name", "smith", "Patient");
  ASSERT_NE(c.has_next, nullptr);
  EXPECT_EQ(c.has_next->kind, Criterion::Kind::kChain);
  EXPECT_EQ(c.has_next->type_modifier, "Practitioner");
  EXPECT_EQ(c.has_next->targets[0].next->param, Def("Practitioner", "name"));

  Criterion d = One("subject:Patient._has:Condition:patient:code", "x");
  ASSERT_EQ(d.targets.size(), 1u);
  EXPECT_EQ(d.targets[0].next->kind, Criterion::Kind::kHas);
  EXPECT_EQ(d.targets[0].next->has_type, "Condition");
}

TEST_F(SearchQueryTest, ReverseChainErrors) {
  ExpectInvalid("_has:Spaceship:patient:code", "x", "Patient", "not a resource type");
  ExpectNotSupported("_has:Observation:bogus:code", "x", "Patient", "no search parameter 'bogus'");
  ExpectInvalid("_has:Observation:code:code", "x", "Patient", "not a reference");
  // Observation.patient refers to Patient or Group, never to a Practitioner.
  ExpectInvalid("_has:Observation:patient:code", "x", "Practitioner", "cannot refer to Practitioner");
  ExpectNotSupported("_has:Observation:patient:bogus", "x", "Patient", "bogus");
  ExpectInvalid("_has:Observation:patient:code", "2021|a|b", "Patient", "at most one");
  for (const char* malformed : {"_has", "_has:Observation", "_has:Observation:patient",
                                "_has:Observation:patient:", "_has::patient:code", "_has:Observation::code"}) {
    ExpectInvalid(malformed, "x", "Patient", "expected _has:Type:reference:parameter");
  }
}

// --- Result parameters ------------------------------------------------------

TEST_F(SearchQueryTest, Count) {
  auto dflt = Parse({});
  ASSERT_TRUE(dflt.ok());
  EXPECT_EQ(dflt->count, 20);
  for (const auto& [text, n] : std::vector<std::pair<std::string, int>>{
           {"0", 0}, {"7", 7}, {"1000", 1000}, {"1001", 1000}, {"99999999999999999999999", 1000}, {"007", 7}}) {
    SCOPED_TRACE(text);
    auto req = Parse({{"_count", text}});
    ASSERT_TRUE(req.ok()) << req.status();
    EXPECT_EQ(req->count, n);
  }
  for (const char* bad : {"-1", "abc", "1.5", "+5", " 5"}) {
    ExpectInvalid("_count", bad, "Observation", "not a non-negative integer");
  }
  ExpectError({{"_count", "5"}, {"_count", "6"}}, "Observation", "invalid", "_count", "only once");
  ExpectNotSupported("_count:max", "5");
}

TEST_F(SearchQueryTest, Sort) {
  auto req = Parse({{"_sort", "-date,code,_id,-_lastUpdated"}});
  ASSERT_TRUE(req.ok()) << req.status();
  ASSERT_EQ(req->sort.size(), 4u);
  EXPECT_EQ(req->sort[0].param, Def("Observation", "date"));
  EXPECT_TRUE(req->sort[0].descending);
  EXPECT_EQ(req->sort[1].param, Def("Observation", "code"));
  EXPECT_FALSE(req->sort[1].descending);
  EXPECT_EQ(req->sort[2].param, Def("Observation", "_id"));
  EXPECT_FALSE(req->sort[2].descending);
  EXPECT_EQ(req->sort[3].param, Def("Observation", "_lastUpdated"));
  EXPECT_TRUE(req->sort[3].descending);

  ExpectNotSupported("_sort", "bogus", "Observation", "unknown search parameter 'bogus'");
  ExpectNotSupported("_sort", "code-value-quantity", "Observation", "cannot sort");
  ExpectNotSupported("_sort", "_text", "Observation", "cannot sort");
  ExpectNotSupported("_sort", "near", "Location", "cannot sort");
  ExpectInvalid("_sort", "date,,code", "Observation", "empty sort key");
  ExpectInvalid("_sort", "-", "Observation", "empty sort key");
  ExpectError({{"_sort", "date"}, {"_sort", "code"}}, "Observation", "invalid", "_sort", "only once");
  ExpectNotSupported("_sort:desc", "date");
}

TEST_F(SearchQueryTest, Total) {
  auto none = Parse({});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->total, std::nullopt);
  for (const auto& [text, total] : std::vector<std::pair<std::string, Total>>{
           {"none", Total::kNone}, {"estimate", Total::kEstimate}, {"accurate", Total::kAccurate}}) {
    auto req = Parse({{"_total", text}});
    ASSERT_TRUE(req.ok()) << req.status();
    EXPECT_EQ(req->total, total);
  }
  ExpectInvalid("_total", "exact", "Observation", "none, estimate, accurate");
  ExpectError({{"_total", "none"}, {"_total", "none"}}, "Observation", "invalid", "_total", "only once");
}

TEST_F(SearchQueryTest, Summary) {
  auto dflt = Parse({});
  ASSERT_TRUE(dflt.ok());
  EXPECT_EQ(dflt->summary, Summary::kFalse);
  for (const auto& [text, summary] : std::vector<std::pair<std::string, Summary>>{{"true", Summary::kTrue},
                                                                                  {"false", Summary::kFalse},
                                                                                  {"text", Summary::kText},
                                                                                  {"data", Summary::kData},
                                                                                  {"count", Summary::kCount}}) {
    auto req = Parse({{"_summary", text}});
    ASSERT_TRUE(req.ok()) << req.status();
    EXPECT_EQ(req->summary, summary);
  }
  ExpectInvalid("_summary", "yes", "Observation", "true, false, text, data, count");
  ExpectError({{"_summary", "true"}, {"_summary", "count"}}, "Observation", "invalid", "_summary", "only once");
}

TEST_F(SearchQueryTest, Elements) {
  auto req = Parse({{"_elements", "status,code,value_x1"}, {"_elements", "subject"}});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_THAT(req->elements, ElementsAre("status", "code", "value_x1", "subject"));
  for (const char* bad : {"Observation.status", "1code", "code,", "co-de", "_id", "a b"}) {
    ExpectInvalid("_elements", bad, "Observation", "not an element name");
  }
}

TEST_F(SearchQueryTest, IncludeForms) {
  auto req = Parse({{"_include", "Observation:subject"},
                    {"_include", "Observation:subject:Patient"},
                    {"_include", "*"},
                    {"_include", "Observation:*"},
                    {"_include:iterate", "Patient:organization"},
                    {"_include:recurse", "Patient:*"}});
  ASSERT_TRUE(req.ok()) << req.status();
  ASSERT_EQ(req->includes.size(), 6u);
  const Include& plain = req->includes[0];
  EXPECT_FALSE(plain.reverse);
  EXPECT_FALSE(plain.iterate);
  EXPECT_EQ(plain.source_type, "Observation");
  EXPECT_EQ(plain.param, Def("Observation", "subject"));
  EXPECT_EQ(plain.target_type, "");
  EXPECT_EQ(plain.text, "Observation:subject");
  const Include& targeted = req->includes[1];
  EXPECT_EQ(targeted.param, Def("Observation", "subject"));
  EXPECT_EQ(targeted.target_type, "Patient");
  EXPECT_EQ(targeted.text, "Observation:subject:Patient");
  const Include& star = req->includes[2];
  EXPECT_EQ(star.source_type, "");
  EXPECT_EQ(star.param, nullptr);
  EXPECT_EQ(star.text, "*");
  const Include& type_star = req->includes[3];
  EXPECT_EQ(type_star.source_type, "Observation");
  EXPECT_EQ(type_star.param, nullptr);
  const Include& iterate = req->includes[4];
  EXPECT_TRUE(iterate.iterate);
  EXPECT_EQ(iterate.source_type, "Patient");
  EXPECT_EQ(iterate.param, Def("Patient", "organization"));
  const Include& recurse = req->includes[5];
  EXPECT_TRUE(recurse.iterate);
  EXPECT_EQ(recurse.source_type, "Patient");
  EXPECT_EQ(recurse.param, nullptr);
}

TEST_F(SearchQueryTest, RevIncludeForms) {
  auto req = Parse({{"_revinclude", "Observation:subject"},
                    {"_revinclude", "Provenance:target:Patient"},
                    {"_revinclude:iterate", "Observation:has-member"},
                    {"_revinclude", "*"}},
                   "Patient");
  ASSERT_TRUE(req.ok()) << req.status();
  ASSERT_EQ(req->includes.size(), 4u);
  EXPECT_TRUE(req->includes[0].reverse);
  EXPECT_FALSE(req->includes[0].iterate);
  EXPECT_EQ(req->includes[0].source_type, "Observation");
  EXPECT_EQ(req->includes[0].param, Def("Observation", "subject"));
  EXPECT_EQ(req->includes[1].param, Def("Provenance", "target"));
  EXPECT_EQ(req->includes[1].target_type, "Patient");
  EXPECT_TRUE(req->includes[2].reverse);
  EXPECT_TRUE(req->includes[2].iterate);
  EXPECT_EQ(req->includes[2].param, Def("Observation", "has-member"));
  EXPECT_TRUE(req->includes[3].reverse);
  EXPECT_EQ(req->includes[3].param, nullptr);
}

TEST_F(SearchQueryTest, IncludeErrors) {
  // Without :iterate, _include starts from the searched type.
  ExpectInvalid("_include", "Patient:organization", "Observation", "searched type");
  ExpectInvalid("_include", "Patient:*", "Observation", "searched type");
  ExpectInvalid("_include", "Observation:code", "Observation", "not a reference");
  ExpectNotSupported("_include", "Observation:bogus", "Observation", "unknown search parameter 'bogus'");
  ExpectInvalid("_include", "Spaceship:x", "Observation", "not a resource type");
  ExpectInvalid("_include", "Observation:subject:Medication", "Observation", "not a target type");
  ExpectInvalid("_include", "Observation:subject:Spaceship", "Observation", "not a resource type");
  ExpectInvalid("_include", "Observation", "Observation", "expected Type:parameter");
  ExpectInvalid("_include", "Observation:subject:Patient:x", "Observation", "expected Type:parameter");
  ExpectInvalid("_include", "Observation:*:Patient", "Observation", "expected Type:parameter");
  ExpectInvalid("_include", "Observation:", "Observation", "expected Type:parameter");
  ExpectNotSupported("_include:bogus", "Observation:subject", "Observation", "':bogus'");
  ExpectInvalid("_revinclude", "Observation:code", "Patient", "not a reference");
  ExpectNotSupported("_revinclude", "Observation:bogus", "Patient", "bogus");
  ExpectNotSupported("_revinclude:bogus", "Observation:subject", "Patient", "':bogus'");
}

TEST_F(SearchQueryTest, CursorFormatAndPretty) {
  auto req = Parse({{"_cursor", "opaque:token/="}, {"_format", "json"}, {"_pretty", "true"}});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->cursor, "opaque:token/=");
  EXPECT_TRUE(req->criteria.empty());
  auto none = Parse({});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->cursor, "");
  ExpectError({{"_cursor", "a"}, {"_cursor", "b"}}, "Observation", "invalid", "_cursor", "only once");
}

TEST_F(SearchQueryTest, TypeIsRefused) { ExpectInvalid("_type", "Patient", "Observation", "system-level search"); }

// --- Whole requests ---------------------------------------------------------

TEST_F(SearchQueryTest, RepeatedParametersAreAnded) {
  auto req = Parse({{"date", "ge2020"}, {"date", "lt2021"}, {"code", "a,b"}});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_EQ(req->type, "Observation");
  ASSERT_EQ(req->criteria.size(), 3u);
  EXPECT_EQ(req->criteria[0].values[0].prefix, Prefix::kGe);
  EXPECT_EQ(req->criteria[1].values[0].prefix, Prefix::kLt);
  EXPECT_EQ(req->criteria[2].values.size(), 2u);
  EXPECT_TRUE(req->warnings.empty());
}

TEST_F(SearchQueryTest, EmptyValuesAreIgnoredButNamesAreChecked) {
  auto req = Parse({{"code", ""}, {"subject:Patient.name", ""}, {"_count", ""}, {"_sort", ""}, {"_include", ""}});
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_TRUE(req->criteria.empty());
  EXPECT_EQ(req->count, 20);
  EXPECT_TRUE(req->sort.empty());
  EXPECT_TRUE(req->includes.empty());
  ExpectNotSupported("bogus", "", "Observation", "unknown search parameter 'bogus'");
  ExpectNotSupported("code:in", "", "Observation", "':in'");
  // An empty value inside a list is an error.
  ExpectInvalid("code", "a,,b", "Observation", "empty value");
  ExpectInvalid("code", "a,", "Observation", "empty value");
}

TEST_F(SearchQueryTest, UnknownParameter) {
  ExpectNotSupported("bogus", "x", "Observation", "unknown search parameter 'bogus' for Observation");
  // A parameter of another type.
  ExpectNotSupported("birthdate", "2020", "Observation", "unknown search parameter");
  ExpectNotSupported("_bogus", "x", "Observation");
}

TEST_F(SearchQueryTest, UnknownResourceType) {
  auto req = Parse({}, "Spaceship");
  ASSERT_FALSE(req.ok());
  EXPECT_EQ(req.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(core::HttpStatusOf(req.status()), 400);
}

TEST_F(SearchQueryTest, ErrorsNameTheFullParameterAsReceived) {
  ExpectError({{"code", "x"}, {"subject:Patient.name:bogus", "x"}}, "Observation", "not-supported",
              "subject:Patient.name:bogus", "':bogus'");
  ExpectError({{"_has:Observation:patient:date", "nope"}}, "Patient", "invalid", "_has:Observation:patient:date",
              "'nope' is not a valid date");
}

TEST_F(SearchQueryTest, LenientDropsUnknownParametersAndModifiers) {
  auto req = Parse({{"bogus", "x"},
                    {"code:in", "http://vs"},
                    {"subject.bogus", "1"},
                    {"_filter", "name eq x"},
                    {"_sort", "bogus"},
                    {"_include", "Observation:bogus"},
                    {"code", "1234"},
                    {"_count", "5"}},
                   "Observation", /*lenient=*/true);
  ASSERT_TRUE(req.ok()) << req.status();
  ASSERT_EQ(req->criteria.size(), 1u);
  EXPECT_EQ(req->criteria[0].key, "code");
  EXPECT_EQ(req->count, 5);
  EXPECT_TRUE(req->sort.empty());
  EXPECT_TRUE(req->includes.empty());
  ASSERT_EQ(req->warnings.size(), 6u);
  EXPECT_THAT(req->warnings[0], StartsWith("Parameter 'bogus': "));
  EXPECT_THAT(req->warnings[1], StartsWith("Parameter 'code:in': "));
  EXPECT_THAT(req->warnings[2], StartsWith("Parameter 'subject.bogus': "));
  EXPECT_THAT(req->warnings[3], StartsWith("Parameter '_filter': "));
  EXPECT_THAT(req->warnings[4], StartsWith("Parameter '_sort': "));
  EXPECT_THAT(req->warnings[5], StartsWith("Parameter '_include': "));
}

TEST_F(SearchQueryTest, LenientStillRejectsMalformedValues) {
  ExpectError({{"bogus", "x"}, {"date", "2021-02-30"}}, "Observation", "invalid", "date", "not a valid date",
              /*lenient=*/true);
  ExpectError({{"_count", "-1"}}, "Observation", "invalid", "_count", "", /*lenient=*/true);
  ExpectError({{"_count", "1"}, {"_count", "2"}}, "Observation", "invalid", "_count", "only once", /*lenient=*/true);
  ExpectError({{"_type", "Patient"}}, "Observation", "invalid", "_type", "", /*lenient=*/true);
  ExpectError({{"subject:Medication", "1"}}, "Observation", "invalid", "subject:Medication", "", /*lenient=*/true);
  ExpectError({{"code.name", "x"}}, "Observation", "invalid", "code.name", "", /*lenient=*/true);
}

TEST_F(SearchQueryTest, StrictIsTheDefaultAndHasNoWarnings) {
  auto req = Parse({{"code", "1"}});
  ASSERT_TRUE(req.ok());
  EXPECT_TRUE(req->warnings.empty());
  ExpectError({{"code", "1"}, {"bogus", "x"}}, "Observation", "not-supported", "bogus");
}

TEST_F(SearchQueryTest, EveryOfficialParameterParsesASimpleValue) {
  // Guards the dispatch on parameter types: each searchable parameter of a
  // few types accepts :missing and a value of its type.
  for (const char* type : {"Patient", "Observation", "Encounter", "MedicationRequest", "ValueSet"}) {
    for (const fhir::SearchParamDef* def : params_->ForType(type)) {
      SCOPED_TRACE(std::string(type) + "." + def->code);
      if (def->type == "special" || def->path == nullptr) continue;
      auto missing = Parse({{def->code + ":missing", "false"}}, type);
      EXPECT_TRUE(missing.ok()) << missing.status();
      std::string value = "x";
      if (def->type == "number" || def->type == "quantity") value = "1";
      if (def->type == "date") value = "2020";
      if (def->type == "composite") {
        value.clear();
        for (std::size_t i = 0; i < def->components.size(); ++i) {
          const fhir::SearchParamDef* component = params_->ByUrl(def->components[i].definition);
          ASSERT_NE(component, nullptr);
          if (i > 0) value += "$";
          value += component->type == "date" ? "2020" : component->type == "quantity" ? "1" : "x";
        }
      }
      auto req = Parse({{def->code, value}}, type);
      ASSERT_TRUE(req.ok()) << req.status();
      ASSERT_EQ(req->criteria.size(), 1u);
      EXPECT_EQ(req->criteria[0].param, def);
    }
  }
}

}  // namespace
}  // namespace medgrid::search
