#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "medgrid/core/clock.h"
#include "medgrid/resilience/circuit_breaker.h"
#include "medgrid/resilience/retry.h"
#include "medgrid/resilience/token_bucket.h"

namespace medgrid::resilience {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Permit = CircuitBreaker::Permit;

constexpr microseconds kFast = milliseconds(1);

void Fail(CircuitBreaker& b, int n) {
  for (int i = 0; i < n; ++i) {
    Permit p = b.Allow();
    ASSERT_TRUE(p.allowed());
    b.Record(p, Outcome::kFailure, kFast);
  }
}

void Succeed(CircuitBreaker& b, int n, microseconds duration = kFast) {
  for (int i = 0; i < n; ++i) {
    Permit p = b.Allow();
    ASSERT_TRUE(p.allowed());
    b.Record(p, Outcome::kSuccess, duration);
  }
}

// --- CircuitBreaker, consecutive-failure mode ---

TEST(CircuitBreaker, SeedDefaultsPerDependency) {
  BreakerSettings consent = ForDependency("consent");
  EXPECT_EQ(consent.failure_threshold, 5);
  EXPECT_EQ(consent.success_threshold, 3);
  EXPECT_EQ(consent.open_timeout, seconds(30));
  EXPECT_EQ(consent.half_open_max_probes, 3);
  EXPECT_EQ(consent.fallback, "");
  BreakerSettings ai = ForDependency("ai");
  EXPECT_EQ(ai.failure_threshold, 10);
  EXPECT_EQ(ai.success_threshold, 5);
  EXPECT_EQ(ai.open_timeout, seconds(60));
  EXPECT_EQ(ai.half_open_max_probes, 5);
  EXPECT_EQ(ai.fallback, "ai_disabled");
  BreakerSettings hie = ForDependency("external_hie");
  EXPECT_EQ(hie.failure_threshold, 3);
  EXPECT_EQ(hie.success_threshold, 2);
  EXPECT_EQ(hie.open_timeout, seconds(120));
  EXPECT_EQ(hie.half_open_max_probes, 1);
  EXPECT_EQ(hie.fallback, "cached_data_only");
  EXPECT_EQ(ForDependency("other").name, "other");
  EXPECT_EQ(ForDependency("other").failure_threshold, 5);
  EXPECT_EQ(ai.window_size, 0);
}

TEST(CircuitBreaker, OpensAtExactlyNConsecutiveFailures) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  CircuitBreaker b(ForDependency("consent"), clock);
  Fail(b, 4);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.counters().consecutive_failures, 4);
  Fail(b, 1);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_FALSE(b.Allow().allowed());
  EXPECT_EQ(b.counters().rejected, 1u);
}

TEST(CircuitBreaker, RemainingOpenCountsDownAndCancelFreesAProbeWithoutAnOutcome) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  BreakerSettings s = ForDependency("db");
  EXPECT_EQ(s.failure_threshold, 5);
  EXPECT_EQ(s.open_timeout, seconds(30));
  s.half_open_max_probes = 1;
  CircuitBreaker b(s, clock);
  EXPECT_EQ(b.RemainingOpen(), std::chrono::microseconds(0));
  Fail(b, 5);
  EXPECT_EQ(b.RemainingOpen(), seconds(30));
  clock.Advance(seconds(12));
  EXPECT_EQ(b.RemainingOpen(), seconds(18));
  clock.Advance(seconds(18));
  EXPECT_EQ(b.RemainingOpen(), std::chrono::microseconds(0));
  CircuitBreaker::Permit probe = b.Allow();
  ASSERT_TRUE(probe);
  EXPECT_FALSE(b.Allow());  // the one probe slot is taken
  b.Cancel(probe);
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_EQ(b.counters().failures, 5u);
  EXPECT_EQ(b.counters().successes, 0u);
  EXPECT_TRUE(b.Allow());  // the slot is free again
}

