// Status helpers shared by every medgrid library.
//
// Errors cross library and service boundaries as absl::Status. A status may
// carry a FHIR issue code, an element path and an explicit HTTP status as
// payloads, so the one transport mapping (gateway/http_errors.h) can answer
// with the precise OperationOutcome the FHIR specification asks for.
//
//   RETURN_IF_ERROR(repo.Put(r));
//   ASSIGN_OR_RETURN(auto v, repo.Read(key));
//   return core::Error(absl::StatusCode::kInvalidArgument, "Bad id").Http(400)
//       .Issue("value").Path("Patient.id");
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MEDGRID_CONCAT_INNER_(a, b) a##b
#define MEDGRID_CONCAT_(a, b) MEDGRID_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    if (absl::Status _st = (expr); !_st.ok()) {    \
      return _st;                                  \
    }                                              \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(MEDGRID_CONCAT_(_status_or_, __LINE__), lhs, expr)

namespace medgrid::core {

// Builder for a Status with medgrid payloads. Implicitly converts to
// absl::Status.
class Error {
 public:
  Error(absl::StatusCode code, std::string_view message) : code_(code), message_(message) {}

  // Overrides the HTTP status derived from the code (e.g. 410, 412, 415).
  Error& Http(int status) { http_ = status; return *this; }
  // FHIR IssueType code (http://hl7.org/fhir/issue-type), e.g. "invalid".
  Error& Issue(std::string_view code) { issue_ = std::string(code); return *this; }
  // FHIRPath of the offending element, reported in OperationOutcome.issue.expression.
  Error& Path(std::string_view path) { path_ = std::string(path); return *this; }
  // Seconds after which a retry may succeed (429, 503): the transport sends
  // it as Retry-After.
  Error& RetryAfter(int64_t seconds) { retry_after_ = seconds; return *this; }

  operator absl::Status() const;  // NOLINT(google-explicit-constructor)
  absl::Status ToStatus() const { return *this; }

 private:
  absl::StatusCode code_;
  std::string message_;
  std::optional<int> http_;
  std::optional<std::string> issue_;
  std::optional<std::string> path_;
  std::optional<int64_t> retry_after_;
};

// Payload accessors; empty when the status has no such payload.
std::optional<int> HttpStatusOf(const absl::Status& status);
std::optional<std::string> IssueCodeOf(const absl::Status& status);
std::optional<std::string> PathOf(const absl::Status& status);
std::optional<int64_t> RetryAfterOf(const absl::Status& status);

}  // namespace medgrid::core
