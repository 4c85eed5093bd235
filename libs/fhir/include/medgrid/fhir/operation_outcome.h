// OperationOutcome construction.
//
//   std::string body = fhir::OperationOutcomeJson(
//       {{"error", "not-found", "Patient/1 is not known", ""}});
#pragma once

#include <string>
#include <vector>

namespace medgrid::fhir {

struct OutcomeIssue {
  std::string severity;     // fatal | error | warning | information
  std::string code;         // IssueType, e.g. "invalid", "not-found"
  std::string diagnostics;  // human-readable; never contains resource content
  std::string expression;   // FHIRPath of the element at fault; empty if none
};

// Serializes an OperationOutcome resource with the given issues.
std::string OperationOutcomeJson(const std::vector<OutcomeIssue>& issues);

}  // namespace medgrid::fhir
