#include "medgrid/resilience/degradation.h"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "medgrid/core/clock.h"

namespace medgrid::resilience {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using L = DegradationLevel;

// One Update() of a fresh controller with the seed's rules.
DegradationStatus Evaluate(const HealthSignals& signals, DegradationRules rules = {}) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller(rules, clock);
  controller.Update(signals);
  return controller.Status();
}

L LevelOf(const HealthSignals& signals, DegradationRules rules = {}) { return Evaluate(signals, rules).level; }

HealthSignals Consent(uint64_t hits, uint64_t misses, milliseconds db_latency) {
  HealthSignals s;
  s.consent_hits = hits;
  s.consent_misses = misses;
  s.consent_db_latency = db_latency;
  return s;
}

HealthSignals AtLevel(L level) {
  HealthSignals s;
  switch (level) {
    case L::kNormal:
      break;
    case L::kAiDegraded:
      s.ai_availability = 0.5;
      break;
    case L::kInteropDegraded:
      s.hie_availability = 0.5;
      break;
    case L::kConsentDegraded:
      s.consent_breaker_open = true;
      break;
    case L::kDatabaseDegraded:
      s.db_failover = true;
      break;
    case L::kRegionalOutage:
      s.region_down = true;
      break;
  }
  return s;
}

TEST(DegradationLevelName, AllLevels) {
  EXPECT_EQ(DegradationLevelName(L::kNormal), "normal");
  EXPECT_EQ(DegradationLevelName(L::kAiDegraded), "ai_degraded");
  EXPECT_EQ(DegradationLevelName(L::kInteropDegraded), "interop_degraded");
  EXPECT_EQ(DegradationLevelName(L::kConsentDegraded), "consent_degraded");
  EXPECT_EQ(DegradationLevelName(L::kDatabaseDegraded), "database_degraded");
  EXPECT_EQ(DegradationLevelName(L::kRegionalOutage), "regional_outage");
  EXPECT_EQ(DegradationLevelName(static_cast<L>(9)), "unknown");
}

// --- Rules at their thresholds ---

TEST(DegradationRules, DefaultSignalsAreNormal) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  EXPECT_EQ(controller.level(), L::kNormal);
  controller.Update(HealthSignals{});
  DegradationStatus status = controller.Status();
  EXPECT_EQ(status.level, L::kNormal);
  EXPECT_EQ(status.computed, L::kNormal);
  EXPECT_THAT(status.reasons, IsEmpty());
  EXPECT_FALSE(status.override_level.has_value());
}

TEST(DegradationRules, AiAvailabilityBelowMinimum) {
  HealthSignals s;
  s.ai_availability = 0.99;
  EXPECT_EQ(LevelOf(s), L::kNormal);
  s.ai_availability = 0.9901;
  EXPECT_EQ(LevelOf(s), L::kNormal);
  s.ai_availability = 0.9899;
  EXPECT_EQ(LevelOf(s), L::kAiDegraded);
}

TEST(DegradationRules, AiLatencyAboveMaximum) {
  HealthSignals s;
  s.ai_availability = 1.0;
  s.ai_latency_p99 = milliseconds(2000);
  EXPECT_EQ(LevelOf(s), L::kNormal);
  s.ai_latency_p99 = milliseconds(2001);
  EXPECT_EQ(LevelOf(s), L::kAiDegraded);
}

TEST(DegradationRules, HieAvailabilityBelowMinimum) {
  HealthSignals s;
  s.hie_availability = 0.95;
  EXPECT_EQ(LevelOf(s), L::kNormal);
  s.hie_availability = 0.9499;
  EXPECT_EQ(LevelOf(s), L::kInteropDegraded);
}

TEST(DegradationRules, HieLatencyAboveMaximum) {
  HealthSignals s;
  s.hie_latency = milliseconds(5000);
  EXPECT_EQ(LevelOf(s), L::kNormal);
  s.hie_latency = milliseconds(5001);
  EXPECT_EQ(LevelOf(s), L::kInteropDegraded);
}

