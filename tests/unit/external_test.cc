// DependencyHealth's window on a simulated clock, and FetchExternal against a
// scripted local HTTP endpoint. The sleeper records each backoff and moves
// the simulated clock instead of sleeping, so no test waits for a backoff.
#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "integration/receiver.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/status.h"
#include "medgrid/http/external.h"
#include "medgrid/resilience/dependency_health.h"

namespace medgrid {
namespace {

using resilience::BreakerState;
using resilience::DependencyHealth;
using resilience::Outcome;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Receiver;
using testing::Reply;

constexpr int64_t kStart = 1'800'000'000'000'000;  // a whole second, in unix microseconds

// --- DependencyHealth ---

TEST(DependencyHealth, NothingRecordedIsUnknown) {
  core::SimulatedClock clock(core::FromUnixMicros(kStart));
  DependencyHealth health({}, clock);
  EXPECT_EQ(health.Availability(), std::nullopt);
  EXPECT_EQ(health.LatencyP99(), std::nullopt);
  EXPECT_EQ(health.Read().calls, 0);
}

TEST(DependencyHealth, AvailabilityAndP99OverTheWindow) {
  core::SimulatedClock clock(core::FromUnixMicros(kStart));
  DependencyHealth health({}, clock);
  for (int i = 0; i < 99; ++i) health.Record(Outcome::kSuccess, milliseconds(8));
  health.Record(Outcome::kFailure, milliseconds(3000));
  DependencyHealth::Snapshot s = health.Read();
  EXPECT_EQ(s.calls, 100);
  EXPECT_EQ(s.successes, 99);
  ASSERT_TRUE(s.availability.has_value());
  EXPECT_DOUBLE_EQ(*s.availability, 0.99);
  // The 99th of 100 calls took 8 ms: the upper bound of its bin, 10 ms.
  EXPECT_EQ(s.latency_p99, microseconds(milliseconds(10)));
  // A second slow call makes the 99th one slow: bin 2000..5000 ms, capped
  // at the slowest call seen.
  health.Record(Outcome::kFailure, milliseconds(3000));
  EXPECT_EQ(health.LatencyP99(), microseconds(milliseconds(3000)));
  EXPECT_DOUBLE_EQ(*health.Availability(), 99.0 / 101.0);
}

TEST(DependencyHealth, P99IsExactWhenCallsTakeAlike) {
  core::SimulatedClock clock(core::FromUnixMicros(kStart));
  DependencyHealth health({}, clock);
  for (int i = 0; i < 10; ++i) health.Record(Outcome::kSuccess, milliseconds(1500));
  EXPECT_EQ(health.LatencyP99(), microseconds(milliseconds(1500)));
  // Slower than the last bound: the slowest call.
  health.Record(Outcome::kSuccess, seconds(90));
  EXPECT_EQ(health.LatencyP99(), microseconds(seconds(90)));
}

TEST(DependencyHealth, OldBucketsLeaveTheWindow) {
  core::SimulatedClock clock(core::FromUnixMicros(kStart));
  DependencyHealth health({}, clock);                    // 60 s in 1 s buckets
  health.Record(Outcome::kFailure, milliseconds(4000));  // t = 0
  clock.Advance(seconds(30));
  health.Record(Outcome::kSuccess, milliseconds(4));  // t = 30 s
  EXPECT_DOUBLE_EQ(*health.Availability(), 0.5);
  clock.Advance(seconds(29) + milliseconds(999));  // t = 59.999 s: the failure is 59.999 s old
  EXPECT_DOUBLE_EQ(*health.Availability(), 0.5);
  clock.Advance(milliseconds(1));  // t = 60 s: its bucket is 60 s old and leaves whole
  EXPECT_DOUBLE_EQ(*health.Availability(), 1.0);
  EXPECT_EQ(health.LatencyP99(), microseconds(milliseconds(4)));
  EXPECT_EQ(health.Read().calls, 1);
  clock.Advance(seconds(30));  // t = 90 s: nothing left
  EXPECT_EQ(health.Availability(), std::nullopt);
  EXPECT_EQ(health.LatencyP99(), std::nullopt);
  // A bucket slot reused after a lap starts empty.
  health.Record(Outcome::kSuccess, milliseconds(1));
  EXPECT_EQ(health.Read().calls, 1);
}

// --- FetchExternal ---

class FetchExternalTest : public ::testing::Test {
 protected:
  FetchExternalTest() : clock_(core::FromUnixMicros(kStart)) {}

