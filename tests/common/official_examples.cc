#include "common/official_examples.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "boost/json.hpp"

namespace medgrid::testing {

const std::map<std::string, std::string>& KnownInvalidExamples() {
  static const std::map<std::string, std::string> kKnown = {
      {"Questionnaire-qs1.json",
       "Questionnaire.item.linkId is 1..1, but the 32 'flyover' display items nested under item[0] have no linkId"},
  };
  return kKnown;
}

bool IsConformanceType(const std::string& type) {
  static const std::set<std::string> kTypes = {
      "CapabilityStatement", "StructureDefinition", "ImplementationGuide", "SearchParameter",
      "MessageDefinition",   "OperationDefinition", "CompartmentDefinition", "StructureMap",
      "GraphDefinition",     "ExampleScenario",     "CodeSystem",          "ValueSet",
      "ConceptMap",          "NamingSystem",        "TerminologyCapabilities"};
  return kTypes.contains(type);
}

namespace {

// The package's own definition bundles (Bundle-resources.json,
// Bundle-valuesets.json, ...) hold only conformance or terminology
// resources; they are the specification, not examples.
bool IsDefinitionBundle(const boost::json::object& bundle) {
  const auto* entries = bundle.if_contains("entry");
  if (entries == nullptr || !entries->is_array() || entries->get_array().empty()) return false;
  for (const auto& e : entries->get_array()) {
    const auto* r = e.is_object() ? e.get_object().if_contains("resource") : nullptr;
    const auto* rt = r && r->is_object() ? r->get_object().if_contains("resourceType") : nullptr;
    if (rt == nullptr || !rt->is_string() || !IsConformanceType(std::string(rt->get_string()))) return false;
  }
  return true;
}

}  // namespace

std::vector<ExampleFile> ClinicalAndAdministrativeExamples(const std::string& package_dir) {
  std::vector<ExampleFile> out;
  for (const auto& entry : std::filesystem::directory_iterator(package_dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".json" || name == "package.json" || name[0] == '.') continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    boost::json::error_code ec;
    boost::json::value v = boost::json::parse(ss.str(), ec);
    if (ec || !v.is_object()) continue;
    const auto* rt = v.get_object().if_contains("resourceType");
    const auto* id = v.get_object().if_contains("id");
    if (rt == nullptr || !rt->is_string() || id == nullptr || !id->is_string()) continue;
    std::string type(rt->get_string());
    if (IsConformanceType(type) || (type == "Bundle" && IsDefinitionBundle(v.get_object()))) continue;
    out.push_back({name, type, std::string(id->get_string()), ss.str()});
  }
  std::sort(out.begin(), out.end(), [](const ExampleFile& a, const ExampleFile& b) { return a.file < b.file; });
  return out;
}

}  // namespace medgrid::testing
