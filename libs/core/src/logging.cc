#include "medgrid/core/logging.h"

#include <chrono>

#include "medgrid/core/clock.h"
#include <unistd.h>

#include "spdlog/sinks/base_sink.h"
#include "spdlog/spdlog.h"

namespace medgrid::core {
namespace {

spdlog::level::level_enum ToSpd(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return spdlog::level::debug;
    case LogLevel::kInfo: return spdlog::level::info;
    case LogLevel::kWarn: return spdlog::level::warn;
    case LogLevel::kError: return spdlog::level::err;
    case LogLevel::kOff: return spdlog::level::off;
  }
  return spdlog::level::info;
}

std::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "info";
}

// Writes to a file descriptor through a buffer: spdlog's own stderr sink
// flushes every line, one write(2) per request, which cost about 10% of the
// read-by-id rate. Lines reach the fd when 64 KiB have gathered, at warn and
// above, on the periodic flush (every second) and at shutdown.
class BufferedFdSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit BufferedFdSink(int fd) : fd_(fd) { buffer_.reserve(kFlushBytes * 2); }
  ~BufferedFdSink() override { flush_(); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    buffer_.append(formatted.data(), formatted.size());
    if (buffer_.size() >= kFlushBytes || msg.level >= spdlog::level::warn) flush_();
  }

  void flush_() override {
    std::size_t done = 0;
    while (done < buffer_.size()) {
      ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (n <= 0) break;  // nowhere to report a failing log stream; drop the rest
      done += static_cast<std::size_t>(n);
    }
    buffer_.clear();
  }

 private:
  static constexpr std::size_t kFlushBytes = 64 * 1024;
  const int fd_;
  std::string buffer_;
};

}  // namespace

void InitLogging(LogLevel level) {
  auto logger = spdlog::get("medgrid");
  if (!logger) {
    logger = std::make_shared<spdlog::logger>("medgrid", std::make_shared<BufferedFdSink>(STDERR_FILENO));
    logger->set_pattern("%v");
    spdlog::set_default_logger(logger);
    spdlog::flush_every(std::chrono::seconds(1));
  }
  logger->set_level(ToSpd(level));
  logger->flush_on(spdlog::level::warn);
}

void FlushLogs() { spdlog::default_logger_raw()->flush(); }

bool ParseLogLevel(std::string_view text, LogLevel& level) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError, LogLevel::kOff}) {
    if (text == LevelName(l)) {
      level = l;
      return true;
    }
  }
  return false;
}

bool LogEnabled(LogLevel level) { return spdlog::default_logger_raw()->should_log(ToSpd(level)); }

void AppendJsonEscaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  std::string line;
  line.reserve(128);
  line += "{\"ts\":\"";
  line += FormatInstant(std::chrono::system_clock::now());
  line += "\",\"level\":\"";
  line += LevelName(level);
  line += "\",\"event\":\"";
  AppendJsonEscaped(line, event);
  line += '"';
  for (const auto& f : fields) {
    line += ",\"";
    AppendJsonEscaped(line, f.key);
    line += "\":\"";
    AppendJsonEscaped(line, f.value);
    line += '"';
  }
  line += '}';
  spdlog::default_logger_raw()->log(ToSpd(level), "{}", line);
}

}  // namespace medgrid::core