TEST(CircuitBreaker, ProbeNowEndsTheOpenTimeEarlyAndOnlyWhenOpen) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  BreakerSettings s = ForDependency("db");
  s.success_threshold = 1;
  CircuitBreaker b(s, clock);
  b.ProbeNow();  // closed: nothing to end
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.counters().transitions, 0u);
  Fail(b, 5);
  clock.Advance(seconds(2));
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  b.ProbeNow();  // a health check saw the dependency answer
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_EQ(b.RemainingOpen(), std::chrono::microseconds(0));
  // The probe decides, as after the open time: a failure opens it again for
  // a whole open time ...
  Fail(b, 1);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_EQ(b.RemainingOpen(), seconds(30));
  // ... a success closes it.
  b.ProbeNow();
  const CircuitBreaker::Permit probe = b.Allow();
  ASSERT_TRUE(probe.allowed());
  b.Record(probe, Outcome::kSuccess, std::chrono::microseconds(0));
  EXPECT_EQ(b.state(), BreakerState::kClosed);
}

TEST(CircuitBreaker, SuccessResetsConsecutiveFailures) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  CircuitBreaker b(ForDependency("consent"), clock);
  Fail(b, 4);
  Succeed(b, 1);
  Fail(b, 4);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  Fail(b, 1);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, HalfOpenExactlyAtTheOpenTimeout) {
  core::SimulatedClock clock(core::FromUnixMicros(1'000'000));
  CircuitBreaker b(ForDependency("consent"), clock);
  Fail(b, 5);
  clock.Advance(seconds(30) - microseconds(1));
  EXPECT_FALSE(b.Allow().allowed());
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  clock.Advance(microseconds(1));
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_TRUE(b.Allow().allowed());
}

TEST(CircuitBreaker, HalfOpenLimitsConcurrentProbes) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  CircuitBreaker b(ForDependency("consent"), clock);  // 3 probes, 3 successes
  Fail(b, 5);
  clock.Advance(seconds(30));
  Permit p1 = b.Allow();
  Permit p2 = b.Allow();
  Permit p3 = b.Allow();
  ASSERT_TRUE(p1 && p2 && p3);
  EXPECT_FALSE(b.Allow().allowed());
  EXPECT_EQ(b.counters().half_open_in_flight, 3);
  b.Record(p1, Outcome::kSuccess, kFast);
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);  // 1 of 3 successes
  Permit p4 = b.Allow();  // the finished probe's slot is free again
  EXPECT_TRUE(p4.allowed());
  EXPECT_FALSE(b.Allow().allowed());
  b.Record(p2, Outcome::kSuccess, kFast);
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);  // 2 of 3
  b.Record(p3, Outcome::kSuccess, kFast);
  EXPECT_EQ(b.state(), BreakerState::kClosed);  // 3 of 3
  // p4 was issued while half-open; it must not count against the new period.
  b.Record(p4, Outcome::kFailure, kFast);
  EXPECT_EQ(b.counters().consecutive_failures, 0);
  EXPECT_EQ(b.counters().stale_records, 1u);
}

TEST(CircuitBreaker, HalfOpenFailureReopensAndRestartsTheTimeout) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  CircuitBreaker b(ForDependency("external_hie"), clock);  // 3 failures, 120 s, 1 probe, 2 successes
  Fail(b, 3);
  clock.Advance(seconds(120));
  Succeed(b, 1);
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  Fail(b, 1);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  clock.Advance(seconds(120) - microseconds(1));
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  clock.Advance(microseconds(1));
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  Succeed(b, 2);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
}

TEST(CircuitBreaker, CallbackSeesEveryTransition) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  std::vector<std::string> seen;
  CircuitBreaker b(ForDependency("external_hie"), clock,
                   [&](std::string_view name, BreakerState from, BreakerState to) {
                     seen.push_back(std::string(name) + ":" + std::string(BreakerStateName(from)) +
                                    "->" + std::string(BreakerStateName(to)));
                   });
  Fail(b, 3);
  clock.Advance(seconds(120));
  Fail(b, 1);
  clock.Advance(seconds(120));
  Succeed(b, 2);
  EXPECT_EQ(seen, (std::vector<std::string>{
                      "external_hie:closed->open", "external_hie:open->half_open",
                      "external_hie:half_open->open", "external_hie:open->half_open",
                      "external_hie:half_open->closed"}));
  EXPECT_EQ(b.counters().transitions, 5u);
}