TEST(DegradationRules, ConfiguredThresholdsAreUsed) {
  DegradationRules rules;
  rules.ai_min_availability = 0.5;
  rules.hie_max_latency = milliseconds(100);
  HealthSignals s;
  s.ai_availability = 0.6;  // below the seed's 0.99, above the configured 0.5
  EXPECT_EQ(LevelOf(s, rules), L::kNormal);
  s.hie_latency = milliseconds(101);  // under the seed's 5 s, over the configured 100 ms
  EXPECT_EQ(LevelOf(s, rules), L::kInteropDegraded);
}

TEST(DegradationRules, ConsentMissRateAtAndAboveThreshold) {
  // 10 of 20 is exactly 0.5: not above.
  EXPECT_EQ(LevelOf(Consent(10, 10, milliseconds(501))), L::kNormal);
  EXPECT_EQ(LevelOf(Consent(9, 11, milliseconds(501))), L::kConsentDegraded);
}

TEST(DegradationRules, ConsentLatencyAtAndAboveThreshold) {
  EXPECT_EQ(LevelOf(Consent(0, 100, milliseconds(500))), L::kNormal);
  EXPECT_EQ(LevelOf(Consent(0, 100, milliseconds(501))), L::kConsentDegraded);
}

TEST(DegradationRules, ConsentNeedsBothMissRateAndLatency) {
  EXPECT_EQ(LevelOf(Consent(0, 100, milliseconds(10))), L::kNormal);    // all misses, fast registry
  EXPECT_EQ(LevelOf(Consent(100, 0, milliseconds(5000))), L::kNormal);  // slow registry, warm cache
  EXPECT_EQ(LevelOf(Consent(0, 100, milliseconds(5000))), L::kConsentDegraded);
}

TEST(DegradationRules, ConsentMissRateNeedsMinimumLookups) {
  EXPECT_EQ(LevelOf(Consent(0, 19, milliseconds(1000))), L::kNormal);
  EXPECT_EQ(LevelOf(Consent(0, 20, milliseconds(1000))), L::kConsentDegraded);
  DegradationRules rules;
  rules.consent_min_lookups = 5;
  EXPECT_EQ(LevelOf(Consent(1, 4, milliseconds(1000)), rules), L::kConsentDegraded);
  EXPECT_EQ(LevelOf(Consent(1, 3, milliseconds(1000)), rules), L::kNormal);
}

TEST(DegradationRules, ConsentWithNoLookupsAndNoMinimumIsNotTriggered) {
  DegradationRules rules;
  rules.consent_min_lookups = 0;
  EXPECT_EQ(LevelOf(Consent(0, 0, milliseconds(1000)), rules), L::kNormal);
}

TEST(DegradationRules, ConsentBreakerOpenAloneTriggersLevel3) {
  HealthSignals s;
  s.consent_breaker_open = true;
  DegradationStatus status = Evaluate(s);
  EXPECT_EQ(status.level, L::kConsentDegraded);
  EXPECT_THAT(status.reasons, ElementsAre("consent: circuit breaker open"));
}

TEST(DegradationRules, DatabaseFailover) {
  HealthSignals s;
  s.db_failover = true;
  EXPECT_EQ(LevelOf(s), L::kDatabaseDegraded);
}

TEST(DegradationRules, ShardsPartlyReachable) {
  HealthSignals s;
  s.shards_total = 3;
  s.shards_reachable = 3;
  EXPECT_EQ(LevelOf(s), L::kNormal);
  s.shards_reachable = 2;
  EXPECT_EQ(LevelOf(s), L::kDatabaseDegraded);
  s.shards_reachable = 0;
  EXPECT_EQ(LevelOf(s), L::kDatabaseDegraded);
  s.shards_total = 0;  // not sharded / unknown
  EXPECT_EQ(LevelOf(s), L::kNormal);
}

TEST(DegradationRules, RegionDown) {
  HealthSignals s;
  s.region_down = true;
  EXPECT_EQ(LevelOf(s), L::kRegionalOutage);
}

