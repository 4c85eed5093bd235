// HotSpotDetector: finds the seed's hot spots (scalability-and-reliability.md,
// "Hot Spot Mitigation") from the request stream, in bounded memory:
//   - a patient above 100 QPS,
//   - a tenant above 30% of all traffic,
//   - a resource type above 5x its baseline QPS: the one an operator set, or
//     else one learned from the type's own traffic (a time-weighted mean over
//     a warm-up, then an exponentially weighted one that stands still while
//     the type is hot, so a surge does not become its own baseline).
// An entity enters hot-spot mode when its rate goes over its threshold and
// leaves it only when the rate is below 50% of the threshold and it has been
// hot for at least the cool-down (1 hour), so a rate hovering around the
// threshold does not flap. Rates are over a sliding window (60 s).
//
//   cache::HotSpotDetector hot(clock, {});
//   hot.SetTypeBaseline("Observation", 200);
//   hot.Record(tenant, "Observation", patient_id);   // per request
//   for (const auto& h : hot.Evaluate()) ...         // e.g. once a second
//
// Thread-safe. The clock must outlive it. On the request path through
// libs/resource_cache (HotSpots).
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "medgrid/cache/space_saving.h"
#include "medgrid/cache/string_map.h"
#include "medgrid/core/clock.h"

namespace medgrid::cache {

enum class HotSpotKind { kPatient, kTenant, kResourceType };

struct HotSpotConfig {
  // A patient is hot above this many requests per second.
  double patient_qps = 100;
  // A tenant is hot above this share of all requests (0..1).
  double tenant_share = 0.30;
  // Tenant shares are judged only while total traffic is at least this many
  // requests per second (ours, not the seed's: with a trickle of traffic, or
  // a single tenant, every share is large and means nothing).
  double tenant_min_total_qps = 10;
  // A resource type is hot above this multiple of its baseline QPS.
  double type_baseline_factor = 5;
  // Types without a baseline set (SetTypeBaseline) learn theirs at each
  // Evaluate: the time-weighted mean of their QPS over the warm-up (during
  // which the type is never hot), then an exponentially weighted mean with
  // this time constant. The seed gives no figures for these three; they are
  // ours.
  std::chrono::microseconds type_baseline_warmup = std::chrono::minutes(10);
  std::chrono::microseconds type_baseline_time_constant = std::chrono::hours(1);
  // A learned baseline counts as at least this QPS, so that a type that is
  // nearly idle is not hot at 5x nearly nothing.
  double type_min_baseline_qps = 1;
  // A hot entity turns off below this fraction of its threshold...
  double release_fraction = 0.5;
  // ...and only once it has been hot at least this long.
  std::chrono::microseconds cool_down = std::chrono::hours(1);
  // The window rates are measured over, its sub-intervals and counters.
  WindowConfig window = {};
};

struct HotSpot {
  HotSpotKind kind;
  // Patient: CacheKey(tenant, "Patient", id) form; tenant: the tenant; type:
  // the resource type.
  std::string key;
  // QPS for patients and types, share of traffic (0..1) for tenants.
  double value = 0;
  double threshold = 0;
  core::TimePoint since;
};

class HotSpotDetector {
 public:
  HotSpotDetector(const core::Clock& clock, HotSpotConfig config);

  // Counts one request (or `weight` of them). `patient_id` is empty when the
  // request names no patient.
  void Record(std::string_view tenant, std::string_view resource_type, std::string_view patient_id,
              uint64_t weight = 1);
  // Sets the normal QPS of a resource type (e.g. from last week's traffic),
  // instead of the one learned.
  void SetTypeBaseline(std::string_view resource_type, double qps);
  // The baseline a type is judged against now: the one set, else the
  // learned one once warmed up (at least type_min_baseline_qps); nullopt
  // while it is still learning or was never seen.
  std::optional<double> TypeBaseline(std::string_view resource_type) const;

  // Applies the thresholds at the clock's now, updates the hot set and returns
  // it, ordered by kind then key.
  std::vector<HotSpot> Evaluate();
  // The hot set as of the last Evaluate().
  std::vector<HotSpot> HotSet() const;

 private:
  void Update(HotSpotKind kind, const std::string& key, double value, double threshold,
              core::TimePoint now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<HotSpot> HotSetLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the learned baseline of `type` towards `qps` (unless it is hot)
  // and returns the baseline to judge it against, if any.
  std::optional<double> LearnBaseline(const std::string& type, double qps, core::TimePoint now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<double> BaselineLocked(std::string_view type, core::TimePoint now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  struct Learned {
    double qps = 0;
    core::TimePoint first_seen;
    core::TimePoint updated;
  };

  const core::Clock& clock_;
  const HotSpotConfig config_;
  WindowedSpaceSaving patients_;
  WindowedSpaceSaving tenants_;
  WindowedSpaceSaving types_;
  mutable std::mutex mu_;
  StringMap<std::string, double> type_baselines_ ABSL_GUARDED_BY(mu_);
  // Bounded by the sketch's capacity: only its heavy hitters are learned.
  StringMap<std::string, Learned> learned_ ABSL_GUARDED_BY(mu_);
  // Keyed by kind and key.
  absl::flat_hash_map<std::pair<HotSpotKind, std::string>, HotSpot> hot_ ABSL_GUARDED_BY(mu_);
};

}  // namespace medgrid::cache
