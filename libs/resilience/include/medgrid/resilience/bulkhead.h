// Service bulkheads: the seed's three pools of request capacity, so that an
// overload of deferrable work cannot starve clinical reads.
//
//   critical  60%  FHIR interactions (reads, writes, bundles), consent, audit
//   standard  30%  bulk and maintenance work: $export, $reindex, $everything,
//                  type- and system-level history
//   ai        10%  AI inference and analytics (the AI service's routes)
//
// Each pool may hold at most its share of `capacity` requests at once. Once
// the requests in flight over all pools reach `shed_fraction` of capacity,
// standard and ai requests are refused even below their share: they are shed
// first. Critical writes are refused only when the whole capacity is in use.
// Critical reads are never refused: they are counted, not limited.
//
//   ServicePools pools(ServicePoolSettings{});
//   ServicePools::Permit permit = pools.TryAcquire(ServiceClass::kStandard, false);
//   if (!permit) return Overloaded();  // 503 + Retry-After
//   ... handle the request, holding `permit` until the answer is sent ...
//
// Thread-safe, lock-free: one atomic counter per pool.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

namespace medgrid::resilience {

enum class ServiceClass : int { kCritical = 0, kStandard = 1, kAi = 2 };
inline constexpr int kServiceClasses = 3;
std::string_view ServiceClassName(ServiceClass c);

struct ServicePoolSettings {
  // Requests the instance serves at once; the pools' limits are shares of
  // it. > 0.
  int capacity = 256;
  // Shares of capacity per pool, in percent (the seed's 60/30/10).
  std::array<double, kServiceClasses> share_pct = {60, 30, 10};
  // Above this fraction of capacity in flight, standard and ai requests are
  // shed whatever their own pool holds.
  double shed_fraction = 0.8;
};

class ServicePools {
 public:
  // Holds one request's place in its pool; releases it when destroyed.
  class Permit {
   public:
    Permit() = default;
    Permit(Permit&& o) noexcept : pools_(o.pools_), cls_(o.cls_) { o.pools_ = nullptr; }
    Permit& operator=(Permit&& o) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit() { Release(); }
    explicit operator bool() const { return pools_ != nullptr; }
    void Release();

   private:
    friend class ServicePools;
    Permit(ServicePools* pools, ServiceClass cls) : pools_(pools), cls_(cls) {}
    ServicePools* pools_ = nullptr;
    ServiceClass cls_ = ServiceClass::kCritical;
  };

  struct PoolStats {
    int limit = 0;
    int in_flight = 0;
    uint64_t admitted = 0;
    uint64_t rejected = 0;
  };

  // Precondition: capacity > 0, shares >= 0, shed_fraction in (0, 1].
  explicit ServicePools(ServicePoolSettings settings);
  ServicePools(const ServicePools&) = delete;
  ServicePools& operator=(const ServicePools&) = delete;

  // A place for one request of `cls`, or an empty permit when it is refused.
  // `never_shed` (critical reads) is always admitted.
  [[nodiscard]] Permit TryAcquire(ServiceClass cls, bool never_shed);

  PoolStats stats(ServiceClass cls) const;
  int in_flight() const;
  const ServicePoolSettings& settings() const { return settings_; }

 private:
  void Release(ServiceClass cls);

  struct Pool {
    int limit = 0;
    std::atomic<int> in_flight{0};
    std::atomic<uint64_t> admitted{0};
    std::atomic<uint64_t> rejected{0};
  };

  const ServicePoolSettings settings_;
  const int shed_at_;
  std::atomic<int> total_{0};
  std::array<Pool, kServiceClasses> pools_;
};

}  // namespace medgrid::resilience
