#include "medgrid/store/set_size_cache.h"

#include "medgrid/core/strings.h"

namespace medgrid::store {

std::string SetSizeCache::Key(std::string_view sql, const std::vector<std::string>& params) {
  // Each part is preceded by its length, so no two lists of parts share a key.
  std::string key;
  core::StrAppend(key, sql.size(), ":", sql);
  for (const std::string& p : params) core::StrAppend(key, ",", p.size(), ":", p);
  return key;
}

std::optional<std::vector<int64_t>> SetSizeCache::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.expires <= clock_.Now()) return std::nullopt;
  return it->second.sizes;
}

void SetSizeCache::Put(const std::string& key, std::vector<int64_t> sizes) {
  const core::TimePoint now = clock_.Now();
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.size() >= max_entries_ && !entries_.contains(key)) {
    std::erase_if(entries_, [&](const auto& e) { return e.second.expires <= now; });
    if (entries_.size() >= max_entries_) entries_.clear();
  }
  entries_[key] = Entry{std::move(sizes), now + ttl_};
}

void SetSizeCache::Erase(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(key);
}

std::size_t SetSizeCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace medgrid::store
