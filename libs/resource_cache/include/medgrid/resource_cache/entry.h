// What the FHIR read cache keeps per key, in L1 and in Redis (L2), and the
// pure helpers that find the patient a request or a resource belongs to.
//
// An entry is one text value, "<version>|<kind>|<last updated, unix µs>|
// <patient id>|<body>": the version first so a Redis Lua script can compare
// versions without parsing the rest. Kinds:
//   b  a live version with its body;
//   d  a deletion (tombstone): reads answer 410 without the database;
//   s  stale marker: a change to `version` was committed and this cache has
//      not got its body; a miss, but it keeps fills of older versions out.
// Ids (FHIR [A-Za-z0-9\-\.]{1,64}) cannot contain '|', so the fields split
// unambiguously.
//
//   std::string text = EncodeEntry({Entry::Kind::kBody, 3, now, "p1", body});
//   std::optional<Entry> e = DecodeEntry(text);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "medgrid/core/clock.h"
#include "medgrid/engine/fhir_api.h"

namespace medgrid::resource_cache {

struct Entry {
  enum class Kind : char { kBody = 'b', kDeleted = 'd', kStale = 's' };
  Kind kind = Kind::kBody;
  int64_t version = 0;
  core::TimePoint last_updated;
  std::string patient;  // the Patient id the resource belongs to, or empty
  std::string body;     // kBody only
};

std::string EncodeEntry(const Entry& entry);
// nullopt for text that is not an encoded entry (a foreign or corrupt value).
std::optional<Entry> DecodeEntry(std::string_view text);

// The Patient id a resource belongs to: its own id for a Patient, else the
// Patient of its top-level `subject` or `patient` reference ("Patient/123");
// empty when there is none or the body is not JSON.
std::string PatientOf(std::string_view type, std::string_view id, std::string_view body);
// The Patient id a search is about: the compartment Patient/{id}, or a
// `patient` or `subject` parameter naming one Patient ("123" or
// "Patient/123"); empty otherwise.
std::string PatientOfSearch(const engine::SearchInput& input);

}  // namespace medgrid::resource_cache
