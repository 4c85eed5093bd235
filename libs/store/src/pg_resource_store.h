// ResourceStore on one PostgreSQL shard through a PgPool.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>

#include "medgrid/core/clock.h"
#include "medgrid/resilience/retry.h"
#include "medgrid/store/resource_store.h"
#include "medgrid/store/set_size_cache.h"
#include "medgrid/store/store.h"
#include "async_pg.h"
#include "pg_pool.h"
#include "replicas.h"

namespace medgrid::store {

// Runs a search inside `tx` (pg_search.cc). `one_snapshot`: every statement
// of `tx` sees the same snapshot (repeatable read), so the page query may be
// planned from counts taken by an earlier statement.
absl::StatusOr<SearchPage> RunSearch(pqxx::transaction_base& tx, const std::string& tenant,
                                     const search::SearchRequest& request,
                                     const std::optional<Compartment>& compartment, core::TimePoint now,
                                     bool one_snapshot);

// The bulk export job store of a shard, on its pool (pg_export.cc).
std::unique_ptr<ExportJobStore> NewPgExportJobStore(PgPool& pool);

class PgResourceStore final : public ResourceStore {
 public:
  // `dsn` and `shard` serve the asynchronous read path, which keeps
  // `async_pool_size` connections per I/O thread. A transaction writing at
  // least `copy_write_min_versions` versions (0: none) writes them with COPY.
  // `replicas` (outliving the store) routes reads by id, versions, searches
  // and history to replicas and is told of every committed write.
  // With `pgbouncer`, no statement is prepared by name (each goes as an
  // unnamed statement of the same text) and every transaction starts with
  // SET LOCAL statement_timeout = `local_statement_timeout` (when above 0):
  // safe behind PgBouncer in transaction pooling mode.
  // Reads that fail Unavailable on the primary are retried with
  // resilience::DatabaseReadPolicy() within `read_retry_budget`.
  // `tenants`, if any (outliving the store, and given to `pool` and the
  // replicas' pools too), caps each tenant's connections on the shard; the
  // non-blocking path takes its places here.
  PgResourceStore(PgPool& pool, std::string shard, std::string dsn, int async_pool_size, int copy_write_min_versions,
                  const core::Clock& clock, ReplicaRouter& replicas, bool pgbouncer = false,
                  std::chrono::milliseconds local_statement_timeout = std::chrono::milliseconds(0),
                  resilience::RetryBudgetSettings read_retry_budget = {}, TenantConnections* tenants = nullptr)
      : read_budget_(std::make_unique<resilience::RetryBudget>(read_retry_budget, clock)),
        replicas_(replicas),
        pool_(pool),
        shard_(std::move(shard)),
        dsn_(std::move(dsn)),
        async_pool_size_(async_pool_size),
        copy_write_min_versions_(copy_write_min_versions),
        pgbouncer_(pgbouncer),
        local_statement_timeout_(local_statement_timeout),
        tenants_(tenants),
        clock_(clock) {}

  // Open non-blocking connections, summed over I/O threads.
  int async_open() const { return async_open_->load(); }
  // Fills the search planning counters of `stats`.
  void AddSearchStats(PoolStats& stats) const {
    stats.read_retries = read_retries_.load();
    stats.sizes_remembered = sizes_remembered_.load();
    stats.sizes_counted = sizes_counted_.load();
    stats.sizes_changed = sizes_changed_.load();
  }

  // Prepares this store's statements on a new pooled connection.
  static void PrepareStatements(pqxx::connection_base& conn);
  // Prepares the read statements on a replica's connection.
  static void PrepareReadStatements(pqxx::connection_base& conn);