TEST(DegradationRules, HighestTriggeredLevelWins) {
  HealthSignals s;
  s.ai_latency_p99 = milliseconds(3000);
  s.consent_breaker_open = true;
  s.shards_total = 4;
  s.shards_reachable = 3;
  DegradationStatus status = Evaluate(s);
  EXPECT_EQ(status.level, L::kDatabaseDegraded);
  EXPECT_EQ(status.computed, L::kDatabaseDegraded);
  EXPECT_THAT(status.reasons, ElementsAre("ai: p99 latency 3000 ms > 2000 ms", "consent: circuit breaker open",
                                          "database: 3 of 4 shards reachable"));
  s.hie_availability = 0.1;  // a lower level added changes nothing
  EXPECT_EQ(LevelOf(s), L::kDatabaseDegraded);
  s.region_down = true;
  EXPECT_EQ(LevelOf(s), L::kRegionalOutage);
}

TEST(DegradationRules, ReasonTextForEachRule) {
  HealthSignals s;
  s.ai_availability = 0.98;
  s.ai_latency_p99 = milliseconds(2500);
  s.hie_availability = 0.9;
  s.hie_latency = milliseconds(6000);
  s.consent_hits = 28;
  s.consent_misses = 72;
  s.consent_db_latency = milliseconds(830);
  s.consent_breaker_open = true;
  s.db_failover = true;
  s.shards_total = 3;
  s.shards_reachable = 2;
  s.region_down = true;
  EXPECT_THAT(Evaluate(s).reasons,
              ElementsAre("ai: availability 0.98 < 0.99", "ai: p99 latency 2500 ms > 2000 ms",
                          "hie: availability 0.90 < 0.95", "hie: latency 6000 ms > 5000 ms",
                          "consent: cache miss rate 0.72 > 0.50 and registry latency 830 ms > 500 ms",
                          "consent: circuit breaker open", "database: failover in progress",
                          "database: 2 of 3 shards reachable", "region: unavailable"));
}

TEST(DegradationRules, ReasonShowsEnoughDigitsToDiffer) {
  HealthSignals s;
  s.ai_availability = 0.989;
  EXPECT_THAT(Evaluate(s).reasons, ElementsAre("ai: availability 0.989 < 0.990"));
}

// --- Hysteresis ---

TEST(DegradationHysteresis, HigherLevelTakesEffectAtOnce) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  controller.Update(AtLevel(L::kAiDegraded));
  EXPECT_EQ(controller.level(), L::kAiDegraded);
  clock.Advance(seconds(1));
  controller.Update(AtLevel(L::kDatabaseDegraded));
  EXPECT_EQ(controller.level(), L::kDatabaseDegraded);
  EXPECT_EQ(controller.Status().since, core::FromUnixMicros(1'000'000));
}

TEST(DegradationHysteresis, DropsOnlyAfterRecoveryOfLowerReadings) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);  // recovery 30 s
  controller.Update(AtLevel(L::kDatabaseDegraded));
  clock.Advance(seconds(5));
  controller.Update(HealthSignals{});  // first lower reading: t = 5 s
  EXPECT_EQ(controller.level(), L::kDatabaseDegraded);
  for (int i = 0; i < 5; ++i) {
    clock.Advance(seconds(5));
    controller.Update(HealthSignals{});
    EXPECT_EQ(controller.level(), L::kDatabaseDegraded) << "t=" << 10 + 5 * i << "s";
  }
  clock.Advance(seconds(5) - microseconds(1));  // t = 35 s - 1 us
  controller.Update(HealthSignals{});
  EXPECT_EQ(controller.level(), L::kDatabaseDegraded);
  clock.Advance(microseconds(1));  // t = 35 s: 30 s below
  controller.Update(HealthSignals{});
  DegradationStatus status = controller.Status();
  EXPECT_EQ(status.level, L::kNormal);
  EXPECT_EQ(status.computed, L::kNormal);
  EXPECT_THAT(status.reasons, IsEmpty());
  EXPECT_EQ(status.since, core::FromUnixMicros(35'000'000));
}

