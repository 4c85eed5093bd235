#include "async_pg.h"

#include <unistd.h>

#include <map>
#include <utility>

#include "boost/asio/post.hpp"
#include "boost/asio/posix/stream_descriptor.hpp"
#include "boost/asio/steady_timer.hpp"
#include "libpq-fe.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "pg_pool.h"

namespace medgrid::store {
namespace asio = boost::asio;

namespace {

absl::Status Unavailable(std::string_view what) {
  return core::Error(absl::StatusCode::kUnavailable, core::StrCat("Database unavailable: ", what))
      .Http(503)
      .Issue("transient");
}

absl::Status FromResult(PGresult* r) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  std::string_view sqlstate = state != nullptr ? state : "";
  if (sqlstate == "57014") {
    return core::Error(absl::StatusCode::kDeadlineExceeded, "Database query timed out").Http(504).Issue("timeout");
  }
  if (sqlstate == "23505") return absl::AlreadyExistsError("Unique constraint violated");
  if (sqlstate.substr(0, 2) == "08" || sqlstate == "57P01" || sqlstate == "57P03") return Unavailable(sqlstate);
  core::Log(core::LogLevel::kError, "db.sql_error", {{"sqlstate", sqlstate}});
  return absl::InternalError(core::StrCat("Database error (SQLSTATE ", sqlstate, ")"));
}

}  // namespace

// One non-blocking libpq connection watched through a dup of its socket.
class AsyncPgPool::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(AsyncPgPool& pool, PGconn* conn, asio::io_context& io)
      : pool_(pool), conn_(conn), socket_(io, ::dup(PQsocket(conn))) {}

  ~Connection() {
    boost::system::error_code ec;
    socket_.close(ec);
    PQfinish(conn_);
  }

  void Run(Pending&& query) {
    current_ = std::move(query);
    rows_.clear();
    error_ = absl::OkStatus();
    std::vector<const char*> values;
    values.reserve(current_.params.size());
    for (const std::string& p : current_.params) values.push_back(p.c_str());
    const int sent =
        pool_.unnamed_sql_ != nullptr
            ? PQsendQueryParams(conn_, pool_.unnamed_sql_(current_.statement).c_str(), static_cast<int>(values.size()),
                                nullptr, values.data(), nullptr, nullptr, 0)
            : PQsendQueryPrepared(conn_, current_.statement.c_str(), static_cast<int>(values.size()), values.data(),
                                  nullptr, nullptr, 0);
    if (sent != 1) {
      return Fail(Unavailable(PQerrorMessage(conn_)));
    }
    Flush();
  }

 private:
  void Flush() {
    int r = PQflush(conn_);
    if (r < 0) return Fail(Unavailable(PQerrorMessage(conn_)));
    if (r == 1) {
      socket_.async_wait(asio::posix::stream_descriptor::wait_write,
                         [self = shared_from_this()](boost::system::error_code ec) {
                           if (ec) return self->Fail(Unavailable(ec.message()));
                           self->Flush();
                         });
      return;
    }
    WaitRead();
  }

  void WaitRead() {
    socket_.async_wait(asio::posix::stream_descriptor::wait_read,
                       [self = shared_from_this()](boost::system::error_code ec) {
                         if (ec) return self->Fail(Unavailable(ec.message()));
                         self->OnReadable();
                       });
  }

  void OnReadable() {
    // The results built below count as the query's kind (query_count.h).
    QueryKindScope kind(current_.kind);
    if (PQconsumeInput(conn_) != 1) return Fail(Unavailable(PQerrorMessage(conn_)));
    while (PQisBusy(conn_) == 0) {
      PGresult* r = PQgetResult(conn_);
      if (r == nullptr) return Complete();
      ExecStatusType st = PQresultStatus(r);
      if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        const int rows = PQntuples(r);
        const int cols = PQnfields(r);
        for (int i = 0; i < rows; ++i) {
          PgRow row(cols);
          for (int j = 0; j < cols; ++j) {
            if (PQgetisnull(r, i, j) == 0) row[j].emplace(PQgetvalue(r, i, j), PQgetlength(r, i, j));
          }
          rows_.push_back(std::move(row));
        }
      } else if (error_.ok()) {
        error_ = FromResult(r);
      }
      PQclear(r);
    }
    WaitRead();
  }

  void Complete() {
    PgRowsCallback done = std::move(current_.done);
    const bool retried = current_.retried;
    absl::StatusOr<std::vector<PgRow>> result =
        error_.ok() ? absl::StatusOr<std::vector<PgRow>>(std::move(rows_)) : absl::StatusOr<std::vector<PgRow>>(error_);
    pool_.Finished(this, false);
    done(std::move(result), retried);
  }

  void Fail(absl::Status st) {
    core::Log(core::LogLevel::kWarn, "db.async_connection_failed");
    Pending query = std::move(current_);
    auto keep = shared_from_this();  // Finished drops the pool's reference
    pool_.Finished(this, true);
    if (query.done) pool_.Broken(std::move(query), std::move(st));
  }

  AsyncPgPool& pool_;
  PGconn* conn_;
  asio::posix::stream_descriptor socket_;
  Pending current_;
  std::vector<PgRow> rows_;
  absl::Status error_;
};

