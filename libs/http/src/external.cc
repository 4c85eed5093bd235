#include "medgrid/http/external.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <random>
#include <thread>
#include <utility>

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::http {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

// RFC 9110 9.2.2: a repeated request has the effect of one.
bool Idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS" ||
         method == "TRACE";
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// Retry-After as delay-seconds, or as an HTTP date (relative to `now`);
// nullopt when absent or malformed.
std::optional<microseconds> RetryAfter(const FetchResponse& response, core::TimePoint now) {
  for (const auto& [name, value] : response.headers) {
    if (!EqualsIgnoreCase(name, "Retry-After")) continue;
    int64_t seconds = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec == std::errc() && end == value.data() + value.size() && seconds >= 0 && seconds <= 86400) {
      return std::chrono::seconds(seconds);
    }
    if (std::optional<core::TimePoint> at = core::ParseHttpDate(value)) {
      return std::max(microseconds(0), std::chrono::duration_cast<microseconds>(*at - now));
    }
    return std::nullopt;
  }
  return std::nullopt;
}

uint64_t RandomSeed() {
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

}  // namespace

ExternalDependencySettings ExternalDependencySettings::For(std::string_view name) {
  ExternalDependencySettings s;
  s.name = std::string(name);
  s.breaker = resilience::ForDependency(name);
  return s;
}

std::optional<absl::StatusCode> FailureCodeOfHttpStatus(int status) {
  switch (status) {
    case 429:
    case 502:
    case 503:
      return absl::StatusCode::kUnavailable;
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    default:
      if (status >= 500 && status <= 599) return absl::StatusCode::kInternal;
      return std::nullopt;
  }
}

ExternalDependency::ExternalDependency(ExternalDependencySettings settings, const core::Clock& clock,
                                       resilience::CircuitBreaker::StateChangeCallback on_breaker_change)
    : settings_([&] {
        ExternalDependencySettings s = std::move(settings);
        s.breaker.name = s.name;
        if (!s.sleep) s.sleep = [](microseconds d) { std::this_thread::sleep_for(d); };
        return s;
      }()),
      clock_(clock),
      budget_(settings_.budget, clock),
      breaker_(settings_.breaker, clock, std::move(on_breaker_change)),
      health_(settings_.health, clock),
      seed_(settings_.seed != 0 ? settings_.seed : RandomSeed()) {}

ExternalDependency::Stats ExternalDependency::stats() const {
  Stats s;
  s.successes = successes_.load();
  s.failures = failures_.load();
  s.refused = refused_.load();
  s.attempts = attempts_.load();
  s.retries = retries_.load();
  s.budget_exhausted = budget_exhausted_.load();
  s.breaker_refusals = breaker_refusals_.load();
  return s;
}