  // Defaults for "test_dep", no jitter (delays 500 ms, 1 s), a fixed seed,
  // and a sleeper that records and moves the clock.
  http::ExternalDependencySettings Settings() {
    http::ExternalDependencySettings s = http::ExternalDependencySettings::For("test_dep");
    s.retry.jitter = resilience::JitterMode::kNone;
    s.seed = 42;
    s.sleep = [this](microseconds d) {
      sleeps_.push_back(d);
      clock_.Advance(d);
    };
    return s;
  }

  http::FetchRequest Get(const Receiver& r, const std::string& method = "GET") {
    http::FetchRequest req;
    req.method = method;
    auto url = http::ParseUrl(r.Url("/x"));
    EXPECT_TRUE(url.ok()) << url.status();
    req.url = *url;
    if (method == "POST") req.body = "{}";
    return req;
  }

  core::TimePoint In(microseconds d) { return clock_.Now() + d; }

  core::SimulatedClock clock_;
  std::vector<microseconds> sleeps_;
};

TEST_F(FetchExternalTest, RetriesUnavailableToSuccess) {
  Receiver r;
  r.Script({{503, "", {}}, {503, "", {}}, {200, "keys", {}}});
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "keys");
  EXPECT_EQ(r.Count(), 3u);
  EXPECT_EQ(sleeps_, (std::vector<microseconds>{milliseconds(500), milliseconds(1000)}));
  const http::ExternalDependency::Stats st = dep.stats();
  EXPECT_EQ(st.successes, 1u);
  EXPECT_EQ(st.failures, 0u);
  EXPECT_EQ(st.attempts, 3u);
  EXPECT_EQ(st.retries, 2u);
  // Every attempt is in the health record and the breaker.
  EXPECT_DOUBLE_EQ(*dep.health().Availability(), 1.0 / 3.0);
  EXPECT_EQ(dep.breaker().counters().failures, 2u);
  EXPECT_EQ(dep.breaker().counters().successes, 1u);
  EXPECT_EQ(dep.budget().RetriesInWindow(), 2);
  EXPECT_EQ(dep.budget().RequestsInWindow(), 1);
}

TEST_F(FetchExternalTest, JitterStaysWithinTheSeedsQuarter) {
  Receiver r(0, 503);
  http::ExternalDependencySettings s = Settings();
  s.retry.jitter = resilience::JitterMode::kProportional;
  http::ExternalDependency dep(std::move(s), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503);  // the last answer, whatever its status
  ASSERT_EQ(sleeps_.size(), 2u);
  EXPECT_GE(sleeps_[0], milliseconds(375));
  EXPECT_LE(sleeps_[0], milliseconds(625));
  EXPECT_GE(sleeps_[1], milliseconds(750));
  EXPECT_LE(sleeps_[1], milliseconds(1250));
  EXPECT_EQ(dep.stats().failures, 1u);
}

TEST_F(FetchExternalTest, ClientErrorIsFinalAndNotABreakerFailure) {
  Receiver r(0, 400);
  http::ExternalDependencySettings s = Settings();
  s.breaker.failure_threshold = 1;
  http::ExternalDependency dep(std::move(s), clock_);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)));
    ASSERT_TRUE(res.ok()) << res.status();
    EXPECT_EQ(res->status, 400);
  }
  EXPECT_EQ(r.Count(), 3u);
  EXPECT_TRUE(sleeps_.empty());
  EXPECT_EQ(dep.breaker().state(), BreakerState::kClosed);
  EXPECT_EQ(dep.breaker().counters().failures, 0u);
  EXPECT_DOUBLE_EQ(*dep.health().Availability(), 1.0);
  EXPECT_EQ(dep.stats().successes, 3u);
}

TEST_F(FetchExternalTest, ServerErrorIsAFailureButNotRetried) {
  Receiver r(0, 500);
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 500);
  EXPECT_EQ(r.Count(), 1u);
  EXPECT_EQ(dep.breaker().counters().failures, 1u);
  EXPECT_DOUBLE_EQ(*dep.health().Availability(), 0.0);
  EXPECT_EQ(dep.stats().failures, 1u);
}

TEST_F(FetchExternalTest, TooManyRequestsAndGatewayTimeoutAreRetried) {
  Receiver r;
  r.Script({{429, "", {}}, {504, "", {}}, {200, "", {}}});
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(r.Count(), 3u);
}

