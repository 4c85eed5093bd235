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
// error (never key material or tokens).
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

namespace medgrid::auth {

struct JwksSourceOptions {
  std::string location;                           // a file path, or a URL starting http:// or https://
  std::chrono::seconds refresh{300};              // background reload period
  std::chrono::seconds min_refetch{30};           // at most one reload per this long for unknown kids
  std::chrono::milliseconds fetch_timeout{3000};  // a URL's connect, and its response, each
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
  void Reload(std::string_view reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);

  const JwksSourceOptions options_;
  const core::Clock& clock_;
  absl::Mutex load_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // one load at a time
  absl::Mutex mu_;
  std::shared_ptr<const KeySet> keys_ ABSL_GUARDED_BY(mu_);
  core::TimePoint last_load_ ABSL_GUARDED_BY(load_mu_);
  core::Worker worker_;
};

// The JWKS text at `location` (see JwksSourceOptions), for tools that load
// keys once. Errors: NotFound or Unavailable when it cannot be read,
// Unavailable for an HTTP status other than 200, DeadlineExceeded past the
// timeout.
absl::StatusOr<std::string> ReadJwks(std::string_view location, std::chrono::milliseconds timeout);

}  // namespace medgrid::auth
