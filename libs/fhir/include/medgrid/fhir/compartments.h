// The R4 compartment definitions (CompartmentDefinition-*.json of
// hl7.fhir.r4.examples): which search parameters put a resource of each
// type into a Patient, Encounter, RelatedPerson, Practitioner or Device
// compartment. Compartment search (Patient/123/Observation) uses them.
// Immutable after loading; safe to share between threads.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::fhir {

class CompartmentRegistry {
 public:
  // Errors: NotFound if a definition file is missing; InvalidArgument if
  // one is malformed.
  static absl::StatusOr<std::unique_ptr<const CompartmentRegistry>> LoadFromPackage(const std::string& dir);

  // True for the five compartment types.
  bool IsCompartment(std::string_view compartment) const;
  // The parameters of `type` that link it into `compartment` ("Patient",
  // "Observation" -> {"subject", "performer"}); empty when resources of
  // `type` are never in that compartment.
  const std::vector<std::string>& Params(std::string_view compartment, std::string_view type) const;

 private:
  CompartmentRegistry() = default;
  // compartment -> resource type -> params
  std::map<std::string, std::map<std::string, std::vector<std::string>, std::less<>>, std::less<>> params_;
};

}  // namespace medgrid::fhir
