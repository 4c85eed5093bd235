// Parsing of FHIR REST URLs under /fhir/{tenant}/ and of ETags.
//
//   ASSIGN_OR_RETURN(fhir::RestPath p, fhir::ParseRestPath("/fhir/demo/Patient/1/_history/2"));
//   // p.kind == RestPath::Kind::kVersion, p.tenant == "demo", p.type == "Patient", ...
//
// Segments are percent-decoded before they are checked, so an encoded "../"
// cannot smuggle a path past the id syntax check.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::fhir {

struct RestPath {
  enum class Kind {
    kSystem,           // /fhir/{tenant}
    kMetadata,         // /fhir/{tenant}/metadata
    kSystemHistory,    // /fhir/{tenant}/_history
    kType,             // /fhir/{tenant}/{type}
    kTypeHistory,      // /fhir/{tenant}/{type}/_history
    kInstance,         // /fhir/{tenant}/{type}/{id}
    kInstanceHistory,  // /fhir/{tenant}/{type}/{id}/_history
    kVersion,          // /fhir/{tenant}/{type}/{id}/_history/{vid}
    kSystemSearch,     // /fhir/{tenant}/_search
    kTypeSearch,       // /fhir/{tenant}/{type}/_search
    kCompartment,      // /fhir/{tenant}/{type}/{id}/{target type or *}
    kSystemOperation,  // /fhir/{tenant}/${operation}
    kTypeOperation,    // /fhir/{tenant}/{type}/${operation}
    kInstanceOperation,  // /fhir/{tenant}/{type}/{id}/${operation}
  };
  Kind kind = Kind::kSystem;
  std::string tenant;
  std::string type;     // syntactically a type name; the caller checks it is known
  std::string id;
  std::string version;  // a positive integer in canonical form
  std::string target;   // kCompartment: the type searched in the compartment, or "*"
  std::string operation;  // k*Operation: the name without "$"
};

// Parses the path part of a request target (no query string) that starts
// with "/fhir/". Errors: NotFound (404, "not-supported") for paths outside
// the FHIR REST grammar; InvalidArgument (400) for a malformed tenant, id or
// version segment, naming the segment.
absl::StatusOr<RestPath> ParseRestPath(std::string_view path);

// True for a tenant id: [a-z0-9][a-z0-9-]{0,62}.
bool IsValidTenantId(std::string_view s);

// The version in an ETag such as W/"3" or "3"; nullopt if malformed.
std::optional<long long> ParseETagVersion(std::string_view etag);
// W/"<version>"
std::string FormatETag(long long version);

// The name/value pairs of a query string or form body
// (application/x-www-form-urlencoded), percent-decoded, "+" as a space, in
// order; nullopt for a malformed percent escape.
std::optional<std::vector<std::pair<std::string, std::string>>> DecodeQuery(std::string_view query);

}  // namespace medgrid::fhir
