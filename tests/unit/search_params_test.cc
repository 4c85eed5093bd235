#include "medgrid/fhir/search_params.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "medgrid/fhir/json.h"

namespace medgrid::fhir {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

class SearchParamsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("MEDGRID_FHIR_PACKAGE");
    ASSERT_NE(dir, nullptr) << "MEDGRID_FHIR_PACKAGE must name the package/ folder of hl7.fhir.r4.examples";
    auto structures = StructureRegistry::LoadFromPackage(dir);
    ASSERT_TRUE(structures.ok()) << structures.status();
    structures_ = structures->release();
    auto params = SearchParamRegistry::LoadFromPackage(dir, *structures_);
    ASSERT_TRUE(params.ok()) << params.status();
    params_ = params->release();
  }
  static void TearDownTestSuite() {
    delete params_;
    delete structures_;
  }

  static const StructureRegistry* structures_;
  static const SearchParamRegistry* params_;
};
const StructureRegistry* SearchParamsTest::structures_ = nullptr;
const SearchParamRegistry* SearchParamsTest::params_ = nullptr;

TEST_F(SearchParamsTest, LoadsEveryOfficialDefinition) {
  EXPECT_EQ(params_->size(), 1375u);
  const SearchParamDef* name = params_->Find("Patient", "name");
  ASSERT_NE(name, nullptr);
  EXPECT_EQ(name->type, "string");
  EXPECT_EQ(name->url, "http://hl7.org/fhir/SearchParameter/Patient-name");
  EXPECT_EQ(name->expression, "Patient.name");
  ASSERT_NE(name->path, nullptr);
  EXPECT_EQ(params_->ByUrl("http://hl7.org/fhir/SearchParameter/Patient-name"), name);
  EXPECT_EQ(params_->Find("Patient", "nope"), nullptr);
  EXPECT_EQ(params_->Find("Spaceship", "name"), nullptr);
}

TEST_F(SearchParamsTest, ResourceAndDomainResourceParametersApplyToTheRightTypes) {
  for (const std::string& type : structures_->ResourceTypes()) {
    SCOPED_TRACE(type);
    for (const char* code : {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"}) {
      const SearchParamDef* p = params_->Find(type, code);
      ASSERT_NE(p, nullptr) << code;
      EXPECT_THAT(p->base, Contains("Resource"));
    }
    // _text is defined on DomainResource: Bundle, Binary and Parameters lack it.
    const bool domain = type != "Bundle" && type != "Binary" && type != "Parameters";
    EXPECT_EQ(params_->Find(type, "_text") != nullptr, domain);
  }
}

TEST_F(SearchParamsTest, ReferenceCompositeAndSharedDefinitions) {
  const SearchParamDef* subject = params_->Find("Observation", "subject");
  ASSERT_NE(subject, nullptr);
  EXPECT_EQ(subject->type, "reference");
  EXPECT_THAT(subject->targets, Contains("Patient"));

  const SearchParamDef* composite = params_->Find("Observation", "code-value-quantity");
  ASSERT_NE(composite, nullptr);
  EXPECT_EQ(composite->type, "composite");
  EXPECT_EQ(composite->components.size(), 2u);

  // One definition shared by many bases (clinical-patient) is found from each.
  const SearchParamDef* patient_of_condition = params_->Find("Condition", "patient");
  const SearchParamDef* patient_of_encounter = params_->Find("Encounter", "patient");
  ASSERT_NE(patient_of_condition, nullptr);
  EXPECT_EQ(patient_of_condition, patient_of_encounter);

  const SearchParamDef* birthdate = params_->Find("Patient", "birthdate");
  ASSERT_NE(birthdate, nullptr);
  EXPECT_THAT(birthdate->comparators, Contains("ge"));
}

TEST_F(SearchParamsTest, EveryCompositeComponentIsCompiled) {
  std::size_t composites = 0;
  std::set<std::string> seen;
  for (const std::string& type : structures_->ResourceTypes()) {
    for (const SearchParamDef* p : params_->ForType(type)) {
      if (p->type != "composite" || !seen.insert(p->url).second) continue;
      SCOPED_TRACE(p->url);
      ++composites;
      EXPECT_GE(p->components.size(), 2u);
      for (const SearchParamComponent& c : p->components) {
        EXPECT_FALSE(c.expression.empty());
        EXPECT_NE(c.path, nullptr) << c.expression;
      }
    }
  }
  EXPECT_EQ(composites, 46u);

  // The compiled component runs on the composite's own result.
  auto obs = ParseJson(
      R"({"resourceType":"Observation","code":{"coding":[{"code":"8480-6"}]},"valueQuantity":{"value":150}})");
  ASSERT_TRUE(obs.ok());
  const SearchParamDef* composite = params_->Find("Observation", "code-value-quantity");
  ASSERT_NE(composite, nullptr);
  auto items = composite->path->Evaluate(*obs);
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 1u);
  ASSERT_EQ(composite->components.size(), 2u);
  auto code = composite->components[0].path->Evaluate(*(*items)[0].value);
  ASSERT_TRUE(code.ok()) << code.status();
  ASSERT_EQ(code->size(), 1u);
  EXPECT_EQ(SerializeJson(*(*code)[0].value), R"({"coding":[{"code":"8480-6"}]})");
  auto value = composite->components[1].path->Evaluate(*(*items)[0].value);
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_EQ(value->size(), 1u);
  EXPECT_EQ(SerializeJson(*(*value)[0].value), R"({"value":150})");
}

