// Invariants (under mu_):
//   * epoch_ changes on every transition; a permit only affects the state if
//     it was issued in the current epoch, so a slow call that started before
//     the breaker opened cannot close or reopen a later period.
//   * half-open: 0 <= half_open_in_flight <= half_open_max_probes.
//   * window_ holds window_calls entries; it is empty outside the closed state.
#include "medgrid/resilience/circuit_breaker.h"

#include <algorithm>
#include <utility>

namespace medgrid::resilience {

namespace {
constexpr uint8_t kFailedBit = 1;
constexpr uint8_t kSlowBit = 2;
}  // namespace

std::string_view BreakerStateName(BreakerState state) {
  switch (state) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

BreakerSettings ForDependency(std::string_view dependency) {
  BreakerSettings s;
  s.name = std::string(dependency);
  if (dependency == "ai") {
    s.failure_threshold = 10;
    s.success_threshold = 5;
    s.open_timeout = std::chrono::seconds(60);
    s.half_open_max_probes = 5;
    s.fallback = std::string(kFallbackAiDisabled);
  } else if (dependency == "external_hie") {
    s.failure_threshold = 3;
    s.success_threshold = 2;
    s.open_timeout = std::chrono::seconds(120);
    s.half_open_max_probes = 1;
    s.fallback = std::string(kFallbackCachedDataOnly);
  } else {  // "consent" and anything unknown
    s.failure_threshold = 5;
    s.success_threshold = 3;
    s.open_timeout = std::chrono::seconds(30);
    s.half_open_max_probes = 3;
  }
  return s;
}

CircuitBreaker::CircuitBreaker(BreakerSettings settings, const core::Clock& clock,
                               StateChangeCallback on_change)
    : settings_(std::move(settings)), clock_(clock), on_change_(std::move(on_change)) {
  window_.reserve(static_cast<size_t>(std::max(settings_.window_size, 0)));
}

CircuitBreaker::Permit CircuitBreaker::Allow() {
  std::vector<Transition> transitions;
  Permit permit(false, 0);
  {
    absl::MutexLock lock(&mu_);
    MaybeHalfOpen(clock_.Now(), transitions);
    bool allowed = false;
    switch (state_) {
      case BreakerState::kClosed:
        allowed = true;
        break;
      case BreakerState::kOpen:
        break;
      case BreakerState::kHalfOpen:
        if (counters_.half_open_in_flight < settings_.half_open_max_probes) {
          ++counters_.half_open_in_flight;
          allowed = true;
        }
        break;
    }
    ++(allowed ? counters_.allowed : counters_.rejected);
    permit = Permit(allowed, epoch_);
  }
  Notify(transitions);
  return permit;
}

void CircuitBreaker::Record(const Permit& permit, Outcome outcome,
                            std::chrono::microseconds duration) {
  if (!permit.allowed_) return;
  std::vector<Transition> transitions;
  {
    absl::MutexLock lock(&mu_);
    const bool failed = outcome == Outcome::kFailure;
    const bool slow = settings_.slow_call_duration.count() > 0 &&
                      duration > settings_.slow_call_duration;
    ++(failed ? counters_.failures : counters_.successes);
    if (slow) ++counters_.slow_calls;
    if (permit.epoch_ != epoch_) {
      ++counters_.stale_records;
    } else if (state_ == BreakerState::kHalfOpen) {
      --counters_.half_open_in_flight;
      if (failed || slow) {
        TransitionTo(BreakerState::kOpen, clock_.Now(), transitions);
      } else if (++counters_.half_open_successes >= settings_.success_threshold) {
        TransitionTo(BreakerState::kClosed, clock_.Now(), transitions);
      }
    } else if (state_ == BreakerState::kClosed) {
      counters_.consecutive_failures = failed ? counters_.consecutive_failures + 1 : 0;
      if (settings_.window_size > 0) {
        const uint8_t entry = (failed ? kFailedBit : 0) | (slow ? kSlowBit : 0);
        if (window_.size() < static_cast<size_t>(settings_.window_size)) {
          window_.push_back(entry);
        } else {
          const uint8_t evicted = window_[window_next_];
          counters_.window_failures -= (evicted & kFailedBit) ? 1 : 0;
          counters_.window_slow_calls -= (evicted & kSlowBit) ? 1 : 0;
          window_[window_next_] = entry;
        }
        window_next_ = (window_next_ + 1) % static_cast<size_t>(settings_.window_size);
        counters_.window_failures += failed ? 1 : 0;
        counters_.window_slow_calls += slow ? 1 : 0;
        counters_.window_calls = static_cast<int>(window_.size());
      }
      const bool consecutive_trips = settings_.failure_threshold > 0 &&
                                     counters_.consecutive_failures >= settings_.failure_threshold;
      if (consecutive_trips || WindowTrips()) {
        TransitionTo(BreakerState::kOpen, clock_.Now(), transitions);
      }
    }
    // An open breaker issues no permits, so a current-epoch record is never
    // seen in the open state.
  }
  Notify(transitions);
}

void CircuitBreaker::Cancel(const Permit& permit) {
  if (!permit.allowed_) return;
  absl::MutexLock lock(&mu_);
  if (permit.epoch_ == epoch_ && state_ == BreakerState::kHalfOpen) --counters_.half_open_in_flight;
}

void CircuitBreaker::ProbeNow() {
  std::vector<Transition> transitions;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == BreakerState::kOpen) TransitionTo(BreakerState::kHalfOpen, clock_.Now(), transitions);
  }
  Notify(transitions);
}

