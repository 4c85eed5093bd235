#include <algorithm>
#include <atomic>
#include <cmath>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/statusor.h"
#include "medgrid/cache/hot_spot.h"
#include "medgrid/cache/l1_cache.h"
#include "medgrid/cache/single_flight.h"
#include "medgrid/cache/space_saving.h"
#include "medgrid/core/strings.h"

namespace medgrid::cache {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::minutes;
using std::chrono::seconds;

std::shared_ptr<const std::string> Body(std::string s) {
  return std::make_shared<const std::string>(std::move(s));
}

// --- L1Cache ---------------------------------------------------------------

TEST(L1Cache, EntryExpiresExactlyAtTtl) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  L1Cache cache(clock, {.shards = 4, .ttl = seconds(60)});
  const std::string key = CacheKey("t1", "Patient", "p1");
  cache.Put(key, Body("v1"), 1);
  clock.Advance(seconds(60) - microseconds(1));
  auto hit = cache.Get(key);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(*hit->value, "v1");
  EXPECT_EQ(hit->version, 1);
  clock.Advance(microseconds(1));
  EXPECT_EQ(cache.Get(key), std::nullopt);
  const L1CacheStats stats = cache.Stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.entries, 0u);  // the expired entry was dropped
  EXPECT_EQ(stats.bytes, 0u);
}

TEST(L1Cache, DefaultsAreTheSeeds) {
  const L1CacheConfig config;
  EXPECT_EQ(config.ttl, seconds(60));
  EXPECT_EQ(config.max_bytes, size_t{1} << 30);
}

TEST(L1Cache, EvictsLeastRecentlyUsedWithinTheByteBound) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  const std::string a = CacheKey("t", "Patient", "a");  // all keys the same length
  const size_t charge = a.size() + 10 + L1Cache::kEntryOverhead;
  L1Cache cache(clock, {.shards = 1, .max_bytes = 3 * charge});
  const std::string b = CacheKey("t", "Patient", "b");
  const std::string c = CacheKey("t", "Patient", "c");
  const std::string d = CacheKey("t", "Patient", "d");
  cache.Put(a, Body(std::string(10, 'a')), 1);
  cache.Put(b, Body(std::string(10, 'b')), 1);
  cache.Put(c, Body(std::string(10, 'c')), 1);
  EXPECT_EQ(cache.Stats().bytes, 3 * charge);
  ASSERT_TRUE(cache.Get(a).has_value());  // a is now the most recently used; b the least
  cache.Put(d, Body(std::string(10, 'd')), 1);
  EXPECT_EQ(cache.Get(b), std::nullopt);
  EXPECT_TRUE(cache.Get(a).has_value());
  EXPECT_TRUE(cache.Get(c).has_value());
  EXPECT_TRUE(cache.Get(d).has_value());
  EXPECT_EQ(cache.Stats().evictions, 1u);
  EXPECT_EQ(cache.Stats().bytes, 3 * charge);

  // A value twice as large pushes out the two least recently used (a, then c).
  cache.Put(b, Body(std::string(10 + charge, 'b')), 1);
  EXPECT_EQ(cache.Stats().evictions, 3u);
  EXPECT_EQ(cache.Get(a), std::nullopt);
  EXPECT_EQ(cache.Get(c), std::nullopt);
  EXPECT_TRUE(cache.Get(d).has_value());
  EXPECT_TRUE(cache.Get(b).has_value());
  EXPECT_LE(cache.Stats().bytes, 3 * charge);

  // An entry larger than the whole budget is not cached and evicts nothing.
  cache.Put(c, Body(std::string(4 * charge, 'c')), 1);
  EXPECT_EQ(cache.Get(c), std::nullopt);
  EXPECT_EQ(cache.Stats().evictions, 3u);
}

