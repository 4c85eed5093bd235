#include "medgrid/fhir/http_errors.h"

#include "medgrid/core/status.h"
#include "medgrid/fhir/operation_outcome.h"

namespace medgrid::fhir {
namespace {

int DefaultHttp(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kFailedPrecondition: return 412;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string IssueFor(int http) {
  switch (http) {
    case 400: return "invalid";
    case 401: return "login";
    case 403: return "forbidden";
    case 404: return "not-found";
    case 405: return "not-supported";
    case 406:
    case 415: return "not-supported";
    case 408: return "timeout";
    case 409: return "conflict";
    case 410: return "deleted";
    case 412: return "conflict";
    case 413:
    case 431: return "too-costly";
    case 422: return "processing";
    case 429: return "throttled";
    case 503: return "transient";
    case 504: return "timeout";
    default: return "exception";
  }
}

}  // namespace

HttpError ToHttpError(const absl::Status& status) {
  HttpError e;
  e.status = core::HttpStatusOf(status).value_or(DefaultHttp(status.code()));
  fhir::OutcomeIssue issue;
  issue.severity = e.status >= 500 ? "fatal" : "error";
  issue.code = core::IssueCodeOf(status).value_or(IssueFor(e.status));
  issue.diagnostics = e.status == 500 ? "Internal server error" : std::string(status.message());
  issue.expression = core::PathOf(status).value_or("");
  e.outcome = fhir::OperationOutcomeJson({issue});
  return e;
}

std::string OutcomeFor(int http_status, const std::string& message) {
  return fhir::OperationOutcomeJson(
      {{http_status >= 500 ? "fatal" : "error", IssueFor(http_status), message, ""}});
}

}  // namespace medgrid::fhir
