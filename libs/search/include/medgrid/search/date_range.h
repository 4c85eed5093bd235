// FHIR date, dateTime and instant values as time ranges, the way search
// compares them (search.html#date): a value stands for the whole interval its
// precision implies. "2020" is all of 2020, "2020-03-01T10:00" is that minute.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

namespace medgrid::search {

// Microseconds since the Unix epoch (UTC), half-open: [lo, hi).
struct DateRange {
  static constexpr int64_t kMin = std::numeric_limits<int64_t>::min();  // unbounded below
  static constexpr int64_t kMax = std::numeric_limits<int64_t>::max();  // unbounded above
  int64_t lo = kMin;
  int64_t hi = kMax;
  friend bool operator==(const DateRange&, const DateRange&) = default;
};

// Parses YYYY, YYYY-MM, YYYY-MM-DD, or a date with a time of day
// ("T" hh:mm, hh:mm:ss or hh:mm:ss.fraction, then "Z", "+hh:mm", "-hh:mm" or
// nothing). A value without a zone is read as UTC. The range spans the
// precision written: a year, month, day, minute, second, or the last digit
// of the fraction. Returns nullopt for anything else, including impossible
// dates such as 2021-02-30.
std::optional<DateRange> ParseDateRange(std::string_view text);

// Days since 1970-01-01 of a proleptic Gregorian date (month 1-12).
int64_t DaysFromCivil(int64_t year, unsigned month, unsigned day);

}  // namespace medgrid::search