TEST(L1Cache, TenantsNeverShareKeysAndInvalidateTenantDropsOnlyItsOwn) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  L1Cache cache(clock, {.shards = 8});
  EXPECT_NE(CacheKey("t1", "Patient", "p1"), CacheKey("t2", "Patient", "p1"));
  // A tenant whose name extends another's must not fall under its prefix.
  EXPECT_NE(CacheKey("acme", "|Patient", "p1"), CacheKey("acme|", "Patient", "p1"));
  EXPECT_FALSE(CacheKey("acme|", "Patient", "p1").starts_with(TenantPrefix("acme")));

  for (int i = 0; i < 50; ++i) {
    const std::string id = core::StrCat("p", i);
    cache.Put(CacheKey("acme", "Patient", id), Body(core::StrCat("acme-", id)), 1);
    cache.Put(CacheKey("acme|", "Patient", id), Body(core::StrCat("acme|-", id)), 1);
    cache.Put(CacheKey("zeta", "Patient", id), Body(core::StrCat("zeta-", id)), 1);
  }
  EXPECT_EQ(*cache.Get(CacheKey("zeta", "Patient", "p3"))->value, "zeta-p3");
  EXPECT_EQ(*cache.Get(CacheKey("acme", "Patient", "p3"))->value, "acme-p3");

  cache.InvalidateTenant("acme");
  EXPECT_EQ(cache.Stats().entries, 100u);
  for (int i = 0; i < 50; ++i) {
    const std::string id = core::StrCat("p", i);
    EXPECT_EQ(cache.Get(CacheKey("acme", "Patient", id)), std::nullopt);
    EXPECT_TRUE(cache.Get(CacheKey("acme|", "Patient", id)).has_value());
    EXPECT_TRUE(cache.Get(CacheKey("zeta", "Patient", id)).has_value());
  }

  cache.Invalidate(CacheKey("zeta", "Patient", "p7"));
  EXPECT_EQ(cache.Get(CacheKey("zeta", "Patient", "p7")), std::nullopt);
  EXPECT_TRUE(cache.Get(CacheKey("zeta", "Patient", "p8")).has_value());
}

TEST(L1Cache, MinVersionGivesReadYourWrites) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  L1Cache cache(clock, {});
  const std::string key = CacheKey("t1", "Observation", "o1");
  cache.Put(key, Body("v3"), 3);
  // The client just wrote version 4 elsewhere: the cached 3 must not be served to it.
  EXPECT_EQ(cache.Get(key, 4), std::nullopt);
  // Others, who have not seen 4, still may use 3.
  EXPECT_EQ(cache.Get(key, 3)->version, 3);
  EXPECT_EQ(cache.Get(key)->version, 3);
  cache.Put(key, Body("v4"), 4);
  EXPECT_EQ(*cache.Get(key, 4)->value, "v4");
  // A late Put of an older version does not replace the newer one.
  cache.Put(key, Body("v3"), 3);
  EXPECT_EQ(cache.Get(key)->version, 4);
  EXPECT_EQ(cache.Stats().misses, 1u);
}

TEST(L1Cache, ConcurrentReadersAndWritersKeepTheBound) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  L1Cache cache(clock, {.shards = 4, .max_bytes = 64 * 1024});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = CacheKey(core::StrCat("t", t % 2), "Patient", std::to_string(i % 300));
        if (i % 3 == 0) {
          cache.Put(key, Body(std::string(100, 'x')), i);
        } else {
          (void)cache.Get(key);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  const L1CacheStats stats = cache.Stats();
  EXPECT_LE(stats.bytes, 64u * 1024);
  EXPECT_EQ(stats.hits + stats.misses, 8u * 2000 - 8u * 667);
}

// --- SingleFlight -----------------------------------------------------------

