// Structured JSON logging on spdlog.
//
// Each line is one JSON object: {"ts":...,"level":...,"event":...,<fields>}.
// Fields carry ids (request id, tenant, route, resource type and id), never
// clinical content or secrets: callers must not pass resource bodies.
//
//   core::InitLogging(core::LogLevel::kInfo);
//   core::Log(core::LogLevel::kInfo, "http.request",
//             {{"request_id", id}, {"tenant", tenant}, {"status", "200"}});
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace medgrid::core {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };

struct LogField {
  std::string_view key;
  std::string_view value;
};

// Installs the process-wide JSON logger writing to stderr. Call once at
// start-up, before other threads log. Idempotent.
void InitLogging(LogLevel level);

// Writes out buffered lines (they are otherwise written every second, at
// 64 KiB, and at once for warn and above). Call before exiting.
void FlushLogs();

// Parses "debug", "info", "warn", "error" or "off"; false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel& level);

// Writes one line. Thread-safe.
void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields = {});

bool LogEnabled(LogLevel level);

// Appends `s` to `out` as the body of a JSON string (no quotes), escaped.
void AppendJsonEscaped(std::string& out, std::string_view s);

}  // namespace medgrid::core
