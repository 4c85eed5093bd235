// Invariants per shard: `index` maps exactly the keys in `lru`, its string_view
// keys point into the list's own Entry::key (list nodes never move), and
// `bytes` is the sum of the entries' charges and never exceeds shard_budget_
// after Put returns.
#include "medgrid/cache/l1_cache.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "medgrid/core/strings.h"

namespace medgrid::cache {

std::string TenantPrefix(std::string_view tenant) {
  return core::StrCat(tenant.size(), ":", tenant, "|");
}

std::string CacheKey(std::string_view tenant, std::string_view type, std::string_view id) {
  return core::StrCat(TenantPrefix(tenant), type, "/", id);
}

L1Cache::L1Cache(const core::Clock& clock, L1CacheConfig config)
    : clock_(clock),
      config_(config),
      shard_budget_(config.max_bytes / std::max<size_t>(config.shards, 1)) {
  shards_.reserve(std::max<size_t>(config_.shards, 1));
  for (size_t i = 0; i < std::max<size_t>(config_.shards, 1); ++i) {
    shards_.push_back(std::make_unique<Shard>());
  }
}

L1Cache::Shard& L1Cache::ShardFor(std::string_view key) {
  return *shards_[std::hash<std::string_view>{}(key) % shards_.size()];
}

void L1Cache::Erase(Shard& shard, std::list<Entry>::iterator it) {
  shard.bytes -= it->charge;
  shard.index.erase(std::string_view(it->key));
  shard.lru.erase(it);
}

std::optional<CachedValue> L1Cache::Get(std::string_view key, int64_t min_version) {
  Shard& shard = ShardFor(key);
  const core::TimePoint now = clock_.Now();
  std::lock_guard lock(shard.mu);
  auto found = shard.index.find(key);
  if (found == shard.index.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  auto it = found->second;
  if (now >= it->expires) {
    Erase(shard, it);
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  if (it->value.version < min_version) {
    // Kept: a reader without the newer write may still use it until the
    // writer's Put replaces it.
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  shard.lru.splice(shard.lru.begin(), shard.lru, it);
  hits_.fetch_add(1, std::memory_order_relaxed);
  return it->value;
}

void L1Cache::Put(std::string_view key, std::shared_ptr<const std::string> value, int64_t version,
                  std::optional<std::chrono::microseconds> ttl) {
  const size_t charge = key.size() + value->size() + kEntryOverhead;
  Shard& shard = ShardFor(key);
  const core::TimePoint expires = clock_.Now() + ttl.value_or(config_.ttl);
  std::lock_guard lock(shard.mu);
  if (auto found = shard.index.find(key); found != shard.index.end()) {
    if (found->second->value.version > version) return;
    Erase(shard, found->second);
  }
  if (charge > shard_budget_) return;
  while (shard.bytes + charge > shard_budget_ && !shard.lru.empty()) {
    Erase(shard, std::prev(shard.lru.end()));
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
  shard.lru.push_front(Entry{std::string(key), CachedValue{std::move(value), version}, expires, charge});
  shard.index.emplace(std::string_view(shard.lru.front().key), shard.lru.begin());
  shard.bytes += charge;
}

void L1Cache::Invalidate(std::string_view key) {
  Shard& shard = ShardFor(key);
  std::lock_guard lock(shard.mu);
  if (auto found = shard.index.find(key); found != shard.index.end()) Erase(shard, found->second);
}

void L1Cache::InvalidateTenant(std::string_view tenant) {
  const std::string prefix = TenantPrefix(tenant);
  for (auto& shard : shards_) {
    std::lock_guard lock(shard->mu);
    for (auto it = shard->lru.begin(); it != shard->lru.end();) {
      auto next = std::next(it);
      if (it->key.starts_with(prefix)) Erase(*shard, it);
      it = next;
    }
  }
}

void L1Cache::Clear() {
  for (auto& shard : shards_) {
    std::lock_guard lock(shard->mu);
    shard->index.clear();
    shard->lru.clear();
    shard->bytes = 0;
  }
}

L1CacheStats L1Cache::Stats() const {
  L1CacheStats stats;
  stats.hits = hits_.load(std::memory_order_relaxed);
  stats.misses = misses_.load(std::memory_order_relaxed);
  stats.evictions = evictions_.load(std::memory_order_relaxed);
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mu);
    stats.bytes += shard->bytes;
    stats.entries += shard->lru.size();
  }
  return stats;
}

}  // namespace medgrid::cache
