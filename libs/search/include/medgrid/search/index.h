// Search index extraction: the index entries of one resource, computed with
// the compiled FHIRPath expressions of every search parameter that applies
// to its type. The store writes them in the same transaction as the
// resource version; the SQL builder queries them.
//
//   search::IndexEntries entries = search::ExtractIndex(resource, "Observation", registry);
//
// Entries carry the parameter code in `param`. Composite parameters are
// indexed through their components: component i of composite "c" is stored
// with param "c$i" in the table of the component's type, and all components
// taken from one evaluation of the composite's expression share a `group`
// number (>= 1, unique within the resource). Plain entries have group 0.
//
// Not indexed here, because they are served from the resources table or
// need no entries: _id, _lastUpdated, _query, _filter, and special
// parameters (Location near). _text and _content fill `narrative` and
// `content` for full-text search.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "boost/json/value.hpp"
#include "medgrid/fhir/search_params.h"

namespace medgrid::search {

// string parameters: one entry per string found. HumanName yields its
// text, family, each given, prefix and suffix; Address its text, each line,
// city, district, state, postalCode and country; other strings themselves.
struct StringEntry {
  std::string param;
  int group = 0;
  std::string exact;  // the value as written, for :exact
  std::string folded; // FoldText(exact), for the default and :contains
};

// token parameters: Coding (system, code, display), CodeableConcept (each
// coding; its text goes into `text` of each entry, or one entry with only
// text when it has no codings), Identifier (system, value; type codings in
// type_system/type_code, one entry per type coding), ContactPoint (value,
// with ContactPoint.system as the system), code/string/id/uri/boolean
// primitives ("true"/"false"), and Reference.identifier of reference parameters (stored under the
// reference parameter's code, for :identifier).
struct TokenEntry {
  std::string param;
  int group = 0;
  std::optional<std::string> system;  // nullopt when the element has none
  std::string code;
  std::string text;  // FoldText of display / CodeableConcept.text / Identifier.type.text; for :text
  std::optional<std::string> type_system;  // Identifier.type coding, for :of-type
  std::optional<std::string> type_code;
};

// date parameters: date, dateTime, instant (their precision range), Period
// (start to end; a missing end is unbounded), Timing (each event; else
// repeat.boundsPeriod). Microseconds since the epoch, [lo, hi).
struct DateEntry {
  std::string param;
  int group = 0;
  int64_t lo = 0;
  int64_t hi = 0;
};

// reference parameters: a relative reference "Type/id" (or
// "Type/id/_history/n") gives target_type and target_id. An absolute URL or a
// canonical gives `url` (canonical without "|version"; version in
// `version`); if an absolute URL ends in "/Type/id" with a known type, those
// fill target_type/target_id too. Contained ("#x") and urn: references give
// url only. Reference.identifier goes to TokenEntry instead.
struct ReferenceEntry {
  std::string param;
  int group = 0;
  std::string target_type;
  std::string target_id;
  std::string url;
  std::string version;
};

// number and quantity parameters. A point value has low == high; a Range
// gives low/high from its ends (empty string = unbounded). Quantity: value,
// system, code and unit; Money: value and currency (as code, system
// "urn:iso:std:iso:4217"); numbers: value only. Numbers are kept as written
// (decimal text) so no precision is lost.
struct QuantityEntry {
  std::string param;
  int group = 0;
  std::string low;
  std::string high;
  std::string system;
  std::string code;
  std::string unit;
};

// uri parameters: uri, url, canonical and oid values.
struct UriEntry {
  std::string param;
  int group = 0;
  std::string uri;
};

struct IndexEntries {
  std::vector<StringEntry> strings;
  std::vector<TokenEntry> tokens;
  std::vector<DateEntry> dates;
  std::vector<ReferenceEntry> references;
  std::vector<QuantityEntry> quantities;
  std::vector<UriEntry> uris;
  // _content: every string value of the resource (not the narrative),
  // space-separated. _text: the narrative's text with the XHTML tags removed.
  std::string content;
  std::string narrative;
};

// Extracts every index entry of `resource`, a parsed resource of concrete
// type `type`. Expressions that fail to evaluate on this resource (rare:
// FHIRPath evaluation errors) index nothing for that parameter; values of
// unexpected shape are skipped. Never fails.
IndexEntries ExtractIndex(const boost::json::value& resource, std::string_view type,
                          const fhir::SearchParamRegistry& registry);

// The entries of `params` only (parameters of the resource's type), without
// _content and _text: for checking a few parameters of one resource, such
// as its compartment links, cheaply.
IndexEntries ExtractParams(const boost::json::value& resource, const std::vector<const fhir::SearchParamDef*>& params,
                           const fhir::SearchParamRegistry& registry);

}  // namespace medgrid::search
