#include "query_count.h"

#include <string_view>

#include "libpq-events.h"
#include "libpq-fe.h"

namespace medgrid::store {
namespace {

thread_local QueryKind current_kind = QueryKind::kOther;
// Set only while OpenShardConnection constructs a connection on this thread.
thread_local QueryCounters* connecting_counters = nullptr;

QueryKind Classify(const PGresult* result) {
  const std::string_view tag = PQcmdStatus(const_cast<PGresult*>(result));
  // Background work (kOther) keeps its transaction statements, so that tx
  // is what requests' transactions cost.
  if (current_kind != QueryKind::kOther &&
      (tag == "BEGIN" || tag == "COMMIT" || tag == "ROLLBACK" || tag == "SET")) {
    return QueryKind::kTx;
  }
  // The answer to a PREPARE (libpqxx prepares on first use, the
  // non-blocking path when it connects) has no command tag; so has an
  // error, which counts as what the thread was doing.
  if (tag.empty() && PQresultStatus(result) == PGRES_COMMAND_OK) return QueryKind::kPrepare;
  return current_kind;
}

int CountingEventProc(PGEventId event, void* info, void* pass_through) {
  if (event != PGEVT_RESULTCREATE) return 1;
  const PGresult* result = static_cast<PGEventResultCreate*>(info)->result;
  switch (PQresultStatus(result)) {
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
      return 1;  // the COPY counts when it completes
    default:
      break;
  }
  static_cast<QueryCounters*>(pass_through)->Add(Classify(result));
  return 1;
}

}  // namespace

const char* QueryKindName(QueryKind kind) {
  switch (kind) {
    case QueryKind::kRead:
      return "read";
    case QueryKind::kSearch:
      return "search";
    case QueryKind::kWrite:
      return "write";
    case QueryKind::kHistory:
      return "history";
    case QueryKind::kTx:
      return "tx";
    case QueryKind::kPrepare:
      return "prepare";
    case QueryKind::kOther:
      break;
  }
  return "other";
}

std::vector<std::pair<std::string, int64_t>> QueryCounters::Snapshot() const {
  std::vector<std::pair<std::string, int64_t>> out;
  out.reserve(kQueryKinds);
  for (int i = 0; i < kQueryKinds; ++i) {
    out.emplace_back(QueryKindName(static_cast<QueryKind>(i)), counts_[i].load(std::memory_order_relaxed));
  }
  return out;
}

QueryKindScope::QueryKindScope(QueryKind kind) : previous_(current_kind) { current_kind = kind; }

QueryKindScope::~QueryKindScope() { current_kind = previous_; }

QueryKind CurrentQueryKind() { return current_kind; }

bool CountQueriesOn(void* pgconn, QueryCounters* counters) {
  return PQregisterEventProc(static_cast<PGconn*>(pgconn), &CountingEventProc, "medgrid_query_count", counters) == 1;
}

CountingConnect::CountingConnect(const std::string& options)
    : pqxx::connect_direct(options), counters_(connecting_counters) {}

CountingConnect::handle CountingConnect::do_completeconnect(handle orig) {
  handle conn = pqxx::connect_direct::do_completeconnect(orig);
  // Also runs when libpqxx reconnects a connection it had lost: the new
  // PGconn is counted like the first.
  if (conn != nullptr && counters_ != nullptr) CountQueriesOn(conn, counters_);
  return conn;
}

std::unique_ptr<ShardConnection> OpenShardConnection(const std::string& dsn, QueryCounters* counters) {
  struct Reset {
    ~Reset() { connecting_counters = nullptr; }
  } reset;
  connecting_counters = counters;
  return std::make_unique<ShardConnection>(dsn);
}

}  // namespace medgrid::store
