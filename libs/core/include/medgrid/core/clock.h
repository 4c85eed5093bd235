// Injectable wall clock. Production code takes a `Clock&`; tests pass a
// SimulatedClock and move it by hand, so nothing depends on real time.
//
//   core::SimulatedClock clock(core::FromUnixMicros(0));
//   clock.Advance(std::chrono::seconds(30));
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string_view>
#include <string>

namespace medgrid::core {

using TimePoint = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  // Current wall time. Thread-safe.
  virtual TimePoint Now() const = 0;
};

// The system clock.
class RealClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }
};

// A clock that only moves when told. Thread-safe.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(TimePoint start) : now_(start) {}
  TimePoint Now() const override;
  void Advance(std::chrono::microseconds d);
  void Set(TimePoint t);

 private:
  mutable std::mutex mu_;
  TimePoint now_;  // guarded by mu_
};

// Saturates at TimePoint::min()/max() outside the representable range
// (about years 1678 to 2262).
TimePoint FromUnixMicros(int64_t micros);
int64_t ToUnixMicros(TimePoint t);

// A new random id in UUIDv7 form: its first 48 bits are the Unix time of
// `now` in milliseconds, so ids made later sort later and new rows land at
// the right edge of an index on them instead of scattering across it; 74
// random bits follow. Thread-safe.
std::string TimeOrderedId(TimePoint now);

// FHIR instant with millisecond precision in UTC, e.g. 2026-11-26T10:00:00.123Z.
std::string FormatInstant(TimePoint t);
// RFC 7231 IMF-fixdate for Last-Modified, e.g. "Thu, 26 Nov 2026 10:00:00 GMT".
std::string FormatHttpDate(TimePoint t);
// Parses an IMF-fixdate (the only form HTTP senders may generate); nullopt
// for anything else.
std::optional<TimePoint> ParseHttpDate(std::string_view text);

}  // namespace medgrid::core