absl::StatusOr<FetchResponse> FetchExternal(ExternalDependency& dependency, const FetchRequest& request,
                                            core::TimePoint deadline, const ExternalCallOptions& options) {
  ExternalDependency& dep = dependency;
  const core::Clock& clock = dep.clock_;
  resilience::RetryPolicy policy = dep.settings_.retry;
  if (!options.retry_non_idempotent && !Idempotent(request.method)) policy.max_attempts = 1;
  // Created at the first attempt actually sent, so that a refused call does
  // not count as a request in the budget.
  std::optional<resilience::RetryState> retry;
  FetchRequest attempt = request;
  absl::StatusOr<FetchResponse> last = absl::UnknownError("no attempt");
  bool last_failed = false;
  // Ends the call with the last attempt's result, counted by how it ended.
  auto finish = [&]() -> absl::StatusOr<FetchResponse> {
    ++(last_failed ? dep.failures_ : dep.successes_);
    return std::move(last);
  };
  for (;;) {
    const core::TimePoint now = clock.Now();
    const milliseconds left = std::chrono::duration_cast<milliseconds>(deadline - now);
    if (left.count() <= 0) {
      if (retry) return finish();
      ++dep.failures_;
      return core::Error(absl::StatusCode::kDeadlineExceeded,
                         core::StrCat("external dependency ", dep.name(), ": the deadline passed before the call"))
          .Http(504)
          .Issue("timeout");
    }
    const resilience::CircuitBreaker::Permit permit = dep.breaker_.Allow();
    if (!permit) {
      ++dep.breaker_refusals_;
      if (retry) return finish();
      ++dep.refused_;
      const int64_t open_s = std::chrono::duration_cast<std::chrono::seconds>(dep.breaker_.RemainingOpen() +
                                                                              std::chrono::seconds(1) - microseconds(1))
                                 .count();
      return core::Error(absl::StatusCode::kUnavailable,
                         core::StrCat("external dependency ", dep.name(), ": circuit breaker open, no call made"))
          .Http(503)
          .Issue("transient")
          .RetryAfter(std::max<int64_t>(1, open_s));
    }
    if (!retry) {
      retry.emplace(policy, clock, deadline, resilience::SeededRandom(dep.seed_ + dep.calls_.fetch_add(1)),
                    &dep.budget_);
    } else {
      ++dep.retries_;
    }
    attempt.connect_timeout = std::min(request.connect_timeout, left);
    attempt.timeout = std::min(request.timeout, left);
    ++dep.attempts_;
    const core::TimePoint start = clock.Now();
    last = Fetch(attempt);
    const microseconds took = std::chrono::duration_cast<microseconds>(clock.Now() - start);

    // The status this attempt stands for: OK for an answer that is not a failure.
    absl::Status outcome = last.status();
    if (last.ok()) {
      if (std::optional<absl::StatusCode> code = FailureCodeOfHttpStatus(last->status)) {
        outcome = absl::Status(*code, core::StrCat("HTTP ", last->status));
      }
    }
    const bool reached = outcome.ok() || outcome.code() == absl::StatusCode::kUnavailable ||
                         outcome.code() == absl::StatusCode::kDeadlineExceeded ||
                         outcome.code() == absl::StatusCode::kInternal;
    if (!reached) {
      // The request itself was at fault (a malformed URL or header): the
      // dependency never saw it, so it says nothing about its health.
      dep.breaker_.Cancel(permit);
      last_failed = true;
      return finish();
    }
    const resilience::Outcome o = outcome.ok() ? resilience::Outcome::kSuccess : resilience::Outcome::kFailure;
    dep.breaker_.Record(permit, o, took);
    dep.health_.Record(o, took);
    last_failed = !outcome.ok();
    if (outcome.ok() || !retry->policy().IsRetryable(outcome)) return finish();

    // The server's own estimate of when to come back overrides a shorter
    // backoff; a retry that could not start before the deadline is pointless.
    std::optional<microseconds> retry_after;
    if (last.ok()) retry_after = RetryAfter(*last, clock.Now());
    if (retry_after && clock.Now() + *retry_after >= deadline) return finish();
    std::optional<microseconds> delay = retry->NextDelay();
    if (!delay) {
      if (retry->stop() == resilience::RetryStop::kBudget) ++dep.budget_exhausted_;
      return finish();
    }
    if (retry_after) delay = std::max(*delay, *retry_after);
    if (core::LogEnabled(core::LogLevel::kDebug)) {
      core::Log(core::LogLevel::kDebug, "external.retry",
                {{"dependency", dep.name()},
                 {"attempt", std::to_string(retry->attempts())},
                 {"after", last.ok() ? core::StrCat("HTTP ", last->status) : std::string(outcome.message())},
                 {"delay_ms", std::to_string(std::chrono::duration_cast<milliseconds>(*delay).count())}});
    }
    if (!options.wait) {
      dep.settings_.sleep(*delay);
    } else if (!options.wait(*delay)) {
      return finish();  // the caller is stopping
    }
  }
}

}  // namespace medgrid::http
