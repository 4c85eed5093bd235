// The one mapping from absl::Status to an HTTP status and OperationOutcome.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace medgrid::fhir {

struct HttpError {
  int status = 500;
  std::string outcome;  // OperationOutcome JSON
};

// Uses the status's explicit HTTP payload when present, else maps the code:
// InvalidArgument 400, Unauthenticated 401, PermissionDenied 403, NotFound
// 404, AlreadyExists/Aborted 409, FailedPrecondition 412, ResourceExhausted
// 429, Unimplemented 501, Unavailable 503, DeadlineExceeded 504, other 500.
// A 500 never carries the internal message to the client.
HttpError ToHttpError(const absl::Status& status);

// An OperationOutcome body for a plain status and message.
std::string OutcomeFor(int http_status, const std::string& message);

}  // namespace medgrid::fhir
