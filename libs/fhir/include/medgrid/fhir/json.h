// FHIR JSON parsing and serialization on Boost.JSON.
//
// FHIR requires decimals to keep their textual precision ("1.50" stays
// "1.50"), which a double cannot do. ParseJson therefore stores every JSON
// number that is not an integer as a *decimal value*: a boost::json::string
// holding kDecimalMarker followed by the original number text. Strings from
// the wire can never start with the marker, because ParseJson rejects control
// characters in strings (FHIR forbids them: they cannot be represented in the
// XML format). SerializeJson writes decimal values back as bare numbers.
// Integers stay int64/uint64.
//
//   ASSIGN_OR_RETURN(boost::json::value v, fhir::ParseJson(body, {}));
//   std::string out = fhir::SerializeJson(v);
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "boost/json/value.hpp"

namespace medgrid::fhir {

inline constexpr char kDecimalMarker = '\x01';

struct JsonLimits {
  // Deepest nesting of objects and arrays accepted. FHIR resources in the
  // official examples nest well under 40 levels.
  std::size_t max_depth = 64;
};

// Parses `text` as one JSON document. Errors: InvalidArgument (HTTP 400,
// issue "structure") for malformed JSON, invalid UTF-8, control characters
// in strings, or nesting deeper than `limits.max_depth`.
absl::StatusOr<boost::json::value> ParseJson(std::string_view text, const JsonLimits& limits = {});

// Serializes compactly, writing decimal values as numbers.
std::string SerializeJson(const boost::json::value& v);
void SerializeJsonTo(const boost::json::value& v, std::string& out);

bool IsDecimal(const boost::json::value& v);
// The number text of a decimal value. Precondition: IsDecimal(v).
std::string_view DecimalText(const boost::json::value& v);
// Builds a decimal value from number text. Precondition: `text` is a valid
// JSON number.
boost::json::value MakeDecimal(std::string_view text);
// True for int64, uint64, double and decimal values.
bool IsNumber(const boost::json::value& v);

// Deep equality that treats decimals by their text and objects as unordered.
bool JsonEqual(const boost::json::value& a, const boost::json::value& b);

}  // namespace medgrid::fhir