TEST(SingleFlight, SixtyFourConcurrentCallersShareOneCall) {
  constexpr int kThreads = 64;
  SingleFlight<absl::StatusOr<std::shared_ptr<const std::string>>> flight;
  std::atomic<int> calls{0};
  std::latch start(kThreads);
  std::vector<absl::StatusOr<std::shared_ptr<const std::string>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = flight.Do("t1|Patient/p1", [&]() -> absl::StatusOr<std::shared_ptr<const std::string>> {
        calls.fetch_add(1);
        // Hold the call open until every caller has joined it, so the test
        // proves coalescing rather than luck of timing.
        while (flight.Callers("t1|Patient/p1") < kThreads) std::this_thread::yield();
        return Body("patient");
      });
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(calls.load(), 1);
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->get(), results[0]->get());  // the very same object
  }
  EXPECT_EQ(flight.Callers("t1|Patient/p1"), 0);

  // After completion, the next caller runs again.
  auto again = flight.Do("t1|Patient/p1", [&]() -> absl::StatusOr<std::shared_ptr<const std::string>> {
    calls.fetch_add(1);
    return absl::NotFoundError("gone");
  });
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound);
}

TEST(SingleFlight, DifferentKeysDoNotCoalesce) {
  SingleFlight<int> flight;
  int calls = 0;
  EXPECT_EQ(flight.Do("a", [&] { return ++calls; }), 1);
  EXPECT_EQ(flight.Do("b", [&] { return ++calls; }), 2);
}

// --- SpaceSaving --------------------------------------------------------------

TEST(SpaceSaving, MeetsItsErrorBoundOnAZipfStream) {
  constexpr size_t kItems = 5000;
  constexpr size_t kCapacity = 100;
  constexpr int kEvents = 200000;
  std::vector<double> weights(kItems);
  for (size_t i = 0; i < kItems; ++i) weights[i] = 1.0 / std::pow(static_cast<double>(i + 1), 1.1);
  std::mt19937_64 rng(42);
  std::discrete_distribution<size_t> zipf(weights.begin(), weights.end());
  // Shuffle which id gets which rank so insertion order says nothing.
  std::vector<size_t> ids(kItems);
  for (size_t i = 0; i < kItems; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), rng);

  SpaceSaving sketch(kCapacity);
  std::map<std::string, uint64_t> exact;
  for (int i = 0; i < kEvents; ++i) {
    const std::string item = core::StrCat("item", ids[zipf(rng)]);
    sketch.Add(item);
    ++exact[item];
  }
  ASSERT_EQ(sketch.Total(), static_cast<uint64_t>(kEvents));
  const uint64_t bound = kEvents / kCapacity;

  const std::vector<HeavyHitter> top = sketch.Top(kCapacity);
  ASSERT_EQ(top.size(), kCapacity);
  for (const HeavyHitter& h : top) {
    const uint64_t truth = exact[h.item];
    EXPECT_GE(h.count, truth) << h.item;
    EXPECT_LE(h.count - truth, bound) << h.item;
    EXPECT_LE(h.count - truth, h.error) << h.item;
  }
  for (size_t i = 1; i < top.size(); ++i) EXPECT_GE(top[i - 1].count, top[i].count);
  size_t heavy = 0;
  for (const auto& [item, truth] : exact) {
    const uint64_t est = sketch.Estimate(item);
    EXPECT_GE(est, truth) << item;
    EXPECT_LE(est - truth, bound) << item;
    if (truth > bound) {
      ++heavy;
      EXPECT_TRUE(std::any_of(top.begin(), top.end(), [&](const HeavyHitter& h) { return h.item == item; }))
          << item << " with " << truth << " > N/k is missing";
    }
  }
  EXPECT_GE(heavy, 5u);  // the stream is skewed enough for the check to mean something
  // The most frequent item is found exactly at the top.
  EXPECT_EQ(top[0].item, core::StrCat("item", ids[0]));
}