TEST_F(FetchExternalTest, RefusedConnectionsAreRetried) {
  Receiver r;
  const http::FetchRequest req = Get(r);
  r.Stop();  // nothing listens on the port now
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, req, In(seconds(30)));
  EXPECT_EQ(res.status().code(), absl::StatusCode::kUnavailable) << res.status();
  EXPECT_EQ(dep.stats().attempts, 3u);
  EXPECT_EQ(sleeps_.size(), 2u);
}

TEST_F(FetchExternalTest, BudgetExhaustionStopsRetries) {
  Receiver r(0, 503);
  http::ExternalDependencySettings s = Settings();
  s.budget.retry_ratio = 0;
  s.budget.min_retries_per_window = 1;
  s.breaker.failure_threshold = 0;  // keep the breaker out of it
  http::ExternalDependency dep(std::move(s), clock_);
  // The first call takes the budget's one retry and is refused its second;
  // the second call gets none.
  ASSERT_TRUE(http::FetchExternal(dep, Get(r), In(seconds(30))).ok());
  EXPECT_EQ(r.Count(), 2u);
  ASSERT_TRUE(http::FetchExternal(dep, Get(r), In(seconds(30))).ok());
  EXPECT_EQ(r.Count(), 3u);
  const http::ExternalDependency::Stats st = dep.stats();
  EXPECT_EQ(st.retries, 1u);
  EXPECT_EQ(st.budget_exhausted, 2u);
  EXPECT_EQ(st.failures, 2u);
}

TEST_F(FetchExternalTest, DeadlineCutsRetries) {
  Receiver r(0, 503);
  http::ExternalDependency dep(Settings(), clock_);
  // Attempt at 0, wait 500 ms, attempt at 500 ms; the next would start at 1.5 s.
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(milliseconds(800)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(r.Count(), 2u);
  EXPECT_EQ(sleeps_, std::vector<microseconds>{milliseconds(500)});
  EXPECT_EQ(dep.stats().budget_exhausted, 0u);
}

TEST_F(FetchExternalTest, AttemptTimeoutsAreCutToTheTimeLeft) {
  // Listens but never accepts: the connection is made (the backlog takes
  // it) and no answer ever comes.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor silent(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  http::FetchRequest req;
  req.url = *http::ParseUrl(core::StrCat("http://127.0.0.1:", silent.local_endpoint().port(), "/x"));
  req.timeout = seconds(60);
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, req, In(milliseconds(300)));
  EXPECT_EQ(res.status().code(), absl::StatusCode::kDeadlineExceeded) << res.status();
  // The attempt waited the 300 ms left, not the request's 60 s.
  EXPECT_NE(res.status().message().find("within 300 ms"), std::string::npos) << res.status();
  // The 500 ms backoff would end past the deadline: no second attempt.
  EXPECT_EQ(dep.stats().attempts, 1u);
}

TEST_F(FetchExternalTest, PassedDeadlineSendsNothing) {
  Receiver r;
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), clock_.Now());
  EXPECT_EQ(res.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(r.Count(), 0u);
  EXPECT_EQ(dep.stats().attempts, 0u);
}

