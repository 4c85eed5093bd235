#include "medgrid/events/consumer_loop.h"

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"

namespace medgrid::events {

ConsumerLoop::ConsumerLoop(std::string name, std::unique_ptr<Consumer> consumer, Consumer::Handler handle, int batch,
                           Setup setup)
    : name_(std::move(name)),
      consumer_(std::move(consumer)),
      handle_(std::move(handle)),
      batch_(batch),
      setup_(std::move(setup)) {}

ConsumerLoop::~ConsumerLoop() { Stop(); }

std::optional<std::chrono::milliseconds> ConsumerLoop::Step() {
  using Ms = std::chrono::milliseconds;
  if (!set_up_ && setup_) {
    absl::Status s = setup_(*consumer_);
    if (!s.ok()) {
      core::Log(core::LogLevel::kWarn, "kafka.setup_failed", {{"consumer", name_}, {"error", std::string(s.message())}});
      return backoff_ = core::NextBackoff(backoff_);
    }
  }
  set_up_ = true;
  absl::StatusOr<int> handled = consumer_->Poll(handle_, batch_, Ms(100));
  if (handled.ok()) {
    handled_ += *handled;
    backoff_ = Ms(0);
  } else {
    ++failures_;
    backoff_ = core::NextBackoff(backoff_);
    core::Log(core::LogLevel::kWarn, "kafka.handler_failed",
              {{"consumer", name_}, {"error", std::string(handled.status().message())}});
  }
  if (std::chrono::steady_clock::now() >= next_lag_) {
    next_lag_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    absl::StatusOr<std::map<std::pair<std::string, int32_t>, int64_t>> lag = consumer_->Lag(Ms(1000));
    if (lag.ok() && !lag->empty()) {
      int64_t total = 0;
      for (const auto& [tp, n] : *lag) total += n;
      lag_ = total;
      if (total > 0) {
        core::Log(core::LogLevel::kInfo, "kafka.consumer_lag", {{"consumer", name_}, {"lag", std::to_string(total)}});
      }
    }
  }
  return backoff_;
}

ConsumerLoop::Stats ConsumerLoop::stats() const {
  Stats s;
  s.handled = handled_.load();
  s.failures = failures_.load();
  s.lag = lag_.load();
  return s;
}

Consumer::Handler ChangeMessageHandler(ChangeHandler& handler, VersionDeduper& seen) {
  return [&handler, &seen](const std::vector<InMessage>& messages) -> absl::Status {
    for (const InMessage& m : messages) {
      absl::StatusOr<ChangeEvent> event = DecodeChange(m.value);
      if (!event.ok()) {
        core::Log(core::LogLevel::kError, "kafka.message_malformed",
                  {{"topic", m.topic}, {"partition", std::to_string(m.partition)}, {"offset", std::to_string(m.offset)}});
        continue;
      }
      // A version counts as seen once handled: a batch delivered again after
      // a failure skips what was handled before it.
      if (!seen.Fresh(event->Key(), event->version)) continue;
      RETURN_IF_ERROR(handler.Handle(*event));
      seen.Accept(event->Key(), event->version);
    }
    return absl::OkStatus();
  };
}

}  // namespace medgrid::events
