// The transactional outbox of one shard: every write of a resource version
// (create, update, patch, delete) inserts a row into the shard's `outbox`
// table in the same statement, so a committed change always has its row
// and a rolled-back one never does. The outbox relay (medgrid/events/relay.h)
// reads the rows in order, delivers them, and only then removes them.
//
// Order: the rows of one resource come in version order. Writers of one
// resource are serialized by its row lock and take their outbox position
// after getting it, so a later version always has a higher `seq`. Rows of
// different resources may commit out of `seq` order; Pending returns
// whatever is committed, and a row that commits late is returned later.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"

namespace medgrid::store {

struct OutboxRow {
  int64_t seq = 0;
  std::string tenant;
  std::string type;
  std::string id;
  int64_t version = 0;
  std::string method;  // POST, PUT, PATCH or DELETE
  core::TimePoint changed_at;           // the version's lastUpdated
  std::optional<std::string> body;      // when asked for, and not a deletion
};

// A reader of one shard's outbox on a connection of its own (not pooled),
// for the shard's one relay. Not thread-safe.
class Outbox {
 public:
  virtual ~Outbox() = default;
  virtual const std::string& shard() const = 0;
  // Tries to become the shard's only relay: a session advisory lock, held
  // until this object is destroyed or its connection breaks (then TryLead
  // must succeed again before Pending). False when another relay holds it.
  // Behind PgBouncer (StoreConfig::pgbouncer) the lock is held for one
  // round instead: TryLead begins a transaction that takes it, and Pending
  // (when nothing is pending) or Remove commits it; call TryLead each round.
  virtual absl::StatusOr<bool> TryLead() = 0;
  // Up to `limit` committed rows in `seq` order. Rows of tenants for which
  // `with_body` is true carry the version's body (a second query, only then).
  virtual absl::StatusOr<std::vector<OutboxRow>> Pending(int limit,
                                                         const std::function<bool(const std::string&)>& with_body) = 0;
  // Removes delivered rows.
  virtual absl::Status Remove(const std::vector<int64_t>& seqs) = 0;
  // Rows not yet delivered (an exact count; for metrics and tests).
  virtual absl::StatusOr<int64_t> Backlog() = 0;
};

}  // namespace medgrid::store
