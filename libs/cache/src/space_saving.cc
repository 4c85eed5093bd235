// SpaceSaving invariants: `counters_` and `by_count_` hold the same items with
// the same counts; at most capacity_ items; the sum of counts equals total_.
#include "medgrid/cache/space_saving.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"

namespace medgrid::cache {

SpaceSaving::SpaceSaving(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

uint64_t SpaceSaving::MinCount() const {
  return counters_.size() < capacity_ || by_count_.empty() ? 0 : by_count_.begin()->first;
}

void SpaceSaving::Add(std::string_view item, uint64_t weight) {
  if (weight == 0) return;
  total_ += weight;
  if (auto it = counters_.find(item); it != counters_.end()) {
    by_count_.erase({it->second.count, it->first});
    it->second.count += weight;
    by_count_.emplace(it->second.count, it->first);
    return;
  }
  if (counters_.size() < capacity_) {
    counters_.emplace(std::string(item), Counter{weight, 0});
    by_count_.emplace(weight, std::string(item));
    return;
  }
  // Replace the least counter: the newcomer may have had up to that many
  // occurrences while untracked, which becomes its error.
  auto least = by_count_.begin();
  const uint64_t min = least->first;
  counters_.erase(least->second);
  by_count_.erase(least);
  counters_.emplace(std::string(item), Counter{min + weight, min});
  by_count_.emplace(min + weight, std::string(item));
}

uint64_t SpaceSaving::Estimate(std::string_view item) const {
  if (auto it = counters_.find(item); it != counters_.end()) return it->second.count;
  return MinCount();
}

std::vector<HeavyHitter> SpaceSaving::Items() const {
  std::vector<HeavyHitter> out;
  out.reserve(counters_.size());
  for (const auto& [item, c] : counters_) out.push_back({item, c.count, c.error});
  return out;
}

std::vector<HeavyHitter> SpaceSaving::Top(size_t n) const {
  std::vector<HeavyHitter> out;
  for (auto it = by_count_.rbegin(); it != by_count_.rend() && out.size() < n; ++it) {
    out.push_back({it->second, it->first, counters_.find(it->second)->second.error});
  }
  return out;
}

void SpaceSaving::Clear() {
  total_ = 0;
  counters_.clear();
  by_count_.clear();
}

WindowedSpaceSaving::WindowedSpaceSaving(const core::Clock& clock, WindowConfig config)
    : clock_(clock),
      config_(config),
      interval_us_(std::max<int64_t>(
          1, config.window.count() / static_cast<int64_t>(std::max<size_t>(config.intervals, 1)))) {
  buckets_.reserve(std::max<size_t>(config_.intervals, 1));
  for (size_t i = 0; i < std::max<size_t>(config_.intervals, 1); ++i) {
    buckets_.push_back(Bucket{INT64_MIN, SpaceSaving(config_.capacity)});
  }
}

int64_t WindowedSpaceSaving::IntervalAt(core::TimePoint t) const {
  const int64_t us = core::ToUnixMicros(t);
  // Floor division, so times before the epoch fall in the right interval too.
  return us >= 0 ? us / interval_us_ : -((-us + interval_us_ - 1) / interval_us_);
}

double WindowedSpaceSaving::SpanSeconds(core::TimePoint now) const {
  const int64_t oldest = IntervalAt(now) - static_cast<int64_t>(buckets_.size()) + 1;
  return static_cast<double>(core::ToUnixMicros(now) - oldest * interval_us_) / 1e6;
}

bool WindowedSpaceSaving::Live(const Bucket& b, int64_t current) const {
  return b.interval != INT64_MIN && b.interval <= current &&
         current - b.interval < static_cast<int64_t>(buckets_.size());
}

void WindowedSpaceSaving::Add(std::string_view item, uint64_t weight) {
  const int64_t current = IntervalAt(clock_.Now());
  std::lock_guard lock(mu_);
  const auto n = static_cast<int64_t>(buckets_.size());
  Bucket& b = buckets_[static_cast<size_t>(((current % n) + n) % n)];
  if (b.interval != current) {
    b.interval = current;
    b.sketch.Clear();
  }
  b.sketch.Add(item, weight);
}

uint64_t WindowedSpaceSaving::EstimateLocked(std::string_view item, int64_t current) const {
  uint64_t sum = 0;
  for (const Bucket& b : buckets_) {
    if (Live(b, current)) sum += b.sketch.Estimate(item);
  }
  return sum;
}

uint64_t WindowedSpaceSaving::Estimate(std::string_view item) const {
  const int64_t current = IntervalAt(clock_.Now());
  std::lock_guard lock(mu_);
  return EstimateLocked(item, current);
}

double WindowedSpaceSaving::Qps(std::string_view item) const {
  const core::TimePoint now = clock_.Now();
  const int64_t current = IntervalAt(now);
  std::lock_guard lock(mu_);
  return static_cast<double>(EstimateLocked(item, current)) / SpanSeconds(now);
}

uint64_t WindowedSpaceSaving::Total() const {
  const int64_t current = IntervalAt(clock_.Now());
  std::lock_guard lock(mu_);
  uint64_t sum = 0;
  for (const Bucket& b : buckets_) {
    if (Live(b, current)) sum += b.sketch.Total();
  }
  return sum;
}

double WindowedSpaceSaving::TotalQps() const {
  const core::TimePoint now = clock_.Now();
  const int64_t current = IntervalAt(now);
  std::lock_guard lock(mu_);
  uint64_t sum = 0;
  for (const Bucket& b : buckets_) {
    if (Live(b, current)) sum += b.sketch.Total();
  }
  return static_cast<double>(sum) / SpanSeconds(now);
}

std::vector<HeavyHitterRate> WindowedSpaceSaving::Top(size_t n) const {
  const core::TimePoint now = clock_.Now();
  const int64_t current = IntervalAt(now);
  const double seconds = SpanSeconds(now);
  std::lock_guard lock(mu_);
  // A window heavy hitter (> N / k of the window) exceeds N_b / k in at least
  // one interval b, so the union of the intervals' items holds it.
  absl::flat_hash_set<std::string> candidates;
  for (const Bucket& b : buckets_) {
    if (!Live(b, current)) continue;
    for (auto& h : b.sketch.Items()) candidates.insert(std::move(h.item));
  }
  std::vector<HeavyHitterRate> out;
  out.reserve(candidates.size());
  for (const std::string& item : candidates) {
    const uint64_t count = EstimateLocked(item, current);
    out.push_back({item, count, static_cast<double>(count) / seconds});
  }
  std::sort(out.begin(), out.end(), [](const HeavyHitterRate& a, const HeavyHitterRate& b) {
    return a.count != b.count ? a.count > b.count : a.item < b.item;
  });
  if (out.size() > n) out.resize(n);
  return out;
}

}  // namespace medgrid::cache
