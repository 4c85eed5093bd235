// Counts every statement this process sends to a shard database, by kind,
// for medgrid_db_queries_total{shard,kind}.
//
// How: a libpq event procedure registered on each shard connection (the
// blocking libpqxx ones through CountingConnect, the non-blocking ones in
// async_pg.cc) sees every result libpq builds from the server's answer, so
// no call site has to remember to count. One statement gives one result,
// with two exceptions handled here: a COPY gives a COPY_IN result and then
// its completion (counted once), and a statement whose connection broke
// before any answer gives none (not counted: it may not have run).
//
// The kind comes from the command tag where it says enough (BEGIN, COMMIT,
// ROLLBACK, SET of a request's transaction: tx; the server's answer to a
// PREPARE: prepare) and otherwise from the QueryKindScope of the thread that sends the statement
// (ResourceStore methods set one: read, search, write, history; everything
// else, such as reindexing, export jobs, the outbox, subscriptions queues and
// migrations, is other).
//
//   QueryKindScope kind(QueryKind::kRead);
//   tx.exec_prepared("read", ...);   // counted as read on the pool's shard
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pqxx/pqxx"

namespace medgrid::store {

enum class QueryKind : int { kRead = 0, kSearch, kWrite, kHistory, kTx, kPrepare, kOther };
inline constexpr int kQueryKinds = 7;
const char* QueryKindName(QueryKind kind);

// Statements of one shard by kind. Thread-safe.
class QueryCounters {
 public:
  void Add(QueryKind kind) { counts_[static_cast<int>(kind)].fetch_add(1, std::memory_order_relaxed); }
  int64_t Get(QueryKind kind) const { return counts_[static_cast<int>(kind)].load(std::memory_order_relaxed); }
  // (kind name, count) for every kind, zeros included.
  std::vector<std::pair<std::string, int64_t>> Snapshot() const;

 private:
  std::array<std::atomic<int64_t>, kQueryKinds> counts_{};
};

// The kind of the statements this thread sends while the scope lives.
// Scopes nest; the innermost wins. Not copyable; lives on the stack.
class QueryKindScope {
 public:
  explicit QueryKindScope(QueryKind kind);
  ~QueryKindScope();
  QueryKindScope(const QueryKindScope&) = delete;
  QueryKindScope& operator=(const QueryKindScope&) = delete;

 private:
  QueryKind previous_;
};
QueryKind CurrentQueryKind();

// Registers the counting event procedure on a libpq connection (a PGconn*,
// void here so that libpq's header stays out of this one). `counters` must
// outlive the connection. Returns false if libpq refused.
bool CountQueriesOn(void* pgconn, QueryCounters* counters);

// The libpqxx connection policy of shard connections: connects as
// connect_direct does, then registers the counting procedure.
class CountingConnect final : public pqxx::connect_direct {
 public:
  // Takes the counters from the OpenShardConnection call constructing it.
  explicit CountingConnect(const std::string& options);
  handle do_completeconnect(handle orig) override;

 private:
  QueryCounters* counters_;
};

// The blocking connection type of the store. Owned as this type, never
// through pqxx::connection_base, whose destructor is not virtual (only
// basic_connection_base's closes the connection).
using ShardConnection = pqxx::basic_connection_base<CountingConnect>;

// A blocking connection to `dsn` whose statements count in `counters`;
// uncounted when `counters` is null (the control database). Throws what
// pqxx::connection's constructor throws.
std::unique_ptr<ShardConnection> OpenShardConnection(const std::string& dsn, QueryCounters* counters);

}  // namespace medgrid::store