  absl::StatusOr<ResourceVersion> Read(const ResourceKey& key) override;
  absl::StatusOr<ResourceVersion> ReadVersion(const ResourceKey& key, int64_t version) override;
  void ReadAsync(const ResourceKey& key, std::optional<int64_t> version, boost::asio::io_context& io,
                 ReadCallback done) override;
  absl::StatusOr<ResourceVersion> Create(const ResourceKey& key, const BodyFn& body) override;
  void CreateAsync(const ResourceKey& key, const BodyFn& body, boost::asio::io_context& io,
                   ReadCallback done) override;
  absl::StatusOr<ResourceVersion> Update(const ResourceKey& key, const std::string& method,
                                         const BodyFn& body) override;
  absl::StatusOr<ResourceVersion> Delete(const ResourceKey& key,
                                         const std::function<absl::Status(const ResourceVersion&)>& check) override;
  absl::StatusOr<HistoryPage> History(const std::string& tenant, const HistoryQuery& q) override;
  absl::StatusOr<SearchPage> Search(const std::string& tenant, const search::SearchRequest& request,
                                    const std::optional<Compartment>& compartment) override;  // pg_search.cc
  // pg_reindex.cc
  absl::StatusOr<ReindexJob> StartReindex(const std::string& tenant, const std::vector<std::string>& types) override;
  absl::StatusOr<std::vector<ReindexJob>> ReindexJobs(const std::string& tenant) override;
  absl::StatusOr<std::optional<ReindexJob>> ClaimReindex(const std::string& owner,
                                                         std::chrono::seconds lease) override;
  absl::StatusOr<ReindexJob> ReindexBatch(const ReindexJob& job, const std::string& owner, int batch,
                                          const IndexFn& index, std::chrono::seconds lease) override;
  absl::StatusOr<std::vector<std::string>> RefreshStatistics() override;
  absl::StatusOr<std::string> ExplainSearch(const std::string& tenant, const search::SearchRequest& request,
                                            const std::optional<Compartment>& compartment) override;
  absl::StatusOr<std::optional<ResourceVersion>> Conditional(const std::string& tenant,
                                                             const search::SearchRequest& match,
                                                             const std::string& lock_key,
                                                             const DecideFn& decide) override;
  absl::StatusOr<std::unique_ptr<Outbox>> OpenOutbox() override;  // pg_outbox.cc
  ExportJobStore& Exports() override { return *exports_; }  // pg_export.cc
  // pg_subscriptions.cc
  absl::Status QueueNotifications(const std::vector<Notification>& notifications, core::TimePoint due) override;
  absl::StatusOr<std::vector<Notification>> ClaimNotifications(int limit, core::TimePoint now,
                                                               core::TimePoint lease_until) override;
  absl::Status RemoveNotification(const Notification& notification) override;
  absl::Status RescheduleNotification(const Notification& notification, int attempts,
                                      core::TimePoint next_attempt) override;
  absl::Status DropNotifications(const std::string& tenant, const std::string& subscription_id) override;
  absl::StatusOr<std::vector<std::pair<std::string, ResourceVersion>>> AllLive(
      const std::vector<std::string>& tenants, const std::string& type) override;
  absl::Status RunTransaction(const std::string& tenant, const TransactionFn& fn) override;
  absl::StatusOr<IdempotentResult> RunIdempotent(const std::string& tenant, const IdempotencyKey& key,
                                                 const IdempotentFn& fn) override;
  absl::StatusOr<int64_t> PurgeExpiredIdempotencyKeys(int limit) override;  // pg_idempotency.cc

 private:
  // Runs the read `fn(connection)` (safe to repeat, outside any
  // transaction of the caller) as RoutedReadOnce does, and again, after the
  // policy's backoff (a sleep of this thread), while it fails Unavailable
  // and DatabaseReadPolicy() and the shard's read budget allow, unless the
  // shard's breaker has opened meanwhile. Timeouts are not retried: a slow
  // query run again only adds load.
  template <typename Fn>
  auto RoutedRead(const std::string& tenant, bool not_found_on_primary, Fn&& fn)
      -> decltype(fn(std::declval<pqxx::connection_base&>())) {
    resilience::RetryState retry(resilience::DatabaseReadPolicy(), clock_, std::nullopt,
                                 resilience::SeededRandom(retry_seed_.fetch_add(1)), read_budget_.get());
    while (true) {
      auto result = RoutedReadOnce(tenant, not_found_on_primary, fn);
      if (result.status().code() != absl::StatusCode::kUnavailable || PrimaryBreakerOpen()) return result;
      const std::optional<std::chrono::microseconds> delay = retry.NextDelay();
      if (!delay) return result;
      read_retries_.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(*delay);
    }
  }

