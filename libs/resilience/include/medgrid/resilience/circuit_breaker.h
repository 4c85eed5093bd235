// Circuit breaker for calls to one dependency (consent, AI inference, an
// external HIE). It stops sending calls to a dependency that keeps failing so
// the caller can answer at once from its fallback, and lets a few probes
// through after a pause to find out whether the dependency is back.
//
// Two trip conditions, either or both:
//   * consecutive failures: `failure_threshold` failures in a row open it;
//   * sliding window (as in resilience4j): of the last `window_size` calls,
//     once at least `minimum_calls` were made, a failure rate or a slow-call
//     rate at or above its threshold opens it.
// Open -> half-open once `open_timeout` has passed (checked lazily on the
// injected clock); half-open lets at most `half_open_max_probes` calls run at
// once, closes after `success_threshold` successful probes and reopens on any
// failed (or, with slow-call detection on, slow) probe.
//
//   CircuitBreaker breaker(ForDependency("consent"), clock);
//   CircuitBreaker::Permit permit = breaker.Allow();
//   if (!permit) return Fallback();
//   core::TimePoint start = clock.Now();
//   absl::Status s = CallConsent();
//   breaker.Record(permit, s.ok() ? Outcome::kSuccess : Outcome::kFailure,
//                  std::chrono::duration_cast<std::chrono::microseconds>(clock.Now() - start));
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/core/clock.h"

namespace medgrid::resilience {

enum class BreakerState { kClosed, kOpen, kHalfOpen };
std::string_view BreakerStateName(BreakerState state);

enum class Outcome { kSuccess, kFailure };

// Names of the degraded modes callers switch to while a breaker is open.
inline constexpr std::string_view kFallbackAiDisabled = "ai_disabled";
inline constexpr std::string_view kFallbackCachedDataOnly = "cached_data_only";

struct BreakerSettings {
  // Dependency name, passed to the state-change callback (logs, metrics).
  std::string name;
  // Consecutive failures in the closed state that open the breaker; 0 turns
  // this trip condition off.
  int failure_threshold = 5;
  // Successful half-open probes that close the breaker. >= 1.
  int success_threshold = 3;
  // Time spent open before probes are let through. The breaker is half-open
  // from opened_at + open_timeout inclusive.
  std::chrono::microseconds open_timeout = std::chrono::seconds(30);
  // Probes allowed in flight at once while half-open; others are rejected. >= 1.
  int half_open_max_probes = 3;
  // Sliding-window mode: the last `window_size` calls made while closed; 0
  // turns the window off.
  int window_size = 0;
  // Calls the window must hold before its rates count (capped at window_size).
  int minimum_calls = 10;
  // Failure rate, in percent of the calls in the window, that opens the breaker.
  double failure_rate_threshold_pct = 50.0;
  // A call that took longer than this is slow; zero turns slow-call
  // detection off. Slow calls count in the window whatever their outcome.
  std::chrono::microseconds slow_call_duration{0};
  // Slow-call rate, in percent of the calls in the window, that opens it.
  double slow_call_rate_threshold_pct = 100.0;
  // Name of the caller's degraded mode while open; empty means none.
  std::string fallback;
};

// The seed's defaults for "consent", "ai", "external_hie" and "db"
// (consecutive failure mode; "db" has the consent numbers). Any other name
// gets the consent numbers, no fallback, and the given name.
BreakerSettings ForDependency(std::string_view dependency);

class CircuitBreaker {
 public:
  // Called after each transition, outside the breaker's lock, on the thread
  // that caused it. It may call back into the breaker.
  using StateChangeCallback =
      std::function<void(std::string_view name, BreakerState from, BreakerState to)>;

  // The right to make one call. Record() each allowed permit exactly once.
  class Permit {
   public:
    bool allowed() const { return allowed_; }
    explicit operator bool() const { return allowed_; }

   private:
    friend class CircuitBreaker;
    Permit(bool allowed, uint64_t epoch) : allowed_(allowed), epoch_(epoch) {}
    bool allowed_;
    uint64_t epoch_;  // the breaker's epoch (state period) it was issued in
  };

  struct Counters {
    uint64_t allowed = 0;
    uint64_t rejected = 0;
    uint64_t successes = 0;  // recorded, any state
    uint64_t failures = 0;
    uint64_t slow_calls = 0;
    // Records of permits issued before the last transition; they do not
    // change the current state.
    uint64_t stale_records = 0;
    uint64_t transitions = 0;
    int consecutive_failures = 0;
    int half_open_in_flight = 0;
    int half_open_successes = 0;
    int window_calls = 0;
    int window_failures = 0;
    int window_slow_calls = 0;
  };

  // `clock` must outlive the breaker. Precondition: settings are valid
  // (success_threshold, half_open_max_probes >= 1; window sizes >= 0).
  CircuitBreaker(BreakerSettings settings, const core::Clock& clock,
                 StateChangeCallback on_change = nullptr);
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  // Whether a call may go out now. Thread-safe.
  [[nodiscard]] Permit Allow();
  // The result of the call `permit` allowed. Ignores denied permits. Thread-safe.
  void Record(const Permit& permit, Outcome outcome, std::chrono::microseconds duration);
  // Hands back an allowed permit whose call never reached the dependency
  // (say it gave up waiting for a local resource): it counts neither as a
  // success nor as a failure, and frees its half-open probe slot. Use it
  // instead of Record(), never with it. Thread-safe.
  void Cancel(const Permit& permit);

  // While open, how long until probes are let through; zero otherwise.
  // Thread-safe.
  std::chrono::microseconds RemainingOpen();
  // Ends an open period early, when a health check of its own has just seen
  // the dependency answer: the breaker goes half-open at once, so the next
  // calls probe it (and close it, or open it again) instead of waiting out
  // open_timeout. No effect unless open. Thread-safe.
  void ProbeNow();

  // The state now (an expired open timeout reads as half-open). Thread-safe.
  BreakerState state();
  Counters counters() const;
  const BreakerSettings& settings() const { return settings_; }

 private:
  struct Transition {
    BreakerState from;
    BreakerState to;
  };
  void MaybeHalfOpen(core::TimePoint now, std::vector<Transition>& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TransitionTo(BreakerState to, core::TimePoint now, std::vector<Transition>& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearWindow() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WindowTrips() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Notify(const std::vector<Transition>& transitions) const;

  const BreakerSettings settings_;
  const core::Clock& clock_;
  const StateChangeCallback on_change_;

  mutable absl::Mutex mu_;
  BreakerState state_ ABSL_GUARDED_BY(mu_) = BreakerState::kClosed;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  core::TimePoint opened_at_ ABSL_GUARDED_BY(mu_);
  Counters counters_ ABSL_GUARDED_BY(mu_);
  // Ring of the last window_size calls: bit 0 failure, bit 1 slow.
  std::vector<uint8_t> window_ ABSL_GUARDED_BY(mu_);
  size_t window_next_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace medgrid::resilience
