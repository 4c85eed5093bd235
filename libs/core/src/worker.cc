#include "medgrid/core/worker.h"

#include <algorithm>

namespace medgrid::core {

void Worker::Start() {
  std::lock_guard lock(mu_);
  if (running_) return;
  running_ = true;
  thread_ = std::thread([this] { Run(); });
}

void Worker::Stop() {
  {
    std::lock_guard lock(mu_);
    if (!running_) return;
    running_ = false;
  }
  wake_.notify_all();
  thread_.join();
}

void Worker::Wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  wake_.notify_all();
}

bool Worker::Pause(std::chrono::microseconds delay) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, delay, [&] { return !running_; });
  return running_;
}

bool Worker::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

void Worker::Run() {
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (!running_) return;
    }
    const std::optional<std::chrono::milliseconds> pause = step_();
    if (!pause) return;
    std::unique_lock lock(mu_);
    if (pause->count() > 0) wake_.wait_for(lock, *pause, [&] { return !running_ || woken_; });
    woken_ = false;
  }
}

std::chrono::milliseconds NextBackoff(std::chrono::milliseconds previous) {
  using Ms = std::chrono::milliseconds;
  return std::min(Ms(5000), std::max(Ms(100), previous * 2));
}

}  // namespace medgrid::core
