// Invariants (under mu_):
//   * held_ is a prefix: held_[k] implies held_[j] for 1 <= j < k (a level is
//     entered with all below it, and a lower level's wait starts no earlier
//     than a higher one's), so computed_ is the highest held level.
//   * below_since_[k] is set only while held_[k] and the last Update() was
//     below k.
//   * effective_ == override_level_.value_or(computed_), level_ mirrors it,
//     and since_ is when it last changed.
#include "medgrid/resilience/degradation.h"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace medgrid::resilience {

namespace {

std::string FormatFixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

// "<value> <op> <threshold>" with two decimals, or more where two would
// print both the same (0.989 < 0.99 must not read "0.99 < 0.99").
std::string CompareRatio(double value, std::string_view op, double threshold) {
  std::string v;
  std::string t;
  for (int decimals = 2; decimals <= 6; ++decimals) {
    v = FormatFixed(value, decimals);
    t = FormatFixed(threshold, decimals);
    if (v != t) break;
  }
  return v + " " + std::string(op) + " " + t;
}

std::string Ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

std::string CompareLatency(std::chrono::milliseconds value, std::chrono::milliseconds threshold) {
  return Ms(value) + " > " + Ms(threshold);
}

struct Triggered {
  DegradationLevel level;
  std::string reason;
};

// The seed's check_degradation_level(), every triggered condition in level
// order.
std::vector<Triggered> Evaluate(const DegradationRules& rules, const HealthSignals& s) {
  std::vector<Triggered> out;
  if (s.ai_availability && *s.ai_availability < rules.ai_min_availability) {
    out.push_back({DegradationLevel::kAiDegraded,
                   "ai: availability " + CompareRatio(*s.ai_availability, "<", rules.ai_min_availability)});
  }
  if (s.ai_latency_p99 && *s.ai_latency_p99 > rules.ai_max_latency) {
    out.push_back(
        {DegradationLevel::kAiDegraded, "ai: p99 latency " + CompareLatency(*s.ai_latency_p99, rules.ai_max_latency)});
  }
  if (s.hie_availability && *s.hie_availability < rules.hie_min_availability) {
    out.push_back({DegradationLevel::kInteropDegraded,
                   "hie: availability " + CompareRatio(*s.hie_availability, "<", rules.hie_min_availability)});
  }
  if (s.hie_latency && *s.hie_latency > rules.hie_max_latency) {
    out.push_back(
        {DegradationLevel::kInteropDegraded, "hie: latency " + CompareLatency(*s.hie_latency, rules.hie_max_latency)});
  }
  const uint64_t lookups = s.consent_hits + s.consent_misses;
  if (lookups > 0 && lookups >= rules.consent_min_lookups) {
    const double miss_rate = static_cast<double>(s.consent_misses) / static_cast<double>(lookups);
    // Both must hold: a cold cache in front of a fast registry, or a slow
    // registry behind a warm cache, is not a consent outage.
    if (miss_rate > rules.consent_max_miss_rate && s.consent_db_latency > rules.consent_max_db_latency) {
      out.push_back({DegradationLevel::kConsentDegraded,
                     "consent: cache miss rate " + CompareRatio(miss_rate, ">", rules.consent_max_miss_rate) +
                         " and registry latency " +
                         CompareLatency(s.consent_db_latency, rules.consent_max_db_latency)});
    }
  }
  if (s.consent_breaker_open) {
    out.push_back({DegradationLevel::kConsentDegraded, "consent: circuit breaker open"});
  }
  if (s.db_failover) {
    out.push_back({DegradationLevel::kDatabaseDegraded, "database: failover in progress"});
  }
  if (s.shards_total > 0 && s.shards_reachable < s.shards_total) {
    out.push_back({DegradationLevel::kDatabaseDegraded, "database: " + std::to_string(s.shards_reachable) + " of " +
                                                            std::to_string(s.shards_total) + " shards reachable"});
  }
  if (s.region_down) {
    out.push_back({DegradationLevel::kRegionalOutage, "region: unavailable"});
  }
  return out;
}

}  // namespace

