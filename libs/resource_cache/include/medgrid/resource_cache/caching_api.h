// CachingFhirApi: the FHIR read cache, a FhirApi decorator between access
// control and the engine (gateway -> AuditingFhirApi ->
// AccessControlledFhirApi -> CachingFhirApi -> FhirEngine), so scopes,
// Consent and break-the-glass still decide on every resource it serves.
//
// Reads by id (Read, ReadAsync, VRead) go L1 (in-process cache::L1Cache, 60 s)
// -> L2 (Redis, 10 min, keys "<prefix>:res:" + CacheKey(tenant, type, id), so
// always per tenant) -> the database. Specific versions are cached under
// their own keys (versions never change).
//
// Freshness:
//   - Write-through: a create, update, patch or delete through this object
//     puts the new version (a deletion as a tombstone, answered 410) in L1
//     and L2 before it returns.
//   - Batch and transaction Bundles: the versions their response names are
//     marked stale here and in L2 before the response returns.
//   - Committed changes (this object is a ChangeBus handler) put a stale marker of the new
//     version (a tombstone for deletions) in L1 and L2 and publish
//     "<version>|<key>" on "<prefix>:cache:invalidate"; every instance's
//     subscriber drops its older L1 entry. A marker keeps a slower reader's
//     fill of an older version out (L1 and a Lua-guarded SET in Redis never
//     replace a newer version).
//   - After the subscription was lost and is back, the whole L1 is cleared:
//     invalidations may have been missed meanwhile.
//   - Read-your-writes across instances: a read carrying If-None-Match
//     W/"n" (core::CurrentRequest().known_version) is never answered from a
//     cached version older than n; it goes to the database.
// Redis failures never fail a read: L2 calls go through a circuit breaker
// ("redis_cache"); while it is open, L2 is skipped. Invalidations Redis did
// not take are kept (bounded) and written before L2 is read again.
//
// The asynchronous read path never blocks its I/O thread: L1 is read
// inline, L2 on a small thread pool, the database through the inner
// ReadAsync back on the caller's io_context.
//
// Hot spots (HotSpots, optional): every call is recorded; reads of hot keys
// (or all keys, Coalescing::kAlways) are coalesced: concurrent misses of one
// key make one database read, and each waiting asynchronous caller gets the
// answer on its own io_context. A hot patient's entries live longer and its
// requests are limited (429).
//
//   CachingFhirApi cached(config, engine, redis, &hot, clock, metrics);
//   bus.Register(&cached);
//   AccessControlledFhirApi access(..., cached, ...);
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "medgrid/cache/l1_cache.h"
#include "medgrid/cache/single_flight.h"
#include "medgrid/core/clock.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/events/change.h"
#include "medgrid/resilience/circuit_breaker.h"
#include "medgrid/resource_cache/entry.h"
#include "medgrid/resource_cache/hot_spots.h"

namespace prometheus {
class Registry;
}

namespace medgrid::cache {
class RedisClient;
class RedisSubscriber;
}  // namespace medgrid::cache

namespace medgrid::resource_cache {

struct AsyncReadState;  // src/caching_api.cc

struct CacheConfig {
  // L1: the seed's 60 s and 1 GiB per instance.
  cache::L1CacheConfig l1;
  // L2 TTL: the seed's 5-15 minutes.
  std::chrono::seconds l2_ttl{600};
  // TTLs of a hot patient's entries (raised cache priority).
  std::chrono::milliseconds hot_l1_ttl{300000};
  std::chrono::seconds hot_l2_ttl{900};
  // Prefix of the Redis keys and the invalidation channel.
  std::string redis_prefix = "mg";
  // Breaker around every L2 call (the seed's consent numbers: 5 failures
  // open it for 30 s, 3 successful probes close it).
  resilience::BreakerSettings l2_breaker = resilience::ForDependency("redis_cache");
  // Threads that do the L2 look-ups and writes of the asynchronous paths.
  int l2_threads = 2;
  // Invalidations kept while Redis is unreachable; beyond it the oldest are
  // dropped (logged and counted): L2 may then serve a stale version until
  // its TTL.
  size_t max_pending_invalidations = 100000;
};

class CachingFhirApi final : public engine::FhirApi, public events::ChangeHandler {
 public:
  struct Stats {
    uint64_t l1_hits = 0, l1_misses = 0, l2_hits = 0, l2_misses = 0, l2_errors = 0;
    uint64_t backend_reads = 0;  // reads passed to the inner API (the database)
    uint64_t coalesced = 0;      // reads that waited for another caller's database read
    uint64_t invalidations_received = 0;
    uint64_t pending_invalidations = 0;
    uint64_t pending_dropped = 0;
  };

