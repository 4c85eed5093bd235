#include "medgrid/resilience/retry.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <utility>

namespace medgrid::resilience {

namespace {
using std::chrono::microseconds;

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}
}  // namespace

bool RetryPolicy::IsRetryable(const absl::Status& status) const {
  return std::find(retryable_codes.begin(), retryable_codes.end(), status.code()) !=
         retryable_codes.end();
}

RetryPolicy DatabaseReadPolicy() {
  RetryPolicy p;
  p.name = "database_read";
  p.max_attempts = 3;
  p.base_delay = std::chrono::milliseconds(50);
  p.retryable_codes = {absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded};
  return p;
}

RetryPolicy DatabaseWritePolicy(bool idempotent) {
  RetryPolicy p;
  p.name = "database_write";
  // A non-idempotent write that timed out may have committed; retrying it
  // could apply it twice.
  p.max_attempts = idempotent ? 2 : 1;
  p.base_delay = std::chrono::milliseconds(100);
  p.retryable_codes = {absl::StatusCode::kUnavailable};
  return p;
}

RetryPolicy ExternalApiPolicy() {
  RetryPolicy p;
  p.name = "external_api";
  p.max_attempts = 3;
  p.base_delay = std::chrono::milliseconds(500);
  p.retryable_codes = {absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded};
  return p;
}

RetryPolicy AiInferencePolicy() {
  RetryPolicy p;
  p.name = "ai_inference";
  p.max_attempts = 2;
  p.base_delay = std::chrono::milliseconds(200);
  p.retryable_codes = {absl::StatusCode::kResourceExhausted, absl::StatusCode::kUnavailable};
  return p;
}

RandomSource SeededRandom(uint64_t seed) {
  auto engine = std::make_shared<std::mt19937_64>(seed);
  return [engine]() { return std::uniform_real_distribution<double>(0.0, 1.0)(*engine); };
}

microseconds ComputeBackoff(const RetryPolicy& policy, int retry, microseconds previous,
                            double u) {
  const double cap = static_cast<double>(policy.max_delay.count());
  const double base = static_cast<double>(policy.base_delay.count());
  // Doubles so that large retry numbers saturate at the cap instead of overflowing.
  const double exponential =
      std::min(cap, base * std::pow(policy.multiplier, std::max(retry, 1) - 1));
  double delay = exponential;
  switch (policy.jitter) {
    case JitterMode::kNone:
      break;
    case JitterMode::kFull:
      delay = u * exponential;
      break;
    case JitterMode::kDecorrelated: {
      const double high = std::max(base, 3.0 * static_cast<double>(previous.count()));
      delay = base + u * (high - base);
      break;
    }
    case JitterMode::kProportional:
      delay = exponential * (1.0 + policy.jitter_fraction * (2.0 * u - 1.0));
      break;
  }
  delay = std::clamp(delay, 0.0, cap);
  return microseconds(static_cast<int64_t>(std::floor(delay)));
}

RetryBudget::RetryBudget(RetryBudgetSettings settings, const core::Clock& clock)
    : settings_(settings),
      bucket_micros_(std::max<int64_t>(1, settings.window.count() / std::max(1, settings.buckets))),
      clock_(clock),
      buckets_(static_cast<size_t>(std::max(1, settings.buckets))) {}

RetryBudget::Bucket& RetryBudget::Current() {
  const int64_t index = FloorDiv(core::ToUnixMicros(clock_.Now()), bucket_micros_);
  const int64_t n = static_cast<int64_t>(buckets_.size());
  Bucket& bucket = buckets_[static_cast<size_t>((index % n + n) % n)];
  if (bucket.index != index) bucket = Bucket{index, 0, 0};
  return bucket;
}

void RetryBudget::Sums(int64_t& requests, int64_t& retries) {
  const int64_t current = Current().index;
  const int64_t n = static_cast<int64_t>(buckets_.size());
  requests = 0;
  retries = 0;
  for (const Bucket& b : buckets_) {
    if (b.index > current - n && b.index <= current) {
      requests += b.requests;
      retries += b.retries;
    }
  }
}

void RetryBudget::RecordRequest() {
  absl::MutexLock lock(&mu_);
  ++Current().requests;
}

bool RetryBudget::TryAcquireRetry() {
  absl::MutexLock lock(&mu_);
  int64_t requests = 0;
  int64_t retries = 0;
  Sums(requests, retries);
  const double allowed = std::max(static_cast<double>(settings_.min_retries_per_window),
                                  settings_.retry_ratio * static_cast<double>(requests));
  if (static_cast<double>(retries) + 1.0 > allowed) return false;
  ++Current().retries;
  return true;
}

int64_t RetryBudget::RequestsInWindow() {
  absl::MutexLock lock(&mu_);
  int64_t requests = 0;
  int64_t retries = 0;
  Sums(requests, retries);
  return requests;
}

int64_t RetryBudget::RetriesInWindow() {
  absl::MutexLock lock(&mu_);
  int64_t requests = 0;
  int64_t retries = 0;
  Sums(requests, retries);
  return retries;
}

RetryState::RetryState(RetryPolicy policy, const core::Clock& clock,
                       std::optional<core::TimePoint> deadline, RandomSource random,
                       RetryBudget* budget)
    : policy_(std::move(policy)),
      clock_(clock),
      deadline_(deadline),
      random_(std::move(random)),
      budget_(budget),
      previous_(policy_.base_delay) {
  if (budget_ != nullptr) budget_->RecordRequest();
}

std::optional<microseconds> RetryState::NextDelay() {
  if (attempts_ >= policy_.max_attempts) {
    stop_ = RetryStop::kAttemptsExhausted;
    return std::nullopt;
  }
  const microseconds delay = ComputeBackoff(policy_, attempts_, previous_, random_());
  if (deadline_.has_value() && clock_.Now() + delay >= *deadline_) {
    stop_ = RetryStop::kDeadline;
    return std::nullopt;
  }
  // Charge the budget last, so a retry refused for another reason costs nothing.
  if (budget_ != nullptr && !budget_->TryAcquireRetry()) {
    stop_ = RetryStop::kBudget;
    return std::nullopt;
  }
  previous_ = delay;
  ++attempts_;
  return delay;
}

}  // namespace medgrid::resilience
