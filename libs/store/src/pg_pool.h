// A fixed-size pool of libpqxx connections to one database.
//
// Every statement sent on the pool's connections counts in queries()
// (query_count.h).
//
// Invariants: at most `size` connections exist; a connection is either in
// idle_, handed to a waiter, or leased to exactly one Lease; a connection
// that threw pqxx::broken_connection is dropped, never returned to idle_,
// and the idle connections go with it.
// Waiters are served first come, first served: a released connection goes
// straight to the oldest waiter, so no request starves under load (a plain
// condition variable wakes an arbitrary thread and makes latency tails long).
//
// A shard primary's pool may have a circuit breaker (ShardBreaker). Acquire
// asks it first and, while it is open, fails at once instead of waiting for
// a connect timeout. Every lease it allowed records one outcome when it ends:
// a failure when connecting failed or the connection proved broken
// (MarkConnectionFailed), a success otherwise, whatever the statement's own
// result (NotFound, a constraint, a timed-out query). A wait for a free
// connection that times out records nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"
#include "medgrid/resilience/bulkhead.h"
#include "medgrid/resilience/circuit_breaker.h"
#include "pqxx/pqxx"
#include "query_count.h"

namespace medgrid::store {

// The circuit breaker of one shard primary ("db:<shard>"): it logs each
// state change (db.breaker) and builds the error of a refused call.
// Thread-safe.
class ShardBreaker {
 public:
  // `clock` must outlive the breaker; settings.name is replaced by "db:<shard>".
  ShardBreaker(std::string shard, resilience::BreakerSettings settings, const core::Clock& clock);

  resilience::CircuitBreaker& breaker() { return breaker_; }
  // 503 transient with Retry-After: the remaining open time, at least 1 s.
  absl::Status Refused();
  // Whether `status` (from the asynchronous path) is a connection failure.
  static bool IsConnectionFailure(const absl::Status& status) {
    return status.code() == absl::StatusCode::kUnavailable;
  }

 private:
  const std::string shard_;
  resilience::CircuitBreaker breaker_;
};

// The per-tenant cap on one shard's database work: at most `limit`
// connections held or waited for by one tenant at once, over the shard
// primary's pool, its replicas' pools and the non-blocking connections of
// every I/O thread. A tenant at its cap waits up to `wait` for one of its
// places (0: refused at once), in its own queue, so that the others' work
// does not queue behind its surplus; then it is refused with 503 and
// Retry-After. Thread-safe.
class TenantConnections {
 public:
  TenantConnections(std::string shard, int limit, std::chrono::milliseconds wait);

  // A place for `tenant`, blocking up to the wait, or the refusal.
  absl::StatusOr<resilience::KeyedBulkhead::Slot> Acquire(std::string_view tenant);
  // The refusal: ResourceExhausted, 503 "transient", Retry-After 1.
  absl::Status Refused() const;
  // Whether `status` is this cap's refusal: the work was not tried at all,
  // so it must not be handed to another pool of the shard (the same cap
  // applies there) nor count against a server.
  static bool IsRefusal(const absl::Status& status);

  std::chrono::milliseconds wait() const { return wait_; }
  resilience::KeyedBulkhead& slots() { return slots_; }
  const resilience::KeyedBulkhead& slots() const { return slots_; }

 private:
  const std::string shard_;
  const std::chrono::milliseconds wait_;
  resilience::KeyedBulkhead slots_;
};

class PgPool {
 public:
  using Prepare = std::function<void(pqxx::connection_base&)>;

  // `breaker`, if any, guards the pool and `tenants`, if any, caps each
  // tenant's connections (see above); both must outlive the pool.
  PgPool(std::string name, std::string dsn, int size, std::chrono::milliseconds acquire_timeout,
         Prepare prepare, ShardBreaker* breaker = nullptr, TenantConnections* tenants = nullptr);
  ~PgPool();

  class Lease {
   public:
    Lease(PgPool* pool, std::unique_ptr<ShardConnection> conn,
          std::optional<resilience::CircuitBreaker::Permit> permit = std::nullopt,
          resilience::KeyedBulkhead::Slot tenant_slot = {})
        : pool_(pool), conn_(std::move(conn)), permit_(permit), tenant_slot_(std::move(tenant_slot)) {}
    Lease(Lease&& o) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    pqxx::connection_base& conn() { return *conn_; }
    // Drops the connection instead of returning it (after a broken link),
    // and counts as a connection failure for the breaker.
    void Discard() { discard_ = true; }
    // The server refused or dropped the work for connection reasons
    // (SQLSTATE 08*, 57P01, 57P03): a failure for the breaker.
    void MarkConnectionFailed() { failed_ = true; }

