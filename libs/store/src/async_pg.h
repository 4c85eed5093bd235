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

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/asio/io_context.hpp"

namespace medgrid::store {

// One row of text values; nullopt for SQL NULL.
using PgRow = std::vector<std::optional<std::string>>;
using PgRowsCallback = std::function<void(absl::StatusOr<std::vector<PgRow>>)>;
// Prepares statements on a new connection (blocking, once per connection).
// Returns an error message, empty on success.
using PgPrepareFn = std::function<std::string(void* pgconn)>;

class AsyncPgPool {
 public:
  // The pool of this thread for `shard`, created on first use.
  static AsyncPgPool& ForThread(const std::string& shard, const std::string& dsn, int size, PgPrepareFn prepare,
                                boost::asio::io_context& io);

  AsyncPgPool(std::string dsn, int size, PgPrepareFn prepare, boost::asio::io_context& io);
  ~AsyncPgPool();

  // Runs a prepared statement; `done` runs on this thread's event loop.
  void QueryPrepared(std::string statement, std::vector<std::string> params, PgRowsCallback done);

 private:
  class Connection;
  struct Pending {
    std::string statement;
    std::vector<std::string> params;
    PgRowsCallback done;
  };
  void Dispatch();
  void Finished(Connection* conn, bool broken);

  const std::string dsn_;
  const int size_;
  const PgPrepareFn prepare_;
  boost::asio::io_context& io_;
  std::vector<std::shared_ptr<Connection>> idle_;
  int open_ = 0;
  std::deque<Pending> queue_;
};

}  // namespace medgrid::store
