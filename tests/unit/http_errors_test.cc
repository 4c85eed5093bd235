#include "medgrid/fhir/http_errors.h"

#include "boost/json.hpp"
#include "gtest/gtest.h"
#include "medgrid/core/status.h"

namespace medgrid::fhir {
namespace {

namespace json = boost::json;

TEST(HttpErrors, DefaultMappingPerCode) {
  struct Case {
    absl::StatusCode code;
    int http;
    std::string issue;
  };
  for (const Case& c : std::vector<Case>{{absl::StatusCode::kInvalidArgument, 400, "invalid"},
                                         {absl::StatusCode::kUnauthenticated, 401, "login"},
                                         {absl::StatusCode::kPermissionDenied, 403, "forbidden"},
                                         {absl::StatusCode::kNotFound, 404, "not-found"},
                                         {absl::StatusCode::kAlreadyExists, 409, "conflict"},
                                         {absl::StatusCode::kAborted, 409, "conflict"},
                                         {absl::StatusCode::kFailedPrecondition, 412, "conflict"},
                                         {absl::StatusCode::kResourceExhausted, 429, "throttled"},
                                         {absl::StatusCode::kUnavailable, 503, "transient"},
                                         {absl::StatusCode::kDeadlineExceeded, 504, "timeout"},
                                         {absl::StatusCode::kInternal, 500, "exception"}}) {
    HttpError e = ToHttpError(absl::Status(c.code, "msg"));
    EXPECT_EQ(e.status, c.http) << absl::StatusCodeToString(c.code);
    json::value o = json::parse(e.outcome);
    EXPECT_EQ(o.at("resourceType").as_string(), "OperationOutcome");
    EXPECT_EQ(o.at("issue").at(0).at("code").as_string(), c.issue);
  }
}

TEST(HttpErrors, PayloadsOverrideAndPathIsReported) {
  absl::Status st = core::Error(absl::StatusCode::kNotFound, "Patient/1 was deleted").Http(410).Issue("deleted")
                        .Path("Patient.id");
  HttpError e = ToHttpError(st);
  EXPECT_EQ(e.status, 410);
  json::value o = json::parse(e.outcome);
  const auto& issue = o.at("issue").at(0);
  EXPECT_EQ(issue.at("severity").as_string(), "error");
  EXPECT_EQ(issue.at("code").as_string(), "deleted");
  EXPECT_EQ(issue.at("diagnostics").as_string(), "Patient/1 was deleted");
  EXPECT_EQ(issue.at("expression").at(0).as_string(), "Patient.id");
}

TEST(HttpErrors, InternalErrorsHideTheirMessage) {
  HttpError e = ToHttpError(absl::InternalError("password=hunter2 at db1"));
  EXPECT_EQ(e.status, 500);
  EXPECT_EQ(e.outcome.find("hunter2"), std::string::npos);
  EXPECT_EQ(json::parse(e.outcome).at("issue").at(0).at("severity").as_string(), "fatal");
}

TEST(HttpErrors, OutcomeEscapesDiagnostics) {
  std::string body = OutcomeFor(400, "bad \"quote\" and \n newline");
  json::value o = json::parse(body);
  EXPECT_EQ(o.at("issue").at(0).at("diagnostics").as_string(), "bad \"quote\" and \n newline");
}

}  // namespace
}  // namespace medgrid::fhir