   private:
    PgPool* pool_;
    std::unique_ptr<ShardConnection> conn_;
    std::optional<resilience::CircuitBreaker::Permit> permit_;
    // Destroyed after the destructor's body has returned the connection.
    resilience::KeyedBulkhead::Slot tenant_slot_;
    bool discard_ = false;
    bool failed_ = false;
  };

  // Takes the current request's tenant place (a refusal: ResourceExhausted,
  // 503 with Retry-After), then waits up to acquire_timeout for a
  // connection, opening one if the pool is below size. Errors: Unavailable
  // (503) on a connection failure or while the breaker is open,
  // ResourceExhausted (503) when no connection freed up in time.
  absl::StatusOr<Lease> Acquire();

  const std::string& name() const { return name_; }
  // The breaker guarding the pool; null for pools without one.
  ShardBreaker* breaker() const { return breaker_; }
  int size() const { return size_; }
  int open() const;
  int busy() const;
  // Statements sent on this pool's connections, by kind.
  QueryCounters& queries() { return *queries_; }
  const QueryCounters& queries() const { return *queries_; }

 private:
  void Release(std::unique_ptr<ShardConnection> conn, bool discard);
  void Record(const std::optional<resilience::CircuitBreaker::Permit>& permit, bool failed);
  // Lets the oldest waiter open a connection in a slot that just freed up.
  // Requires mu_.
  void HandOffSlot();

  const std::string name_;
  const std::string dsn_;
  const int size_;
  const std::chrono::milliseconds acquire_timeout_;
  const Prepare prepare_;
  ShardBreaker* const breaker_;
  TenantConnections* const tenants_;
  const std::unique_ptr<QueryCounters> queries_ = std::make_unique<QueryCounters>();

  struct Waiter {
    std::condition_variable cv;
    std::unique_ptr<ShardConnection> conn;  // handed over by Release
    bool may_open = false;                   // a slot freed up: open a new connection
  };

  mutable std::mutex mu_;
  std::deque<Waiter*> waiters_;                           // guarded by mu_; oldest first
  std::vector<std::unique_ptr<ShardConnection>> idle_;  // guarded by mu_
  int open_ = 0;                                          // guarded by mu_
  int busy_ = 0;                                          // guarded by mu_
};

// Maps a libpqxx exception to a Status: broken connection -> Unavailable
// (503), query_canceled (57014) -> DeadlineExceeded (504), unique violation
// -> AlreadyExists, serialization/deadlock -> Aborted, other -> Internal.
absl::Status StatusFromPqxx(const std::exception& e);

// Runs `fn(connection)` on a pooled connection and returns its result. The
// one place libpqxx exceptions become Status on the blocking path: a broken
// connection is dropped from the pool, everything else maps through
// StatusFromPqxx. `fn` returns absl::Status or absl::StatusOr<T>. With
// kRetryIfBroken, a broken connection (a pooled one whose server went away)
// gets `fn` run once more on a new one: only for work that is safe to repeat.
enum RetryIfBroken : bool { kNoRetry = false, kRetryIfBroken = true };

template <typename Fn>
auto WithConnection(PgPool& pool, RetryIfBroken retry, Fn&& fn) -> decltype(fn(std::declval<pqxx::connection_base&>())) {
  for (int attempt = 0;; ++attempt) {
    auto lease = pool.Acquire();
    if (!lease.ok()) return lease.status();
    try {
      return fn(lease->conn());
    } catch (const pqxx::broken_connection& e) {
      lease->Discard();
      if (!retry || attempt > 0) return StatusFromPqxx(e);
    } catch (const std::exception& e) {
      absl::Status status = StatusFromPqxx(e);
      if (status.code() == absl::StatusCode::kUnavailable) lease->MarkConnectionFailed();
      return status;
    }
  }
}

template <typename Fn>
auto WithConnection(PgPool& pool, Fn&& fn) -> decltype(fn(std::declval<pqxx::connection_base&>())) {
  return WithConnection(pool, kNoRetry, std::forward<Fn>(fn));
}

}  // namespace medgrid::store
