#include "medgrid/resilience/bulkhead.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace medgrid::resilience {

std::string_view ServiceClassName(ServiceClass c) {
  switch (c) {
    case ServiceClass::kCritical:
      return "critical";
    case ServiceClass::kStandard:
      return "standard";
    case ServiceClass::kAi:
      return "ai";
  }
  return "critical";
}

ServicePools::ServicePools(ServicePoolSettings settings)
    : settings_(settings),
      shed_at_(std::max(1, static_cast<int>(std::floor(settings.capacity * settings.shed_fraction)))) {
  for (int i = 0; i < kServiceClasses; ++i) {
    pools_[i].limit = std::max(0, static_cast<int>(std::floor(settings.capacity * settings.share_pct[i] / 100.0)));
  }
  // The critical share is a floor, not a ceiling: standard and ai together
  // can hold at most their shares, and critical work may use the rest.
  pools_[static_cast<int>(ServiceClass::kCritical)].limit = settings.capacity;
}

ServicePools::Permit& ServicePools::Permit::operator=(Permit&& o) noexcept {
  if (this != &o) {
    Release();
    pools_ = o.pools_;
    cls_ = o.cls_;
    o.pools_ = nullptr;
  }
  return *this;
}

void ServicePools::Permit::Release() {
  if (pools_ != nullptr) pools_->Release(cls_);
  pools_ = nullptr;
}

ServicePools::Permit ServicePools::TryAcquire(ServiceClass cls, bool never_shed) {
  Pool& pool = pools_[static_cast<int>(cls)];
  // Take the place first and check after, so that concurrent callers can
  // only be refused too often in a race, never admitted beyond a limit.
  const int total = total_.fetch_add(1, std::memory_order_acq_rel) + 1;
  const int mine = pool.in_flight.fetch_add(1, std::memory_order_acq_rel) + 1;
  bool admit = never_shed;
  if (!admit) {
    admit = cls == ServiceClass::kCritical ? total <= settings_.capacity : mine <= pool.limit && total <= shed_at_;
  }
  if (!admit) {
    pool.in_flight.fetch_sub(1, std::memory_order_acq_rel);
    total_.fetch_sub(1, std::memory_order_acq_rel);
    pool.rejected.fetch_add(1, std::memory_order_relaxed);
    return Permit();
  }
  pool.admitted.fetch_add(1, std::memory_order_relaxed);
  return Permit(this, cls);
}

void ServicePools::Release(ServiceClass cls) {
  pools_[static_cast<int>(cls)].in_flight.fetch_sub(1, std::memory_order_acq_rel);
  total_.fetch_sub(1, std::memory_order_acq_rel);
}

ServicePools::PoolStats ServicePools::stats(ServiceClass cls) const {
  const Pool& pool = pools_[static_cast<int>(cls)];
  return {pool.limit, pool.in_flight.load(), pool.admitted.load(), pool.rejected.load()};
}

int ServicePools::in_flight() const { return total_.load(); }

KeyedBulkhead::Slot& KeyedBulkhead::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    Release();
    owner_ = o.owner_;
    key_ = std::move(o.key_);
    o.owner_ = nullptr;
  }
  return *this;
}

void KeyedBulkhead::Slot::Release() {
  if (owner_ == nullptr) return;
  // Emptied first: a waiter granted the place runs inside Release, and may
  // move or destroy this slot meanwhile.
  KeyedBulkhead* owner = std::exchange(owner_, nullptr);
  const std::string key = std::move(key_);
  owner->Release(key);
}

KeyedBulkhead::KeyedBulkhead(int limit) : limit_(limit) {}

KeyedBulkhead::Slot KeyedBulkhead::TryAcquire(std::string_view key, bool count_refusal) {
  return AcquireUntil(key, std::chrono::steady_clock::time_point::min(), count_refusal);
}

KeyedBulkhead::Slot KeyedBulkhead::Acquire(std::string_view key, std::chrono::steady_clock::time_point deadline) {
  return AcquireUntil(key, deadline, true);
}

