// A thread that keeps a Consumer polling: hands each message to a handler,
// commits after it (Consumer::Poll), pauses after a failure (100 ms growing
// to 5 s) so that a failing handler is retried rather than skipped, and
// measures the consumer's lag every 5 s (logged when it is not 0).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "medgrid/core/worker.h"
#include "medgrid/events/change.h"
#include "medgrid/events/dedupe.h"
#include "medgrid/events/kafka.h"

namespace medgrid::events {

class ConsumerLoop {
 public:
  // `name` labels logs and metrics (e.g. "changes", "audit"). `setup`, when
  // given, runs first on the loop's thread (Assign, say) and is retried
  // with the same pauses until it succeeds, so a broker that is down at
  // start-up delays consuming rather than start-up.
  using Setup = std::function<absl::Status(Consumer&)>;
  ConsumerLoop(std::string name, std::unique_ptr<Consumer> consumer, Consumer::Handler handle, int batch = 500,
               Setup setup = nullptr);
  ~ConsumerLoop();

  void Start() { worker_.Start(); }
  void Stop() { worker_.Stop(); }

  struct Stats {
    uint64_t handled = 0;   // messages handled and committed
    uint64_t failures = 0;  // polls that ended in a handler or commit error
    // Messages not yet handled, summed over the assigned partitions; -1
    // until partitions are assigned and measured.
    int64_t lag = -1;
  };
  Stats stats() const;
  const std::string& name() const { return name_; }

 private:
  // One poll (or the setup) on the loop's thread, and the pause after it.
  std::optional<std::chrono::milliseconds> Step();

  const std::string name_;
  const std::unique_ptr<Consumer> consumer_;
  const Consumer::Handler handle_;
  const int batch_;
  const Setup setup_;
  std::atomic<uint64_t> handled_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<int64_t> lag_{-1};
  // The loop's thread's: whether setup succeeded, the current backoff, and
  // when to measure the lag next.
  bool set_up_ = false;
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point next_lag_;
  core::Worker worker_{[this] { return Step(); }};  // last: it stops first
};

// The handler of a consumer of kResourceChangedTopic: decodes each message,
// drops versions `seen` already has, and hands the rest to `handler`. A
// message that is not a ResourceChanged is logged and skipped.
Consumer::Handler ChangeMessageHandler(ChangeHandler& handler, VersionDeduper& seen);

}  // namespace medgrid::events