  // Runs the read `fn(connection)` (safe to repeat, outside any
  // transaction of the caller) on the replica the router picks for
  // `tenant`, else on the primary. A replica that fails for lack of a
  // connection (Unavailable, or ResourceExhausted: its pool is full) or
  // cancels the statement (Aborted: a conflict
  // with recovery) hands the read to the primary, and so does NotFound when
  // `not_found_on_primary` (a read by id or version of something written
  // moments ago by another caller). The tenant cap's refusal is final: the
  // same cap applies on the primary.
  template <typename Fn>
  auto RoutedReadOnce(const std::string& tenant, bool not_found_on_primary, Fn& fn)
      -> decltype(fn(std::declval<pqxx::connection_base&>())) {
    const int r = replicas_.Pick(tenant);
    if (r >= 0) {
      auto result = WithConnection(replicas_.pool(r), kRetryIfBroken, fn);
      const absl::StatusCode code = result.status().code();
      if (code == absl::StatusCode::kUnavailable) replicas_.ReportFailure(r);
      if (!ReadOnPrimaryAfter(result.status(), not_found_on_primary)) {
        replicas_.CountRead(true);
        return result;
      }
    }
    replicas_.CountRead(false);
    return WithConnection(pool_, kRetryIfBroken, fn);
  }
  bool PrimaryBreakerOpen() const {
    return pool_.breaker() != nullptr && pool_.breaker()->breaker().state() == resilience::BreakerState::kOpen;
  }
  // A read by id or version on the primary's non-blocking connections, sent
  // again after DatabaseReadPolicy()'s backoff (a timer of `io`, never
  // blocking it) while it fails Unavailable and the policy and the shard's
  // read budget allow, unless the breaker has opened. `retry` is null on the
  // first attempt.
  void ReadPrimaryAsync(const ResourceKey& key, std::optional<int64_t> version, boost::asio::io_context& io,
                        ReadCallback done, std::shared_ptr<resilience::RetryState> retry);

  static bool ReadOnPrimaryAfter(const absl::Status& status, bool not_found_on_primary) {
    if (TenantConnections::IsRefusal(status)) return false;
    const absl::StatusCode code = status.code();
    return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kResourceExhausted ||
           code == absl::StatusCode::kAborted ||
           (not_found_on_primary && code == absl::StatusCode::kNotFound);
  }

  // Runs `fn(tx)` in a read-committed transaction, retrying on a unique
  // violation or serialization conflict (concurrent first writes of one id).
  template <typename Fn>
  auto WithTransaction(Fn&& fn) -> decltype(fn(std::declval<pqxx::work&>()));

  // In PgBouncer mode, sets the transaction's statement_timeout (a
  // connection's own setting would stay on a server connection PgBouncer
  // hands to others).
  void SetLocalTimeout(pqxx::transaction_base& tx) const;

  // The bodies of Update and Delete, inside a caller's transaction.
  absl::StatusOr<ResourceVersion> UpdateIn(pqxx::work& tx, const ResourceKey& key, const std::string& method,
                                           const BodyFn& body);
  absl::StatusOr<ResourceVersion> DeleteIn(pqxx::work& tx, const ResourceKey& key,
                                           const std::function<absl::Status(const ResourceVersion&)>& check);

  // The retry budget of reads on this shard, and seeds of their jitter (RoutedRead).
  const std::unique_ptr<resilience::RetryBudget> read_budget_;
  std::atomic<uint64_t> retry_seed_{1};
  std::atomic<int64_t> read_retries_{0};
  ReplicaRouter& replicas_;
  PgPool& pool_;
  const std::string shard_;
  const std::string dsn_;
  const int async_pool_size_;
  const int copy_write_min_versions_;
  const bool pgbouncer_;
  const std::chrono::milliseconds local_statement_timeout_;
  TenantConnections* const tenants_;
  const std::shared_ptr<std::atomic<int>> async_open_ = std::make_shared<std::atomic<int>>(0);
  const core::Clock& clock_;
  // Id-set sizes of recent searches, which plan their page queries (pg_search.cc).
  const std::unique_ptr<SetSizeCache> set_sizes_ = std::make_unique<SetSizeCache>(clock_);
  std::atomic<int64_t> sizes_remembered_{0};
  std::atomic<int64_t> sizes_counted_{0};
  std::atomic<int64_t> sizes_changed_{0};
  // Bulk export jobs on this shard (pg_export.cc).
  const std::unique_ptr<ExportJobStore> exports_ = NewPgExportJobStore(pool_);
};

}  // namespace medgrid::store
