// JSON Patch (RFC 6902) and JSON Pointer (RFC 6901) over boost::json values.
//
//   RETURN_IF_ERROR(fhir::ApplyJsonPatch(patch_document, resource));
#pragma once

#include "absl/status/status.h"
#include "boost/json/value.hpp"

namespace medgrid::fhir {

// Applies the operations in `patch` (a JSON array of {op, path, value|from})
// to `target` in order; all or nothing: on error `target` is unchanged.
// Errors: InvalidArgument (HTTP 400, issue "invalid") for a malformed patch
// document (not an array of operation objects, unknown op, missing or
// non-string path/from, missing value, bad JSON Pointer, a move into its own
// child); FailedPrecondition with HTTP 422 (issue "processing") when a path
// does not exist, an array index is out of range, the whole document is
// removed, or a "test" operation fails. "test" compares with JsonEqual, so
// decimals compare by their text (1.50 != 1.5). Messages name the operation's
// index and the JSON Pointer.
absl::Status ApplyJsonPatch(const boost::json::value& patch, boost::json::value& target);

}  // namespace medgrid::fhir