TEST(DegradationHysteresis, HeldLevelExplainsItself) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  controller.Update(AtLevel(L::kDatabaseDegraded));
  controller.Update(AtLevel(L::kAiDegraded));
  clock.Advance(milliseconds(12'500));
  controller.Update(AtLevel(L::kAiDegraded));
  DegradationStatus status = controller.Status();
  EXPECT_EQ(status.computed, L::kDatabaseDegraded);
  EXPECT_THAT(status.reasons,
              ElementsAre("ai: availability 0.50 < 0.99",
                          "hysteresis: holding database_degraded (signals say ai_degraded), below for 12 s of 30 s"));
}

TEST(DegradationHysteresis, SpikeRestartsTheWait) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  controller.Update(AtLevel(L::kConsentDegraded));
  controller.Update(HealthSignals{});  // below from t = 0
  clock.Advance(seconds(20));
  controller.Update(AtLevel(L::kConsentDegraded));  // spike at t = 20 s
  clock.Advance(seconds(5));
  controller.Update(HealthSignals{});  // below again from t = 25 s
  clock.Advance(seconds(29));          // t = 54 s: 54 s since the first lower reading, 29 s since the spike
  controller.Update(HealthSignals{});
  EXPECT_EQ(controller.level(), L::kConsentDegraded);
  clock.Advance(seconds(1));  // t = 55 s
  controller.Update(HealthSignals{});
  EXPECT_EQ(controller.level(), L::kNormal);
}

TEST(DegradationHysteresis, SpikeToAnIntermediateLevelHoldsOnlyThatLevel) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  controller.Update(AtLevel(L::kDatabaseDegraded));
  controller.Update(HealthSignals{});  // below 4 from t = 0
  clock.Advance(seconds(10));
  controller.Update(AtLevel(L::kInteropDegraded));  // t = 10 s
  clock.Advance(seconds(5));
  controller.Update(HealthSignals{});  // below 2 from t = 15 s
  clock.Advance(seconds(15));          // t = 30 s
  controller.Update(HealthSignals{});
  EXPECT_EQ(controller.level(), L::kInteropDegraded);
  clock.Advance(seconds(14));  // t = 44 s
  controller.Update(HealthSignals{});
  EXPECT_EQ(controller.level(), L::kInteropDegraded);
  clock.Advance(seconds(1));  // t = 45 s
  controller.Update(HealthSignals{});
  EXPECT_EQ(controller.level(), L::kNormal);
}

TEST(DegradationHysteresis, RisingWhileHeldIsImmediate) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  controller.Update(AtLevel(L::kConsentDegraded));
  clock.Advance(seconds(10));
  controller.Update(HealthSignals{});
  controller.Update(AtLevel(L::kRegionalOutage));
  EXPECT_EQ(controller.level(), L::kRegionalOutage);
}

TEST(DegradationHysteresis, ZeroRecoveryDropsAtOnce) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationRules rules;
  rules.recovery = seconds(0);
  DegradationController controller(rules, clock);
  controller.Update(AtLevel(L::kRegionalOutage));
  controller.Update(AtLevel(L::kAiDegraded));
  EXPECT_EQ(controller.level(), L::kAiDegraded);
}

// --- Override ---

TEST(DegradationOverride, OverridesAndKeepsComputedState) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  controller.Update(AtLevel(L::kAiDegraded));
  controller.SetOverride(L::kDatabaseDegraded, "failover drill");
  DegradationStatus status = controller.Status();
  EXPECT_EQ(status.level, L::kDatabaseDegraded);
  EXPECT_EQ(controller.level(), L::kDatabaseDegraded);
  EXPECT_EQ(status.computed, L::kAiDegraded);
  EXPECT_EQ(status.override_level, L::kDatabaseDegraded);
  EXPECT_EQ(status.override_reason, "failover drill");
  EXPECT_THAT(status.reasons, ElementsAre("ai: availability 0.50 < 0.99", "override: failover drill"));

  // Signals keep being computed underneath, whatever they say.
  controller.Update(AtLevel(L::kRegionalOutage));
  status = controller.Status();
  EXPECT_EQ(status.level, L::kDatabaseDegraded);
  EXPECT_EQ(status.computed, L::kRegionalOutage);
  EXPECT_THAT(status.reasons, ElementsAre("region: unavailable", "override: failover drill"));

  controller.ClearOverride();
  status = controller.Status();
  EXPECT_EQ(status.level, L::kRegionalOutage);
  EXPECT_FALSE(status.override_level.has_value());
  EXPECT_EQ(status.override_reason, "");
  EXPECT_THAT(status.reasons, ElementsAre("region: unavailable"));
}

