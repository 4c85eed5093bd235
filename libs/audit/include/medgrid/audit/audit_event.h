// AuditEvent resources for FHIR interactions, shaped after the IHE Basic
// Audit Log Patterns (BALP): type `rest` with the interaction as subtype,
// action C/R/U/D/E, outcome from the HTTP status, the requesting agent with
// its network address, this server as source, and entities for the patients
// involved (role Patient) and the resources read, written or returned
// (role Domain Resource), with the query of a search (base64, role Query).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "medgrid/core/clock.h"

namespace medgrid::audit {

struct Interaction {
  std::string tenant;
  // http://hl7.org/fhir/restful-interaction: read, vread, create, update,
  // patch, delete, search-type, search-system, history-instance, ...
  std::string interaction;
  char action = 'R';  // C, R, U, D or E (execute, for searches)
  int http_status = 200;
  std::string type;  // the resource type, when the interaction names one
  std::string id;
  std::vector<std::string> patients;   // "Patient/123", the patients involved
  std::vector<std::string> resources;  // "Observation/o1", read, written or returned
  std::string query;                   // a search's query string
  std::string agent_address;           // the client's network address
  // Who asked: a reference (Practitioner/123, Patient/9, Device/app) once
  // requests carry verified identities; empty for an anonymous request.
  std::string agent;
  std::vector<std::string> purpose_of_use;  // v3-PurposeOfUse codes, when the request states them
  // A break-the-glass grant opened: the event is a DICOM Security Alert
  // (110113), subtype Emergency Override Started (110127), with the
  // clinician's stated reason as an entity detail.
  bool emergency_override = false;
  std::string override_reason;
  core::TimePoint recorded;
};

// The AuditEvent resource (JSON text) for `interaction`, with id `event_id`;
// `source` names this server instance.
std::string AuditEventJson(const Interaction& interaction, const std::string& event_id, const std::string& source);

// Whether `text` is a relative reference "Type/id" (a capitalized type
// name, a valid FHIR id): how agents are named.
bool IsReference(std::string_view text);

// An AuditEvent id for an event recorded at `now`: a time-ordered UUID
// (core::TimeOrderedId), so that the ledger's and the search index's keys on
// it take new ids at their right edge.
std::string NewEventId(core::TimePoint now);

// The distinct "Patient/<id>" references in a resource's JSON text, at most
// `limit`: the patients a resource is about.
std::vector<std::string> PatientReferences(std::string_view json, std::size_t limit = 20);

}  // namespace medgrid::audit
