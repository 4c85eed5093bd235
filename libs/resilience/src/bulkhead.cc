#include "medgrid/resilience/bulkhead.h"

#include <algorithm>
#include <cmath>

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

}  // namespace medgrid::resilience
