#include "medgrid/resilience/token_bucket.h"

#include <algorithm>
#include <cmath>

namespace medgrid::resilience {

TokenBucket::TokenBucket(TokenBucketSettings settings, const core::Clock& clock)
    : settings_(settings), clock_(clock), tokens_(settings.burst), last_(clock.Now()) {}

void TokenBucket::Refill() {
  const core::TimePoint now = clock_.Now();
  // A clock that steps back adds nothing and does not move `last_` back,
  // so the same interval is never credited twice.
  if (now <= last_) return;
  const double elapsed_us =
      static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(now - last_).count());
  tokens_ = std::min(settings_.burst, tokens_ + elapsed_us * settings_.rate_per_second / 1e6);
  last_ = now;
}

TokenBucket::Decision TokenBucket::TryAcquire(double n) {
  absl::MutexLock lock(&mu_);
  Refill();
  if (n <= tokens_) {
    tokens_ -= n;
    return {true, std::chrono::microseconds(0)};
  }
  if (n > settings_.burst) return {false, std::chrono::microseconds::max()};
  const double wait_us = std::ceil((n - tokens_) * 1e6 / settings_.rate_per_second);
  return {false, std::chrono::microseconds(static_cast<int64_t>(wait_us))};
}

double TokenBucket::Available() {
  absl::MutexLock lock(&mu_);
  Refill();
  return tokens_;
}

}  // namespace medgrid::resilience