std::chrono::microseconds CircuitBreaker::RemainingOpen() {
  std::vector<Transition> transitions;
  std::chrono::microseconds remaining{0};
  {
    absl::MutexLock lock(&mu_);
    const core::TimePoint now = clock_.Now();
    MaybeHalfOpen(now, transitions);
    if (state_ == BreakerState::kOpen) {
      remaining = std::chrono::duration_cast<std::chrono::microseconds>(opened_at_ + settings_.open_timeout - now);
    }
  }
  Notify(transitions);
  return remaining;
}

BreakerState CircuitBreaker::state() {
  std::vector<Transition> transitions;
  BreakerState state;
  {
    absl::MutexLock lock(&mu_);
    MaybeHalfOpen(clock_.Now(), transitions);
    state = state_;
  }
  Notify(transitions);
  return state;
}

CircuitBreaker::Counters CircuitBreaker::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void CircuitBreaker::MaybeHalfOpen(core::TimePoint now, std::vector<Transition>& out) {
  if (state_ == BreakerState::kOpen && now - opened_at_ >= settings_.open_timeout) {
    TransitionTo(BreakerState::kHalfOpen, now, out);
  }
}

void CircuitBreaker::TransitionTo(BreakerState to, core::TimePoint now,
                                  std::vector<Transition>& out) {
  out.push_back({state_, to});
  state_ = to;
  ++epoch_;
  ++counters_.transitions;
  counters_.consecutive_failures = 0;
  counters_.half_open_in_flight = 0;
  counters_.half_open_successes = 0;
  ClearWindow();
  if (to == BreakerState::kOpen) opened_at_ = now;
}

void CircuitBreaker::ClearWindow() {
  window_.clear();
  window_next_ = 0;
  counters_.window_calls = 0;
  counters_.window_failures = 0;
  counters_.window_slow_calls = 0;
}

bool CircuitBreaker::WindowTrips() const {
  if (settings_.window_size <= 0) return false;
  const int minimum = std::clamp(settings_.minimum_calls, 1, settings_.window_size);
  const int calls = counters_.window_calls;
  if (calls < minimum) return false;
  // Rates at or above the threshold trip (resilience4j); 5 of 10 is exactly 50.0.
  const double failure_pct = 100.0 * counters_.window_failures / calls;
  const double slow_pct = 100.0 * counters_.window_slow_calls / calls;
  if (failure_pct >= settings_.failure_rate_threshold_pct) return true;
  return settings_.slow_call_duration.count() > 0 &&
         slow_pct >= settings_.slow_call_rate_threshold_pct;
}

void CircuitBreaker::Notify(const std::vector<Transition>& transitions) const {
  if (!on_change_) return;
  for (const Transition& t : transitions) on_change_(settings_.name, t.from, t.to);
}

}  // namespace medgrid::resilience
