// Versioned FHIR resource storage for one shard.
//
// Every call names the tenant; every statement filters on it, so one
// tenant can never see or change another's rows, even on a shared shard.
// Writes create a new row in resource_versions and move the current pointer
// in `resources` in one transaction. Concurrent writers to one resource are
// serialized by a row lock; the version sequence has no gaps or duplicates.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"
#include "medgrid/store/export_jobs.h"
#include "medgrid/store/idempotency.h"
#include "medgrid/store/outbox.h"
#include "medgrid/search/index.h"
#include "medgrid/search/query.h"

namespace boost::asio {
class io_context;
}

namespace medgrid::store {

struct ResourceKey {
  std::string tenant;
  std::string type;
  std::string id;
};

// One stored version.
struct ResourceVersion {
  std::string type;
  std::string id;
  int64_t version = 0;
  core::TimePoint last_updated;
  bool deleted = false;
  std::string method;  // POST, PUT, PATCH or DELETE: how this version was made
  std::string body;    // full resource JSON with meta; empty for a deletion
};

// What a write stores: the resource JSON and its search index entries,
// which are written in the same transaction and replace the previous
// version's.
struct StoredBody {
  std::string json;
  search::IndexEntries index;
};

// Called inside the write transaction with the current version (nullopt if
// the resource never existed), the version number and timestamp the new
// version will get. Returns what to store, or an error that aborts the
// write (e.g. an If-Match mismatch). May be called more than once if the
// transaction is retried.
using BodyFn = std::function<absl::StatusOr<StoredBody>(const std::optional<ResourceVersion>& current,
                                                        int64_t new_version, core::TimePoint now)>;

struct HistoryQuery {
  std::optional<std::string> type;  // type or instance level
  std::optional<std::string> id;    // instance level (requires type)
  std::optional<core::TimePoint> since;
  int count = 50;
  std::optional<int64_t> before_seq;  // paging cursor: rows with seq < before_seq
};

struct HistoryPage {
  std::vector<ResourceVersion> entries;  // newest first
  std::optional<int64_t> next_cursor;    // set when more rows exist
};

// Restricts a search to one compartment (Patient/123/Observation): the
// resources whose `params` (reference parameters of the searched type)
// point at type/id.
struct Compartment {
  std::string type;
  std::string id;
  std::vector<std::string> params;
};

// One page of search results.
struct SearchPage {
  std::vector<ResourceVersion> matches;   // current versions, in result order
  std::vector<ResourceVersion> included;  // _include / _revinclude, each once, none of them in matches
  // Opaque paging cursors for the next and previous pages, when they exist.
  std::optional<std::string> next_cursor;
  std::optional<std::string> prev_cursor;
  std::optional<int64_t> total;  // when asked for, or known without extra cost
  bool total_is_estimate = false;
  // Set when includes stopped at the limit: a message for the client.
  std::optional<std::string> include_warning;
};

using ReadCallback = std::function<void(absl::StatusOr<ResourceVersion>)>;

// An online reindex of one tenant's resources (all types, or `types`),
// kept in the shard so that it survives restarts and any instance can carry
// it on.
struct ReindexJob {
  std::string tenant;
  int64_t id = 0;
  std::vector<std::string> types;  // empty: every type
  std::string status;              // running | done | failed
  int64_t processed = 0;
  int64_t total = 0;               // live resources to visit, counted at the start
  core::TimePoint created;
  core::TimePoint updated;
  std::optional<core::TimePoint> finished;
  std::string error;
};

// The index entries of one stored resource (type, JSON body), computed with
// the tenant's current search parameters.
using IndexFn = std::function<absl::StatusOr<search::IndexEntries>(const std::string& type, const std::string& body)>;

// The write a conditional interaction decides on, from its matches.
struct ConditionalWrite {
  ResourceKey key;
  std::string method;  // POST or PUT (written as Update would) or DELETE
  BodyFn body;         // POST and PUT
};
using DecideFn =
    std::function<absl::StatusOr<std::optional<ConditionalWrite>>(const std::vector<ResourceVersion>& matches)>;

// One version a transaction writes: the caller has locked the resource
// (TransactionScope::Current) and chosen the version number, so the whole
// set is written by one statement.
struct PendingWrite {
  ResourceKey key;     // the tenant is the scope's
  int64_t version = 0;
  std::string method;  // POST, PUT, PATCH or DELETE
  core::TimePoint last_updated;
  StoredBody body;     // unused for DELETE
};

// The statements of one database transaction on the tenant's shard (a
// transaction Bundle, http.html#transaction). Every call reads or writes
// inside it, so reads see the writes made so far, and nothing is visible to
// others until RunTransaction commits.
class TransactionScope {
 public:
  virtual ~TransactionScope() = default;
  // The time the writes of this attempt are stamped with.
  virtual core::TimePoint Now() const = 0;
  // Serializes transactions that use the same key (conditional criteria).
  virtual absl::Status Lock(const std::string& lock_key) = 0;
  // The current versions of `keys` (nullopt where one never existed), in the
  // same order, each row locked until commit when `lock`. Bodies are read
  // when `with_bodies`.
  virtual absl::StatusOr<std::vector<std::optional<ResourceVersion>>> Current(const std::vector<ResourceKey>& keys,
                                                                              bool lock, bool with_bodies) = 0;
  // One version. Errors: NotFound.
  virtual absl::StatusOr<ResourceVersion> ReadVersion(const ResourceKey& key, int64_t version) = 0;
  virtual absl::StatusOr<SearchPage> Search(const search::SearchRequest& request,
                                            const std::optional<Compartment>& compartment) = 0;
  virtual absl::StatusOr<HistoryPage> History(const HistoryQuery& q) = 0;
  // Writes every version, their search index rows and outbox rows with one
  // set-based statement. Each key must appear once.
  virtual absl::Status Write(const std::vector<PendingWrite>& writes) = 0;
};

// A notification of a Subscription waiting for delivery (libs/subscriptions):
// the change of type/id/version matched the subscription's criteria.
struct Notification {
  std::string tenant;
  std::string subscription_id;
  std::string type;
  std::string id;
  int64_t version = 0;
  int attempts = 0;  // failed deliveries so far
  int64_t seq = 0;   // queue order (set by the store)
};

// The body of a transaction. Runs again from the start when the database
// aborts an attempt on a conflict, so it must rebuild all of its state.
using TransactionFn = std::function<absl::Status(TransactionScope&)>;

class ResourceStore {
 public:
  virtual ~ResourceStore() = default;