TEST(WindowedSpaceSaving, CountsOnlyTheLastWindow) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  WindowedSpaceSaving window(clock, {.window = seconds(60), .intervals = 6, .capacity = 10});
  window.Add("a", 600);  // interval [0, 10 s)
  clock.Advance(seconds(30));
  window.Add("b", 300);  // interval [30, 40 s)
  EXPECT_EQ(window.Estimate("a"), 600u);
  // The live intervals span [-20 s, 30 s]: 50 s.
  EXPECT_DOUBLE_EQ(window.Qps("a"), 12.0);
  EXPECT_EQ(window.Total(), 900u);
  auto top = window.Top(5);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].item, "a");
  EXPECT_EQ(top[1].item, "b");
  EXPECT_DOUBLE_EQ(top[1].qps, 6.0);
  EXPECT_DOUBLE_EQ(window.TotalQps(), 18.0);

  // At 59.999999 s the first interval is still in the window; at 60 s it leaves.
  clock.Set(core::FromUnixMicros(60'000'000 - 1));
  EXPECT_EQ(window.Estimate("a"), 600u);
  clock.Set(core::FromUnixMicros(60'000'000));
  EXPECT_EQ(window.Estimate("a"), 0u);
  EXPECT_EQ(window.Estimate("b"), 300u);
  EXPECT_EQ(window.Top(5).size(), 1u);
  // Writing into the reused slot starts it fresh.
  window.Add("c", 7);
  EXPECT_EQ(window.Estimate("c"), 7u);
  EXPECT_EQ(window.Total(), 307u);
  clock.Advance(minutes(10));
  EXPECT_EQ(window.Total(), 0u);
  EXPECT_TRUE(window.Top(5).empty());
}

// --- HotSpotDetector ----------------------------------------------------------

HotSpotConfig TestConfig() {
  HotSpotConfig config;
  config.cool_down = minutes(5);
  return config;
}

// Records `qps` requests per second for `duration`, one call per second.
void Drive(core::SimulatedClock& clock, HotSpotDetector& hot, std::string_view tenant, std::string_view type,
           std::string_view patient, uint64_t qps, seconds duration) {
  for (int s = 0; s < duration.count(); ++s) {
    hot.Record(tenant, type, patient, qps);
    clock.Advance(seconds(1));
  }
}

TEST(HotSpotDetector, DefaultsAreTheSeeds) {
  const HotSpotConfig config;
  EXPECT_EQ(config.patient_qps, 100);
  EXPECT_EQ(config.tenant_share, 0.30);
  EXPECT_EQ(config.type_baseline_factor, 5);
  EXPECT_EQ(config.release_fraction, 0.5);
  EXPECT_EQ(config.cool_down, hours(1));
}

std::optional<HotSpot> Find(const std::vector<HotSpot>& set, HotSpotKind kind) {
  for (const HotSpot& h : set) {
    if (h.kind == kind) return h;
  }
  return std::nullopt;
}

TEST(HotSpotDetector, PatientTurnsOnAboveThresholdAndOffBelowHalfAfterCoolDown) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpotDetector hot(clock, TestConfig());
  // 100 QPS is not above the threshold.
  Drive(clock, hot, "t1", "Observation", "p1", 100, seconds(60));
  EXPECT_EQ(Find(hot.Evaluate(), HotSpotKind::kPatient), std::nullopt);
  // 150 QPS for a full window is.
  Drive(clock, hot, "t1", "Observation", "p1", 150, seconds(60));
  const core::TimePoint on_at = clock.Now();
  auto patient = Find(hot.Evaluate(), HotSpotKind::kPatient);
  ASSERT_TRUE(patient.has_value());
  EXPECT_EQ(patient->key, CacheKey("t1", "Patient", "p1"));
  EXPECT_NEAR(patient->value, 150, 1e-9);
  EXPECT_EQ(patient->threshold, 100);
  EXPECT_EQ(patient->since, on_at);

  // 60 QPS is below the threshold but not below half of it: stays hot (hysteresis).
  Drive(clock, hot, "t1", "Observation", "p1", 60, seconds(120));
  patient = Find(hot.Evaluate(), HotSpotKind::kPatient);
  ASSERT_TRUE(patient.has_value());
  EXPECT_NEAR(patient->value, 60, 1e-9);
  EXPECT_EQ(patient->since, on_at);
  // 40 QPS is below half, but the cool-down (5 min since on) has not passed.
  Drive(clock, hot, "t1", "Observation", "p1", 40, seconds(120));
  EXPECT_EQ(clock.Now() - on_at, minutes(4));
  patient = Find(hot.Evaluate(), HotSpotKind::kPatient);
  ASSERT_TRUE(patient.has_value());
  EXPECT_NEAR(patient->value, 40, 1e-9);
  Drive(clock, hot, "t1", "Observation", "p1", 40, seconds(59));
  EXPECT_TRUE(Find(hot.Evaluate(), HotSpotKind::kPatient).has_value());
  // Once it has been hot for the cool-down, it turns off.
  Drive(clock, hot, "t1", "Observation", "p1", 40, seconds(1));
  EXPECT_EQ(clock.Now() - on_at, minutes(5));
  EXPECT_EQ(Find(hot.Evaluate(), HotSpotKind::kPatient), std::nullopt);
  EXPECT_EQ(Find(hot.HotSet(), HotSpotKind::kPatient), std::nullopt);
  // And turns on again when it goes over the threshold again.
  Drive(clock, hot, "t1", "Observation", "p1", 101, seconds(60));
  patient = Find(hot.Evaluate(), HotSpotKind::kPatient);
  ASSERT_TRUE(patient.has_value());
  EXPECT_EQ(patient->since, clock.Now());
}

