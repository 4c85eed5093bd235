#include "medgrid/audit/audit_event.h"

#include <algorithm>
#include <cctype>

#include "boost/json.hpp"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/validator.h"

namespace medgrid::audit {
namespace {

namespace json = boost::json;

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = static_cast<unsigned char>(in[i]) << 16 | static_cast<unsigned char>(in[i + 1]) << 8 |
                       static_cast<unsigned char>(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out.push_back(kAlphabet[(v >> k) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

json::object Coding(std::string_view system, std::string_view code, std::string_view display = "") {
  json::object c{{"system", system}, {"code", code}};
  if (!display.empty()) c["display"] = display;
  return c;
}

const char* ActionName(char action) {
  switch (action) {
    case 'C': return "create";
    case 'U': return "update";
    case 'D': return "delete";
    case 'E': return "execute";
    default: return "read";
  }
}

}  // namespace

std::string NewEventId(core::TimePoint now) { return core::TimeOrderedId(now); }

std::vector<std::string> PatientReferences(std::string_view text, std::size_t limit) {
  std::vector<std::string> out;
  static constexpr std::string_view kNeedle = "\"reference\":\"Patient/";
  for (std::size_t at = text.find(kNeedle); at != std::string_view::npos && out.size() < limit;
       at = text.find(kNeedle, at + kNeedle.size())) {
    const std::size_t begin = at + kNeedle.size();
    const std::size_t end = text.find('"', begin);
    if (end == std::string_view::npos || end == begin || end - begin > 64) continue;
    std::string ref = core::StrCat("Patient/", text.substr(begin, end - begin));
    if (ref.find_first_of("/\\", 8) != std::string::npos) continue;  // a version or an escape: not a plain id
    if (std::find(out.begin(), out.end(), ref) == out.end()) out.push_back(std::move(ref));
  }
  return out;
}

bool IsReference(std::string_view text) {
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || text[0] < 'A' || text[0] > 'Z') return false;
  for (char c : text.substr(0, slash)) {
    if (!std::isalpha(static_cast<unsigned char>(c))) return false;
  }
  return fhir::IsValidId(text.substr(slash + 1));
}

std::string AuditEventJson(const Interaction& in, const std::string& event_id, const std::string& source) {
  // Outcome (http://hl7.org/fhir/audit-event-outcome): 0 success, 4 minor
  // failure (the client's), 8 serious failure (the server's).
  const char* outcome = in.http_status < 400 ? "0" : in.http_status < 500 ? "4" : "8";
  json::object agent{
      {"type", json::object{{"coding", json::array{Coding("http://dicom.nema.org/resources/ontology/DCM", "110153",
                                                          "Source Role ID")}}}},
      {"who", IsReference(in.agent) ? json::object{{"reference", in.agent}}
                                    : json::object{{"display", in.agent.empty() ? "anonymous" : in.agent}}},
      {"requestor", true}};
  if (!in.agent_address.empty()) agent["network"] = json::object{{"address", in.agent_address}, {"type", "2"}};
  if (!in.purpose_of_use.empty()) {
    json::array purposes;
    for (const std::string& p : in.purpose_of_use) {
      purposes.push_back(json::object{
          {"coding", json::array{Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", p)}}});
    }
    agent["purposeOfUse"] = std::move(purposes);
  }
  json::array entities;
  for (const std::string& p : in.patients) {
    entities.push_back(json::object{
        {"what", json::object{{"reference", p}}},
        {"type", Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person")},
        {"role", Coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient")}});
  }
  for (const std::string& r : in.resources) {
    entities.push_back(json::object{
        {"what", json::object{{"reference", r}}},
        {"type", Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object")},
        {"role", Coding("http://terminology.hl7.org/CodeSystem/object-role", "4", "Domain Resource")}});
  }
  if (in.emergency_override && !in.override_reason.empty()) {
    entities.push_back(json::object{
        {"type", Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object")},
        {"description", "break-the-glass reason"},
        {"detail", json::array{json::object{{"type", "reason"}, {"valueString", in.override_reason}}}}});
  }
  if (!in.query.empty() || (in.action == 'E' && !in.emergency_override)) {
    json::object query{
        {"type", Coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object")},
        {"role", Coding("http://terminology.hl7.org/CodeSystem/object-role", "24", "Query")},
        {"query", Base64(in.query)}};
    if (!in.type.empty()) query["description"] = in.type;
    entities.push_back(std::move(query));
  }
  json::object event{
      {"resourceType", "AuditEvent"},
      {"id", event_id},
      {"type", in.emergency_override
                   ? Coding("http://dicom.nema.org/resources/ontology/DCM", "110113", "Security Alert")
                   : Coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation")},
      {"subtype", json::array{in.emergency_override ? Coding("http://dicom.nema.org/resources/ontology/DCM", "110127",
                                                             "Emergency Override Started")
                                                    : Coding("http://hl7.org/fhir/restful-interaction", in.interaction)}},
      {"action", std::string(1, in.action)},
      {"recorded", core::FormatInstant(in.recorded)},
      {"outcome", outcome},
      {"agent", json::array{std::move(agent)}},
      {"source", json::object{{"site", in.tenant},
                              {"observer", json::object{{"display", source}}},
                              {"type", json::array{Coding("http://terminology.hl7.org/CodeSystem/security-source-type",
                                                          "4", "Application Server")}}}}};
  if (in.http_status >= 400) event["outcomeDesc"] = core::StrCat("HTTP ", in.http_status, " on ", ActionName(in.action));
  if (!entities.empty()) event["entity"] = std::move(entities);
  return json::serialize(event);
}

}  // namespace medgrid::audit
