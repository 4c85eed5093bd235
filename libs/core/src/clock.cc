#include "medgrid/core/clock.h"

#include <ctime>
#include <limits>
#include <random>

#include "fmt/format.h"

namespace medgrid::core {

TimePoint SimulatedClock::Now() const {
  std::lock_guard lock(mu_);
  return now_;
}

void SimulatedClock::Advance(std::chrono::microseconds d) {
  std::lock_guard lock(mu_);
  now_ += d;
}

void SimulatedClock::Set(TimePoint t) {
  std::lock_guard lock(mu_);
  now_ = t;
}

std::string TimeOrderedId(TimePoint now) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const uint64_t ms = static_cast<uint64_t>(ToUnixMicros(now) / 1000);
  const uint64_t r1 = rng();
  const uint64_t r2 = rng();
  const uint64_t hi = (ms << 16) | 0x7000 | (r1 & 0x0fff);
  const uint64_t lo = (r2 & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48,
                     lo & 0xffffffffffffULL);
}

TimePoint FromUnixMicros(int64_t micros) {
  // TimePoint counts nanoseconds, which overflow past the year 2262; saturate
  // instead of wrapping so far-future instants stay far in the future.
  constexpr int64_t kLimit = std::numeric_limits<int64_t>::max() / 1000;
  if (micros > kLimit) return TimePoint::max();
  if (micros < -kLimit) return TimePoint::min();
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(std::chrono::microseconds(micros)));
}

int64_t ToUnixMicros(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

namespace {
std::tm UtcTm(TimePoint t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return tm;
}
}  // namespace

std::string FormatInstant(TimePoint t) {
  std::tm tm = UtcTm(t);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
  if (ms < 0) ms += 1000;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

std::string FormatHttpDate(TimePoint t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm = UtcTm(t);
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT", kDays[tm.tm_wday], tm.tm_mday,
                     kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::optional<TimePoint> ParseHttpDate(std::string_view text) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  // "Thu, 26 Nov 2026 10:00:00 GMT"
  if (text.size() != 29 || text[3] != ',' || text[4] != ' ' || text[7] != ' ' || text[11] != ' ' ||
      text[16] != ' ' || text[19] != ':' || text[22] != ':' || text.substr(25) != " GMT") {
    return std::nullopt;
  }
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    out = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      out = out * 10 + (text[i] - '0');
    }
    return true;
  };
  std::tm tm{};
  int month = -1;
  for (int m = 0; m < 12; ++m) {
    if (text.substr(8, 3) == kMonths[m]) month = m;
  }
  if (month < 0 || !num(5, 2, tm.tm_mday) || !num(12, 4, tm.tm_year) || !num(17, 2, tm.tm_hour) ||
      !num(20, 2, tm.tm_min) || !num(23, 2, tm.tm_sec)) {
    return std::nullopt;
  }
  if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60) return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon = month;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace medgrid::core