TEST(DegradationOverride, CanOverrideBelowTheComputedLevel) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController controller({}, clock);
  controller.Update(AtLevel(L::kDatabaseDegraded));
  controller.SetOverride(L::kNormal, "known false alarm");
  EXPECT_EQ(controller.level(), L::kNormal);
  EXPECT_EQ(controller.Status().computed, L::kDatabaseDegraded);
  controller.ClearOverride();
  EXPECT_EQ(controller.level(), L::kDatabaseDegraded);
}

// --- on_change ---

TEST(DegradationOnChange, CalledExactlyOnEffectiveChanges) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  std::vector<L> seen;
  std::vector<core::TimePoint> since;
  DegradationController controller({}, clock, [&](const DegradationStatus& s) {
    seen.push_back(s.level);
    since.push_back(s.since);
  });
  controller.Update(HealthSignals{});  // normal -> normal
  EXPECT_THAT(seen, IsEmpty());
  clock.Advance(seconds(1));
  controller.Update(AtLevel(L::kConsentDegraded));  // -> 3
  controller.Update(AtLevel(L::kConsentDegraded));  // same
  clock.Advance(seconds(1));
  controller.Update(HealthSignals{});                         // held at 3
  controller.SetOverride(L::kConsentDegraded, "same level");  // effective unchanged
  controller.ClearOverride();                                 // effective unchanged
  controller.ClearOverride();                                 // no override: no-op
  EXPECT_THAT(seen, ElementsAre(L::kConsentDegraded));
  clock.Advance(seconds(1));
  controller.SetOverride(L::kRegionalOutage, "drill");           // -> 5
  controller.SetOverride(L::kRegionalOutage, "drill, renamed");  // same
  clock.Advance(seconds(1));
  controller.ClearOverride();  // -> 3
  clock.Advance(seconds(30));
  controller.Update(HealthSignals{});  // 32 s below: -> 0
  controller.Update(HealthSignals{});
  EXPECT_THAT(seen, ElementsAre(L::kConsentDegraded, L::kRegionalOutage, L::kConsentDegraded, L::kNormal));
  EXPECT_THAT(since, ElementsAre(core::FromUnixMicros(1'000'000), core::FromUnixMicros(3'000'000),
                                 core::FromUnixMicros(4'000'000), core::FromUnixMicros(34'000'000)));
  EXPECT_EQ(controller.Status().since, core::FromUnixMicros(34'000'000));
}

TEST(DegradationOnChange, CallbackMayCallBackIn) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  DegradationController* self = nullptr;
  std::vector<L> levels_read;
  DegradationController controller({}, clock, [&](const DegradationStatus&) {
    levels_read.push_back(self->Status().level);
    levels_read.push_back(self->level());
  });
  self = &controller;
  controller.Update(AtLevel(L::kAiDegraded));
  EXPECT_THAT(levels_read, ElementsAre(L::kAiDegraded, L::kAiDegraded));
}

// --- Gates ---

TEST(DegradationGates, CumulativeByLevel) {
  struct Row {
    L level;
    bool writes, ai, external, fail_closed;
  };
  const Row rows[] = {
      {L::kNormal, true, true, true, false},
      {L::kAiDegraded, true, false, true, false},
      {L::kInteropDegraded, true, false, false, false},
      {L::kConsentDegraded, true, false, false, true},
      {L::kDatabaseDegraded, false, false, false, true},
      {L::kRegionalOutage, false, false, false, true},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(std::string(DegradationLevelName(r.level)));
    EXPECT_EQ(DegradationController::WritesAllowed(r.level), r.writes);
    EXPECT_EQ(DegradationController::AiAllowed(r.level), r.ai);
    EXPECT_EQ(DegradationController::ExternalQueriesAllowed(r.level), r.external);
    EXPECT_EQ(DegradationController::ConsentFailClosed(r.level), r.fail_closed);
  }
}

}  // namespace
}  // namespace medgrid::resilience
