// Verification keys from a JWKS file or URL, kept fresh: reloaded in the
// background, and reloaded early when a token names a kid the keys lack, so
// an identity provider can rotate keys by kid without a restart.
//
//   auth::JwksSourceOptions options;
//   options.location = "https://idp.example/jwks.json";
//   ASSIGN_OR_RETURN(std::unique_ptr<auth::JwksSource> keys, auth::JwksSource::Start(options, clock));
//   auth::JwtVerifier verifier(std::move(keys), options, clock);
//
// A failed reload keeps the last good keys and logs the location and the
// error (never key material or tokens). With an ExternalDependency in the
// options, a URL is fetched through it (http/external.h): an answer of
// 502/503/504/429 or a failed connection is retried with backoff, within the
// dependency's retry budget and breaker, until fetch_deadline; without one,
// each load is a single attempt.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "medgrid/auth/jwt.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/worker.h"
#include "medgrid/http/external.h"

namespace medgrid::auth {

struct JwksSourceOptions {
  std::string location;                           // a file path, or a URL starting http:// or https://
  std::chrono::seconds refresh{300};              // background reload period
  std::chrono::seconds min_refetch{30};           // at most one reload per this long for unknown kids
  std::chrono::milliseconds fetch_timeout{3000};  // a URL's connect, and its response, each
  // A URL's load in all, retries and their waits included (with `dependency`),
  // at start-up and on refresh; a refetch for an unknown kid, which a request
  // waits for, gets fetch_timeout in all instead.
  std::chrono::milliseconds fetch_deadline{10000};
  // The identity provider as an external dependency, shared by every load;
  // null: a single attempt per load. Not owned; must outlive the source.
  http::ExternalDependency* dependency = nullptr;
};

class JwksSource final : public KeyProvider {
 public:
  // Loads the keys once (errors: the location cannot be read, an HTTP status
  // other than 200, or KeySet::Parse's), then reloads them every `refresh`
  // on a background thread. `clock` (for min_refetch) must outlive the source.
  static absl::StatusOr<std::unique_ptr<JwksSource>> Start(JwksSourceOptions options, const core::Clock& clock);
  // Stops the background thread.
  ~JwksSource() override;

  std::shared_ptr<const KeySet> Keys() override;
  // Reloads at once, blocking, unless the current keys have `kid` or the
  // last load began less than min_refetch ago by `clock`.
  std::shared_ptr<const KeySet> KeysAfterUnknownKid(std::string_view kid) override;
  // Ends background reloads, waiting for one in progress. Idempotent.
  void Stop();

 private:
  JwksSource(JwksSourceOptions options, const core::Clock& clock, std::shared_ptr<const KeySet> keys);
  // Loads the keys and keeps them if good; logs a failure. Serialized by load_mu_.
  // `deadline`: the load in all, retries included (with a dependency).
  // `call`: the worker's refresh passes a wait that Stop ends.
  void Reload(std::string_view reason, std::chrono::milliseconds deadline, const http::ExternalCallOptions& call = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);

  const JwksSourceOptions options_;
  const core::Clock& clock_;
  absl::Mutex load_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // one load at a time
  absl::Mutex mu_;
  std::shared_ptr<const KeySet> keys_ ABSL_GUARDED_BY(mu_);
  core::TimePoint last_load_ ABSL_GUARDED_BY(load_mu_);
  core::Worker worker_;
};

// The JWKS text at `location` (see JwksSourceOptions), for tools that load
// keys once. A URL is fetched through `dependency` when given (retries until
// `deadline` after the start, by the dependency's clock), else in one
// attempt. Errors: NotFound or Unavailable when it cannot be read,
// Unavailable for an HTTP status other than 200 (after the retries) or while
// the dependency's breaker is open, DeadlineExceeded past the timeout.
// `call` is passed to FetchExternal (its wait may end the retries early).
absl::StatusOr<std::string> ReadJwks(std::string_view location, std::chrono::milliseconds timeout,
                                     http::ExternalDependency* dependency = nullptr,
                                     std::chrono::milliseconds deadline = std::chrono::seconds(10),
                                     const http::ExternalCallOptions& call = {});

}  // namespace medgrid::auth
