// SMART App Launch scopes, v1 and v2
// (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).
//
// A token's "scope" claim is parsed once into a ScopeSet; the request path then asks it whether a
// FHIR interaction on a resource type is granted, and under which query filters.
//
//   ScopeSet scopes = ScopeSet::Parse("openid patient/Observation.rs?category=laboratory patient/Patient.read");
//   scopes.Check("Patient", kRead, ContextBit(ResourceScope::Context::kPatient));      // Grant::kFull
//   scopes.Check("Observation", kSearch, ContextBit(ResourceScope::Context::kPatient));  // Grant::kFiltered
//   scopes.Check("Observation", kCreate, kAnyContext);                                   // Grant::kDenied
//   scopes.Has("openid");                                                                // true
//
// v1 and v2 forms are equivalent where they overlap: "read" is "rs", "write" is "cud", "*" is "cruds".
// Grants combine as a union; a filtered grant adds nothing where an unfiltered one already applies.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::auth {

// FHIR interactions a clinical scope can grant, as bits ("c", "r", "u", "d", "s" in SMART v2).
enum Interaction : uint8_t { kCreate = 1, kRead = 2, kUpdate = 4, kDelete = 8, kSearch = 16 };
constexpr uint8_t kAllInteractions = 31;

// One clinical scope: patient/Observation.read (v1), user/*.cruds (v2), system/Patient.rs?identifier=... (v2 with
// a query filter).
struct ResourceScope {
  enum class Context { kPatient, kUser, kSystem };
  Context context = Context::kPatient;
  std::string type;          // a resource type, or "*" for every type
  uint8_t interactions = 0;  // bitmask of Interaction, never 0
  // v2 query filter, percent-decoded, in the order granted: {{"category", "laboratory"}}. Empty: unfiltered.
  std::vector<std::pair<std::string, std::string>> filter;
  bool v2 = false;
  std::string text;  // the scope as granted
};

// A set of contexts, as a bitmask of ContextBit() values:
// ContextBit(Context::kPatient) | ContextBit(Context::kUser).
using ContextMask = uint8_t;
constexpr ContextMask ContextBit(ResourceScope::Context c) {
  return static_cast<ContextMask>(1u << static_cast<int>(c));
}
constexpr ContextMask kAnyContext = 7;

// Parses one scope string.
//
// Clinical scopes are "<context>/<type>.<permissions>[?<filter>]" with context patient, user or system; type "*" or a
// name matching [A-Z][A-Za-z]{0,63}; permissions either v1 ("read", "write", "*") or v2 (a non-empty subset of the
// letters "cruds" in that order, each at most once: "rs" is valid, "sr", "rr" and "" are not). A filter is allowed on
// v2 only: non-empty key=value pairs joined by "&", each key and value percent-decoded after splitting ("+" stays a
// plus sign, so time zone offsets in dates survive).
//
// Returns nullopt for strings that are not clinical scopes ("openid", "launch/patient", "medgrid/admin", ...), and
// InvalidArgument for strings that start with "patient/", "user/" or "system/" but are malformed.
absl::StatusOr<std::optional<ResourceScope>> ParseResourceScope(std::string_view scope);

// The scopes granted to one token. Immutable after construction, so safe to share between threads.
class ScopeSet {
 public:
  enum class Grant { kDenied, kFiltered, kFull };

  // From the space-separated "scope" claim. Runs of spaces are tolerated. Malformed clinical scopes are dropped and
  // listed in rejected(); the rest of the set still works.
  static ScopeSet Parse(std::string_view space_separated);
  // From the "scp" array form; same rules as Parse().
  static ScopeSet FromList(const std::vector<std::string>& scopes);

  // Whether the non-clinical scope `plain_scope` (e.g. "openid", "medgrid/admin") was granted, by exact match. Always
  // false for clinical scopes: ask Check() or Granting() for those, which honour wildcards and v1/v2 equivalence.
  bool Has(std::string_view plain_scope) const;
  const std::vector<ResourceScope>& resource_scopes() const { return resource_scopes_; }
  // The malformed clinical scopes, as granted, in order.
  const std::vector<std::string>& rejected() const { return rejected_; }

  // The scopes whose context is in `contexts` and that grant `interaction` on `type` (a concrete resource type), in
  // grant order. The pointers point into resource_scopes() and live as long as this set. Empty means denied.
  std::vector<const ResourceScope*> Granting(std::string_view type, Interaction interaction,
                                             ContextMask contexts) const;
  // kFull if some scope in Granting() has no filter, kFiltered if all of them have one, kDenied if there are none.
  Grant Check(std::string_view type, Interaction interaction, ContextMask contexts) const;
  // Whether any clinical scope has context `c` (e.g. does the token carry any patient/ scope).
  bool AnyContext(ResourceScope::Context c) const;

 private:
  void Add(std::string_view scope);

  std::vector<ResourceScope> resource_scopes_;
  std::vector<std::string> plain_;
  std::vector<std::string> rejected_;
};

}  // namespace medgrid::auth
