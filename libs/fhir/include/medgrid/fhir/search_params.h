// The R4 search parameters, from the official SearchParameter definitions
// (Bundle-searchParams.json of hl7.fhir.r4.examples 4.0.1), with each
// FHIRPath expression, composite components' included, compiled once at load.
//
//   ASSIGN_OR_RETURN(auto params, fhir::SearchParamRegistry::LoadFromPackage(dir, *structures));
//   const fhir::SearchParamDef* p = params->Find("Observation", "subject");
//   ASSIGN_OR_RETURN(auto items, p->path->Evaluate(observation));
//
// Part of search (not built yet): nothing in the server uses it so far.
// Immutable after loading; safe to share between threads.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/json/object.hpp"
#include "medgrid/fhir/fhirpath.h"
#include "medgrid/fhir/structure.h"

namespace medgrid::fhir {

struct SearchParamComponent {
  std::string definition;  // canonical URL of the component's SearchParameter
  std::string expression;  // FHIRPath relative to the composite's own result
  // The compiled expression; never null in a loaded registry.
  std::shared_ptr<const FhirPath> path;
};

struct SearchParamDef {
  std::string url;
  std::string code;  // the name used in queries, e.g. "subject", "_id"
  // number | date | string | token | reference | composite | quantity | uri | special
  std::string type;
  std::vector<std::string> base;         // resource types it applies to (may be Resource or DomainResource)
  std::string expression;                // empty for the few special parameters without one (_text, _content, _query)
  std::vector<std::string> targets;      // reference parameters: allowed target types
  std::vector<std::string> comparators;  // prefixes the definition allows, if it lists them
  std::vector<SearchParamComponent> components;  // composite parameters
  // The compiled expression; null when `expression` is empty.
  std::shared_ptr<const FhirPath> path;
};

class SearchParamRegistry {
 public:
  // Loads and compiles every SearchParameter in `dir`/Bundle-searchParams.json.
  // `structures` decides which concrete types the Resource and DomainResource
  // parameters apply to. Errors: NotFound if the file is missing;
  // InvalidArgument if it is malformed or an expression, or a composite
  // component's expression, does not compile (naming the parameter).
  static absl::StatusOr<std::unique_ptr<const SearchParamRegistry>> LoadFromPackage(
      const std::string& dir, const StructureRegistry& structures);

  // The parameter `code` of concrete resource type `type`: its own, or one
  // defined on Resource/DomainResource that applies to it. Null if none.
  const SearchParamDef* Find(std::string_view type, std::string_view code) const;
  // Every parameter that applies to `type`, sorted by code.
  std::vector<const SearchParamDef*> ForType(std::string_view type) const;
  const SearchParamDef* ByUrl(std::string_view url) const;

  // A tenant's own SearchParameter resource as a definition, checked
  // against this registry: a known type (not special), an expression that
  // compiles, known base and target types, composite components that
  // resolve, and no clash with a parameter the base types already have.
  // Errors: InvalidArgument (HTTP 400) saying what is wrong.
  absl::StatusOr<std::unique_ptr<const SearchParamDef>> CustomDef(const boost::json::object& resource,
                                                                 const StructureRegistry& structures) const;
  // A registry with this one's parameters plus `custom` (from CustomDef).
  // It refers to this registry's definitions, so this one must outlive it.
  absl::StatusOr<std::unique_ptr<const SearchParamRegistry>> Extend(
      std::vector<std::unique_ptr<const SearchParamDef>> custom, const StructureRegistry& structures) const;
  std::size_t size() const { return defs_.size(); }

 private:
  SearchParamRegistry() = default;

  std::vector<std::unique_ptr<SearchParamDef>> defs_;
  std::vector<std::unique_ptr<const SearchParamDef>> custom_;  // Extend's own definitions
  // "type/code" -> definition, with Resource/DomainResource ones expanded
  // onto every concrete type they apply to.
  std::map<std::string, const SearchParamDef*, std::less<>> by_type_code_;
  std::map<std::string, const SearchParamDef*, std::less<>> by_url_;
};

}  // namespace medgrid::fhir
