// Non-blocking PostgreSQL queries on an Asio event loop, for the read path.
//
// A request handled on an I/O thread sends its query, returns to the event
// loop, and resumes when the answer arrives: no hop to a worker thread and
// back, which on a small machine costs more than the query itself.
//
// Invariants: an AsyncPgPool belongs to one I/O thread (it is thread_local)
// and is only touched there, so it needs no lock. Each connection runs one
// query at a time; queries beyond the pool's size wait in FIFO order. A
// connection whose socket or protocol fails is dropped and every query it
// held fails with Unavailable; the next query opens a new one.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/asio/io_context.hpp"
#include "medgrid/resilience/bulkhead.h"
#include "query_count.h"

namespace medgrid::store {

// One row of text values; nullopt for SQL NULL.
using PgRow = std::vector<std::optional<std::string>>;
// `retried` is true when the query ran a second time because the first
// connection broke (see QueryPrepared).
using PgRowsCallback = std::function<void(absl::StatusOr<std::vector<PgRow>> rows, bool retried)>;
// Prepares statements on a new connection (blocking, once per connection).
// Returns an error message, empty on success.
using PgPrepareFn = std::function<std::string(void* pgconn)>;
// The SQL text of a statement name, for pools that send unnamed statements
// instead of preparing (behind PgBouncer in transaction pooling mode).
using PgSqlFn = const std::string& (*)(std::string_view name);

class ShardBreaker;
class TenantConnections;

class AsyncPgPool {
 public:
  // The pool of this thread for `shard`, created on first use.
  // `breaker`, if any (a shard primary's), guards every query: while it is
  // open a query fails at once with its Refused() error, and each query it
  // allowed records a failure when it ends Unavailable (the connection could
  // not be opened or broke), a success otherwise. It must outlive the
  // queries sent while it is set; each call sets it anew.
  // `open_gauge` counts this shard's open connections across all threads;
  // every statement sent (preparing included) counts in `queries`, which
  // must outlive the pool.
  // `tenants`, if any, caps each tenant's queries in flight on the shard
  // (queued or running, over every pool of the shard; pg_pool.h): a query
  // beyond the cap waits for one of the tenant's places, on a timer of this
  // thread's event loop (never blocking it), and fails with the refusal
  // when none frees up within the cap's wait. Set anew on each call, as
  // `breaker`.
  // With `unnamed_sql` set, statements go as unnamed ones with the text it
  // gives for their name, and `prepare` should be empty.
  static AsyncPgPool& ForThread(const std::string& shard, const std::string& dsn, int size, PgPrepareFn prepare,
                                PgSqlFn unnamed_sql, std::shared_ptr<std::atomic<int>> open_gauge,
                                QueryCounters* queries, boost::asio::io_context& io,
                                ShardBreaker* breaker = nullptr, TenantConnections* tenants = nullptr);

  AsyncPgPool(std::string dsn, int size, PgPrepareFn prepare, PgSqlFn unnamed_sql,
              std::shared_ptr<std::atomic<int>> open_gauge, QueryCounters* queries, boost::asio::io_context& io);
  ~AsyncPgPool();

  // Runs a prepared statement for `tenant` (empty: none, not capped);
  // `done` runs on this thread's event loop. The statement counts as the
  // caller's CurrentQueryKind().
  // When the connection turns out to be broken (say the server restarted
  // since it was last used) the query is sent once more on a new
  // connection; only then does it fail with Unavailable. The caller must
  // make a second run safe: reads are, and a create with a fresh id turns a
  // unique violation on the retry into "the first run committed".
  void QueryPrepared(std::string statement, std::vector<std::string> params, std::string_view tenant,
                     PgRowsCallback done);

 private:
  class Connection;
  struct Pending {
    std::string statement;
    std::vector<std::string> params;
    PgRowsCallback done;
    QueryKind kind = QueryKind::kOther;
    bool retried = false;
  };
  using TenantSlotFn = std::function<void(absl::StatusOr<resilience::KeyedBulkhead::Slot>)>;
  // Runs `proceed` on this thread with a place of `tenant`, or with the
  // refusal once the cap's wait has passed.
  void AwaitTenantSlot(TenantConnections& tenants, std::string tenant, TenantSlotFn proceed);
  // QueryPrepared once the tenant has its place.
  void Send(std::string statement, std::vector<std::string> params, PgRowsCallback done);
  void Dispatch();
  void Finished(Connection* conn, bool broken);
  // A query whose connection broke: retried once, then failed.
  void Broken(Pending&& query, absl::Status st);

  const std::string dsn_;
  const int size_;
  const PgPrepareFn prepare_;
  const PgSqlFn unnamed_sql_;
  const std::shared_ptr<std::atomic<int>> open_gauge_;
  QueryCounters* const queries_;
  boost::asio::io_context& io_;
  ShardBreaker* breaker_ = nullptr;
  TenantConnections* tenants_ = nullptr;
  std::vector<std::shared_ptr<Connection>> idle_;
  int open_ = 0;
  std::deque<Pending> queue_;
};

}  // namespace medgrid::store