TEST(CircuitBreaker, LateRecordFromBeforeOpeningIsIgnored) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  CircuitBreaker b(ForDependency("external_hie"), clock);
  Permit slow = b.Allow();
  Fail(b, 3);
  clock.Advance(seconds(120));
  b.Record(slow, Outcome::kFailure, seconds(5));  // started while closed
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_EQ(b.counters().stale_records, 1u);
}

// --- CircuitBreaker, sliding-window mode ---

BreakerSettings WindowSettings() {
  BreakerSettings s;
  s.name = "window";
  s.failure_threshold = 0;  // window only
  s.window_size = 10;
  s.minimum_calls = 10;
  s.failure_rate_threshold_pct = 50.0;
  return s;
}

TEST(CircuitBreaker, WindowWaitsForMinimumCalls) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  BreakerSettings s = WindowSettings();
  s.minimum_calls = 5;
  CircuitBreaker b(s, clock);
  Fail(b, 4);  // 100% but only 4 calls
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.counters().window_calls, 4);
  Succeed(b, 1);  // 4 of 5 = 80%
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_EQ(b.counters().window_calls, 0);  // cleared on transition
}

TEST(CircuitBreaker, WindowTripsAtTheFailureRateAndSlides) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  CircuitBreaker b(WindowSettings(), clock);
  Succeed(b, 1);  // the oldest call, evicted below
  Fail(b, 4);
  Succeed(b, 5);  // 4 of 10 = 40%
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.counters().window_failures, 4);
  Fail(b, 1);  // evicts the first success: 5 of 10 = 50%
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, WindowBelowTheRateSlidesForever) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  CircuitBreaker b(WindowSettings(), clock);
  for (int i = 0; i < 100; ++i) {
    Fail(b, 4);
    Succeed(b, 6);
  }
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.counters().window_calls, 10);
  EXPECT_LE(b.counters().window_failures, 5);
}

TEST(CircuitBreaker, WindowTripsOnSlowCallRate) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  BreakerSettings s = WindowSettings();
  s.window_size = 4;
  s.minimum_calls = 4;
  s.failure_rate_threshold_pct = 100.0;
  s.slow_call_duration = milliseconds(100);
  s.slow_call_rate_threshold_pct = 50.0;
  CircuitBreaker b(s, clock);
  Succeed(b, 1, milliseconds(100));  // exactly the threshold: not slow
  Succeed(b, 1, milliseconds(100) + microseconds(1));
  Succeed(b, 1, milliseconds(50));
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.counters().window_slow_calls, 1);
  Succeed(b, 1, milliseconds(50));  // 1 of 4 = 25%
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  Succeed(b, 1, seconds(1));  // evicts the 100 ms call: 2 of 4 = 50%
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_EQ(b.counters().slow_calls, 2u);
}