AsyncPgPool& AsyncPgPool::ForThread(const std::string& shard, const std::string& dsn, int size, PgPrepareFn prepare,
                                    PgSqlFn unnamed_sql, std::shared_ptr<std::atomic<int>> open_gauge,
                                    QueryCounters* queries, asio::io_context& io, ShardBreaker* breaker,
                                    TenantConnections* tenants) {
  // Destroyed when the I/O thread exits, while its io_context still exists.
  thread_local std::map<std::pair<asio::io_context*, std::string>, std::unique_ptr<AsyncPgPool>> pools;
  auto& slot = pools[{&io, shard}];
  if (!slot) {
    slot = std::make_unique<AsyncPgPool>(dsn, size, std::move(prepare), unnamed_sql, std::move(open_gauge), queries,
                                         io);
  }
  slot->breaker_ = breaker;
  slot->tenants_ = tenants;
  return *slot;
}

AsyncPgPool::AsyncPgPool(std::string dsn, int size, PgPrepareFn prepare, PgSqlFn unnamed_sql,
                         std::shared_ptr<std::atomic<int>> open_gauge, QueryCounters* queries, asio::io_context& io)
    : dsn_(std::move(dsn)),
      size_(size),
      prepare_(std::move(prepare)),
      unnamed_sql_(unnamed_sql),
      open_gauge_(std::move(open_gauge)),
      queries_(queries),
      io_(io) {}

AsyncPgPool::~AsyncPgPool() { *open_gauge_ -= open_; }

void AsyncPgPool::QueryPrepared(std::string statement, std::vector<std::string> params, std::string_view tenant,
                                PgRowsCallback done) {
  if (tenants_ != nullptr && !tenant.empty()) {
    // Sent once the tenant has a place: now, or when one of its other
    // queries ends (on whichever thread; the query comes back to this one).
    return AwaitTenantSlot(
        *tenants_, std::string(tenant),
        [this, statement = std::move(statement), params = std::move(params), done = std::move(done),
         kind = CurrentQueryKind()](absl::StatusOr<resilience::KeyedBulkhead::Slot> slot) mutable {
          if (!slot.ok()) return done(slot.status(), false);
          // Given back before `done` runs, so that what `done` sends next (a
          // replica's read handed to the primary) can take it.
          auto held = std::make_shared<resilience::KeyedBulkhead::Slot>(*std::move(slot));
          QueryKindScope scope(kind);
          Send(std::move(statement), std::move(params),
               [held, inner = std::move(done)](absl::StatusOr<std::vector<PgRow>> rows, bool retried) {
                 held->Release();
                 inner(std::move(rows), retried);
               });
        });
  }
  Send(std::move(statement), std::move(params), std::move(done));
}

