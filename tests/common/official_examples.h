// The official R4 examples from the npm package hl7.fhir.r4.examples, as
// used by the validator test and the HTTP round-trip test.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace medgrid::testing {

struct ExampleFile {
  std::string file;  // file name inside package/
  std::string type;  // resourceType
  std::string id;
  std::string text;  // the JSON as published
};

// Every clinical and administrative example in `package_dir`: all resource
// JSON files except conformance and terminology resources (StructureDefinition,
// CapabilityStatement, ValueSet, ...) and the package's own definition
// bundles (Bundle-resources.json and the like), which are not examples.
std::vector<ExampleFile> ClinicalAndAdministrativeExamples(const std::string& package_dir);

// Official examples that violate the base R4 specification itself, by file
// name, each with the reason. Tests fail if one of these becomes valid (so
// the list stays honest) or if any other example is rejected.
const std::map<std::string, std::string>& KnownInvalidExamples();

// True for the resource types of the conformance and terminology modules.
bool IsConformanceType(const std::string& type);

}  // namespace medgrid::testing