TEST(HotSpotDetector, PatientsOfDifferentTenantsAreCountedApart) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpotDetector hot(clock, TestConfig());
  // 80 + 80 QPS on "p1", but in two tenants: neither patient is hot.
  for (int s = 0; s < 60; ++s) {
    hot.Record("t1", "Observation", "p1", 80);
    hot.Record("t2", "Observation", "p1", 80);
    clock.Advance(seconds(1));
  }
  for (const HotSpot& h : hot.Evaluate()) EXPECT_NE(h.kind, HotSpotKind::kPatient) << h.key;
}

// Evaluates once a second while `qps` requests of `type` arrive.
void DriveEvaluating(core::SimulatedClock& clock, HotSpotDetector& hot, std::string_view type, uint64_t qps,
                     seconds duration) {
  for (int s = 0; s < duration.count(); ++s) {
    hot.Record("t1", type, "", qps);
    clock.Advance(seconds(1));
    hot.Evaluate();
  }
}

TEST(HotSpotDetector, ATypeLearnsItsBaselineAndIsHotAboveFiveTimesIt) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpotDetector hot(clock, TestConfig());
  // Learning: never hot during the warm-up, however high the traffic.
  DriveEvaluating(clock, hot, "Observation", 20, minutes(9));
  EXPECT_EQ(hot.TypeBaseline("Observation"), std::nullopt);
  EXPECT_EQ(Find(hot.HotSet(), HotSpotKind::kResourceType), std::nullopt);
  DriveEvaluating(clock, hot, "Observation", 20, minutes(2));
  ASSERT_TRUE(hot.TypeBaseline("Observation").has_value());
  // The window fills in the first minute, so the mean is a little below 20.
  const double learned = *hot.TypeBaseline("Observation");
  EXPECT_NEAR(learned, 20, 1.5);
  // Twice the baseline is not hot; six times is.
  DriveEvaluating(clock, hot, "Observation", 40, minutes(2));
  EXPECT_EQ(Find(hot.HotSet(), HotSpotKind::kResourceType), std::nullopt);
  const double before = *hot.TypeBaseline("Observation");
  EXPECT_GT(before, learned + 0.2);  // it followed the traffic a little (time constant 1 h)
  DriveEvaluating(clock, hot, "Observation", 150, minutes(2));
  auto type = Find(hot.HotSet(), HotSpotKind::kResourceType);
  ASSERT_TRUE(type.has_value());
  EXPECT_EQ(type->key, "Observation");
  EXPECT_GT(type->value, 5 * 20.0);
  // While hot, the baseline stands still: the surge is not the new normal.
  const double during = *hot.TypeBaseline("Observation");
  DriveEvaluating(clock, hot, "Observation", 150, minutes(10));
  EXPECT_EQ(*hot.TypeBaseline("Observation"), during);
  EXPECT_TRUE(Find(hot.HotSet(), HotSpotKind::kResourceType).has_value());
  // Back to normal: released after the cool-down (5 min in this test).
  DriveEvaluating(clock, hot, "Observation", 20, minutes(6));
  EXPECT_EQ(Find(hot.HotSet(), HotSpotKind::kResourceType), std::nullopt);
}