void AsyncPgPool::AwaitTenantSlot(TenantConnections& tenants, std::string tenant, TenantSlotFn proceed) {
  using Slot = resilience::KeyedBulkhead::Slot;
  const bool may_wait = tenants.wait().count() > 0;
  // The usual case, a place free now, needs no timer.
  if (Slot slot = tenants.slots().TryAcquire(tenant, /*count_refusal=*/!may_wait)) return proceed(std::move(slot));
  if (!may_wait) return proceed(tenants.Refused());
  struct Wait {
    Wait(asio::io_context& io, TenantSlotFn fn) : timer(io), proceed(std::move(fn)) {}
    asio::steady_timer timer;
    TenantSlotFn proceed;
  };
  auto wait = std::make_shared<Wait>(io_, std::move(proceed));
  resilience::KeyedBulkhead::AsyncAcquired got =
      tenants.slots().AcquireAsync(tenant, [wait, &io = io_](Slot slot) {
        // On the thread that freed the place: back to this pool's.
        auto held = std::make_shared<Slot>(std::move(slot));
        asio::post(io, [wait, held] {
          wait->timer.cancel();
          wait->proceed(std::move(*held));
        });
      });
  if (got.ticket == 0) return wait->proceed(std::move(got.slot));
  wait->timer.expires_after(tenants.wait());
  wait->timer.async_wait([wait, &tenants, tenant = std::move(tenant), ticket = got.ticket](
                             const boost::system::error_code& ec) {
    if (ec) return;  // cancelled by the grant
    // A grant may be on its way here already: then it proceeds, not this.
    if (tenants.slots().CancelWait(tenant, ticket)) wait->proceed(tenants.Refused());
  });
}

void AsyncPgPool::Send(std::string statement, std::vector<std::string> params, PgRowsCallback done) {
  if (breaker_ != nullptr) {
    const resilience::CircuitBreaker::Permit permit = breaker_->breaker().Allow();
    if (!permit) return done(breaker_->Refused(), false);
    done = [breaker = breaker_, permit, inner = std::move(done)](absl::StatusOr<std::vector<PgRow>> rows,
                                                                 bool retried) {
      breaker->breaker().Record(permit,
                                ShardBreaker::IsConnectionFailure(rows.status()) ? resilience::Outcome::kFailure
                                                                                 : resilience::Outcome::kSuccess,
                                std::chrono::microseconds(0));
      inner(std::move(rows), retried);
    };
  }
  queue_.push_back({std::move(statement), std::move(params), std::move(done), CurrentQueryKind()});
  Dispatch();
}

void AsyncPgPool::Dispatch() {
  while (!queue_.empty()) {
    std::shared_ptr<Connection> conn;
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    } else if (open_ < size_) {
      // Connecting blocks this thread once per connection (a few ms); after
      // that every query is non-blocking.
      PGconn* raw = PQconnectdb(dsn_.c_str());
      std::string problem;
      if (PQstatus(raw) != CONNECTION_OK) {
        problem = "cannot connect";
      } else if (!CountQueriesOn(raw, queries_)) {
        problem = "cannot register the query counter";
      } else {
        problem = prepare_ ? prepare_(raw) : "";
        if (problem.empty() && PQsetnonblocking(raw, 1) != 0) problem = "cannot switch to non-blocking mode";
      }
      if (!problem.empty()) {
        PQfinish(raw);
        core::Log(core::LogLevel::kError, "db.connect_failed", {{"mode", "async"}});
        Pending p = std::move(queue_.front());
        queue_.pop_front();
        p.done(Unavailable(problem), p.retried);
        continue;
      }
      ++open_;
      ++*open_gauge_;
      conn = std::make_shared<Connection>(*this, raw, io_);
    } else {
      return;  // all busy; Finished() dispatches again
    }
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    conn->Run(std::move(p));
  }
}

void AsyncPgPool::Broken(Pending&& query, absl::Status st) {
  if (query.retried) return query.done(std::move(st), true);
  query.retried = true;
  queue_.push_front(std::move(query));
  asio::post(io_, [this] { Dispatch(); });
}

void AsyncPgPool::Finished(Connection* conn, bool broken) {
  if (broken) {
    --open_;
    --*open_gauge_;
  } else {
    idle_.push_back(conn->shared_from_this());
  }
  // Start the next waiting query from the event loop, not from inside the
  // callback chain of the one that just finished.
  if (!queue_.empty()) asio::post(io_, [this] { Dispatch(); });
}

}  // namespace medgrid::store
