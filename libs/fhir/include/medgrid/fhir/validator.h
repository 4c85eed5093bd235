// Structural validation of R4 resources against the base StructureDefinitions.
//
// Checks: resourceType is a known concrete type; no unknown elements
// (including in contained and nested resources and in primitive extensions
// `_name`); JSON shape (arrays exactly where max > 1); cardinality; choice
// types value[x] (the suffix must be one of the allowed types, at most one
// variant present); primitive formats (date, dateTime, instant, time,
// boolean, integer, positiveInt, unsignedInt, decimal, code, id, uri, url,
// canonical, oid, uuid, base64Binary, string, markdown, xhtml); and that
// contained resources are themselves valid. Profiles other than the base
// definitions are not checked.
//
//   fhir::Validator validator(*registry);
//   std::vector<fhir::ValidationIssue> issues = validator.Validate(resource);
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "boost/json/value.hpp"
#include "medgrid/fhir/structure.h"

namespace medgrid::fhir {

struct ValidationIssue {
  // FHIR IssueType code: "structure" (unknown element, wrong JSON shape,
  // empty object/array, two variants of one choice), "required" (cardinality
  // min, missing resourceType), "value" (bad primitive format or JSON kind),
  // "invalid" (unknown or abstract resourceType).
  std::string code;
  // FHIRPath-style location with array indexes, e.g. "Patient.name[0].given[1]".
  // Choice elements appear under their JSON name ("Observation.valueQuantity");
  // issues inside a primitive's "_name" extensions at the primitive's path
  // ("Patient.name[0].given[1].extension[0].url"); unknown members as written
  // ("Patient._foo"); nested resources continue their container's path
  // ("Bundle.entry[0].resource.status"). Empty only when the top-level
  // resource has no valid resourceType.
  std::string path;
  // Human-readable explanation that names the element.
  std::string message;
};

class Validator {
 public:
  // `registry` must outlive the validator. Thread-safe: Validate is const.
  explicit Validator(const StructureRegistry& registry) : registry_(registry) {}

  // Validates a whole resource (a JSON object with resourceType). Returns at
  // most `max_issues` issues; empty means valid.
  std::vector<ValidationIssue> Validate(const boost::json::value& resource, std::size_t max_issues = 20) const;

 private:
  const StructureRegistry& registry_;
};

// Primitive format checks (R4 datatypes.html regular expressions), exposed
// for unit tests and for the server's own id and date handling.
bool IsValidId(std::string_view s);        // [A-Za-z0-9\-\.]{1,64}
bool IsValidDate(std::string_view s);      // YYYY, YYYY-MM, YYYY-MM-DD; the day must exist in its month
bool IsValidDateTime(std::string_view s);  // date, or full date-time with seconds and zone
bool IsValidInstant(std::string_view s);   // full date-time with zone
bool IsValidTime(std::string_view s);      // hh:mm:ss(.s+)?
bool IsValidCode(std::string_view s);      // [^\s]+( [^\s]+)*
bool IsValidUri(std::string_view s);       // non-empty, no whitespace
bool IsValidOid(std::string_view s);       // urn:oid:...
bool IsValidUuid(std::string_view s);      // urn:uuid:...
bool IsValidBase64(std::string_view s);    // groups of 4, whitespace allowed, '=' only as final padding

}  // namespace medgrid::fhir