std::string_view DegradationLevelName(DegradationLevel level) {
  switch (level) {
    case DegradationLevel::kNormal:
      return "normal";
    case DegradationLevel::kAiDegraded:
      return "ai_degraded";
    case DegradationLevel::kInteropDegraded:
      return "interop_degraded";
    case DegradationLevel::kConsentDegraded:
      return "consent_degraded";
    case DegradationLevel::kDatabaseDegraded:
      return "database_degraded";
    case DegradationLevel::kRegionalOutage:
      return "regional_outage";
  }
  return "unknown";
}

DegradationController::DegradationController(DegradationRules rules, const core::Clock& clock,
                                             std::function<void(const DegradationStatus&)> on_change)
    : rules_(rules), clock_(clock), on_change_(std::move(on_change)), since_(clock_.Now()) {}

void DegradationController::Update(const HealthSignals& signals) {
  std::vector<Triggered> triggered = Evaluate(rules_, signals);
  int raw = 0;
  for (const Triggered& t : triggered) raw = std::max(raw, static_cast<int>(t.level));

  std::optional<DegradationStatus> changed;
  {
    absl::MutexLock lock(&mu_);
    const core::TimePoint now = clock_.Now();
    int computed = 0;
    for (int k = 1; k < kLevels; ++k) {
      if (raw >= k) {
        held_[k] = true;
        below_since_[k].reset();
      } else if (held_[k]) {
        if (!below_since_[k]) below_since_[k] = now;
        if (now - *below_since_[k] >= rules_.recovery) {
          held_[k] = false;
          below_since_[k].reset();
        }
      }
      if (held_[k]) computed = k;
    }
    computed_ = static_cast<DegradationLevel>(computed);

    reasons_.clear();
    for (Triggered& t : triggered) reasons_.push_back(std::move(t.reason));
    if (computed > raw) {
      const auto below = std::chrono::duration_cast<std::chrono::seconds>(now - *below_since_[computed]);
      reasons_.push_back("hysteresis: holding " + std::string(DegradationLevelName(computed_)) + " (signals say " +
                         std::string(DegradationLevelName(static_cast<DegradationLevel>(raw))) + "), below for " +
                         std::to_string(below.count()) + " s of " + std::to_string(rules_.recovery.count()) + " s");
    }
    changed = ApplyEffective(now);
  }
  Notify(changed);
}

void DegradationController::SetOverride(DegradationLevel level, std::string reason) {
  std::optional<DegradationStatus> changed;
  {
    absl::MutexLock lock(&mu_);
    override_level_ = level;
    override_reason_ = std::move(reason);
    changed = ApplyEffective(clock_.Now());
  }
  Notify(changed);
}

void DegradationController::ClearOverride() {
  std::optional<DegradationStatus> changed;
  {
    absl::MutexLock lock(&mu_);
    override_level_.reset();
    override_reason_.clear();
    changed = ApplyEffective(clock_.Now());
  }
  Notify(changed);
}

DegradationStatus DegradationController::Status() const {
  absl::MutexLock lock(&mu_);
  return StatusLocked();
}

bool DegradationController::WritesAllowed(DegradationLevel l) { return l < DegradationLevel::kDatabaseDegraded; }
bool DegradationController::AiAllowed(DegradationLevel l) { return l < DegradationLevel::kAiDegraded; }
bool DegradationController::ExternalQueriesAllowed(DegradationLevel l) {
  return l < DegradationLevel::kInteropDegraded;
}
bool DegradationController::ConsentFailClosed(DegradationLevel l) { return l >= DegradationLevel::kConsentDegraded; }

std::optional<DegradationStatus> DegradationController::ApplyEffective(core::TimePoint now) {
  const DegradationLevel effective = override_level_.value_or(computed_);
  if (effective == effective_) return std::nullopt;
  effective_ = effective;
  since_ = now;
  level_.store(effective, std::memory_order_release);
  return StatusLocked();
}

DegradationStatus DegradationController::StatusLocked() const {
  DegradationStatus status;
  status.level = effective_;
  status.computed = computed_;
  status.reasons = reasons_;
  if (override_level_) status.reasons.push_back("override: " + override_reason_);
  status.override_level = override_level_;
  status.override_reason = override_reason_;
  status.since = since_;
  return status;
}

void DegradationController::Notify(const std::optional<DegradationStatus>& changed) const {
  if (on_change_ && changed) on_change_(*changed);
}

}  // namespace medgrid::resilience
