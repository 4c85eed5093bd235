// Hand-written checkers for the R4 primitive formats (datatypes.html). They
// run on every primitive of every write, so they scan the text once and
// never allocate; std::regex would do both.
#include <cstddef>
#include <string_view>

#include "medgrid/fhir/validator.h"

namespace medgrid::fhir {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// FHIR's \s: the XML Schema whitespace characters.
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Reads `n` digits at `pos` into `value`; false if any is not a digit.
bool ReadDigits(std::string_view s, std::size_t pos, std::size_t n, int& value) {
  if (pos + n > s.size()) return false;
  value = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!IsDigit(s[i])) return false;
    value = value * 10 + (s[i] - '0');
  }
  return true;
}

bool IsLeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && IsLeapYear(year) ? 29 : kDays[month - 1];
}

// YYYY, YYYY-MM or YYYY-MM-DD at the start of `s`; `len` is how much of `s`
// the date takes (4, 7 or 10). The regex excludes year 0000; the month must
// be 01-12 and, beyond the regex's 01-31, the day must exist in that month
// ("SHALL be valid dates").
bool ParseDatePrefix(std::string_view s, std::size_t len) {
  int year, month, day;
  if (!ReadDigits(s, 0, 4, year) || year == 0) return false;
  if (len == 4) return true;
  if (s[4] != '-' || !ReadDigits(s, 5, 2, month) || month < 1 || month > 12) return false;
  if (len == 7) return true;
  if (s[7] != '-' || !ReadDigits(s, 8, 2, day) || day < 1 || day > DaysInMonth(year, month)) return false;
  return true;
}

// hh:mm:ss(.s+)? starting at `pos`; advances `pos` past it.
bool ParseTime(std::string_view s, std::size_t& pos) {
  int hour, minute, second;
  if (!ReadDigits(s, pos, 2, hour) || hour > 23) return false;
  if (pos + 2 >= s.size() || s[pos + 2] != ':' || !ReadDigits(s, pos + 3, 2, minute) || minute > 59) return false;
  // 60 admits a leap second.
  if (pos + 5 >= s.size() || s[pos + 5] != ':' || !ReadDigits(s, pos + 6, 2, second) || second > 60) return false;
  pos += 8;
  if (pos < s.size() && s[pos] == '.') {
    const std::size_t start = ++pos;
    while (pos < s.size() && IsDigit(s[pos])) ++pos;
    if (pos == start) return false;
  }
  return true;
}

// Z | (+|-)hh:mm with hh:mm from 00:00 to 14:00, occupying all of s[pos..].
bool ParseZone(std::string_view s, std::size_t pos) {
  if (pos >= s.size()) return false;
  if (s[pos] == 'Z') return pos + 1 == s.size();
  if (s[pos] != '+' && s[pos] != '-') return false;
  int hour, minute;
  if (pos + 6 != s.size() || !ReadDigits(s, pos + 1, 2, hour) || s[pos + 3] != ':' ||
      !ReadDigits(s, pos + 4, 2, minute)) {
    return false;
  }
  return (hour <= 13 && minute <= 59) || (hour == 14 && minute == 0);
}

// YYYY-MM-DDThh:mm:ss(.s+)?zone, the whole of `s`.
bool IsFullDateTime(std::string_view s) {
  if (s.size() < 20 || !ParseDatePrefix(s, 10) || s[10] != 'T') return false;
  std::size_t pos = 11;
  return ParseTime(s, pos) && ParseZone(s, pos);
}

bool IsLowerHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }

}  // namespace

bool IsValidId(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    const bool ok = IsDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool IsValidDate(std::string_view s) {
  if (s.size() != 4 && s.size() != 7 && s.size() != 10) return false;
  return ParseDatePrefix(s, s.size());
}

bool IsValidDateTime(std::string_view s) {
  if (s.size() == 4 || s.size() == 7 || s.size() == 10) return ParseDatePrefix(s, s.size());
  // With a time, R4 requires seconds and a zone.
  return IsFullDateTime(s);
}

bool IsValidInstant(std::string_view s) { return IsFullDateTime(s); }

bool IsValidTime(std::string_view s) {
  std::size_t pos = 0;
  return ParseTime(s, pos) && pos == s.size();
}

bool IsValidCode(std::string_view s) {
  if (s.empty() || s.front() == ' ' || s.back() == ' ') return false;
  char prev = 'x';
  for (char c : s) {
    // Only single spaces may separate the tokens.
    if (c == ' ' && prev == ' ') return false;
    if (c != ' ' && IsSpace(c)) return false;
    prev = c;
  }
  return true;
}

bool IsValidUri(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (IsSpace(c)) return false;
  }
  return true;
}

bool IsValidOid(std::string_view s) {
  constexpr std::string_view kPrefix = "urn:oid:";
  if (!s.starts_with(kPrefix)) return false;
  s.remove_prefix(kPrefix.size());
  // [0-2](\.(0|[1-9][0-9]*))+
  if (s.size() < 3 || s[0] < '0' || s[0] > '2') return false;
  std::size_t pos = 1;
  int arcs = 0;
  while (pos < s.size()) {
    if (s[pos] != '.') return false;
    const std::size_t start = ++pos;
    while (pos < s.size() && IsDigit(s[pos])) ++pos;
    const std::size_t len = pos - start;
    if (len == 0 || (len > 1 && s[start] == '0')) return false;
    ++arcs;
  }
  return arcs > 0;
}

bool IsValidUuid(std::string_view s) {
  constexpr std::string_view kPrefix = "urn:uuid:";
  if (!s.starts_with(kPrefix)) return false;
  s.remove_prefix(kPrefix.size());
  // 8-4-4-4-12 lowercase hex digits, as the R4 regex requires.
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !IsLowerHex(s[i])) return false;
  }
  return true;
}

bool IsValidBase64(std::string_view s) {
  // (\s*([0-9a-zA-Z\+/=]){4}\s*)+, tightened so that '=' is only the final
  // padding (at most two), as any decoder requires.
  std::size_t chars = 0;
  std::size_t padding = 0;
  for (char c : s) {
    if (IsSpace(c)) continue;
    if (c == '=') {
      ++padding;
    } else if (IsDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '+' || c == '/') {
      if (padding > 0) return false;
    } else {
      return false;
    }
    ++chars;
  }
  return chars > 0 && chars % 4 == 0 && padding <= 2;
}

}  // namespace medgrid::fhir
