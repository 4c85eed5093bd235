// L1Cache: the in-process cache of FHIR resources (the seed's "L1": 1 GiB per
// instance, 60 s TTL). Sharded LRU: a key hashes to one of N shards, each with
// its own mutex, LRU list and byte budget (max_bytes / shards), so readers of
// different keys rarely contend. The FHIR read cache (libs/resource_cache)
// is built on it.
//
//   core::RealClock clock;
//   cache::L1Cache l1(clock, {});
//   const std::string key = cache::CacheKey(tenant, "Patient", id);
//   l1.Put(key, std::make_shared<const std::string>(body), version_id);
//   // After this client wrote version 7, never serve it anything older:
//   if (auto hit = l1.Get(key, /*min_version=*/7)) Serve(*hit->value);
//
// Keys start with the tenant, so one tenant's keys can never name another
// tenant's entries and InvalidateTenant() can find them all. Build keys with
// CacheKey(); hand-built keys must start with TenantPrefix(tenant).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "medgrid/cache/string_map.h"
#include "medgrid/core/clock.h"

namespace medgrid::cache {

// The prefix every key of `tenant` starts with. Length-prefixed, so no tenant's
// prefix is a prefix of another's ("4:acme|" vs "5:acme|...").
std::string TenantPrefix(std::string_view tenant);
// The key of one resource of one tenant: TenantPrefix(tenant) + type + "/" + id.
std::string CacheKey(std::string_view tenant, std::string_view type, std::string_view id);

struct L1CacheConfig {
  // Number of independently locked shards; at least 1.
  size_t shards = 16;
  // How long an entry is served after its Put; it misses from put + ttl on.
  std::chrono::microseconds ttl = std::chrono::seconds(60);
  // Bound on key + value bytes + kEntryOverhead per entry, over all shards;
  // each shard holds at most max_bytes / shards.
  size_t max_bytes = size_t{1} << 30;
};

struct CachedValue {
  std::shared_ptr<const std::string> value;
  int64_t version = 0;
};

struct L1CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;     // absent, expired or older than min_version
  uint64_t evictions = 0;  // removed to stay within the byte bound
  uint64_t bytes = 0;      // charged bytes held now
  uint64_t entries = 0;
};

// Thread-safe. The clock must outlive the cache.
class L1Cache {
 public:
  // Bookkeeping charged per entry on top of key and value sizes (list node,
  // map slot, shared_ptr control block), so many tiny entries still count.
  static constexpr size_t kEntryOverhead = 96;

  L1Cache(const core::Clock& clock, L1CacheConfig config);
  L1Cache(const L1Cache&) = delete;
  L1Cache& operator=(const L1Cache&) = delete;

  // The entry for `key` if present, unexpired and at least `min_version`
  // (read-your-writes: pass the version the client last wrote, 0 for none).
  // A hit makes the entry the most recently used.
  std::optional<CachedValue> Get(std::string_view key, int64_t min_version = 0);

  // Stores `value` at `version`, resetting its TTL, and evicts least recently
  // used entries of the shard until it fits. Ignored when the cached version
  // is newer (a late writer must not replace a newer body) or when the entry
  // alone exceeds a shard's budget. `value` must be non-null.
  // `ttl`, when set, replaces the configured TTL for this entry (hot keys
  // are kept longer).
  void Put(std::string_view key, std::shared_ptr<const std::string> value, int64_t version,
           std::optional<std::chrono::microseconds> ttl = std::nullopt);

  void Invalidate(std::string_view key);
  // Drops every entry of `tenant`. Walks all shards: O(entries).
  void InvalidateTenant(std::string_view tenant);
  // Drops every entry (e.g. after invalidations may have been missed).
  void Clear();

  L1CacheStats Stats() const;

 private:
  struct Entry {
    std::string key;
    CachedValue value;
    core::TimePoint expires;
    size_t charge;
  };
  struct Shard {
    std::mutex mu;
    std::list<Entry> lru ABSL_GUARDED_BY(mu);  // front: most recently used
    StringMap<std::string_view, std::list<Entry>::iterator> index ABSL_GUARDED_BY(mu);
    size_t bytes ABSL_GUARDED_BY(mu) = 0;
  };

  Shard& ShardFor(std::string_view key);
  static void Erase(Shard& shard, std::list<Entry>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  const core::Clock& clock_;
  const L1CacheConfig config_;
  const size_t shard_budget_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace medgrid::cache
