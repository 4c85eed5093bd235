#include "gtest/gtest.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

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
}  // namespace medgrid::core
