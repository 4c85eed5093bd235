// Heavy hitters in bounded memory: the space-saving sketch of Metwally,
// Agrawal and El Abbadi ("Efficient computation of frequent and top-k elements
// in data streams", 2005), and a sliding-window form of it.
//
//   cache::SpaceSaving sketch(/*capacity=*/1000);
//   sketch.Add("patient-123");
//   for (const auto& c : sketch.Top(10)) ...  // c.count >= true count
//
// Guarantees with k = capacity and N = Total(): every estimate over-counts by
// at most N / k (and by at most its `error`), and every item whose true count
// exceeds N / k is among the tracked items.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "medgrid/cache/string_map.h"
#include "medgrid/core/clock.h"

namespace medgrid::cache {

struct HeavyHitter {
  std::string item;
  uint64_t count = 0;  // estimate: true count <= count <= true count + error
  uint64_t error = 0;  // the most `count` over-counts by
};

// A value type; not thread-safe (WindowedSpaceSaving is).
class SpaceSaving {
 public:
  // capacity: the number of counters k, at least 1.
  explicit SpaceSaving(size_t capacity);

  void Add(std::string_view item, uint64_t weight = 1);
  // The estimated count of `item`: its counter when tracked, otherwise the
  // least counter when all k are in use (the most it can have), otherwise 0.
  uint64_t Estimate(std::string_view item) const;
  // The `n` largest counters, largest first (ties by item).
  std::vector<HeavyHitter> Top(size_t n) const;
  // All tracked items, in no particular order.
  std::vector<HeavyHitter> Items() const;
  uint64_t Total() const { return total_; }
  size_t capacity() const { return capacity_; }
  void Clear();

 private:
  struct Counter {
    uint64_t count;
    uint64_t error;
  };
  uint64_t MinCount() const;

  size_t capacity_;
  uint64_t total_ = 0;
  StringMap<std::string, Counter> counters_;
  std::set<std::pair<uint64_t, std::string>> by_count_;  // (count, item), least first
};

struct WindowConfig {
  // The window the rates are over.
  std::chrono::microseconds window = std::chrono::seconds(60);
  // Sub-intervals of the window, each its own sketch; the window slides by
  // window / intervals, so an event stops counting between window - window /
  // intervals and window after it.
  size_t intervals = 6;
  // Counters per sub-interval sketch.
  size_t capacity = 1000;
};

struct HeavyHitterRate {
  std::string item;
  uint64_t count = 0;  // estimated events in the window (over-estimate)
  double qps = 0;      // count / the window's span (see WindowedSpaceSaving)
};

// Space-saving over the last `window`: a ring of per-interval sketches whose
// estimates are summed, so the N / k bound holds with N the events in the
// window. The window's span runs from the start of its oldest live interval to
// now, between window - window / intervals and window long; rates are counts
// over that span. Thread-safe. The clock must outlive it.
class WindowedSpaceSaving {
 public:
  WindowedSpaceSaving(const core::Clock& clock, WindowConfig config);

  void Add(std::string_view item, uint64_t weight = 1);
  uint64_t Estimate(std::string_view item) const;
  double Qps(std::string_view item) const;
  uint64_t Total() const;
  double TotalQps() const;
  // The `n` items with the largest estimates in the window, largest first.
  std::vector<HeavyHitterRate> Top(size_t n) const;

 private:
  struct Bucket {
    int64_t interval = INT64_MIN;  // the interval this sketch counts
    SpaceSaving sketch;
  };
  int64_t IntervalAt(core::TimePoint t) const;
  double SpanSeconds(core::TimePoint now) const;
  // Whether bucket `b` holds an interval within the window ending in `current`.
  bool Live(const Bucket& b, int64_t current) const;
  uint64_t EstimateLocked(std::string_view item, int64_t current) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const core::Clock& clock_;
  const WindowConfig config_;
  const int64_t interval_us_;
  mutable std::mutex mu_;
  std::vector<Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace medgrid::cache
