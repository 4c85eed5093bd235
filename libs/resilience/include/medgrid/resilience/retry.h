// Retries with exponential backoff and jitter, bounded three ways: a maximum
// number of attempts, the caller's deadline, and a shared RetryBudget that
// keeps retries from multiplying the load on a dependency that is already
// down.
//
//   RetryBudget budget(RetryBudgetSettings{}, clock);  // one per dependency
//   RetryState retry(DatabaseReadPolicy(), clock, deadline, SeededRandom(seed), &budget);
//   while (true) {
//     absl::Status s = ReadRow();
//     if (s.ok() || !retry.policy().IsRetryable(s)) return s;
//     std::optional<std::chrono::microseconds> delay = retry.NextDelay();
//     if (!delay) return s;
//     ScheduleAfter(*delay);  // on the caller's timer; this module never sleeps
//   }
//
// Used by libs/store for blocking reads (DatabaseReadPolicy, a budget per
// shard; pg_resource_store.h) and by libs/http's FetchExternal for calls to
// external dependencies (ExternalApiPolicy, a budget per dependency).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/core/clock.h"

namespace medgrid::resilience {

enum class JitterMode {
  kNone,          // exactly base * multiplier^(n-1), capped
  kFull,          // uniform in [0, capped exponential] (AWS "full jitter")
  kDecorrelated,  // uniform in [base, 3 * previous delay], capped (AWS "decorrelated")
  // The seed's +-25%: exponential * (1 +- jitter_fraction), capped again. The
  // exponential is capped before the jitter too, so delays at the cap still
  // spread over [0.75 * cap, cap] instead of all landing on the cap.
  kProportional,
};

struct RetryPolicy {
  std::string name;
  // Attempts in all, the first included (the seed's `max_retries`, whose loop
  // runs that many attempts). 1 means never retry.
  int max_attempts = 3;
  // Delay before the first retry, before jitter.
  std::chrono::microseconds base_delay = std::chrono::milliseconds(100);
  // Growth per retry.
  double multiplier = 2.0;
  // No delay exceeds this, jitter included.
  std::chrono::microseconds max_delay = std::chrono::seconds(30);
  JitterMode jitter = JitterMode::kProportional;
  // Half-width of kProportional jitter as a fraction of the delay.
  double jitter_fraction = 0.25;
  // Status codes worth retrying; anything else fails at once.
  std::vector<absl::StatusCode> retryable_codes = {absl::StatusCode::kUnavailable,
                                                   absl::StatusCode::kDeadlineExceeded};

  bool IsRetryable(const absl::Status& status) const;
};

// The seed's per-operation policies. Error classes map to status codes:
// connection error -> kUnavailable, timeout -> kDeadlineExceeded, HTTP 502/503
// -> kUnavailable, 504 -> kDeadlineExceeded, GPU memory -> kResourceExhausted,
// model load -> kUnavailable.
RetryPolicy DatabaseReadPolicy();  // 3 attempts, 50 ms; connection, timeout
// 2 attempts, 100 ms, connection errors only, when the write is idempotent;
// otherwise a single attempt.
RetryPolicy DatabaseWritePolicy(bool idempotent);
RetryPolicy ExternalApiPolicy();   // 3 attempts, 500 ms; timeout, 502, 503, 504
RetryPolicy AiInferencePolicy();   // 2 attempts, 200 ms; GPU memory, model load

// Uniform doubles in [0, 1). Tests pass a seeded one.
using RandomSource = std::function<double()>;
// A RandomSource over its own std::mt19937_64. Not thread-safe: one per RetryState.
RandomSource SeededRandom(uint64_t seed);

// The delay before retry number `retry` (1 = the first retry), given the
// previous delay (used by kDecorrelated; pass base_delay for the first) and a
// uniform `u` in [0, 1). Pure. Never negative, never above max_delay.
std::chrono::microseconds ComputeBackoff(const RetryPolicy& policy, int retry,
                                         std::chrono::microseconds previous, double u);

struct RetryBudgetSettings {
  // Retries may add this fraction of the requests seen in the window.
  double retry_ratio = 0.2;
  // Retries allowed per window whatever the request count, so a quiet
  // dependency can still be retried.
  int min_retries_per_window = 10;
  // Length of the sliding window, and the buckets it is counted in; a
  // bucket's counts leave the window whole once it is `window` old.
  std::chrono::microseconds window = std::chrono::seconds(10);
  int buckets = 10;
};

// Shared by all callers of one dependency. A retry is allowed while retries
// in the window stay below max(min_retries_per_window, retry_ratio *
// requests in the window). Thread-safe.
class RetryBudget {
 public:
  // `clock` must outlive the budget. Precondition: window > 0, buckets >= 1.
  RetryBudget(RetryBudgetSettings settings, const core::Clock& clock);
  RetryBudget(const RetryBudget&) = delete;
  RetryBudget& operator=(const RetryBudget&) = delete;

  // A first attempt went out.
  void RecordRequest();
  // Takes one retry from the budget; false when the budget is spent.
  [[nodiscard]] bool TryAcquireRetry();

  int64_t RequestsInWindow();
  int64_t RetriesInWindow();

 private:
  struct Bucket {
    int64_t index = INT64_MIN;  // which bucket-width slot of time it counts
    int64_t requests = 0;
    int64_t retries = 0;
  };
  Bucket& Current() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Sums(int64_t& requests, int64_t& retries) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RetryBudgetSettings settings_;
  const int64_t bucket_micros_;
  const core::Clock& clock_;
  absl::Mutex mu_;
  std::vector<Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

enum class RetryStop { kNone, kAttemptsExhausted, kDeadline, kBudget };

// The retry loop of one logical call. Not thread-safe (one per call).
class RetryState {
 public:
  // The budget, if any, is charged for this call's first attempt here. `clock`
  // and `budget` must outlive the state. No deadline: nullopt.
  RetryState(RetryPolicy policy, const core::Clock& clock,
             std::optional<core::TimePoint> deadline, RandomSource random,
             RetryBudget* budget = nullptr);

  // Call after a failed attempt. The delay before the next attempt, or nullopt
  // when there is none: attempts used up, the next attempt would start at or
  // after the deadline, or the budget is spent (see stop()). A delay returned
  // counts the next attempt as made.
  std::optional<std::chrono::microseconds> NextDelay();

  int attempts() const { return attempts_; }
  RetryStop stop() const { return stop_; }
  const RetryPolicy& policy() const { return policy_; }

 private:
  const RetryPolicy policy_;
  const core::Clock& clock_;
  const std::optional<core::TimePoint> deadline_;
  RandomSource random_;
  RetryBudget* const budget_;
  int attempts_ = 1;
  std::chrono::microseconds previous_;
  RetryStop stop_ = RetryStop::kNone;
};

}  // namespace medgrid::resilience
