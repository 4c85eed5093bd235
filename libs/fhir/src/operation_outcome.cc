#include "medgrid/fhir/operation_outcome.h"

#include "medgrid/core/logging.h"

namespace medgrid::fhir {

std::string OperationOutcomeJson(const std::vector<OutcomeIssue>& issues) {
  std::string out = R"({"resourceType":"OperationOutcome","issue":[)";
  bool first = true;
  for (const OutcomeIssue& i : issues) {
    if (!first) out += ',';
    first = false;
    out += R"({"severity":")";
    core::AppendJsonEscaped(out, i.severity);
    out += R"(","code":")";
    core::AppendJsonEscaped(out, i.code);
    out += '"';
    if (!i.diagnostics.empty()) {
      out += R"(,"diagnostics":")";
      core::AppendJsonEscaped(out, i.diagnostics);
      out += '"';
    }
    if (!i.expression.empty()) {
      out += R"(,"expression":[")";
      core::AppendJsonEscaped(out, i.expression);
      out += R"("])";
    }
    out += '}';
  }
  out += "]}";
  return out;
}

}  // namespace medgrid::fhir
