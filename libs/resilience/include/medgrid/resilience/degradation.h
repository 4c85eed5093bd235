// Degradation controller: turns live health signals into one of the seed's
// six degradation levels (scalability-and-reliability.md, "Graceful
// Degradation") and answers, per request, which features the level allows.
//
// Levels are cumulative, as the seed's apply_degradation says: a feature is
// enabled iff the level is below the feature's minimum level. So level 5
// (regional outage) also switches off everything levels 1-4 switch off: no AI,
// no external queries, consent fails closed for non-emergency access, and no
// writes (this region is read-only at best while traffic fails over to DR).
//
//   Level  Name               Trigger (DegradationRules)            Gate that turns off
//   0      normal             none                                  -
//   1      ai_degraded        AI availability < min or p99 > max    AiAllowed
//   2      interop_degraded   HIE availability < min or latency>max ExternalQueriesAllowed
//   3      consent_degraded   miss rate > max AND db latency > max  ConsentFailClosed turns on
//                             (>= consent_min_lookups), or breaker
//                             open
//   4      database_degraded  db failover, or a shard unreachable   WritesAllowed
//   5      regional_outage    region_down                           (all of the above)
//
// Comparisons are strict: a signal exactly at its threshold does not trigger.
//
// Hysteresis: a higher level takes effect on the Update() that computes it; a
// level is only left once the signals have stayed below it continuously for
// `recovery` (measured from the first Update() below it); one reading at or
// above it restarts that wait. Each level keeps its own wait, so a spike to an
// intermediate level holds only that level. Time only moves on Update(): the
// level never drops between calls.
//
//   DegradationController degradation(DegradationRules{}, clock,
//       [](const DegradationStatus& s) { LogAndBroadcast(s); });
//   // Every few seconds, from one sampler:
//   degradation.Update(CollectSignals());
//   // On every request:
//   if (!DegradationController::WritesAllowed(degradation.level())) return ReadOnly503();
//
// Thread-safety: all members are thread-safe. Intended for one sampler calling
// Update() and many readers calling level(); with several concurrent writers
// (Update, SetOverride, ClearOverride) on_change calls may overlap or arrive
// out of order.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/core/clock.h"

namespace medgrid::resilience {

enum class DegradationLevel : int {
  kNormal = 0,
  kAiDegraded = 1,
  kInteropDegraded = 2,
  kConsentDegraded = 3,
  kDatabaseDegraded = 4,
  kRegionalOutage = 5,
};

// "normal", "ai_degraded", "interop_degraded", "consent_degraded",
// "database_degraded", "regional_outage"; "unknown" for any other value.
std::string_view DegradationLevelName(DegradationLevel level);

// Live signals, sampled by the caller every few seconds. A signal that has no
// source in this process stays at its "healthy/unknown" default and
// contributes nothing.
struct HealthSignals {
  // AI inference: availability over the last window (0..1) and p99 latency;
  // nullopt = no AI service configured (or not measured).
  std::optional<double> ai_availability;
  std::optional<std::chrono::milliseconds> ai_latency_p99;
  // External HIE: availability (0..1) and latency; nullopt = none configured.
  std::optional<double> hie_availability;
  std::optional<std::chrono::milliseconds> hie_latency;
  // Consent: cache lookups since the last sample (hits, misses), the
  // registry's latency (p99 or mean) over the same period, and whether the
  // consent circuit breaker is open.
  uint64_t consent_hits = 0;
  uint64_t consent_misses = 0;
  std::chrono::milliseconds consent_db_latency{0};
  bool consent_breaker_open = false;
  // Database: a failover in progress (the primary unreachable, or
  // reconnecting); shards reachable of total (0 total = not sharded/unknown).
  bool db_failover = false;
  int shards_total = 0;
  int shards_reachable = 0;
  // The region as a whole is unavailable (an operator signal or a
  // multi-region monitor).
  bool region_down = false;
};

// The seed's thresholds; every field is configurable.
struct DegradationRules {
  // Level 1 when AI availability < this (0..1) ...
  double ai_min_availability = 0.99;
  // ... or AI p99 latency > this.
  std::chrono::milliseconds ai_max_latency{2000};
  // Level 2 when HIE availability < this (0..1) ...
  double hie_min_availability = 0.95;
  // ... or HIE latency > this.
  std::chrono::milliseconds hie_max_latency{5000};
  // Level 3 when the consent cache miss rate (misses / lookups) > this AND
  // the registry latency > consent_max_db_latency ...
  double consent_max_miss_rate = 0.5;
  std::chrono::milliseconds consent_max_db_latency{500};
  // ... counted only when a sample holds at least this many lookups (and at
  // least one); with fewer the miss rate is noise and does not count.
  uint64_t consent_min_lookups = 20;
  // Hysteresis: a level computed from the signals is only left after the
  // signals have stayed below it for this long. 0 = drop at once.
  std::chrono::seconds recovery{30};
};

struct DegradationStatus {
  // The effective level: the override if set, else `computed`.
  DegradationLevel level = DegradationLevel::kNormal;
  // The level from the signals, after hysteresis (kept while overridden).
  DegradationLevel computed = DegradationLevel::kNormal;
  // Human-readable, one entry per triggered condition of the last Update(),
  // in level order, e.g. "consent: cache miss rate 0.72 > 0.50 and registry
  // latency 830 ms > 500 ms"; then "hysteresis: ..." while a level is held
  // above what the signals say; then "override: <reason>" while overridden.
  std::vector<std::string> reasons;
  std::optional<DegradationLevel> override_level;
  std::string override_reason;
  // When the effective level last changed (construction time until then).
  core::TimePoint since;
};

class DegradationController {
 public:
  // `clock` must outlive the controller. `on_change` (may be null) is called
  // after every change of the effective level, outside the controller's lock,
  // on the thread that caused it, with the status right after that change;
  // it may call back into the controller. Starts at kNormal.
  DegradationController(DegradationRules rules, const core::Clock& clock,
                        std::function<void(const DegradationStatus&)> on_change = nullptr);
  DegradationController(const DegradationController&) = delete;
  DegradationController& operator=(const DegradationController&) = delete;