TEST(CircuitBreaker, SlowProbeReopens) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  BreakerSettings s = ForDependency("external_hie");
  s.slow_call_duration = milliseconds(100);
  CircuitBreaker b(s, clock);
  Fail(b, 3);
  clock.Advance(seconds(120));
  Succeed(b, 1, milliseconds(101));
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, ConcurrentAllowRecordKeepsInvariants) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  BreakerSettings s = ForDependency("consent");
  s.open_timeout = milliseconds(1);
  std::atomic<bool> bad_transition{false};
  CircuitBreaker b(s, clock, [&](std::string_view, BreakerState from, BreakerState to) {
    const bool ok = (from == BreakerState::kClosed && to == BreakerState::kOpen) ||
                    (from == BreakerState::kOpen && to == BreakerState::kHalfOpen) ||
                    (from == BreakerState::kHalfOpen && to != BreakerState::kHalfOpen);
    if (!ok) bad_transition = true;
  });
  constexpr int kThreads = 6;
  constexpr int kCalls = 20000;
  std::atomic<int> max_in_flight{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      for (int i = 0; i < kCalls; ++i) {
        Permit p = b.Allow();
        const int in_flight = b.counters().half_open_in_flight;
        int seen = max_in_flight.load();
        while (in_flight > seen && !max_in_flight.compare_exchange_weak(seen, in_flight)) {
        }
        if (p) b.Record(p, rng() % 3 == 0 ? Outcome::kFailure : Outcome::kSuccess, kFast);
        if (t == 0 && i % 16 == 0) clock.Advance(microseconds(200));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  CircuitBreaker::Counters c = b.counters();
  EXPECT_FALSE(bad_transition);
  EXPECT_EQ(c.allowed + c.rejected, uint64_t{kThreads} * kCalls);
  EXPECT_EQ(c.successes + c.failures, c.allowed);  // every permit recorded once
  EXPECT_LE(max_in_flight.load(), s.half_open_max_probes);
  EXPECT_GE(c.half_open_in_flight, 0);
  EXPECT_GT(c.transitions, 0u);
  EXPECT_GT(c.rejected, 0u);
}

// --- Retry ---

RetryPolicy Policy(JitterMode jitter) {
  RetryPolicy p;
  p.max_attempts = 100;
  p.base_delay = milliseconds(100);
  p.jitter = jitter;
  return p;
}

TEST(Retry, NoJitterIsExponentialAndCapped) {
  RetryPolicy p = Policy(JitterMode::kNone);
  EXPECT_EQ(ComputeBackoff(p, 1, p.base_delay, 0.5), milliseconds(100));
  EXPECT_EQ(ComputeBackoff(p, 2, p.base_delay, 0.5), milliseconds(200));
  EXPECT_EQ(ComputeBackoff(p, 9, p.base_delay, 0.5), milliseconds(25600));
  EXPECT_EQ(ComputeBackoff(p, 10, p.base_delay, 0.5), seconds(30));
  EXPECT_EQ(ComputeBackoff(p, 5000, p.base_delay, 0.5), seconds(30));  // no overflow
}

TEST(Retry, ProportionalJitterBoundsAreExact) {
  RetryPolicy p = Policy(JitterMode::kProportional);
  EXPECT_EQ(ComputeBackoff(p, 1, p.base_delay, 0.0), milliseconds(75));
  EXPECT_EQ(ComputeBackoff(p, 1, p.base_delay, 0.5), milliseconds(100));
  EXPECT_EQ(ComputeBackoff(p, 3, p.base_delay, 0.0), milliseconds(300));
  // 25.6 s * 1.25 = 32 s: capped after jitter, as the seed does.
  EXPECT_EQ(ComputeBackoff(p, 9, p.base_delay, 0.0), milliseconds(19200));
  EXPECT_EQ(ComputeBackoff(p, 9, p.base_delay, 0.999999), seconds(30));
  RandomSource random = SeededRandom(42);
  for (int retry = 1; retry <= 12; ++retry) {
    const double exp = std::min(100'000.0 * (1 << (retry - 1)), 30'000'000.0);
    microseconds lo = microseconds::max();
    microseconds hi = microseconds::min();
    for (int i = 0; i < 5000; ++i) {
      microseconds d = ComputeBackoff(p, retry, p.base_delay, random());
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    EXPECT_GE(lo.count(), static_cast<int64_t>(0.75 * exp)) << retry;
    EXPECT_LE(hi.count(), std::min<int64_t>(static_cast<int64_t>(1.25 * exp), 30'000'000)) << retry;
    EXPECT_LT(lo.count(), static_cast<int64_t>(0.76 * exp)) << retry;  // the range is used
    if (retry < 9) {
      EXPECT_GT(hi.count(), static_cast<int64_t>(1.24 * exp)) << retry;
    }
  }
}

TEST(Retry, FullJitterStaysUnderTheCappedExponential) {
  RetryPolicy p = Policy(JitterMode::kFull);
  RandomSource random = SeededRandom(7);
  for (int retry = 1; retry <= 15; ++retry) {
    const int64_t exp = std::min<int64_t>(int64_t{100'000} << (retry - 1), 30'000'000);
    microseconds hi{0};
    microseconds lo = microseconds::max();
    for (int i = 0; i < 5000; ++i) {
      microseconds d = ComputeBackoff(p, retry, p.base_delay, random());
      ASSERT_GE(d.count(), 0);
      ASSERT_LE(d.count(), exp);
      hi = std::max(hi, d);
      lo = std::min(lo, d);
    }
    EXPECT_GT(hi.count(), exp * 9 / 10);
    EXPECT_LT(lo.count(), exp / 10);
  }
}

TEST(Retry, DecorrelatedJitterStaysBetweenBaseAndCap) {
  RetryPolicy p = Policy(JitterMode::kDecorrelated);
  RandomSource random = SeededRandom(11);
  microseconds previous = p.base_delay;
  bool reached_cap_region = false;
  for (int i = 0; i < 20000; ++i) {
    microseconds d = ComputeBackoff(p, i + 1, previous, random());
    ASSERT_GE(d, p.base_delay);
    ASSERT_LE(d, std::min<microseconds>(seconds(30), 3 * previous));
    if (d > seconds(20)) reached_cap_region = true;
    previous = d;
  }
  EXPECT_TRUE(reached_cap_region);
}

TEST(Retry, SeedPresets) {
  RetryPolicy read = DatabaseReadPolicy();
  EXPECT_EQ(read.max_attempts, 3);
  EXPECT_EQ(read.base_delay, milliseconds(50));
  EXPECT_TRUE(read.IsRetryable(absl::UnavailableError("conn")));
  EXPECT_TRUE(read.IsRetryable(absl::DeadlineExceededError("timeout")));
  EXPECT_FALSE(read.IsRetryable(absl::InvalidArgumentError("bad")));
  RetryPolicy write = DatabaseWritePolicy(/*idempotent=*/true);
  EXPECT_EQ(write.max_attempts, 2);
  EXPECT_EQ(write.base_delay, milliseconds(100));
  EXPECT_FALSE(write.IsRetryable(absl::DeadlineExceededError("may have committed")));
  EXPECT_EQ(DatabaseWritePolicy(/*idempotent=*/false).max_attempts, 1);
  EXPECT_EQ(ExternalApiPolicy().max_attempts, 3);
  EXPECT_EQ(ExternalApiPolicy().base_delay, milliseconds(500));
  EXPECT_EQ(AiInferencePolicy().max_attempts, 2);
  EXPECT_EQ(AiInferencePolicy().base_delay, milliseconds(200));
  EXPECT_TRUE(AiInferencePolicy().IsRetryable(absl::ResourceExhaustedError("gpu memory")));
  EXPECT_EQ(read.max_delay, seconds(30));
  EXPECT_EQ(read.jitter, JitterMode::kProportional);
}

TEST(Retry, StopsAfterMaxAttempts) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  RetryState retry(DatabaseReadPolicy(), clock, std::nullopt, SeededRandom(1));
  ASSERT_TRUE(retry.NextDelay().has_value());
  ASSERT_TRUE(retry.NextDelay().has_value());
  EXPECT_EQ(retry.attempts(), 3);
  EXPECT_FALSE(retry.NextDelay().has_value());
  EXPECT_EQ(retry.stop(), RetryStop::kAttemptsExhausted);

  RetryState write(DatabaseWritePolicy(false), clock, std::nullopt, SeededRandom(1));
  EXPECT_FALSE(write.NextDelay().has_value());
  EXPECT_EQ(write.stop(), RetryStop::kAttemptsExhausted);
}

TEST(Retry, DeadlineCutsOffTheNextAttempt) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  RetryPolicy p = Policy(JitterMode::kNone);  // 100 ms, 200 ms, ...
  RetryState at(p, clock, clock.Now() + milliseconds(100), SeededRandom(1));
  EXPECT_FALSE(at.NextDelay().has_value());  // would start at the deadline
  EXPECT_EQ(at.stop(), RetryStop::kDeadline);
  EXPECT_EQ(at.attempts(), 1);

  RetryState after(p, clock, clock.Now() + milliseconds(300) + microseconds(1), SeededRandom(1));
  EXPECT_EQ(after.NextDelay(), milliseconds(100));
  clock.Advance(milliseconds(100));
  EXPECT_EQ(after.NextDelay(), milliseconds(200));  // starts 1 us before the deadline
  clock.Advance(milliseconds(200));
  EXPECT_FALSE(after.NextDelay().has_value());
  EXPECT_EQ(after.stop(), RetryStop::kDeadline);
}

TEST(RetryBudget, RetriesCappedAtTwentyPercentOfRequests) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  RetryBudget budget(RetryBudgetSettings{}, clock);
  for (int i = 0; i < 100; ++i) budget.RecordRequest();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(budget.TryAcquireRetry()) << i;
  EXPECT_FALSE(budget.TryAcquireRetry());
  EXPECT_EQ(budget.RetriesInWindow(), 20);
  budget.RecordRequest();
  budget.RecordRequest();
  budget.RecordRequest();
  budget.RecordRequest();
  budget.RecordRequest();  // 105 requests: 21 retries
  EXPECT_TRUE(budget.TryAcquireRetry());
  EXPECT_FALSE(budget.TryAcquireRetry());
}

TEST(RetryBudget, MinimumAndRefillAsTheWindowSlides) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  RetryBudget budget(RetryBudgetSettings{}, clock);  // 10 s in 1 s buckets, minimum 10
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(budget.TryAcquireRetry());  // no requests: the minimum
  EXPECT_FALSE(budget.TryAcquireRetry());
  clock.Advance(seconds(10) - microseconds(1));
  EXPECT_FALSE(budget.TryAcquireRetry());  // the first bucket is still in the window
  clock.Advance(microseconds(1));
  EXPECT_EQ(budget.RetriesInWindow(), 0);
  EXPECT_TRUE(budget.TryAcquireRetry());
}

TEST(RetryBudget, RetryStateStopsWhenTheBudgetIsSpent) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  RetryBudgetSettings settings;
  settings.min_retries_per_window = 1;
  RetryBudget budget(settings, clock);
  RetryState first(ExternalApiPolicy(), clock, std::nullopt, SeededRandom(3), &budget);
  EXPECT_TRUE(first.NextDelay().has_value());  // the minimum
  EXPECT_FALSE(first.NextDelay().has_value());
  EXPECT_EQ(first.stop(), RetryStop::kBudget);
  EXPECT_EQ(budget.RequestsInWindow(), 1);
}

