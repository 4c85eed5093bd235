// AuditEvent read and search over the ledger (the table audit_event_index of
// the ledger database, migration 3 of LedgerMigrations): what an auditor
// asks, "who saw this patient's data, when", answered from the events the
// tamper-evident ledger holds.
//
// Search parameters: patient (a Patient reference or id), agent (who asked,
// a reference or an id: Practitioner/123 or 123), date (the
// recorded time, with eq, ne, gt, lt, ge, le, sa and eb), action (C, R, U, D,
// E), outcome (0, 4, 8, 12), subtype (the interaction), address (the
// agent's network address) and _id; OR within one, AND across repeats.
// Results come oldest first, `_count` at a time (default 50, at most 1,000),
// with a next link. The other AuditEvent parameters of R4 are refused with
// 400 naming them (lenient handling drops them instead).
//
// Read and search answer the ledger's hot window: an event archived past the
// tenant's retention (LedgerStore::Archive) reads as 410 Gone and is not
// found by search; its bytes and proofs are in the archive file.
//
// One connection, shared under a lock: searches wait for each other.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/audit/audit_event.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/search/query.h"

namespace medgrid::audit {

// The searchable facts of one event.
struct EventFacts {
  std::string event_id;
  int64_t recorded_us = 0;
  std::string action;
  std::string outcome;
  std::string subtype;
  std::string address;
  std::string agent;  // Interaction::agent when it is a reference, else empty
  std::vector<std::string> patients;
};

EventFacts FactsOf(const Interaction& interaction, const std::string& event_id);
// One line (tab-separated, patients comma-separated) and back.
std::string FactsLine(const EventFacts& facts);
bool ParseFactsLine(std::string_view line, EventFacts& out);

class AuditIndex {
 public:
  // Connects to the ledger database (LedgerStore::Open has migrated it).
  static absl::StatusOr<std::unique_ptr<AuditIndex>> Open(const std::string& dsn);
  ~AuditIndex();

  absl::Status Put(const std::string& tenant, const std::vector<EventFacts>& facts);

  // The AuditEvent (JSON text) with id `id` in `tenant`'s ledger. NotFound (404).
  absl::StatusOr<std::string> Read(const std::string& tenant, const std::string& id);

  // A searchset Bundle. `request` was parsed against the R4 registry for
  // type AuditEvent; `cursor` is the value of _cursor from a next link.
  absl::StatusOr<std::string> Search(const std::string& tenant, const search::SearchRequest& request,
                                     const engine::SearchInput& input);

 private:
  AuditIndex();
  struct Impl;  // the connection (pqxx), guarded by mu_
  std::mutex mu_;
  std::unique_ptr<Impl> impl_;
  std::string dsn_;
};

}  // namespace medgrid::audit
