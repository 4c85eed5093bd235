#include "medgrid/search/date_range.h"

#include <array>
#include <cctype>

namespace medgrid::search {
namespace {

constexpr int64_t kMicrosPerSecond = 1'000'000;
constexpr int64_t kMicrosPerDay = 86'400 * kMicrosPerSecond;

// Reads exactly `n` digits at `pos`; advances pos.
std::optional<int> Digits(std::string_view s, std::size_t& pos, std::size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

bool IsLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned DaysInMonth(int64_t y, unsigned m) {
  static constexpr std::array<unsigned, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

}  // namespace

// Howard Hinnant's days_from_civil.
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

std::optional<DateRange> ParseDateRange(std::string_view s) {
  std::size_t pos = 0;
  auto year = Digits(s, pos, 4);
  if (!year) return std::nullopt;
  if (pos == s.size()) {
    return DateRange{DaysFromCivil(*year, 1, 1) * kMicrosPerDay, DaysFromCivil(*year + 1, 1, 1) * kMicrosPerDay};
  }
  if (s[pos++] != '-') return std::nullopt;
  auto month = Digits(s, pos, 2);
  if (!month || *month < 1 || *month > 12) return std::nullopt;
  if (pos == s.size()) {
    int64_t ny = *month == 12 ? *year + 1 : *year;
    unsigned nm = *month == 12 ? 1 : *month + 1;
    return DateRange{DaysFromCivil(*year, *month, 1) * kMicrosPerDay, DaysFromCivil(ny, nm, 1) * kMicrosPerDay};
  }
  if (s[pos++] != '-') return std::nullopt;
  auto day = Digits(s, pos, 2);
  if (!day || *day < 1 || static_cast<unsigned>(*day) > DaysInMonth(*year, *month)) return std::nullopt;
  const int64_t day_start = DaysFromCivil(*year, *month, *day) * kMicrosPerDay;
  if (pos == s.size()) return DateRange{day_start, day_start + kMicrosPerDay};
  if (s[pos++] != 'T') return std::nullopt;
  auto hour = Digits(s, pos, 2);
  if (!hour || *hour > 23 || pos >= s.size() || s[pos++] != ':') return std::nullopt;
  auto minute = Digits(s, pos, 2);
  if (!minute || *minute > 59) return std::nullopt;
  int64_t start = day_start + (*hour * 3600LL + *minute * 60LL) * kMicrosPerSecond;
  int64_t width = 60 * kMicrosPerSecond;
  if (pos < s.size() && s[pos] == ':') {
    ++pos;
    auto second = Digits(s, pos, 2);
    if (!second || *second > 60) return std::nullopt;  // 60: a leap second
    start += *second * kMicrosPerSecond;
    width = kMicrosPerSecond;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      std::size_t digits = 0;
      int64_t unit = kMicrosPerSecond;
      int64_t frac = 0;
      while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
        if (digits < 6) {
          unit /= 10;
          frac += (s[pos] - '0') * unit;
        }
        ++digits;
        ++pos;
      }
      if (digits == 0) return std::nullopt;
      start += frac;
      width = unit;
    }
  }
  if (pos < s.size()) {
    if (s[pos] == 'Z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      const int sign = s[pos++] == '-' ? -1 : 1;
      auto oh = Digits(s, pos, 2);
      if (!oh || *oh > 14 || pos >= s.size() || s[pos++] != ':') return std::nullopt;
      auto om = Digits(s, pos, 2);
      if (!om || *om > 59) return std::nullopt;
      start -= sign * (*oh * 3600LL + *om * 60LL) * kMicrosPerSecond;
    } else {
      return std::nullopt;
    }
  }
  if (pos != s.size()) return std::nullopt;
  return DateRange{start, start + width};
}

}  // namespace medgrid::search