TEST_F(SearchParamsTest, ComponentThatDoesNotCompileIsALoadError) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "search_params_bad_component";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "Bundle-searchParams.json") << R"({"resourceType":"Bundle","entry":[{"resource":{
      "resourceType":"SearchParameter","url":"http://x/SearchParameter/bad","code":"bad","type":"composite",
      "base":["Observation"],"expression":"Observation",
      "component":[{"definition":"http://hl7.org/fhir/SearchParameter/clinical-code","expression":"code"},
                   {"definition":"http://x/SearchParameter/v","expression":"value.as("}]}}]})";
  auto params = SearchParamRegistry::LoadFromPackage(dir.string(), *structures_);
  std::filesystem::remove_all(dir);
  ASSERT_FALSE(params.ok());
  EXPECT_EQ(params.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(params.status().message()), HasSubstr("http://x/SearchParameter/bad"));
  EXPECT_THAT(std::string(params.status().message()), HasSubstr("component 1 'value.as('"));
}

TEST_F(SearchParamsTest, ForTypeListsEachCodeOnceInOrder) {
  std::vector<const SearchParamDef*> list = params_->ForType("Patient");
  ASSERT_GT(list.size(), 20u);
  std::set<std::string> codes;
  std::string previous;
  for (const SearchParamDef* p : list) {
    EXPECT_TRUE(codes.insert(p->code).second) << p->code;
    EXPECT_LT(previous, p->code);
    previous = p->code;
  }
  EXPECT_TRUE(codes.contains("_id"));
  EXPECT_TRUE(codes.contains("birthdate"));
  EXPECT_TRUE(codes.contains("name"));
  EXPECT_FALSE(codes.contains("subject"));
}

TEST_F(SearchParamsTest, CompiledExpressionsEvaluate) {
  auto obs = ParseJson(
      R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},)"
      R"("performer":[{"reference":"Practitioner/d1"}]})");
  ASSERT_TRUE(obs.ok());
  auto subject = params_->Find("Observation", "subject")->path->Evaluate(*obs);
  ASSERT_TRUE(subject.ok()) << subject.status();
  ASSERT_EQ(subject->size(), 1u);
  EXPECT_EQ(SerializeJson(*(*subject)[0].value), R"({"reference":"Patient/p1"})");
  // "patient" keeps only references that resolve to a Patient.
  auto patient = params_->Find("Observation", "patient")->path->Evaluate(*obs);
  ASSERT_TRUE(patient.ok());
  EXPECT_EQ(patient->size(), 1u);
  auto performer = params_->Find("Observation", "performer")->path->Evaluate(*obs);
  ASSERT_TRUE(performer.ok());
  EXPECT_EQ(performer->size(), 1u);
}

}  // namespace
}  // namespace medgrid::fhir
