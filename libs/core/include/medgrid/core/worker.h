// A background thread that runs one step over and over, pausing between
// steps for as long as the step asks, until stopped. The step decides the
// pacing (at once after work, a poll interval when idle, a growing backoff
// after a failure); Stop wakes a pausing worker at once.
//
//   core::Worker worker([&] { return DoOneRound() ? Ms(0) : Ms(20); });
//   worker.Start();
//   ...
//   worker.Stop();  // waits for the step in progress
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace medgrid::core {

class Worker {
 public:
  // `step` returns how long to pause before the next step, or nullopt to end
  // the thread (Stop still joins it).
  using Step = std::function<std::optional<std::chrono::milliseconds>()>;
  explicit Worker(Step step) : step_(std::move(step)) {}
  ~Worker() { Stop(); }

  // Starts the thread; no-op when running. Thread-safe.
  void Start();
  // Wakes and joins the thread after its current step; no-op when stopped.
  // Thread-safe; not from the step itself.
  void Stop();
  // Cuts the current (or the next) pause short. Thread-safe.
  void Wake();
  // Waits `delay` within a step (a retry's backoff), or less when Stop is
  // called meanwhile. Returns whether the worker is still running: false
  // at once when it is stopped or was never started. Wake does not end it.
  // Thread-safe.
  bool Pause(std::chrono::microseconds delay);
  bool running() const;

 private:
  void Run();

  const Step step_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool running_ = false;  // guarded by mu_
  bool woken_ = false;    // guarded by mu_
  std::thread thread_;
};

// The next pause of a retry loop after a failure: 100 ms at first, doubling
// to at most 5 s.
std::chrono::milliseconds NextBackoff(std::chrono::milliseconds previous);

}  // namespace medgrid::core
