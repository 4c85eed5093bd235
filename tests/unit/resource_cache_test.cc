// The pure parts of the FHIR read cache: the entry format shared by L1 and
// Redis, the patient a resource or a search concerns, and hot-spot mode
// (coalescing, the per-patient limit, the admin JSON) on a simulated clock.
#include <chrono>

#include "boost/json.hpp"
#include "gtest/gtest.h"
#include "medgrid/cache/l1_cache.h"
#include "medgrid/core/status.h"
#include "medgrid/resource_cache/entry.h"
#include "medgrid/resource_cache/hot_spots.h"

namespace medgrid::resource_cache {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;

TEST(Entry, RoundTripsEveryKind) {
  Entry e;
  e.kind = Entry::Kind::kBody;
  e.version = 42;
  e.last_updated = core::FromUnixMicros(1'700'000'000'123'456);
  e.patient = "p-1.x";
  e.body = R"({"resourceType":"Observation","note":[{"text":"a|b|c"}]})";
  std::optional<Entry> back = DecodeEntry(EncodeEntry(e));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->kind, Entry::Kind::kBody);
  EXPECT_EQ(back->version, 42);
  EXPECT_EQ(back->last_updated, e.last_updated);
  EXPECT_EQ(back->patient, "p-1.x");
  EXPECT_EQ(back->body, e.body);  // '|' inside the body is kept

  Entry tombstone;
  tombstone.kind = Entry::Kind::kDeleted;
  tombstone.version = 7;
  std::optional<Entry> t = DecodeEntry(EncodeEntry(tombstone));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->kind, Entry::Kind::kDeleted);
  EXPECT_EQ(t->version, 7);
  EXPECT_TRUE(t->body.empty());

  Entry marker;
  marker.kind = Entry::Kind::kStale;
  marker.version = 9;
  // The version leads, so Redis's Lua can compare it with a pattern.
  EXPECT_EQ(EncodeEntry(marker).substr(0, 4), "9|s|");
}

TEST(Entry, RefusesWhatIsNotAnEntry) {
  EXPECT_FALSE(DecodeEntry("").has_value());
  EXPECT_FALSE(DecodeEntry("{\"resourceType\":\"Patient\"}").has_value());
  EXPECT_FALSE(DecodeEntry("x|b|0|p|{}").has_value());   // version not a number
  EXPECT_FALSE(DecodeEntry("1|q|0|p|{}").has_value());   // unknown kind
  EXPECT_FALSE(DecodeEntry("1|b|0|p").has_value());      // cut short
  EXPECT_FALSE(DecodeEntry("1|bb|0|p|{}").has_value());
}

