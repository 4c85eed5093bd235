// Remembered id-set sizes of searches that intersect several sets.
//
// Such a search is planned from how many ids each set has (up to a cap): the
// smallest set drives, small ones are hashed, large ones probed (pg_search.cc,
// BuildSearch). Counting them costs a statement, and a transaction around it
// and the page query, on every page. The sizes change slowly, so the store
// keeps them here for a while and plans from them. A remembered size never
// changes a result: the page query checks, in its own snapshot, every size
// its answer depends on (migration 8), and the store counts afresh when one
// no longer holds.
//
// Keys are a sizes statement with its parameters, which name the tenant. An
// entry expires `ttl` after it was put. When the cache holds `max_entries`,
// a put first drops the expired entries and, if that frees nothing, all of
// them. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "medgrid/core/clock.h"

namespace medgrid::store {

class SetSizeCache {
 public:
  static constexpr std::chrono::seconds kDefaultTtl{30};
  static constexpr std::size_t kDefaultMaxEntries = 4096;

  explicit SetSizeCache(const core::Clock& clock, std::chrono::seconds ttl = kDefaultTtl,
                        std::size_t max_entries = kDefaultMaxEntries)
      : clock_(clock), ttl_(ttl), max_entries_(max_entries) {}

  // The key of a sizes statement run with `params`.
  static std::string Key(std::string_view sql, const std::vector<std::string>& params);

  std::optional<std::vector<int64_t>> Get(const std::string& key) const;
  void Put(const std::string& key, std::vector<int64_t> sizes);
  void Erase(const std::string& key);
  std::size_t size() const;

 private:
  struct Entry {
    std::vector<int64_t> sizes;
    core::TimePoint expires;
  };

  const core::Clock& clock_;
  const std::chrono::seconds ttl_;
  const std::size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace medgrid::store