  // Computes the level from `signals`: the highest triggered level of the
  // table above, 0 if none; then applies hysteresis (see the file comment)
  // and replaces the reasons. Thread-safe.
  void Update(const HealthSignals& signals);

  // Operator override for drills: the effective level is `level` until
  // cleared, whatever the signals say (Update() keeps computing underneath).
  // Replaces an earlier override. Thread-safe.
  void SetOverride(DegradationLevel level, std::string reason);
  // Back to the computed level; a no-op without an override. Thread-safe.
  void ClearOverride();

  // A snapshot. Thread-safe.
  DegradationStatus Status() const;
  // The effective level; one atomic load, for every request. Thread-safe.
  DegradationLevel level() const { return level_.load(std::memory_order_acquire); }

  // Feature gates by level (the seed's "Actions"), cumulative: each is off
  // from its level upwards, level 5 included.
  // Writes (create/update/delete): false from level 4 (read-only mode).
  static bool WritesAllowed(DegradationLevel l);
  // AI features (ambient documentation, guideline suggestions): false from
  // level 1. Critical DDI checks from cached rules are not gated by this.
  static bool AiAllowed(DegradationLevel l);
  // Queries to external HIEs: false from level 2 (serve cached data).
  static bool ExternalQueriesAllowed(DegradationLevel l);
  // Non-emergency access fails closed when consent cannot be confirmed;
  // break-the-glass stays allowed: true from level 3.
  static bool ConsentFailClosed(DegradationLevel l);

 private:
  static constexpr int kLevels = 6;

  // Recomputes the effective level after any change; returns the status to
  // report if it changed, nullopt otherwise.
  std::optional<DegradationStatus> ApplyEffective(core::TimePoint now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DegradationStatus StatusLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Notify(const std::optional<DegradationStatus>& changed) const;

  const DegradationRules rules_;
  const core::Clock& clock_;
  const std::function<void(const DegradationStatus&)> on_change_;

  mutable absl::Mutex mu_;
  // held_[k]: level k (1..5) is in effect, by the signals or by hysteresis.
  bool held_[kLevels] ABSL_GUARDED_BY(mu_) = {};
  // below_since_[k]: the first Update() below level k while k was held.
  std::optional<core::TimePoint> below_since_[kLevels] ABSL_GUARDED_BY(mu_);
  DegradationLevel computed_ ABSL_GUARDED_BY(mu_) = DegradationLevel::kNormal;
  std::vector<std::string> reasons_ ABSL_GUARDED_BY(mu_);
  std::optional<DegradationLevel> override_level_ ABSL_GUARDED_BY(mu_);
  std::string override_reason_ ABSL_GUARDED_BY(mu_);
  DegradationLevel effective_ ABSL_GUARDED_BY(mu_) = DegradationLevel::kNormal;
  core::TimePoint since_ ABSL_GUARDED_BY(mu_);
  // Mirrors effective_, written under mu_, read without it.
  std::atomic<DegradationLevel> level_{DegradationLevel::kNormal};
};

}  // namespace medgrid::resilience