KeyedBulkhead::Slot KeyedBulkhead::AcquireUntil(std::string_view key, std::chrono::steady_clock::time_point deadline,
                                                bool count_refusal) {
  std::string k(key);
  std::unique_lock lock(mu_);
  Entry& entry = entries_[k];
  // Waiters go first: a newcomer may not overtake them.
  if (entry.waiters.empty() && entry.in_use < limit_) {
    ++entry.in_use;
    return Slot(this, std::move(k));
  }
  if (std::chrono::steady_clock::now() >= deadline) {
    Forget(k);
    if (count_refusal) rejections_.fetch_add(1, std::memory_order_relaxed);
    return Slot();
  }
  Waiter self;
  entry.waiters.push_back(Queued{.sync = &self, .ticket = 0, .granted = nullptr});
  while (!self.granted) {
    if (self.cv.wait_until(lock, deadline) == std::cv_status::timeout) break;
  }
  if (self.granted) return Slot(this, std::move(k));  // the releaser kept in_use for it
  // The entry is still there: it had a waiter (this one) until now.
  std::deque<Queued>& waiters = entries_.at(k).waiters;
  waiters.erase(std::find_if(waiters.begin(), waiters.end(), [&](const Queued& q) { return q.sync == &self; }));
  Forget(k);
  rejections_.fetch_add(1, std::memory_order_relaxed);
  return Slot();
}

KeyedBulkhead::AsyncAcquired KeyedBulkhead::AcquireAsync(std::string_view key, std::function<void(Slot)> granted) {
  std::string k(key);
  std::lock_guard lock(mu_);
  Entry& entry = entries_[k];
  AsyncAcquired out;
  if (entry.waiters.empty() && entry.in_use < limit_) {
    ++entry.in_use;
    out.slot = Slot(this, std::move(k));
    return out;
  }
  out.ticket = next_ticket_++;
  entry.waiters.push_back(Queued{.sync = nullptr, .ticket = out.ticket, .granted = std::move(granted)});
  return out;
}

bool KeyedBulkhead::CancelWait(std::string_view key, uint64_t ticket) {
  std::string k(key);
  std::lock_guard lock(mu_);
  auto it = entries_.find(k);
  if (it == entries_.end()) return false;
  std::deque<Queued>& waiters = it->second.waiters;
  auto w = std::find_if(waiters.begin(), waiters.end(), [&](const Queued& q) { return q.ticket == ticket; });
  if (w == waiters.end()) return false;
  waiters.erase(w);
  Forget(k);
  rejections_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void KeyedBulkhead::Forget(const std::string& key) {
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.in_use == 0 && it->second.waiters.empty()) entries_.erase(it);
}

void KeyedBulkhead::Release(const std::string& key) {
  std::unique_lock lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  Entry& entry = it->second;
  if (entry.waiters.empty()) {
    if (--entry.in_use == 0) entries_.erase(it);
    return;
  }
  // The place goes straight to the oldest waiter: in_use stays as it is.
  Queued next = std::move(entry.waiters.front());
  entry.waiters.pop_front();
  if (next.sync != nullptr) {
    next.sync->granted = true;
    next.sync->cv.notify_one();
    return;
  }
  lock.unlock();
  next.granted(Slot(this, key));
}

int KeyedBulkhead::InUse(std::string_view key) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(key));
  return it == entries_.end() ? 0 : it->second.in_use;
}

int KeyedBulkhead::Waiting(std::string_view key) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(key));
  return it == entries_.end() ? 0 : static_cast<int>(it->second.waiters.size());
}

int KeyedBulkhead::TotalWaiting() const {
  std::lock_guard lock(mu_);
  int waiting = 0;
  for (const auto& [key, entry] : entries_) waiting += static_cast<int>(entry.waiters.size());
  return waiting;
}

int KeyedBulkhead::MaxInUse() const {
  std::lock_guard lock(mu_);
  int most = 0;
  for (const auto& [key, entry] : entries_) most = std::max(most, entry.in_use);
  return most;
}

}  // namespace medgrid::resilience
