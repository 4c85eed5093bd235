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
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

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

// A bulkhead per key: at most `limit` holders per key at once (the seed's
// per-tenant database connections: 20 per tenant), each key independent of
// the others, as the seed's BulkheadExecutor with a semaphore per tenant.
// A caller that finds its key full waits until a place frees up or its
// deadline passes (max_wait 0: refused at once); waiters of one key are
// served first come, first served. Every refusal is counted.
//
//   KeyedBulkhead slots(20);
//   KeyedBulkhead::Slot slot = slots.Acquire(tenant, deadline);
//   if (!slot) return TooManyConnections();  // 503 + Retry-After
//   ... use a connection, holding `slot` ...
//
// Thread-safe. A key's entry exists only while it has holders or waiters,
// so memory follows the keys in use, not every key ever seen.
class KeyedBulkhead {
 public:
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept : owner_(o.owner_), key_(std::move(o.key_)) { o.owner_ = nullptr; }
    Slot& operator=(Slot&& o) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { Release(); }
    explicit operator bool() const { return owner_ != nullptr; }
    void Release();

   private:
    friend class KeyedBulkhead;
    Slot(KeyedBulkhead* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
    KeyedBulkhead* owner_ = nullptr;
    std::string key_;
  };

  // Precondition: limit > 0.
  explicit KeyedBulkhead(int limit);
  KeyedBulkhead(const KeyedBulkhead&) = delete;
  KeyedBulkhead& operator=(const KeyedBulkhead&) = delete;

  // A place for `key` now, or an empty slot: counted as a refusal unless
  // `count_refusal` is false (the caller will wait for one instead).
  [[nodiscard]] Slot TryAcquire(std::string_view key, bool count_refusal = true);
  // A place for `key`, waiting for one until `deadline`; an empty slot
  // (counted as a refusal) when none freed up in time.
  [[nodiscard]] Slot Acquire(std::string_view key, std::chrono::steady_clock::time_point deadline);
  // A place for `key` without blocking: in `slot` when one is free now;
  // otherwise the caller queues with the blocking waiters, `ticket`
  // withdraws the wait (CancelWait), and `granted` runs later with the
  // place, on the thread that frees it (under no lock of this class).
  struct AsyncAcquired {
    Slot slot;
    uint64_t ticket = 0;
  };
  AsyncAcquired AcquireAsync(std::string_view key, std::function<void(Slot)> granted);
  // Withdraws a queued AcquireAsync: true (counted as a refusal) when it was
  // still waiting, so `granted` will never run; false when a place was
  // handed to it already (`granted` ran or is running).
  bool CancelWait(std::string_view key, uint64_t ticket);

  int limit() const { return limit_; }
  // Places `key` holds now.
  int InUse(std::string_view key) const;
  // Callers of `key` waiting for a place now.
  int Waiting(std::string_view key) const;
  // The most places any key holds now.
  int MaxInUse() const;
  // Callers waiting for a place now, over all keys.
  int TotalWaiting() const;
  uint64_t rejections() const { return rejections_.load(std::memory_order_relaxed); }

 private:
  struct Waiter {
    std::condition_variable cv;
    bool granted = false;  // a holder of the key handed its place over
  };
  // A blocked Acquire (`sync`) or a queued AcquireAsync (`ticket`, `granted`).
  struct Queued {
    Waiter* sync = nullptr;
    uint64_t ticket = 0;
    std::function<void(Slot)> granted;
  };
  struct Entry {
    int in_use = 0;
    std::deque<Queued> waiters;  // oldest first
  };
  void Release(const std::string& key);
  Slot AcquireUntil(std::string_view key, std::chrono::steady_clock::time_point deadline, bool count_refusal);
  // Drops `key`'s entry when nothing holds or waits for it. Requires mu_.
  void Forget(const std::string& key);

  const int limit_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;  // guarded by mu_
  uint64_t next_ticket_ = 1;                         // guarded by mu_
  std::atomic<uint64_t> rejections_{0};
};

}  // namespace medgrid::resilience
