#include "pg_pool.h"

#include "medgrid/core/strings.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"

namespace medgrid::store {

PgPool::PgPool(std::string name, std::string dsn, int size, std::chrono::milliseconds acquire_timeout,
               Prepare prepare)
    : name_(std::move(name)),
      dsn_(std::move(dsn)),
      size_(size),
      acquire_timeout_(acquire_timeout),
      prepare_(std::move(prepare)) {}

PgPool::~PgPool() = default;

PgPool::Lease::~Lease() {
  if (pool_ != nullptr && conn_ != nullptr) pool_->Release(std::move(conn_), discard_);
}

absl::StatusOr<PgPool::Lease> PgPool::Acquire() {
  std::unique_lock lock(mu_);
  auto deadline = std::chrono::steady_clock::now() + acquire_timeout_;
  while (idle_.empty() && open_ >= size_) {
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() && open_ >= size_) {
      return core::Error(absl::StatusCode::kUnavailable,
                         core::StrCat("No database connection free on shard ", name_))
          .Http(503)
          .Issue("transient");
    }
  }
  if (!idle_.empty()) {
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    ++busy_;
    return Lease(this, std::move(conn));
  }
  ++open_;
  ++busy_;
  lock.unlock();
  try {
    auto conn = std::make_unique<pqxx::connection>(dsn_);
    if (prepare_) prepare_(*conn);
    return Lease(this, std::move(conn));
  } catch (const std::exception& e) {
    core::Log(core::LogLevel::kError, "db.connect_failed", {{"shard", name_}});
    lock.lock();
    --open_;
    --busy_;
    cv_.notify_one();
    return core::Error(absl::StatusCode::kUnavailable, core::StrCat("Database shard ", name_, " is unreachable"))
        .Http(503)
        .Issue("transient");
  }
}

void PgPool::Release(std::unique_ptr<pqxx::connection> conn, bool discard) {
  std::lock_guard lock(mu_);
  --busy_;
  if (discard || !conn->is_open()) {
    --open_;
  } else {
    idle_.push_back(std::move(conn));
  }
  cv_.notify_one();
}

int PgPool::open() const {
  std::lock_guard lock(mu_);
  return open_;
}

int PgPool::busy() const {
  std::lock_guard lock(mu_);
  return busy_;
}

absl::Status StatusFromPqxx(const std::exception& e) {
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
    return core::Error(absl::StatusCode::kUnavailable, "Database connection lost").Http(503).Issue("transient");
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string& state = sql->sqlstate();
    if (state == "57014") {
      return core::Error(absl::StatusCode::kDeadlineExceeded, "Database query timed out")
          .Http(504)
          .Issue("timeout");
    }
    if (state == "23505") return absl::AlreadyExistsError("Unique constraint violated");
    if (state == "40001" || state == "40P01") return absl::AbortedError("Transaction conflict");
    if (state.rfind("08", 0) == 0 || state == "57P01" || state == "57P03") {
      return core::Error(absl::StatusCode::kUnavailable, "Database unavailable").Http(503).Issue("transient");
    }
    core::Log(core::LogLevel::kError, "db.sql_error", {{"sqlstate", state}});
    return absl::InternalError(core::StrCat("Database error (SQLSTATE ", state, ")"));
  }
  return absl::InternalError("Database error");
}

}  // namespace medgrid::store
