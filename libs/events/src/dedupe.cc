#include "medgrid/events/dedupe.h"

namespace medgrid::events {

bool VersionDeduper::Accept(std::string_view key, int64_t version) {
  std::lock_guard lock(mu_);
  auto [it, fresh] = latest_.try_emplace(std::string(key), version);
  if (!fresh) {
    if (version <= it->second) return false;
    it->second = version;
    return true;
  }
  order_.emplace_back(key);
  if (order_.size() > capacity_) {
    latest_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

bool VersionDeduper::Fresh(std::string_view key, int64_t version) {
  std::lock_guard lock(mu_);
  auto it = latest_.find(std::string(key));
  return it == latest_.end() || version > it->second;
}

bool IdDeduper::Accept(std::string_view id) {
  std::lock_guard lock(mu_);
  if (!seen_.emplace(id).second) return false;
  order_.emplace_back(id);
  if (order_.size() > capacity_) {
    seen_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

}  // namespace medgrid::events
