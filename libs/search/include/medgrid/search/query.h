// The search request parser: a FHIR R4 search query (search.html) turned
// into a typed request against the search-parameter registry, ready for the
// SQL builder. Every parameter is understood or refused: an unknown
// parameter, modifier, prefix or a malformed value is an InvalidArgument
// error (HTTP 400) whose message names the parameter, unless the request is
// lenient (Prefer: handling=lenient), in which case unknown parameters and
// unsupported modifiers are dropped and reported in `warnings`.
//
//   std::vector<std::pair<std::string, std::string>> params = {{"subject:Patient.name", "peter"}};
//   ASSIGN_OR_RETURN(search::SearchRequest req,
//                    search::ParseSearch(params, "Observation", registry, structures, /*lenient=*/false));
//
// Values are split on unescaped commas (OR); "\," "\$" "\|" and "\\" are
// escapes. Repeating a parameter ANDs it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/fhir/search_params.h"
#include "medgrid/fhir/structure.h"
#include "medgrid/search/date_range.h"

namespace medgrid::search {

enum class Prefix { kEq, kNe, kGt, kLt, kGe, kLe, kSa, kEb, kAp };

enum class Modifier {
  kNone,
  kMissing,     // any type; value true|false
  kExact,       // string
  kContains,    // string, uri
  kText,        // token (text of CodeableConcept / Coding.display / Identifier.type)
  kNot,         // token
  kOfType,      // token on Identifier: value is type-system|type-code|value
  kIdentifier,  // reference: value is a token matched against Reference.identifier
  kType,        // reference: ":Patient", the type is in Criterion::type_modifier
  kAbove,       // uri
  kBelow,       // uri
};

// One OR'ed value of a criterion, unescaped and typed by the parameter type.
struct Value {
  Prefix prefix = Prefix::kEq;  // number, date, quantity; kEq for other types
  // string, uri, special (_text/_content): the text. token: the code (empty
  // for "system|"). reference: the reference as written ("Patient/1", "1",
  // an absolute URL, or a canonical without its "|version"). :text and
  // :missing: the text ("true"/"false" for :missing).
  std::string text;
  // token and quantity: the system. nullopt when the value has no "|"
  // (any system); "" for "|code" (no system).
  std::optional<std::string> system;
  // quantity: the unit code after the second "|" (empty when absent).
  // token :of-type: the identifier type code, with the type system in
  // `system` and the identifier value in `text`.
  std::string code;
  // number and quantity: the number as written ("5.40", "1e2"), validated.
  std::string number;
  // date: the range the value stands for (precision kept).
  DateRange date;
  // reference: the resource type when the value names one ("Patient/1" or
  // the :Patient modifier), else empty; `text` then holds only the id for
  // relative references.
  std::string ref_type;
  // reference to a canonical: the version after "|" (empty when absent).
  std::string version;
  // composite: one value per component, in the definition's order, each
  // typed by its component's parameter type.
  std::vector<Value> components;
};

struct Criterion;

// One link of a chain: the same chained parameter resolved against one of
// the reference's target types.
struct ChainTarget {
  std::string type;                   // e.g. "Patient"
  std::unique_ptr<Criterion> next;    // the criterion applied to resources of `type`
};

struct Criterion {
  enum class Kind {
    kValue,  // a parameter with values (the common case; includes :missing)
    kChain,  // reference.param=...: `param` is the reference, `targets` the chained criteria
    kHas,    // _has:Type:ref:...: resources of `has_type` whose `param` references this one
  };
  Kind kind = Kind::kValue;
  std::string key;  // the parameter name as received, for messages ("subject:Patient.name")
  // The parameter searched. For kChain and kHas a reference parameter (for
  // kHas, one of `has_type`).
  const fhir::SearchParamDef* param = nullptr;
  Modifier modifier = Modifier::kNone;
  std::string type_modifier;  // kType: the resource type named by the modifier
  std::vector<Value> values;  // kValue: OR'ed; never empty
  // Composite parameters: the component definitions, in order (resolved
  // with registry.ByUrl), matching Value::components.
  std::vector<const fhir::SearchParamDef*> components;
  // kChain: one entry per target type the chain applies to (the type
  // modifier's, or each of param->targets that has the chained parameter).
  std::vector<ChainTarget> targets;
  // kHas: the referencing type and the criterion on it (which may itself be
  // a kHas or kChain).
  std::string has_type;
  std::unique_ptr<Criterion> has_next;
};

struct SortKey {
  const fhir::SearchParamDef* param = nullptr;  // _id and _lastUpdated included
  bool descending = false;
};

struct Include {
  bool reverse = false;  // _revinclude
  bool iterate = false;  // :iterate (or R3's :recurse)
  // "Observation:subject:Patient": source type, parameter (null for "*"),
  // optional target type. "*" alone: every reference parameter of the
  // source type... of every matched resource's type.
  std::string source_type;  // empty for a bare "*"
  const fhir::SearchParamDef* param = nullptr;
  std::string target_type;
  std::string text;  // as received, for the self link and messages
};

enum class Total { kNone, kEstimate, kAccurate };
enum class Summary { kFalse, kTrue, kText, kData, kCount };

struct SearchRequest {
  std::string type;                      // the concrete resource type searched
  std::vector<Criterion> criteria;       // ANDed
  std::vector<SortKey> sort;             // empty: the server's default order
  int count = 20;                        // _count, 0..1000 (0: only the total)
  std::optional<Total> total;            // _total; nullopt when not asked
  Summary summary = Summary::kFalse;     // _summary
  std::vector<std::string> elements;     // _elements (top-level element names)
  std::vector<Include> includes;         // _include and _revinclude
  std::string cursor;                    // _cursor (opaque paging token), empty if absent
  // Lenient mode: one line per ignored parameter, naming it and why.
  std::vector<std::string> warnings;
};

// Parses `params` (decoded name/value pairs, in order) for a search of
// `type`, a concrete resource type. `_format` and `_pretty` are accepted and
// ignored (the transport handles them). `_type` is refused here: system
// search splits it off before calling this once per type.
// Errors: InvalidArgument with HTTP 400, issue code "invalid" for malformed
// values and "not-supported" for unknown parameters or modifiers; the message
// starts with "Parameter '<name>': ".
absl::StatusOr<SearchRequest> ParseSearch(const std::vector<std::pair<std::string, std::string>>& params,
                                          std::string_view type, const fhir::SearchParamRegistry& registry,
                                          const fhir::StructureRegistry& structures, bool lenient);

// Splits `value` on `sep` where it is not escaped by a backslash; the parts
// keep their escapes, so they can be split again on another separator.
std::vector<std::string> SplitEscaped(std::string_view value, char sep);
// Removes the escapes "\," "\$" "\|" and "\\". A backslash before any other
// character is kept as it is.
std::string Unescape(std::string_view part);

}  // namespace medgrid::search
