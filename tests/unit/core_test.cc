#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/core/worker.h"

namespace medgrid::core {
namespace {

TEST(Clock, SimulatedClockMovesOnlyWhenTold) {
  SimulatedClock clock(FromUnixMicros(1'000'000));
  EXPECT_EQ(ToUnixMicros(clock.Now()), 1'000'000);
  clock.Advance(std::chrono::milliseconds(1500));
  EXPECT_EQ(ToUnixMicros(clock.Now()), 2'500'000);
}

TEST(Clock, FarInstantsSaturate) {
  EXPECT_EQ(FromUnixMicros(32'503'680'000'000'000), TimePoint::max());  // year 3000
  EXPECT_EQ(FromUnixMicros(-32'503'680'000'000'000), TimePoint::min());
  EXPECT_GT(ToUnixMicros(TimePoint::max()), 0);
}

TEST(Clock, Formats) {
  TimePoint t = FromUnixMicros(1'795'000'000'123'456);  // 2026-11-18T...
  EXPECT_EQ(FormatInstant(FromUnixMicros(0)), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatInstant(FromUnixMicros(86'400'000'000 + 1'234'000)), "1970-01-02T00:00:01.234Z");
  EXPECT_EQ(FormatHttpDate(FromUnixMicros(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(FormatInstant(t).size(), 24u);
}

TEST(Clock, HttpDateRoundTrip) {
  TimePoint t = FromUnixMicros(1'795'000'000'000'000);
  EXPECT_EQ(ParseHttpDate(FormatHttpDate(t)), FromUnixMicros(1'795'000'000'000'000));
  EXPECT_EQ(ParseHttpDate("Thu, 01 Jan 1970 00:00:00 GMT"), FromUnixMicros(0));
  EXPECT_EQ(ParseHttpDate("Thu, 01 Jan 1970 00:00:00 UTC"), std::nullopt);
  EXPECT_EQ(ParseHttpDate("Thursday, 01-Jan-70 00:00:00 GMT"), std::nullopt);
  EXPECT_EQ(ParseHttpDate("Thu, 01 Foo 1970 00:00:00 GMT"), std::nullopt);
  EXPECT_EQ(ParseHttpDate("Thu, 32 Jan 1970 00:00:00 GMT"), std::nullopt);
  EXPECT_EQ(ParseHttpDate(""), std::nullopt);
}

TEST(Status, ErrorCarriesPayloads) {
  absl::Status st = Error(absl::StatusCode::kInvalidArgument, "bad").Http(422).Issue("processing").Path("X.y");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "bad");
  EXPECT_EQ(HttpStatusOf(st), 422);
  EXPECT_EQ(IssueCodeOf(st), "processing");
  EXPECT_EQ(PathOf(st), "X.y");
  EXPECT_EQ(HttpStatusOf(absl::NotFoundError("x")), std::nullopt);
}

TEST(Strings, CatSplitReplace) {
  EXPECT_EQ(StrCat("a", std::string_view("b"), std::string("c"), 12, 'd', int64_t{-3}), "abc12d-3");
  EXPECT_EQ(StrSplit("a,,b", ','), (std::vector<std::string_view>{"a", "", "b"}));
  EXPECT_EQ(StrSplit("", ','), (std::vector<std::string_view>{""}));
  EXPECT_EQ(StrReplaceAll("a?b?", "?", "$1"), "a$1b$1");
}

TEST(Logging, EscapesJson) {
  std::string out;
  AppendJsonEscaped(out, "a\"b\\c\n\x01");
  EXPECT_EQ(out, "a\\\"b\\\\c\\n\\u0001");
}

}  // namespace
TEST(Worker, RunsItsStepUntilTheStepEndsIt) {
  std::atomic<int> runs{0};
  core::Worker worker([&]() -> std::optional<std::chrono::milliseconds> {
    if (++runs == 3) return std::nullopt;
    return std::chrono::milliseconds(0);
  });
  worker.Start();
  while (runs.load() < 3) std::this_thread::yield();
  worker.Stop();  // joins the thread, which ended by itself
  EXPECT_EQ(runs.load(), 3) << "no step after the one that ended it";
}

TEST(Worker, StopWakesAPausingWorker) {
  std::atomic<int> runs{0};
  core::Worker worker([&] {
    ++runs;
    return std::optional<std::chrono::milliseconds>(std::chrono::hours(1));
  });
  worker.Start();
  while (runs.load() == 0) std::this_thread::yield();
  worker.Stop();  // would hang for an hour without the wake-up
  EXPECT_EQ(runs.load(), 1);
  worker.Stop();  // again: a no-op
}

TEST(Worker, WakeCutsAPauseShort) {
  std::atomic<int> runs{0};
  core::Worker worker([&] {
    ++runs;
    return std::optional<std::chrono::milliseconds>(std::chrono::hours(1));
  });
  worker.Start();
  EXPECT_TRUE(worker.running());
  while (runs.load() == 0) std::this_thread::yield();
  worker.Wake();  // without it the second run would be an hour away
  while (runs.load() < 2) std::this_thread::yield();
  worker.Stop();
  EXPECT_FALSE(worker.running());
}

TEST(Worker, PauseWaitsUntilStopped) {
  core::Worker idle([] { return std::optional<std::chrono::milliseconds>(std::chrono::hours(1)); });
  EXPECT_FALSE(idle.Pause(std::chrono::hours(1))) << "never started: false at once";

  std::atomic<int> pauses{0};
  std::atomic<bool> last{true};
  core::Worker worker([&]() -> std::optional<std::chrono::milliseconds> {
    if (pauses.load() == 0) {
      last = worker.Pause(std::chrono::milliseconds(1));  // runs out
      ++pauses;
      return std::chrono::milliseconds(0);
    }
    last = worker.Pause(std::chrono::hours(1));  // until Stop
    ++pauses;
    return std::nullopt;
  });
  worker.Start();
  while (pauses.load() == 0) std::this_thread::yield();
  EXPECT_TRUE(last.load()) << "a pause that ran out while running";
  worker.Wake();  // does not end a pause
  worker.Stop();  // would hang for an hour without ending the pause
  EXPECT_EQ(pauses.load(), 2);
  EXPECT_FALSE(last.load());
}

TEST(Worker, BackoffDoublesFrom100MsTo5s) {
  using Ms = std::chrono::milliseconds;
  EXPECT_EQ(core::NextBackoff(Ms(0)), Ms(100));
  EXPECT_EQ(core::NextBackoff(Ms(100)), Ms(200));
  EXPECT_EQ(core::NextBackoff(Ms(4000)), Ms(5000));
  EXPECT_EQ(core::NextBackoff(Ms(5000)), Ms(5000));
}

TEST(Ids, TimeOrderedIdsSortByTimeAndAreUuidV7) {
  const core::TimePoint t = core::FromUnixMicros(1'700'000'000'000'000);
  const std::string a = core::TimeOrderedId(t);
  EXPECT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '7');
  EXPECT_NE(a, core::TimeOrderedId(t));
  EXPECT_LT(a, core::TimeOrderedId(t + std::chrono::milliseconds(1)));
  EXPECT_EQ(a.substr(0, 8), "018bcfe5") << "the first 32 of 48 bits of Unix milliseconds";
}

TEST(Base64Test, DecodesBothAlphabetsWithOrWithoutPadding) {
  EXPECT_EQ(core::Base64Decode("aGVsbG8="), "hello");
  EXPECT_EQ(core::Base64Decode("aGVs\nbG8"), "hello");  // wrapped, unpadded
  EXPECT_EQ(core::Base64Decode("+/8="), std::string("\xfb\xff"));
  EXPECT_EQ(core::Base64Decode("-_8", /*url_safe=*/true), std::string("\xfb\xff"));
  EXPECT_EQ(core::Base64Decode("-_8"), std::nullopt);              // URL alphabet in standard data
  EXPECT_EQ(core::Base64Decode("+/8", /*url_safe=*/true), std::nullopt);
  EXPECT_EQ(core::Base64Decode("aGV s", /*url_safe=*/true), std::nullopt);  // no whitespace in URL-safe
  EXPECT_EQ(core::Base64Decode(""), "");
}

}  // namespace medgrid::core