TEST(PatientOf, FindsThePatientOfAResource) {
  EXPECT_EQ(PatientOf("Patient", "p1", "{}"), "p1");
  EXPECT_EQ(PatientOf("Observation", "o1", R"({"subject":{"reference":"Patient/p2"}})"), "p2");
  EXPECT_EQ(PatientOf("AllergyIntolerance", "a1", R"({"patient":{"reference":"Patient/p3"}})"), "p3");
  EXPECT_EQ(PatientOf("Observation", "o1", R"({"subject":{"reference":"Group/g1"}})"), "");
  EXPECT_EQ(PatientOf("Observation", "o1", R"({"subject":{"reference":"http://other/Patient/p2"}})"), "");
  EXPECT_EQ(PatientOf("Observation", "o1", R"({"subject":{"reference":"Patient/a|b"}})"), "");
  EXPECT_EQ(PatientOf("Observation", "o1", "not json"), "");
}

TEST(PatientOf, FindsThePatientOfASearch) {
  engine::SearchInput compartment;
  compartment.compartment = "Patient";
  compartment.compartment_id = "p1";
  EXPECT_EQ(PatientOfSearch(compartment), "p1");
  engine::SearchInput by_param;
  by_param.type = "Observation";
  by_param.params = {{"code", "1234-5"}, {"patient", "p2"}};
  EXPECT_EQ(PatientOfSearch(by_param), "p2");
  by_param.params = {{"subject", "Patient/p3"}};
  EXPECT_EQ(PatientOfSearch(by_param), "p3");
  by_param.params = {{"subject:Patient", "p4"}};
  EXPECT_EQ(PatientOfSearch(by_param), "p4");
  by_param.params = {{"patient", "p1,p2"}};  // several: none in particular
  EXPECT_EQ(PatientOfSearch(by_param), "");
  by_param.params = {{"subject", "Group/g"}};
  EXPECT_EQ(PatientOfSearch(by_param), "");
}

TEST(SplitCacheKey, GivesBackTenantAndRest) {
  std::string tenant, rest;
  ASSERT_TRUE(SplitCacheKey(cache::CacheKey("t-1", "Patient", "p1"), tenant, rest));
  EXPECT_EQ(tenant, "t-1");
  EXPECT_EQ(rest, "Patient/p1");
  EXPECT_FALSE(SplitCacheKey("nonsense", tenant, rest));
  EXPECT_FALSE(SplitCacheKey("9:short|x", tenant, rest));
}

HotSpotsConfig TestConfig(Coalescing coalescing) {
  HotSpotsConfig c;
  c.detector.cool_down = minutes(5);
  c.coalescing = coalescing;
  c.patient_rps = 10;
  c.patient_burst = 5;
  return c;
}

// `qps` requests per second on `patient` for `duration`.
void Drive(core::SimulatedClock& clock, HotSpots& hot, std::string_view tenant, std::string_view patient, int qps,
           seconds duration) {
  for (int s = 0; s < duration.count(); ++s) {
    for (int i = 0; i < qps; ++i) hot.Record(tenant, "Patient", patient);
    clock.Advance(seconds(1));
  }
}

// `qps` requests per second on p1 of t1, and as many, naming no patient, on
// each of t2, t3 and t4 (so no tenant has more than 25% of the traffic).
void DriveFour(core::SimulatedClock& clock, HotSpots& hot, int qps, seconds duration) {
  for (int s = 0; s < duration.count(); ++s) {
    for (int i = 0; i < qps; ++i) {
      hot.Record("t1", "Patient", "p1");
      for (const char* t : {"t2", "t3", "t4"}) hot.Record(t, "Observation", "");
    }
    clock.Advance(seconds(1));
  }
}

TEST(HotSpots, AHotPatientIsCoalescedAndLimitedUntilItCoolsDown) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpots hot(TestConfig(Coalescing::kHot), clock, nullptr, "test", nullptr);
  DriveFour(clock, hot, 50, seconds(60));
  hot.Evaluate();
  EXPECT_FALSE(hot.PatientHot("t1", "p1"));
  EXPECT_TRUE(hot.Admit("t1", "p1").ok());

  DriveFour(clock, hot, 150, seconds(60));
  hot.Evaluate();
  EXPECT_TRUE(hot.PatientHot("t1", "p1"));
  EXPECT_FALSE(hot.PatientHot("t2", "p1"));  // the same id in another tenant is another patient
  EXPECT_TRUE(hot.Coalesce("t1", "Observation", "p1"));
  EXPECT_FALSE(hot.Coalesce("t2", "Observation", "q1"));

  // The per-patient bucket: a burst of 5, then 429 with Retry-After.
  int allowed = 0;
  absl::Status refused;
  for (int i = 0; i < 8; ++i) {
    absl::Status st = hot.Admit("t1", "p1");
    if (st.ok()) {
      ++allowed;
    } else {
      refused = st;
    }
  }
  EXPECT_EQ(allowed, 5);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(core::HttpStatusOf(refused), 429);
  EXPECT_EQ(core::IssueCodeOf(refused), "throttled");
  ASSERT_TRUE(core::RetryAfterOf(refused).has_value());
  EXPECT_GE(*core::RetryAfterOf(refused), 1);
  EXPECT_EQ(hot.throttled(), 3u);
  EXPECT_TRUE(hot.Admit("t2", "q1").ok());  // not hot: never limited

  const boost::json::value doc = boost::json::parse(hot.ToJson());
  const boost::json::array& patients = doc.at("patients").as_array();
  ASSERT_EQ(patients.size(), 1u);
  EXPECT_EQ(patients[0].at("tenant").as_string(), "t1");
  EXPECT_EQ(patients[0].at("id").as_string(), "p1");
  EXPECT_GT(patients[0].at("qps").as_double(), 100);
  EXPECT_EQ(doc.at("coalescing").as_string(), "hot");

  // Quiet, but not yet cooled down: still hot.
  clock.Advance(minutes(2));
  hot.Evaluate();
  EXPECT_TRUE(hot.PatientHot("t1", "p1"));
  // Past the cool-down and below half the threshold: off.
  clock.Advance(minutes(4));
  hot.Evaluate();
  EXPECT_FALSE(hot.PatientHot("t1", "p1"));
  EXPECT_FALSE(hot.Coalesce("t1", "Observation", "p1"));
  EXPECT_TRUE(hot.Admit("t1", "p1").ok());
}

TEST(HotSpots, CoalescingCanBeForcedOnOrOff) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpots always(TestConfig(Coalescing::kAlways), clock, nullptr, "test", nullptr);
  EXPECT_TRUE(always.Coalesce("t1", "Observation", ""));
  HotSpots off(TestConfig(Coalescing::kOff), clock, nullptr, "test", nullptr);
  Drive(clock, off, "t1", "p1", 150, seconds(60));
  off.Evaluate();
  EXPECT_TRUE(off.PatientHot("t1", "p1"));
  EXPECT_FALSE(off.Coalesce("t1", "Patient", "p1"));
}

TEST(HotSpots, AHotTenantCoalescesAllItsKeys) {
  core::SimulatedClock clock(core::FromUnixMicros(0));
  HotSpots hot(TestConfig(Coalescing::kHot), clock, nullptr, "test", nullptr);
  for (int s = 0; s < 60; ++s) {
    for (int i = 0; i < 40; ++i) hot.Record("big", "Observation", "");
    for (int i = 0; i < 5; ++i) hot.Record("small", "Observation", "");
    clock.Advance(seconds(1));
  }
  hot.Evaluate();
  EXPECT_TRUE(hot.Coalesce("big", "Observation", ""));
  EXPECT_FALSE(hot.Coalesce("small", "Observation", ""));
}

}  // namespace
}  // namespace medgrid::resource_cache
