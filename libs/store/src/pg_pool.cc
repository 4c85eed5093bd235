#include "pg_pool.h"

#include <algorithm>

#include "medgrid/core/logging.h"
#include "medgrid/core/request_context.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::store {

ShardBreaker::ShardBreaker(std::string shard, resilience::BreakerSettings settings, const core::Clock& clock)
    : shard_(std::move(shard)),
      breaker_(
          [&] {
            settings.name = core::StrCat("db:", shard_);
            return std::move(settings);
          }(),
          clock, [shard = shard_](std::string_view, resilience::BreakerState from, resilience::BreakerState to) {
            core::Log(to == resilience::BreakerState::kOpen ? core::LogLevel::kWarn : core::LogLevel::kInfo,
                      "db.breaker", {{"shard", shard},
                                     {"from", std::string(resilience::BreakerStateName(from))},
                                     {"to", std::string(resilience::BreakerStateName(to))}});
          }) {}

absl::Status ShardBreaker::Refused() {
  const auto remaining = breaker_.RemainingOpen();
  const int64_t seconds = std::max<int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(remaining + std::chrono::microseconds(999999)).count());
  return core::Error(absl::StatusCode::kUnavailable,
                     core::StrCat("Database shard ", shard_,
                                  " is unavailable; requests are refused after repeated connection failures, "
                                  "retry later"))
      .Http(503)
      .Issue("transient")
      .RetryAfter(seconds);
}

namespace {
// Marks the tenant cap's refusal (TenantConnections::IsRefusal).
constexpr absl::string_view kTenantCapPayload = "medgrid.db_tenant_cap";
}  // namespace

TenantConnections::TenantConnections(std::string shard, int limit, std::chrono::milliseconds wait)
    : shard_(std::move(shard)), wait_(wait), slots_(limit) {}

absl::StatusOr<resilience::KeyedBulkhead::Slot> TenantConnections::Acquire(std::string_view tenant) {
  resilience::KeyedBulkhead::Slot slot =
      wait_.count() <= 0 ? slots_.TryAcquire(tenant) : slots_.Acquire(tenant, std::chrono::steady_clock::now() + wait_);
  if (!slot) return Refused();
  return slot;
}

absl::Status TenantConnections::Refused() const {
  absl::Status status =
      core::Error(absl::StatusCode::kResourceExhausted,
                  core::StrCat("The tenant already has ", slots_.limit(), " database connections in use on shard ",
                               shard_, " (the per-tenant limit); retry later"))
          .Http(503)
          .Issue("transient")
          .RetryAfter(1);
  status.SetPayload(kTenantCapPayload, absl::Cord("1"));
  return status;
}

bool TenantConnections::IsRefusal(const absl::Status& status) {
  return status.code() == absl::StatusCode::kResourceExhausted && status.GetPayload(kTenantCapPayload).has_value();
}

PgPool::PgPool(std::string name, std::string dsn, int size, std::chrono::milliseconds acquire_timeout,
               Prepare prepare, ShardBreaker* breaker, TenantConnections* tenants)
    : name_(std::move(name)),
      dsn_(std::move(dsn)),
      size_(size),
      acquire_timeout_(acquire_timeout),
      prepare_(std::move(prepare)),
      breaker_(breaker),
      tenants_(tenants) {}

PgPool::~PgPool() = default;

PgPool::Lease::~Lease() {
  if (pool_ != nullptr && conn_ != nullptr) {
    pool_->Release(std::move(conn_), discard_);
    pool_->Record(permit_, discard_ || failed_);
  }
}

void PgPool::Record(const std::optional<resilience::CircuitBreaker::Permit>& permit, bool failed) {
  if (breaker_ == nullptr || !permit.has_value()) return;
  breaker_->breaker().Record(*permit, failed ? resilience::Outcome::kFailure : resilience::Outcome::kSuccess,
                             std::chrono::microseconds(0));
}

