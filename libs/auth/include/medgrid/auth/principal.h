// Who is calling: the verified bearer token of a request as a Principal,
// and the Authenticator that turns an Authorization header into one.
//
//   ASSIGN_OR_RETURN(auto authn, auth::Authenticator::Start(config, clock));
//   absl::StatusOr<std::shared_ptr<const auth::Principal>> p =
//       authn->Authenticate(request["Authorization"]);   // 401 status on failure
//
// Token claims read (besides iss, aud, exp, nbf, sub):
//   tenant          the one tenant the token is valid for (absent: admin-only)
//   scope | scp     SMART scopes, space-separated or an array, and medgrid/admin
//   patient         the launch context: limits patient/ scopes to that patient
//   fhirUser        the user's resource: "Practitioner/123" (absolute allowed)
//   roles           role names, e.g. ["physician"], for break-the-glass policy
//   purpose_of_use  a v3-PurposeOfUse code (string or array; the first counts)
//   client_id | azp the client application
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/auth/jwt.h"
#include "medgrid/auth/scopes.h"
#include "medgrid/core/clock.h"

namespace medgrid::http {
class ExternalDependency;
}

namespace medgrid::auth {

// The scope that opens /admin/*.
inline constexpr std::string_view kAdminScope = "medgrid/admin";

struct Principal {
  std::string subject;
  std::string client_id;
  std::string tenant;
  std::string patient;    // a Patient id, or empty
  std::string fhir_user;  // relative "Type/id", or empty
  std::vector<std::string> roles;
  std::string purpose_of_use;
  ScopeSet scopes;
  int64_t expires_at = 0;  // unix seconds

  bool admin() const { return scopes.Has(kAdminScope); }
  // Who asked, for the audit trail: fhirUser, else "Device/<client_id>",
  // else the subject.
  std::string Agent() const;
};

// The Principal of verified claims. InvalidArgument (a 401 for the caller)
// when a claim medgrid reads has the wrong shape: a tenant that is not a
// tenant id, a patient that is not a FHIR id, fhirUser not a reference.
absl::StatusOr<Principal> PrincipalFromClaims(const Claims& claims);

struct AuthConfig {
  // JWKS: a file path or an http(s) URL. Required.
  std::string jwks;
  std::string issuer;    // required "iss"
  std::string audience;  // required in "aud"
  std::chrono::seconds clock_skew{60};
  // The identity provider's endpoints, published in
  // .well-known/smart-configuration. Empty: <issuer>/authorize and
  // <issuer>/token.
  std::string authorize_url;
  std::string token_url;
  // The JWKS URL's loads go through this dependency (retries, breaker,
  // health); null: one attempt per load. Not owned; must outlive the
  // Authenticator.
  http::ExternalDependency* jwks_dependency = nullptr;
};

class Authenticator {
 public:
  // Loads the JWKS (refreshed in the background). Errors: the JWKS cannot be
  // read or parsed.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Start(const AuthConfig& config, const core::Clock& clock);
  Authenticator(std::shared_ptr<KeyProvider> keys, AuthConfig config, const core::Clock& clock);
  ~Authenticator();

  // The Principal of an Authorization header value ("Bearer <jwt>").
  // Verified tokens are remembered until they expire. Errors are
  // Unauthenticated with HTTP status 401; the message is a short reason
  // ("expired", "bad signature") and never echoes the token.
  absl::StatusOr<std::shared_ptr<const Principal>> Authenticate(std::string_view authorization);

  const AuthConfig& config() const { return config_; }
  std::string AuthorizeUrl() const;
  std::string TokenUrl() const;

 private:
  struct Cache;
  AuthConfig config_;
  const core::Clock& clock_;
  std::shared_ptr<KeyProvider> keys_;
  std::unique_ptr<JwtVerifier> verifier_;
  std::unique_ptr<Cache> cache_;
};

// The verified caller of the request this thread is handling; null when
// auth is off or outside a request. The gateway sets it.
std::shared_ptr<const Principal>& CurrentPrincipal();

}  // namespace medgrid::auth