TEST(HotSpotDetector, ANearlyIdleTypeIsNotHotAtFiveTimesNearlyNothing) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpotDetector hot(clock, TestConfig());
  for (int s = 0; s < 15 * 60; ++s) {
    if (s % 10 == 0) hot.Record("t1", "Device", "", 1);  // 0.1 QPS
    clock.Advance(seconds(1));
    hot.Evaluate();
  }
  EXPECT_EQ(hot.TypeBaseline("Device"), 1);  // the floor, type_min_baseline_qps
  DriveEvaluating(clock, hot, "Device", 3, minutes(2));  // 30x its traffic, under 5 QPS
  EXPECT_EQ(Find(hot.HotSet(), HotSpotKind::kResourceType), std::nullopt);
  DriveEvaluating(clock, hot, "Device", 8, minutes(2));
  EXPECT_TRUE(Find(hot.HotSet(), HotSpotKind::kResourceType).has_value());
}

TEST(HotSpotDetector, ABaselineSetByAnOperatorWinsOverTheLearnedOne) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpotDetector hot(clock, TestConfig());
  hot.SetTypeBaseline("Observation", 100);
  DriveEvaluating(clock, hot, "Observation", 20, minutes(11));
  EXPECT_EQ(hot.TypeBaseline("Observation"), 100);
  DriveEvaluating(clock, hot, "Observation", 150, minutes(2));  // 7.5x what it learned, 1.5x the set one
  EXPECT_EQ(Find(hot.HotSet(), HotSpotKind::kResourceType), std::nullopt);
}

TEST(HotSpotDetector, TenantShareAndResourceTypeBaseline) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpotDetector hot(clock, TestConfig());
  hot.SetTypeBaseline("Observation", 20);  // hot above 100 QPS
  hot.SetTypeBaseline("Patient", 100);
  // t1..t4: 25% each; Observation 80 QPS in all.
  for (int s = 0; s < 60; ++s) {
    for (const char* t : {"t1", "t2", "t3", "t4"}) {
      hot.Record(t, "Observation", "", 20);
      hot.Record(t, "Patient", "", 5);
    }
    clock.Advance(seconds(1));
  }
  EXPECT_TRUE(hot.Evaluate().empty());
  // t1 grows to 60 of 135 QPS (44%) and Observation to 115 QPS.
  for (int s = 0; s < 60; ++s) {
    hot.Record("t1", "Observation", "", 45);
    hot.Record("t1", "Patient", "", 15);
    for (const char* t : {"t2", "t3", "t4"}) {
      hot.Record(t, "Observation", "", 20);
      hot.Record(t, "Patient", "", 5);
    }
    clock.Advance(seconds(1));
  }
  const auto set = hot.Evaluate();
  ASSERT_EQ(set.size(), 2u);
  EXPECT_EQ(set[0].kind, HotSpotKind::kTenant);
  EXPECT_EQ(set[0].key, "t1");
  EXPECT_NEAR(set[0].value, 60.0 / 135.0, 1e-9);
  EXPECT_EQ(set[1].kind, HotSpotKind::kResourceType);
  EXPECT_EQ(set[1].key, "Observation");
  EXPECT_NEAR(set[1].value, 105, 1e-9);
  EXPECT_EQ(set[1].threshold, 100);

  // All traffic stops: after the cool-down both are released.
  clock.Advance(minutes(5));
  EXPECT_TRUE(hot.Evaluate().empty());
}

TEST(HotSpotDetector, TenantShareNeedsEnoughTraffic) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpotDetector hot(clock, TestConfig());
  // One tenant at 5 QPS is 100% of traffic, but below the 10 QPS floor.
  Drive(clock, hot, "only", "Patient", "", 5, seconds(60));
  EXPECT_TRUE(hot.Evaluate().empty());
}

}  // namespace
}  // namespace medgrid::cache