  // `redis` may be null (L1 only); with it, a subscriber on the invalidation
  // channel starts here. `hot` may be null (no hot-spot mode). `metrics`
  // may be null. All references must outlive this object.
  CachingFhirApi(CacheConfig config, engine::FhirApi& inner, std::shared_ptr<cache::RedisClient> redis,
                 HotSpots* hot, const core::Clock& clock, prometheus::Registry* metrics);
  ~CachingFhirApi() override;

  absl::StatusOr<engine::ResourceResult> Create(const std::string& tenant, const std::string& type,
                                                const std::string& body) override;
  void CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                   boost::asio::io_context& io, engine::ResultCallback done) override;
  absl::StatusOr<engine::ResourceResult> Read(const std::string& tenant, const std::string& type,
                                              const std::string& id) override;
  absl::StatusOr<engine::ResourceResult> VRead(const std::string& tenant, const std::string& type,
                                               const std::string& id, int64_t version) override;
  bool ServesWithoutBlocking(const std::string& tenant) override;
  void ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                 std::optional<int64_t> version, boost::asio::io_context& io, engine::ResultCallback done) override;
  absl::StatusOr<engine::ResourceResult> Update(const std::string& tenant, const std::string& type,
                                                const std::string& id, const std::string& body,
                                                std::optional<int64_t> if_match) override;
  absl::StatusOr<engine::ResourceResult> Patch(const std::string& tenant, const std::string& type,
                                               const std::string& id, const std::string& patch,
                                               std::optional<int64_t> if_match) override;
  absl::StatusOr<engine::ResourceResult> Delete(const std::string& tenant, const std::string& type,
                                                const std::string& id, std::optional<int64_t> if_match) override;
  absl::StatusOr<std::string> Search(const std::string& tenant, const engine::SearchInput& input) override;
  absl::StatusOr<std::string> Everything(const std::string& tenant, const engine::EverythingInput& input) override;
  absl::StatusOr<std::string> ExplainSearch(const std::string& tenant, const std::string& type,
                                            const engine::QueryParams& params) override;
  absl::StatusOr<std::string> StartReindex(const std::string& tenant, const std::vector<std::string>& types) override;
  absl::StatusOr<std::string> ReindexStatus(const std::string& tenant) override;
  absl::StatusOr<engine::ResourceResult> ConditionalCreate(const std::string& tenant, const std::string& type,
                                                           const std::string& body,
                                                           const engine::QueryParams& criteria) override;
  absl::StatusOr<engine::ResourceResult> ConditionalUpdate(const std::string& tenant, const std::string& type,
                                                           const engine::QueryParams& criteria,
                                                           const std::string& body) override;
  absl::StatusOr<std::optional<engine::ResourceResult>> ConditionalDelete(const std::string& tenant,
                                                                          const std::string& type,
                                                                          const engine::QueryParams& criteria) override;
  absl::StatusOr<std::string> History(const std::string& tenant, const engine::HistoryRequest& request) override;
  absl::StatusOr<std::string> ProcessBundle(const std::string& tenant, const engine::BundleInput& input) override;
  absl::StatusOr<std::string> Capabilities(const std::string& tenant, const std::string& base_url) override;

  // A committed change: marks older cached versions stale here and in L2,
  // and tells the other instances. Always OK (what Redis does not take is
  // kept for later), so it never holds back the change stream.
  absl::Status Handle(const events::ChangeEvent& event) override;

  // Brings the metrics up to date (before a /metrics scrape).
  void UpdateMetrics();
  // Stops the subscriber and the L2 threads (pending asynchronous L2 work is
  // finished first). Idempotent.
  void Stop();

  Stats stats() const;
  resilience::BreakerState l2_state() { return breaker_.state(); }
  cache::L1Cache& l1() { return l1_; }

 private:
  struct Impl;
  struct Waiter {
    boost::asio::io_context* io;
    engine::ResultCallback done;
    int64_t min_version;
  };

  // L1, then (blocking) L2. nullopt: a miss at both.
  std::optional<Entry> Lookup(const std::string& key, int64_t min_version, bool use_l2);
  std::optional<Entry> LookupL1(const std::string& key, int64_t min_version);
  std::optional<Entry> LookupL2(const std::string& key, int64_t min_version);
  // Caches `r` (a successful read or write) under `key` in L1 and, unless
  // `l2` is false, L2 (blocking).
  void Fill(const std::string& key, const engine::ResourceResult& r, bool hot, bool l2);
  // The L2 half of Fill, for a thread of the pool.
  void FillL2(const std::string& key, const std::string& text, int64_t version, bool is_body, bool hot);
  // Writes `text` at `version` under `key` in Redis unless Redis holds a
  // newer version (or the same one with a body, when `is_body` is false).
  absl::Status L2Set(const std::string& key, const std::string& text, int64_t version, bool is_body, bool hot);
  // Writes the invalidations Redis did not take; false if Redis failed.
  bool FlushPending();
  void AddPending(std::string key, int64_t version);
  bool L2Usable();
  // The answer for a cached entry: the result, or 410 for a tombstone.
  absl::StatusOr<engine::ResourceResult> FromEntry(const std::string& type, const std::string& id, Entry&& e);
  void WriteThrough(const std::string& tenant, const absl::StatusOr<engine::ResourceResult>& r);
  // Hands `r` to the callers waiting for the read `s` led, each on its own
  // io_context (directly for those on the leader's, which is this thread).
  void Deliver(const AsyncReadState& s, const absl::StatusOr<engine::ResourceResult>& r);
  void OnInvalidation(const std::string& message);
  // Marks stale, here and in L2, what a batch or transaction Bundle wrote
  // (from its response), before the change stream brings it.
  void MarkBundleWrites(const std::string& tenant, const std::string& response);
  void RecordPatient(const std::string& tenant, const std::string& type, const std::string& patient);

  const CacheConfig config_;
  engine::FhirApi& inner_;
  const std::shared_ptr<cache::RedisClient> redis_;
  HotSpots* const hot_;
  const core::Clock& clock_;
  cache::L1Cache l1_;
  resilience::CircuitBreaker breaker_;
  cache::SingleFlight<absl::StatusOr<engine::ResourceResult>> flights_;

  std::mutex waiters_mu_;
  absl::flat_hash_map<std::string, std::vector<Waiter>> waiters_ ABSL_GUARDED_BY(waiters_mu_);

  std::mutex pending_mu_;
  std::deque<std::pair<std::string, int64_t>> pending_ ABSL_GUARDED_BY(pending_mu_);
  std::atomic<size_t> pending_size_{0};

  std::atomic<uint64_t> l1_hits_{0}, l1_misses_{0}, l2_hits_{0}, l2_misses_{0}, l2_errors_{0};
  std::atomic<uint64_t> backend_reads_{0}, coalesced_{0}, invalidations_{0}, pending_dropped_{0};

  std::unique_ptr<Impl> impl_;  // thread pool, subscriber, metrics; last: stops first
};

}  // namespace medgrid::resource_cache
