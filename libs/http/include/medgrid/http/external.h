// Outbound calls to an external dependency (an identity provider's JWKS, the
// break-the-glass webhook, an HIE, an AI service) with the seed's reliability
// treatment: retries with exponential backoff and jitter, a retry budget
// shared by all callers of the dependency so that retries cannot multiply
// the load of an outage, the caller's deadline, a circuit breaker, and a
// health record (availability and p99 latency over a sliding window) that
// the degradation controller reads.
//
//   http::ExternalDependency jwks(http::ExternalDependencySettings::For("jwks"), clock);
//   http::FetchRequest req;
//   ASSIGN_OR_RETURN(req.url, http::ParseUrl(url));
//   absl::StatusOr<http::FetchResponse> res = http::FetchExternal(jwks, req, clock.Now() + 10s);
//   if (res.ok() && res->status == 200) Use(res->body);
//
// One FetchExternal call:
//   * refuses at once, with Unavailable naming the dependency and no
//     connection attempt, while the breaker is open;
//   * makes attempts with http::Fetch, each one's connect and response
//     timeouts cut to the time left before the deadline;
//   * classifies each attempt: Unavailable or DeadlineExceeded from Fetch,
//     and HTTP 502/503/429 (as Unavailable) and 504 (as DeadlineExceeded),
//     are retried when the policy lists the code; other 5xx are failures
//     that are not retried; any other answer (2xx, 3xx, 4xx) is final and a
//     success for the breaker and the health record (the dependency
//     answered). Errors of the request itself (InvalidArgument) never reach
//     the dependency and are neither;
//   * before a retry waits the policy's backoff with jitter, or the
//     Retry-After (seconds) of the failed answer when that is longer; a
//     retry that could not start before the deadline (Retry-After
//     included) is not made, nor one the budget refuses, nor one the
//     breaker refuses;
//   * retries a method that is not idempotent (POST, PATCH) only when the
//     caller says the call may be repeated.
// The result is the last attempt's: a response whatever its HTTP status, or
// Fetch's error.
//
// Thread-safety: ExternalDependency is shared by all its callers and is
// thread-safe; FetchExternal blocks the calling thread, sleeping between
// attempts through the dependency's sleeper (or the caller's wait).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"
#include "medgrid/http/client.h"
#include "medgrid/resilience/circuit_breaker.h"
#include "medgrid/resilience/dependency_health.h"
#include "medgrid/resilience/retry.h"

namespace medgrid::http {

// Waits `delay` before a retry. Tests pass one that records the delay and
// moves a simulated clock instead of sleeping.
using Sleeper = std::function<void(std::chrono::microseconds delay)>;

struct ExternalDependencySettings {
  // Names the dependency in metrics, logs and errors ("jwks", "external_hie").
  std::string name;
  // Attempts, backoff and retryable codes. Default: the seed's external API
  // policy (3 attempts, 500 ms doubling, +-25% jitter; Unavailable and
  // DeadlineExceeded).
  resilience::RetryPolicy retry = resilience::ExternalApiPolicy();
  // The budget shared by every call to this dependency.
  resilience::RetryBudgetSettings budget;
  // The breaker's settings; its name is set to `name`.
  resilience::BreakerSettings breaker;
  // The health record's window.
  resilience::DependencyHealthSettings health;
  // Null: std::this_thread::sleep_for.
  Sleeper sleep;
  // Seeds the jitter of each call (seed + call number). 0: a random seed.
  uint64_t seed = 0;

  // The defaults for `name`, its breaker from resilience::ForDependency(name).
  static ExternalDependencySettings For(std::string_view name);
};

// What a FetchExternal call may do beyond the defaults.
struct ExternalCallOptions {
  // Retry a method that is not idempotent (POST, PATCH). Only when a repeated
  // request does no harm: the receiver deduplicates, or the message is
  // meant to arrive at least once.
  bool retry_non_idempotent = false;
  // Waits `delay` before a retry in place of the dependency's sleeper, and
  // may end the wait early. False: the caller is stopping, so the call ends
  // with the last attempt's result and makes no further attempt. A caller
  // on a background thread passes one its stop wakes (core::Worker::Pause),
  // so that no retry's wait holds up a shutdown.
  std::function<bool(std::chrono::microseconds delay)> wait;
};

// One external dependency: its policy, retry budget, circuit breaker, health
// record and counters. Owned by whoever wires the process (app::App) and
// shared by every caller of the dependency. Thread-safe.
class ExternalDependency {
 public:
  struct Stats {
    // Logical calls (FetchExternal), by how they ended: success (an answer
    // that is not a failure), failure (an error or a failure status after
    // the last attempt), refused (the breaker was open; nothing was sent).
    uint64_t successes = 0;
    uint64_t failures = 0;
    uint64_t refused = 0;
    uint64_t attempts = 0;          // requests sent, retries included
    uint64_t retries = 0;           // attempts after the first
    uint64_t budget_exhausted = 0;  // retries the budget refused
    uint64_t breaker_refusals = 0;  // attempts the breaker refused, first or retry
  };

  // `clock` must outlive the dependency. `on_breaker_change` (may be null) is
  // called after each breaker transition (see CircuitBreaker).
  ExternalDependency(ExternalDependencySettings settings, const core::Clock& clock,
                     resilience::CircuitBreaker::StateChangeCallback on_breaker_change = nullptr);
  ExternalDependency(const ExternalDependency&) = delete;
  ExternalDependency& operator=(const ExternalDependency&) = delete;

  const std::string& name() const { return settings_.name; }
  const ExternalDependencySettings& settings() const { return settings_; }
  const core::Clock& clock() const { return clock_; }
  resilience::CircuitBreaker& breaker() { return breaker_; }
  resilience::RetryBudget& budget() { return budget_; }
  resilience::DependencyHealth& health() { return health_; }
  Stats stats() const;

 private:
  friend absl::StatusOr<FetchResponse> FetchExternal(ExternalDependency&, const FetchRequest&, core::TimePoint,
                                                     const ExternalCallOptions&);
  const ExternalDependencySettings settings_;
  const core::Clock& clock_;
  resilience::RetryBudget budget_;
  resilience::CircuitBreaker breaker_;
  resilience::DependencyHealth health_;
  const uint64_t seed_;
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> successes_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> budget_exhausted_{0};
  std::atomic<uint64_t> breaker_refusals_{0};
};

// Sends `request` to `dependency` as the file comment describes, giving up
// at `deadline` (by the dependency's clock). Errors: Unavailable naming the
// dependency while its breaker is open; DeadlineExceeded when the deadline
// had passed before the first attempt; otherwise the last attempt's Fetch
// error. A response is returned whatever its HTTP status. Blocking;
// thread-safe.
absl::StatusOr<FetchResponse> FetchExternal(ExternalDependency& dependency, const FetchRequest& request,
                                            core::TimePoint deadline, const ExternalCallOptions& options = {});

// Whether an HTTP answer counts as a failure of the dependency, and the
// status code it stands for: 502, 503 and 429 kUnavailable, 504
// kDeadlineExceeded, other 5xx kInternal; nullopt for anything else.
std::optional<absl::StatusCode> FailureCodeOfHttpStatus(int status);

}  // namespace medgrid::http
