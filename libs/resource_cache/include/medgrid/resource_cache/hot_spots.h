// HotSpots: hot-spot mode on the request path (the seed's "Hot Spot
// Mitigation"). Every FHIR request is recorded (tenant, resource type and the
// patient it concerns) in a cache::HotSpotDetector; a worker evaluates it
// about once a second. While an entity is hot:
//   - reads of its keys are coalesced (concurrent misses of one key make one
//     database read; see CachingFhirApi),
//   - a hot patient's entries are kept longer in L1 and L2,
//   - a hot patient's requests are limited per patient (a token bucket in
//     Redis shared by the instances, keyed by tenant and patient): over the
//     limit is 429 with Retry-After and an OperationOutcome.
// The detector's hysteresis turns an entity off below 50% of its threshold
// after the cool-down (1 h). Coalescing can instead be forced on for every
// key, or off (Coalescing).
//
//   HotSpots hot(config, clock, redis, "mg", &metrics);
//   hot.Start();
//   RETURN_IF_ERROR(hot.Admit(tenant, patient));   // 429 for a hot patient over its limit
//   hot.Record(tenant, "Patient", patient);
//   if (hot.Coalesce(tenant, "Patient", patient)) ...
//
// Thread-safe. Resource types are hot only against a baseline
// (SetTypeBaseline); nothing sets one yet, so type hot spots stay off.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/cache/hot_spot.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/worker.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Gauge;
class Counter;
}  // namespace prometheus

namespace medgrid::cache {
class RedisClient;
class RateLimiter;
}  // namespace medgrid::cache

namespace medgrid::resource_cache {

// When concurrent misses of one key share one database read.
enum class Coalescing {
  kOff,     // never
  kHot,     // for keys of a hot patient, tenant or resource type (default)
  kAlways,  // for every key
};

struct HotSpotsConfig {
  // The seed's thresholds: patient > 100 QPS, tenant > 30% of traffic, type
  // > 5x baseline; off below 50% after 1 h; 60 s window.
  cache::HotSpotConfig detector;
  // How often the detector is evaluated.
  std::chrono::milliseconds evaluate_every{1000};
  Coalescing coalescing = Coalescing::kHot;
  // Requests per second one hot patient may receive, over all instances on
  // one Redis (each instance alone without it); 0: no limit. Ours, not the
  // seed's (it asks for a per-patient limit without a number): twice the
  // detection threshold, so the limit only cuts a surge well beyond it.
  double patient_rps = 200;
  // Burst of that bucket; 0: twice the rate.
  double patient_burst = 0;
};

class HotSpots {
 public:
  // `redis` may be null (local buckets). `metrics` may be null. The clock
  // must outlive this object.
  HotSpots(HotSpotsConfig config, const core::Clock& clock, std::shared_ptr<cache::RedisClient> redis,
           const std::string& redis_prefix, prometheus::Registry* metrics);
  ~HotSpots();
  HotSpots(const HotSpots&) = delete;
  HotSpots& operator=(const HotSpots&) = delete;

  // Counts one request; `patient` empty when it names none.
  void Record(std::string_view tenant, std::string_view type, std::string_view patient);
  // Whether a read of this tenant, type and patient is coalesced now.
  bool Coalesce(std::string_view tenant, std::string_view type, std::string_view patient) const;
  // Whether the patient is in hot-spot mode now.
  bool PatientHot(std::string_view tenant, std::string_view patient) const;
  // OK, or ResourceExhausted (429, issue throttled, RetryAfter) when the
  // patient is hot and over its limit. Empty patient: OK.
  absl::Status Admit(std::string_view tenant, std::string_view patient);

  // Evaluates the detector now and publishes the hot set to the request
  // path and the metrics. The worker calls it every evaluate_every.
  std::vector<cache::HotSpot> Evaluate();
  // GET /admin/hotspots: {"coalescing": ..., "patients": [{tenant, id, qps,
  // threshold, since}], "tenants": [{tenant, share, threshold, since}],
  // "types": [{type, qps, threshold, since}]}, as of the last evaluation.
  std::string ToJson() const;

  void Start();
  void Stop();

  const HotSpotsConfig& config() const { return config_; }
  uint64_t throttled() const { return throttled_.load(std::memory_order_relaxed); }

 private:
  struct Snapshot {
    absl::flat_hash_set<std::string> patients;  // CacheKey(tenant, "Patient", id)
    absl::flat_hash_set<std::string> tenants;
    absl::flat_hash_set<std::string> types;
    std::vector<cache::HotSpot> spots;
  };
  std::shared_ptr<const Snapshot> Current() const;

  const HotSpotsConfig config_;
  const core::Clock& clock_;
  cache::HotSpotDetector detector_;
  std::unique_ptr<cache::RateLimiter> patient_limit_;  // null: no limit
  mutable absl::Mutex mu_;
  std::shared_ptr<const Snapshot> snapshot_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> any_hot_{false};  // fast path: nothing is hot
  std::atomic<uint64_t> throttled_{0};
  prometheus::Family<prometheus::Gauge>* active_ = nullptr;
  prometheus::Family<prometheus::Counter>* throttled_family_ = nullptr;
  std::unique_ptr<core::Worker> worker_;
};

// The readable parts of a CacheKey: tenant and "Type/id". False for text
// that is not a CacheKey.
bool SplitCacheKey(std::string_view key, std::string& tenant, std::string& rest);

}  // namespace medgrid::resource_cache
