// The health of one external dependency as its callers saw it: availability
// (successful calls / calls) and p99 latency over a sliding window, for the
// degradation controller's HealthSignals.
//
//   DependencyHealth health(DependencyHealthSettings{}, clock);
//   core::TimePoint start = clock.Now();
//   absl::Status s = CallHie();
//   health.Record(s.ok() ? Outcome::kSuccess : Outcome::kFailure,
//                 std::chrono::duration_cast<std::chrono::microseconds>(clock.Now() - start));
//   std::optional<double> availability = health.Availability();  // nullopt: no call in the window
//
// Invariants: the window is a ring of `buckets` slots, each counting the calls
// recorded in one bucket-width slot of time (by the injected clock) with a
// small fixed latency histogram; a slot is reset when the clock reaches a
// new slot that maps onto it, and a slot's counts leave the window whole once
// it is `window` old. Memory is fixed at construction. p99 is the upper bound
// of the histogram bin holding the 99th percentile call, capped at the
// slowest call in the window, so it never understates and is exact when the
// calls all took about as long.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/core/clock.h"
#include "medgrid/resilience/circuit_breaker.h"

namespace medgrid::resilience {

struct DependencyHealthSettings {
  // Length of the sliding window.
  std::chrono::microseconds window = std::chrono::seconds(60);
  // Slots the window is counted in (one second each by default). >= 1.
  int buckets = 60;
};

class DependencyHealth {
 public:
  // Upper bounds of the latency histogram's bins, in milliseconds (1-2-5
  // steps); one more bin holds anything slower.
  static constexpr std::array<int64_t, 15> kBoundsMs = {1,   2,    5,    10,   20,    50,    100,  200,
                                                        500, 1000, 2000, 5000, 10000, 20000, 60000};

  struct Snapshot {
    int64_t calls = 0;
    int64_t successes = 0;
    // nullopt when calls == 0.
    std::optional<double> availability;
    std::optional<std::chrono::microseconds> latency_p99;
  };

  // `clock` must outlive this. Precondition: window > 0, buckets >= 1.
  DependencyHealth(DependencyHealthSettings settings, const core::Clock& clock);
  DependencyHealth(const DependencyHealth&) = delete;
  DependencyHealth& operator=(const DependencyHealth&) = delete;

  // One call to the dependency ended now, after `latency` (negative counts as
  // zero). Thread-safe.
  void Record(Outcome outcome, std::chrono::microseconds latency);

  // Over the calls of the window ending now; nullopt when there were none.
  // Thread-safe.
  std::optional<double> Availability();
  std::optional<std::chrono::microseconds> LatencyP99();
  // Both, and the counts, from one look at the window. Thread-safe.
  Snapshot Read();

 private:
  static constexpr size_t kBins = kBoundsMs.size() + 1;
  struct Bucket {
    int64_t index = INT64_MIN;  // which bucket-width slot of time it counts
    int64_t calls = 0;
    int64_t successes = 0;
    int64_t max_latency_us = 0;
    std::array<int64_t, kBins> bins = {};
  };
  Bucket& Current(int64_t now_index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t bucket_micros_;
  const core::Clock& clock_;
  absl::Mutex mu_;
  std::vector<Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace medgrid::resilience
