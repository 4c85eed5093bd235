#include <cstdint>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "medgrid/search/date_range.h"
#include "medgrid/search/text.h"

namespace medgrid::search {
namespace {

constexpr int64_t kUs = 1'000'000;      // microseconds per second
constexpr int64_t kDay = 86'400 * kUs;  // microseconds per day

// Seconds since the epoch of some UTC instants, computed independently
// (date -u -d ... +%s).
constexpr int64_t k2020 = 1'577'836'800;       // 2020-01-01T00:00:00Z
constexpr int64_t k2020Feb = 1'580'515'200;    // 2020-02-01
constexpr int64_t k2020Mar = 1'583'020'800;    // 2020-03-01
constexpr int64_t k2020Dec = 1'606'780'800;    // 2020-12-01
constexpr int64_t k2021 = 1'609'459'200;       // 2021-01-01
constexpr int64_t k2022 = 1'640'995'200;       // 2022-01-01
constexpr int64_t k2000Feb29 = 951'782'400;    // 2000-02-29
constexpr int64_t k2024Feb29 = 1'709'164'800;  // 2024-02-29

DateRange Range(int64_t lo_us, int64_t width_us) { return DateRange{lo_us, lo_us + width_us}; }

std::optional<DateRange> P(const char* s) { return ParseDateRange(s); }

// --- ParseDateRange ------------------------------------------------------------

TEST(ParseDateRangeTest, YearSpansTheWholeYear) {
  EXPECT_EQ(P("2020"), (DateRange{k2020 * kUs, k2021 * kUs}));
  EXPECT_EQ(P("2021"), (DateRange{k2021 * kUs, k2022 * kUs}));
  // 2020 is a leap year, 2021 is not.
  EXPECT_EQ(P("2020")->hi - P("2020")->lo, 366 * kDay);
  EXPECT_EQ(P("2021")->hi - P("2021")->lo, 365 * kDay);
  EXPECT_EQ(P("1970"), (DateRange{0, 365 * kDay}));
}

TEST(ParseDateRangeTest, MonthSpansTheWholeMonth) {
  EXPECT_EQ(P("2020-02"), (DateRange{k2020Feb * kUs, k2020Mar * kUs}));
  EXPECT_EQ(P("2020-02")->hi - P("2020-02")->lo, 29 * kDay);
  EXPECT_EQ(P("2021-02")->hi - P("2021-02")->lo, 28 * kDay);
  EXPECT_EQ(P("2020-01"), (DateRange{k2020 * kUs, k2020Feb * kUs}));
  // December rolls over into the next year.
  EXPECT_EQ(P("2020-12"), (DateRange{k2020Dec * kUs, k2021 * kUs}));
  EXPECT_EQ(P("2020-04")->hi - P("2020-04")->lo, 30 * kDay);
}

TEST(ParseDateRangeTest, DaySpansOneDay) {
  EXPECT_EQ(P("2020-03-01"), Range(k2020Mar * kUs, kDay));
  EXPECT_EQ(P("2020-01-01"), Range(k2020 * kUs, kDay));
  EXPECT_EQ(P("2020-12-31"), Range(k2021 * kUs - kDay, kDay));
  EXPECT_EQ(P("1969-12-31"), Range(-kDay, kDay));
}

TEST(ParseDateRangeTest, LeapYears) {
  EXPECT_EQ(P("2000-02-29"), Range(k2000Feb29 * kUs, kDay));  // divisible by 400
  EXPECT_EQ(P("2024-02-29"), Range(k2024Feb29 * kUs, kDay));
  EXPECT_EQ(P("2020-02-29"), Range(k2020Mar * kUs - kDay, kDay));
  EXPECT_EQ(P("1900-02-29"), std::nullopt);  // divisible by 100, not 400
  EXPECT_EQ(P("2100-02-29"), std::nullopt);
  EXPECT_EQ(P("2021-02-29"), std::nullopt);
  EXPECT_EQ(P("2023-02-29"), std::nullopt);
}

TEST(ParseDateRangeTest, ImpossibleDates) {
  for (const char* bad : {"2021-02-30", "2020-02-30", "2021-04-31", "2021-06-31", "2021-09-31", "2021-11-31",
                          "2021-01-32", "2021-01-00", "2021-00", "2021-13", "2021-00-10", "2021-13-01"}) {
    EXPECT_EQ(P(bad), std::nullopt) << bad;
  }
  for (const char* ok : {"2021-01-31", "2021-03-31", "2021-04-30", "2021-12-31"}) {
    EXPECT_NE(P(ok), std::nullopt) << ok;
  }
}

TEST(ParseDateRangeTest, MinuteAndSecondPrecision) {
  const int64_t ten_thirty = (k2020Mar + 10 * 3600 + 30 * 60) * kUs;
  EXPECT_EQ(P("2020-03-01T10:30"), Range(ten_thirty, 60 * kUs));
  EXPECT_EQ(P("2020-03-01T10:30Z"), Range(ten_thirty, 60 * kUs));
  EXPECT_EQ(P("2020-03-01T10:30:15"), Range(ten_thirty + 15 * kUs, kUs));
  EXPECT_EQ(P("2020-03-01T10:30:15Z"), Range(ten_thirty + 15 * kUs, kUs));
  EXPECT_EQ(P("2020-03-01T00:00:00"), Range(k2020Mar * kUs, kUs));
  EXPECT_EQ(P("2020-03-01T23:59:59"), Range((k2020Mar + 86'399) * kUs, kUs));
  // A leap second is accepted.
  EXPECT_EQ(P("2016-12-31T23:59:60Z")->hi - P("2016-12-31T23:59:60Z")->lo, kUs);
}

TEST(ParseDateRangeTest, FractionsSpanTheirLastDigit) {
  const int64_t base = (k2020Mar + 10 * 3600 + 30 * 60 + 15) * kUs;
  EXPECT_EQ(P("2020-03-01T10:30:15.5Z"), Range(base + 500'000, 100'000));
  EXPECT_EQ(P("2020-03-01T10:30:15.50Z"), Range(base + 500'000, 10'000));
  EXPECT_EQ(P("2020-03-01T10:30:15.123"), Range(base + 123'000, 1'000));
  EXPECT_EQ(P("2020-03-01T10:30:15.000001"), Range(base + 1, 1));
  EXPECT_EQ(P("2020-03-01T10:30:15.123456"), Range(base + 123'456, 1));
  // Digits beyond the microsecond are accepted and ignored.
  EXPECT_EQ(P("2020-03-01T10:30:15.1234567"), Range(base + 123'456, 1));
  EXPECT_EQ(P("2020-03-01T10:30:15.5+01:00"), Range(base - 3600 * kUs + 500'000, 100'000));
}

TEST(ParseDateRangeTest, ZonesShiftToUtc) {
  const int64_t utc = (k2020Mar + 10 * 3600) * kUs;
  EXPECT_EQ(P("2020-03-01T10:00:00Z"), Range(utc, kUs));
  EXPECT_EQ(P("2020-03-01T10:00:00"), P("2020-03-01T10:00:00Z"));  // no zone: UTC
  EXPECT_EQ(P("2020-03-01T10:00:00+00:00"), Range(utc, kUs));
  EXPECT_EQ(P("2020-03-01T10:00:00-00:00"), Range(utc, kUs));
  EXPECT_EQ(P("2020-03-01T10:00:00+02:00"), Range(utc - 2 * 3600 * kUs, kUs));
  EXPECT_EQ(P("2020-03-01T10:00:00-05:30"), Range(utc + (5 * 3600 + 1800) * kUs, kUs));
  EXPECT_EQ(P("2020-03-01T10:00+14:00"), Range(utc - 14 * 3600 * kUs, 60 * kUs));
  // A zone can move the instant to another day.
  EXPECT_EQ(P("2020-03-01T01:00:00+02:00"), Range(k2020Mar * kUs - 3600 * kUs, kUs));
  EXPECT_EQ(P("2020-12-31T23:00:00-01:00"), Range(k2021 * kUs, kUs));
}

TEST(ParseDateRangeTest, MalformedInput) {
  for (const char* bad : {"",
                          "2",
                          "202",
                          "20201",
                          "abcd",
                          "2020-",
                          "2020-1",
                          "2020-001",
                          "2020/01/01",
                          "20200101",
                          "2020-01-1",
                          "2020-01-01T",
                          "2020-01-01T10",
                          "2020-01-01T10:",
                          "2020-01-01T1:00",
                          "2020-01-01T24:00",
                          "2020-01-01T10:60",
                          "2020-01-01T10:00:61",
                          "2020-01-01T10:00:0",
                          "2020-01-01T10:00:00.",
                          "2020-01-01T10:00:00.Z",
                          "2020-01-01T10:00+02",
                          "2020-01-01T10:00+0200",
                          "2020-01-01T10:00+15:00",
                          "2020-01-01T10:00+02:60",
                          "2020-01-01T10:00Zjunk",
                          "2020-01-01T10:00:00X",
                          "2020-01-01 10:00",
                          "2020-01-01Z",
                          "2020Z",
                          "2020-01-01T10:00:00.5.5",
                          " 2020",
                          "2020 ",
                          "+2020",
                          "-2020"}) {
    EXPECT_EQ(P(bad), std::nullopt) << "'" << bad << "'";
  }
}

TEST(DaysFromCivilTest, KnownDays) {
  EXPECT_EQ(DaysFromCivil(1970, 1, 1), 0);
  EXPECT_EQ(DaysFromCivil(1969, 12, 31), -1);
  EXPECT_EQ(DaysFromCivil(2020, 1, 1), k2020 / 86'400);
  EXPECT_EQ(DaysFromCivil(2000, 2, 29), k2000Feb29 / 86'400);
  EXPECT_EQ(DaysFromCivil(2000, 3, 1) - DaysFromCivil(2000, 2, 28), 2);
  EXPECT_EQ(DaysFromCivil(1900, 3, 1) - DaysFromCivil(1900, 2, 28), 1);
  EXPECT_EQ(DaysFromCivil(1600, 1, 1), -135'140);
}

// --- FoldText -----------------------------------------------------------------

TEST(FoldTextTest, AccentsAndCaseFoldTogether) {
  EXPECT_EQ(FoldText("Élodie ÇAĞLAR"), "elodie caglar");
  EXPECT_EQ(FoldText("elodie caglar"), "elodie caglar");
  EXPECT_EQ(FoldText("Ñandú"), "nandu");
  EXPECT_EQ(FoldText("Ångström"), "angstrom");
  EXPECT_EQ(FoldText("Zoë Müller-Lüdenscheidt"), "zoe muller-ludenscheidt");
  // Already decomposed input folds the same as composed input.
  EXPECT_EQ(FoldText("e\xCC\x81"), "e");  // e + U+0301
  EXPECT_EQ(FoldText("\xC3\xA9"), "e");   // U+00E9
  // Dotted capital I (U+0130) decomposes to I + combining dot.
  EXPECT_EQ(FoldText("İstanbul"), "istanbul");
}

TEST(FoldTextTest, CaseFoldingBeyondAscii) {
  EXPECT_EQ(FoldText("HeLLo WORLD"), "hello world");
  // Greek: accents removed, capital and final sigma fold to sigma.
  EXPECT_EQ(FoldText("ΣΊΣΥΦΟΣ"), FoldText("σίσυφος"));
  EXPECT_EQ(FoldText("σίσυφος"), "σισυφοσ");
  EXPECT_EQ(FoldText("ПРИВЕТ"), "привет");
  // Characters without case or marks pass through, also outside the BMP.
  EXPECT_EQ(FoldText("日本語"), "日本語");
  EXPECT_EQ(FoldText("a\xF0\x9F\x98\x80"
                     "b"),
            "a\xF0\x9F\x98\x80"
            "b");  // U+1F600
  EXPECT_EQ(FoldText("123-456_x"), "123-456_x");
}

TEST(FoldTextTest, WhitespaceCollapsesAndTrims) {
  EXPECT_EQ(FoldText("  a \t\n b  "), "a b");
  EXPECT_EQ(FoldText("a\r\n\r\nb"), "a b");
  EXPECT_EQ(FoldText("   "), "");
  EXPECT_EQ(FoldText(""), "");
  EXPECT_EQ(FoldText("a"), "a");
  // Non-ASCII spaces: no-break space and ideographic space.
  EXPECT_EQ(FoldText("\xC2\xA0"
                     "Élan\xC2\xA0\xC2\xA0vital\xE3\x80\x80"),
            "elan vital");
  EXPECT_EQ(FoldText("É  É"), "e e");
}

TEST(FoldTextTest, InvalidUtf8IsDropped) {
  EXPECT_EQ(FoldText("a\xFF"
                     "b"),
            "ab");
  EXPECT_EQ(FoldText("caf\xC3"), "caf");  // truncated sequence at the end
  EXPECT_EQ(FoldText("\xC0\xAF"
                     "x"),
            "x");  // overlong encoding of '/'
  EXPECT_EQ(FoldText("\xED\xA0\x80"
                     "Y"),
            "y");                           // encoded surrogate
  EXPECT_EQ(FoldText("\x80\x80\x80"), "");  // lone continuation bytes
  EXPECT_EQ(FoldText("Ég\xFE"
                     "al"),
            "egal");
}

TEST(FoldTextTest, IsIdempotent) {
  for (const char* s : {"Élodie ÇAĞLAR", "  X  y ", "ΣΊΣΥΦΟΣ",
                        "a\xFF"
                        "b",
                        "Straße"}) {
    const std::string once = FoldText(s);
    EXPECT_EQ(FoldText(once), once) << s;
  }
}

}  // namespace
}  // namespace medgrid::search
