#include "medgrid/resilience/dependency_health.h"

#include <algorithm>

namespace medgrid::resilience {

namespace {

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

}  // namespace

DependencyHealth::DependencyHealth(DependencyHealthSettings settings, const core::Clock& clock)
    : bucket_micros_(std::max<int64_t>(1, settings.window.count() / std::max(1, settings.buckets))),
      clock_(clock),
      buckets_(static_cast<size_t>(std::max(1, settings.buckets))) {}

DependencyHealth::Bucket& DependencyHealth::Current(int64_t now_index) {
  const int64_t n = static_cast<int64_t>(buckets_.size());
  Bucket& bucket = buckets_[static_cast<size_t>((now_index % n + n) % n)];
  if (bucket.index != now_index) {
    bucket = Bucket{};
    bucket.index = now_index;
  }
  return bucket;
}

void DependencyHealth::Record(Outcome outcome, std::chrono::microseconds latency) {
  const int64_t us = std::max<int64_t>(0, latency.count());
  // The first bin whose bound the latency does not pass; kBins - 1 past the last.
  size_t bin = 0;
  while (bin < kBoundsMs.size() && us > kBoundsMs[bin] * 1000) ++bin;
  absl::MutexLock lock(&mu_);
  Bucket& b = Current(FloorDiv(core::ToUnixMicros(clock_.Now()), bucket_micros_));
  ++b.calls;
  if (outcome == Outcome::kSuccess) ++b.successes;
  b.max_latency_us = std::max(b.max_latency_us, us);
  ++b.bins[bin];
}

DependencyHealth::Snapshot DependencyHealth::Read() {
  Snapshot s;
  std::array<int64_t, kBins> bins = {};
  int64_t max_latency_us = 0;
  {
    absl::MutexLock lock(&mu_);
    const int64_t current = FloorDiv(core::ToUnixMicros(clock_.Now()), bucket_micros_);
    const int64_t n = static_cast<int64_t>(buckets_.size());
    for (const Bucket& b : buckets_) {
      if (b.index <= current - n || b.index > current) continue;
      s.calls += b.calls;
      s.successes += b.successes;
      max_latency_us = std::max(max_latency_us, b.max_latency_us);
      for (size_t i = 0; i < kBins; ++i) bins[i] += b.bins[i];
    }
  }
  if (s.calls == 0) return s;
  s.availability = static_cast<double>(s.successes) / static_cast<double>(s.calls);
  // The rank of the 99th percentile call, 1-based: ceil(0.99 * calls).
  const int64_t rank = (99 * s.calls + 99) / 100;
  int64_t seen = 0;
  size_t bin = 0;
  for (; bin < kBins; ++bin) {
    seen += bins[bin];
    if (seen >= rank) break;
  }
  const int64_t bound_us = bin < kBoundsMs.size() ? kBoundsMs[bin] * 1000 : max_latency_us;
  s.latency_p99 = std::chrono::microseconds(std::min(bound_us, max_latency_us));
  return s;
}

std::optional<double> DependencyHealth::Availability() { return Read().availability; }

std::optional<std::chrono::microseconds> DependencyHealth::LatencyP99() { return Read().latency_p99; }

}  // namespace medgrid::resilience