// --- TokenBucket ---

TEST(TokenBucket, BurstThenRefillWithRetryAfter) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  TokenBucket bucket({.rate_per_second = 10, .burst = 5}, clock);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(bucket.TryAcquire().allowed) << i;
  TokenBucket::Decision d = bucket.TryAcquire();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(100));
  clock.Advance(milliseconds(50));
  d = bucket.TryAcquire();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(50));
  clock.Advance(milliseconds(50));
  EXPECT_TRUE(bucket.TryAcquire().allowed);
  clock.Advance(milliseconds(100));  // 1 token
  d = bucket.TryAcquire(3);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(200));
  EXPECT_DOUBLE_EQ(bucket.Available(), 1.0);  // a refusal takes nothing
}

TEST(TokenBucket, CapsAtBurstAndRefusesMoreThanBurst) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  TokenBucket bucket({.rate_per_second = 10, .burst = 5}, clock);
  clock.Advance(std::chrono::hours(1));
  EXPECT_DOUBLE_EQ(bucket.Available(), 5.0);
  TokenBucket::Decision d = bucket.TryAcquire(6);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, microseconds::max());
  EXPECT_TRUE(bucket.TryAcquire(5).allowed);
  clock.Set(core::FromUnixMicros(0));  // a clock stepping back adds nothing
  EXPECT_DOUBLE_EQ(bucket.Available(), 0.0);
}

}  // namespace
}  // namespace medgrid::resilience