TEST_F(FetchExternalTest, RetryAfterIsHonouredWhenItFitsTheDeadline) {
  Receiver r;
  r.Script({{503, "", {{"Retry-After", "7"}}}, {200, "", {}}});
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  // Longer than the 500 ms backoff: the server's word wins.
  EXPECT_EQ(sleeps_, std::vector<microseconds>{seconds(7)});

  // A Retry-After past the deadline: no retry at all.
  sleeps_.clear();
  r.Script({{503, "", {{"retry-after", "7"}}}, {200, "", {}}});
  res = http::FetchExternal(dep, Get(r), In(seconds(5)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503);
  EXPECT_TRUE(sleeps_.empty());
  EXPECT_EQ(r.Count(), 3u);
}

TEST_F(FetchExternalTest, OpenBreakerRefusesWithoutConnecting) {
  Receiver r(0, 503);
  http::ExternalDependencySettings s = Settings();
  s.breaker.failure_threshold = 2;
  std::vector<BreakerState> transitions;
  http::ExternalDependency dep(std::move(s), clock_,
                               [&](std::string_view, BreakerState, BreakerState to) { transitions.push_back(to); });
  // Two failed attempts open the breaker; it refuses the third attempt.
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(r.Count(), 2u);
  EXPECT_EQ(dep.breaker().state(), BreakerState::kOpen);
  EXPECT_EQ(transitions, std::vector<BreakerState>{BreakerState::kOpen});
  // While open: refused at once, nothing reaches the receiver.
  for (int i = 0; i < 3; ++i) {
    res = http::FetchExternal(dep, Get(r), In(seconds(30)));
    EXPECT_EQ(res.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(res.status().message().find("test_dep"), std::string::npos) << res.status();
    EXPECT_EQ(core::HttpStatusOf(res.status()), 503);
  }
  EXPECT_EQ(r.Count(), 2u);
  const http::ExternalDependency::Stats st = dep.stats();
  EXPECT_EQ(st.refused, 3u);
  EXPECT_EQ(st.breaker_refusals, 4u);
  EXPECT_EQ(st.failures, 1u);
  // After the open timeout a probe goes through.
  clock_.Advance(dep.breaker().settings().open_timeout);
  r.Script({{200, "", {}}});
  res = http::FetchExternal(dep, Get(r), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(r.Count(), 3u);
}

TEST_F(FetchExternalTest, PostIsRetriedOnlyWhenTheCallerAllows) {
  Receiver r;
  r.Script({{503, "", {}}, {503, "", {}}, {200, "", {}}});
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r, "POST"), In(seconds(30)));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(r.Count(), 1u);
  EXPECT_TRUE(sleeps_.empty());

  http::ExternalCallOptions at_least_once;
  at_least_once.retry_non_idempotent = true;
  res = http::FetchExternal(dep, Get(r, "POST"), In(seconds(30)), at_least_once);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(r.Count(), 3u);
  for (const testing::Received& got : r.Requests()) EXPECT_EQ(got.body, "{}");
}

TEST_F(FetchExternalTest, TheCallersWaitReplacesTheSleeperAndMayEndTheCall) {
  Receiver r;
  r.Script({{503, "", {}}, {503, "", {}}, {200, "", {}}});
  http::ExternalDependency dep(Settings(), clock_);
  // A wait that lets the first retry through and then says "stopping".
  std::vector<microseconds> waits;
  http::ExternalCallOptions stoppable;
  stoppable.wait = [&](microseconds d) {
    waits.push_back(d);
    clock_.Advance(d);
    return waits.size() < 2;
  };
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, Get(r), In(seconds(30)), stoppable);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503) << "the last attempt's answer";
  EXPECT_EQ(r.Count(), 2u) << "no attempt after the wait said stop";
  EXPECT_EQ(waits, (std::vector<microseconds>{milliseconds(500), milliseconds(1000)}));
  EXPECT_TRUE(sleeps_.empty()) << "the dependency's sleeper was not used";
  const http::ExternalDependency::Stats st = dep.stats();
  EXPECT_EQ(st.failures, 1u);
  EXPECT_EQ(st.attempts, 2u);
  EXPECT_EQ(st.retries, 1u);
}

TEST_F(FetchExternalTest, MalformedRequestIsNeitherSentNorCounted) {
  Receiver r;
  http::FetchRequest req = Get(r);
  req.headers = {{"X-Bad", "a\r\nb"}};
  http::ExternalDependency dep(Settings(), clock_);
  absl::StatusOr<http::FetchResponse> res = http::FetchExternal(dep, req, In(seconds(30)));
  EXPECT_EQ(res.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Count(), 0u);
  EXPECT_EQ(dep.breaker().counters().failures, 0u);
  EXPECT_EQ(dep.health().Availability(), std::nullopt);
}

TEST(FailureCodeOfHttpStatus, Classes) {
  EXPECT_EQ(http::FailureCodeOfHttpStatus(503), absl::StatusCode::kUnavailable);
  EXPECT_EQ(http::FailureCodeOfHttpStatus(502), absl::StatusCode::kUnavailable);
  EXPECT_EQ(http::FailureCodeOfHttpStatus(429), absl::StatusCode::kUnavailable);
  EXPECT_EQ(http::FailureCodeOfHttpStatus(504), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(http::FailureCodeOfHttpStatus(500), absl::StatusCode::kInternal);
  EXPECT_EQ(http::FailureCodeOfHttpStatus(200), std::nullopt);
  EXPECT_EQ(http::FailureCodeOfHttpStatus(404), std::nullopt);
}

}  // namespace
}  // namespace medgrid