absl::StatusOr<PgPool::Lease> PgPool::Acquire() {
  resilience::KeyedBulkhead::Slot tenant_slot;
  if (tenants_ != nullptr) {
    if (const std::string& tenant = core::CurrentRequest().tenant; !tenant.empty()) {
      absl::StatusOr<resilience::KeyedBulkhead::Slot> slot = tenants_->Acquire(tenant);
      if (!slot.ok()) return slot.status();
      tenant_slot = *std::move(slot);
    }
  }
  std::optional<resilience::CircuitBreaker::Permit> permit;
  if (breaker_ != nullptr) {
    permit = breaker_->breaker().Allow();
    if (!*permit) return breaker_->Refused();
  }
  std::unique_lock lock(mu_);
  // A probe must find out whether the server answers now: the idle
  // connections are from before the breaker opened and most likely dead.
  if (breaker_ != nullptr && !idle_.empty() && breaker_->breaker().state() == resilience::BreakerState::kHalfOpen) {
    open_ -= static_cast<int>(idle_.size());
    idle_.clear();
  }
  if (waiters_.empty() && !idle_.empty()) {
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    ++busy_;
    return Lease(this, std::move(conn), permit, std::move(tenant_slot));
  }
  bool open_new = waiters_.empty() && open_ < size_;
  if (!open_new) {
    Waiter self;
    waiters_.push_back(&self);
    const auto deadline = std::chrono::steady_clock::now() + acquire_timeout_;
    while (self.conn == nullptr && !self.may_open) {
      if (self.cv.wait_until(lock, deadline) == std::cv_status::timeout) break;
    }
    if (self.conn != nullptr) {
      ++busy_;
      return Lease(this, std::move(self.conn), permit, std::move(tenant_slot));
    }
    if (!self.may_open) {
      waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &self));
      // A busy pool says nothing about the server: no outcome.
      if (breaker_ != nullptr) breaker_->breaker().Cancel(*permit);
      // ResourceExhausted, not Unavailable: the server is fine, so reads
      // are not retried into a pool that is already full.
      return core::Error(absl::StatusCode::kResourceExhausted,
                         core::StrCat("No database connection free on shard ", name_))
          .Http(503)
          .Issue("transient");
    }
    open_new = true;
  }
  ++open_;
  ++busy_;
  lock.unlock();
  try {
    std::unique_ptr<ShardConnection> conn = OpenShardConnection(dsn_, queries_.get());
    if (prepare_) prepare_(*conn);
    return Lease(this, std::move(conn), permit, std::move(tenant_slot));
  } catch (const std::exception& e) {
    core::Log(core::LogLevel::kError, "db.connect_failed", {{"shard", name_}});
    lock.lock();
    --open_;
    --busy_;
    HandOffSlot();
    lock.unlock();
    Record(permit, /*failed=*/true);
    return core::Error(absl::StatusCode::kUnavailable, core::StrCat("Database shard ", name_, " is unreachable"))
        .Http(503)
        .Issue("transient");
  }
}

void PgPool::HandOffSlot() {
  if (waiters_.empty()) return;
  Waiter* w = waiters_.front();
  waiters_.pop_front();
  w->may_open = true;
  w->cv.notify_one();
}

void PgPool::Release(std::unique_ptr<ShardConnection> conn, bool discard) {
  std::lock_guard lock(mu_);
  --busy_;
  if (discard || !conn->is_open()) {
    --open_;
    // What broke one connection (a server restart, a failover, an operator
    // terminating backends) has most likely broken the idle ones too: drop
    // them, so the next requests open fresh connections instead of each
    // finding a dead one.
    open_ -= static_cast<int>(idle_.size());
    idle_.clear();
    HandOffSlot();
    return;
  }
  if (!waiters_.empty()) {
    Waiter* w = waiters_.front();
    waiters_.pop_front();
    w->conn = std::move(conn);
    w->cv.notify_one();
    return;
  }
  idle_.push_back(std::move(conn));
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
