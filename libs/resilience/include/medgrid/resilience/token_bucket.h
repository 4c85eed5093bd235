// Local token-bucket rate limiter: `rate_per_second` tokens flow in up to
// `burst`; a request takes n tokens or is refused with the time until enough
// will be there (an HTTP Retry-After, rounded up to seconds by the caller).
//
//   TokenBucket bucket({.rate_per_second = 100, .burst = 200}, clock);
//   TokenBucket::Decision d = bucket.TryAcquire();
//   if (!d.allowed) return TooManyRequests(d.retry_after);
//
// The local fallback of cache::RateLimiter (per-tenant limits).
#pragma once

#include <chrono>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/core/clock.h"

namespace medgrid::resilience {

struct TokenBucketSettings {
  // Tokens added per second. > 0.
  double rate_per_second = 100.0;
  // Most tokens held, and what a new bucket starts with. > 0.
  double burst = 100.0;
};

class TokenBucket {
 public:
  struct Decision {
    bool allowed = false;
    // When refused: time until n tokens will be there (rounded up to a
    // microsecond); microseconds::max() when n exceeds the burst and never
    // will be. Zero when allowed.
    std::chrono::microseconds retry_after{0};
  };

  // `clock` must outlive the bucket.
  TokenBucket(TokenBucketSettings settings, const core::Clock& clock);
  TokenBucket(const TokenBucket&) = delete;
  TokenBucket& operator=(const TokenBucket&) = delete;

  // Takes n (> 0) tokens if there are that many; a refusal takes none.
  // Thread-safe.
  [[nodiscard]] Decision TryAcquire(double n = 1.0);
  // Tokens held now. Thread-safe.
  double Available();

 private:
  void Refill() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TokenBucketSettings settings_;
  const core::Clock& clock_;
  absl::Mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  core::TimePoint last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace medgrid::resilience