  // The current version. Errors: NotFound if the resource never existed.
  // A deleted resource is returned with deleted = true.
  virtual absl::StatusOr<ResourceVersion> Read(const ResourceKey& key) = 0;
  // One version. Errors: NotFound.
  virtual absl::StatusOr<ResourceVersion> ReadVersion(const ResourceKey& key, int64_t version) = 0;
  // Read (version unset) or ReadVersion without blocking: the query runs on
  // `io`, the io_context driving the calling thread, and `done` is called on
  // that thread with the same results and errors as the blocking calls.
  // Precondition: called from a thread running `io`.
  virtual void ReadAsync(const ResourceKey& key, std::optional<int64_t> version, boost::asio::io_context& io,
                         ReadCallback done) = 0;
  // Inserts version 1 of a resource whose id the server just generated.
  // Errors: AlreadyExists on an id clash.
  virtual absl::StatusOr<ResourceVersion> Create(const ResourceKey& key, const BodyFn& body) = 0;
  // Create without blocking, on `io` as ReadAsync; same results and errors.
  virtual void CreateAsync(const ResourceKey& key, const BodyFn& body, boost::asio::io_context& io,
                           ReadCallback done) = 0;
  // Writes the next version of `key` (version 1 if it never existed) with
  // `method` PUT or PATCH. If body() fails, nothing is written and its
  // status is returned.
  virtual absl::StatusOr<ResourceVersion> Update(const ResourceKey& key, const std::string& method,
                                                 const BodyFn& body) = 0;
  // Writes a deletion version. `check` runs on the current version first
  // (for If-Match). Errors: NotFound if the resource never existed. Deleting
  // a deleted resource writes nothing and returns the existing tombstone.
  virtual absl::StatusOr<ResourceVersion> Delete(
      const ResourceKey& key, const std::function<absl::Status(const ResourceVersion&)>& check) = 0;
  virtual absl::StatusOr<HistoryPage> History(const std::string& tenant, const HistoryQuery& q) = 0;
  // Runs a parsed search over the tenant's current, live resources.
  // Errors: InvalidArgument (400) for a malformed cursor; Unavailable /
  // DeadlineExceeded from the database.
  // Conditional create, update and delete (http.html#ccreate): runs the
  // search `match` (reading at most its `count` results), calls `decide`
  // with the matches and performs the write it returns, all in one
  // transaction that holds a lock on (tenant, `lock_key`), so concurrent
  // conditional writes with the same criteria run one after the other.
  // Returns the version written, or nullopt when `decide` chose not to write.
  virtual absl::StatusOr<std::optional<ResourceVersion>> Conditional(const std::string& tenant,
                                                                     const search::SearchRequest& match,
                                                                     const std::string& lock_key,
                                                                     const DecideFn& decide) = 0;
  // Starts a reindex of the tenant's live resources of `types` (all when
  // empty).
  virtual absl::StatusOr<ReindexJob> StartReindex(const std::string& tenant, const std::vector<std::string>& types) = 0;
  // The tenant's reindex jobs, newest first.
  virtual absl::StatusOr<std::vector<ReindexJob>> ReindexJobs(const std::string& tenant) = 0;
  // Takes a running job of any tenant on this shard whose lease is free or
  // expired, leasing it to `owner` for `lease`; nullopt when there is none.
  virtual absl::StatusOr<std::optional<ReindexJob>> ClaimReindex(const std::string& owner,
                                                                 std::chrono::seconds lease) = 0;
  // Re-indexes the next `batch` resources of `job` (in type/id order) with
  // `index`, under row locks so concurrent writes keep their own index, and
  // records the progress in the same transaction; renews the lease. Returns
  // the job as it now stands (status done after the last batch). Errors:
  // Aborted when `owner` no longer holds the lease.
  virtual absl::StatusOr<ReindexJob> ReindexBatch(const ReindexJob& job, const std::string& owner, int batch,
                                                  const IndexFn& index, std::chrono::seconds lease) = 0;
  // Analyzes the search tables that changed much since their last
  // statistics (more than a fifth of their rows, and over 1,000 rows), so a
  // tenant's first bulk load is planned with real statistics even where
  // autovacuum looks rarely, and folds the per-code count deltas written
  // since the last call into the counts. Returns the tables analyzed.
  virtual absl::StatusOr<std::vector<std::string>> RefreshStatistics() = 0;
  // The EXPLAIN (ANALYZE, BUFFERS) text of the statements Search would run
  // (the page query, and the count for _total=accurate). For operators.
  virtual absl::StatusOr<std::string> ExplainSearch(const std::string& tenant, const search::SearchRequest& request,
                                                    const std::optional<Compartment>& compartment) = 0;
  virtual absl::StatusOr<SearchPage> Search(const std::string& tenant, const search::SearchRequest& request,
                                            const std::optional<Compartment>& compartment) = 0;
  // Runs `fn` in one database transaction for `tenant`, committed when it
  // returns OK and rolled back otherwise (its status is returned).
  virtual absl::Status RunTransaction(const std::string& tenant, const TransactionFn& fn) = 0;
  // Runs `fn` under an idempotency key, in one transaction that first tries
  // a transaction-scoped advisory lock on (tenant, key) without waiting,
  // then looks the key up: an unexpired record answers kReplayed (same
  // fingerprint) or kMismatch (another) without running `fn`, whether or not
  // the lock was had (it may be held by a concurrent replay); with no record,
  // kInFlight when the lock is held elsewhere. An expired record is removed. Otherwise
  // `fn` runs and its response is inserted as the key's record in the same
  // transaction, which commits when `fn` returns OK and rolls back (leaving
  // no record) otherwise, with its status. Holds no session state, so it is
  // safe behind PgBouncer in transaction mode.
  virtual absl::StatusOr<IdempotentResult> RunIdempotent(const std::string& tenant, const IdempotencyKey& key,
                                                         const IdempotentFn& fn) = 0;
  // Removes up to `limit` idempotency records of any tenant of this shard
  // that expired; returns how many went.
  virtual absl::StatusOr<int64_t> PurgeExpiredIdempotencyKeys(int limit) = 0;
  // A reader of this shard's outbox on a new connection of its own.
  // Errors: Unavailable.
  virtual absl::StatusOr<std::unique_ptr<Outbox>> OpenOutbox() = 0;
  // Bulk export jobs and reads on this shard (pg_export.cc). Lives as
  // long as the store.
  virtual ExportJobStore& Exports() = 0;
  // Subscription notifications (pg_subscriptions.cc). Queues each one due at
  // `due`; one already queued (same tenant, subscription, type, id and
  // version) is left as it is, so a change delivered twice queues once.
  virtual absl::Status QueueNotifications(const std::vector<Notification>& notifications, core::TimePoint due) = 0;
  // Leases up to `limit` notifications of any tenant of this shard that are
  // due at `now`, oldest first, by moving them to `lease_until`: another
  // worker (of any instance) skips them until then, so a worker that dies
  // with a lease only delays them. A notification whose subscription has an
  // older one not yet due (waiting for a retry, or leased) is not claimed,
  // so each subscription's notifications go out in the order queued.
  virtual absl::StatusOr<std::vector<Notification>> ClaimNotifications(int limit, core::TimePoint now,
                                                                       core::TimePoint lease_until) = 0;
  // Removes a delivered notification.
  virtual absl::Status RemoveNotification(const Notification& notification) = 0;
  // Sets a notification's failure count and next attempt.
  virtual absl::Status RescheduleNotification(const Notification& notification, int attempts,
                                              core::TimePoint next_attempt) = 0;
  // Removes every queued notification of a subscription (it stopped).
  virtual absl::Status DropNotifications(const std::string& tenant, const std::string& subscription_id) = 0;
  // The current versions of the live resources of `type` of `tenants` (on
  // this shard), as (tenant, version) pairs with bodies: at start-up, every
  // Subscription.
  virtual absl::StatusOr<std::vector<std::pair<std::string, ResourceVersion>>> AllLive(
      const std::vector<std::string>& tenants, const std::string& type) = 0;
};

}  // namespace medgrid::store
