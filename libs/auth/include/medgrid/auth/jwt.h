// JSON Web Tokens (RFC 7519) in compact JWS form (RFC 7515): the OAuth2
// bearer tokens of SMART on FHIR. Verification against a JWKS (RFC 7517)
// with RS256, ES256 and EdDSA (Ed25519, RFC 8037) only, and signing for
// `medgridctl token mint`, the local dev key and tests.
//
//   ASSIGN_OR_RETURN(auto keys, auth::KeySet::Parse(jwks_json));
//   auth::VerifyOptions options;
//   options.issuer = "https://idp.example";
//   options.audience = "medgrid";
//   auth::JwtVerifier verifier(std::make_shared<auth::StaticKeys>(keys), options, clock);
//   auth::JwtRejection why;
//   absl::StatusOr<auth::Claims> claims = verifier.Verify(token, &why);
//
// HMAC algorithms are never accepted: the verification keys are public, so
// an HS256 token "signed" with one of them proves nothing. A key's type must
// fit the token's alg, and a key's own "alg", if it has one, must equal it.
// Keys whose source is a file or URL, refreshed and rotated by kid, come
// from JwksSource (medgrid/auth/jwks.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "boost/json/object.hpp"
#include "medgrid/core/clock.h"

namespace medgrid::auth {

enum class JwtAlg { kRS256, kES256, kEdDSA };
// "RS256", "ES256", "EdDSA": the JWA names (RFC 7518, RFC 8037).
std::string_view AlgName(JwtAlg alg);

// Why a token was rejected (for tests and for the 401's error_description).
enum class JwtRejection {
  kNone,
  kMalformed,       // not 3 base64url parts, or a header or claims that are not JSON objects of the right shape
  kAlgNone,         // an unsecured token ("alg":"none")
  kUnsupportedAlg,  // an alg not allowed (HS256 among them)
  kUnknownKey,      // no key by the token's kid (or, without kid, not exactly one key for the alg)
  kKeyAlgMismatch,  // the key's type or own "alg" does not fit the token's alg
  kBadSignature,
  kExpired,      // exp, with the clock skew, has passed
  kNotYetValid,  // nbf, with the clock skew, has not come
  kWrongIssuer,
  kWrongAudience,
  kMissingClaim,  // exp absent while required
};
// A short text, fit for a 401's error_description: "expired", "bad signature", ...
std::string_view RejectionName(JwtRejection rejection);

// A parsed JWKS (RFC 7517), immutable: RSA (kty RSA with n and e, 2048 bits
// or more), EC P-256 (kty EC, crv P-256, x, y) and Ed25519 (kty OKP, crv
// Ed25519, x). Keys of other kinds or curves, or with a "use" other than
// "sig", are skipped; each key may carry "kid" and "alg". Thread-safe.
class KeySet {
 public:
  // Errors: InvalidArgument when the text is not {"keys":[...]} or a key of
  // a supported kind is malformed (the message names its kid, never key
  // material).
  static absl::StatusOr<std::shared_ptr<const KeySet>> Parse(std::string_view jwks_json);
  ~KeySet();

  std::size_t size() const;  // the usable keys
  bool HasKid(std::string_view kid) const;

  // Checks a JWS signature over `signing_input` ("<header>.<payload>" as
  // sent) with the key named `kid`; with an empty kid, with the one key
  // usable for `alg` if there is exactly one. kNone when it holds, else
  // kUnknownKey, kKeyAlgMismatch or kBadSignature. `signature` is the
  // decoded bytes (for ES256 the 64-byte JOSE r||s form).
  JwtRejection Verify(JwtAlg alg, std::string_view kid, std::string_view signing_input,
                      std::string_view signature) const;

 private:
  struct Key;  // an EVP_PKEY and its JWK attributes; defined in jwt.cc
  KeySet();
  std::vector<Key> keys_;
};

// Where verification keys come from. Thread-safe.
class KeyProvider {
 public:
  virtual ~KeyProvider() = default;
  // The current keys; never null.
  virtual std::shared_ptr<const KeySet> Keys() = 0;
  // A token named a kid the current keys lack: a provider may refetch
  // (rate-limited) before it answers. Returns the keys after that; never null.
  virtual std::shared_ptr<const KeySet> KeysAfterUnknownKid(std::string_view kid) = 0;
};

// A fixed key set.
class StaticKeys final : public KeyProvider {
 public:
  explicit StaticKeys(std::shared_ptr<const KeySet> keys) : keys_(std::move(keys)) {}
  std::shared_ptr<const KeySet> Keys() override { return keys_; }
  std::shared_ptr<const KeySet> KeysAfterUnknownKid(std::string_view) override { return keys_; }

 private:
  const std::shared_ptr<const KeySet> keys_;
};

struct Claims {
  std::string issuer;                                        // iss
  std::string subject;                                       // sub
  std::vector<std::string> audience;                         // aud, sent as a string or an array
  std::optional<int64_t> expires_at, not_before, issued_at;  // exp, nbf, iat: unix seconds
  std::string token_id;                                      // jti
  boost::json::object all;                                   // every claim, as sent
};

struct VerifyOptions {
  std::string issuer;                   // required "iss" value; empty: not checked
  std::string audience;                 // must be in "aud"; empty: not checked
  std::chrono::seconds clock_skew{60};  // allowed on exp and nbf
  bool require_expiry = true;           // "exp" must be present
  std::vector<JwtAlg> allowed_algs = {JwtAlg::kRS256, JwtAlg::kES256, JwtAlg::kEdDSA};
  std::size_t cache_capacity = 100000;  // VerifyCached's entries at most
};

class JwtVerifier {
 public:
  // `clock` must outlive the verifier.
  JwtVerifier(std::shared_ptr<KeyProvider> keys, VerifyOptions options, const core::Clock& clock);
  ~JwtVerifier();

  // Verifies a compact JWS and returns its claims. Checks, in this order:
  // three base64url parts; the header, a JSON object; "alg" ("none":
  // kAlgNone; not allowed: kUnsupportedAlg); "crit" (none understood:
  // kMalformed); the key (see KeySet::Verify; an unknown kid asks the
  // provider to refetch once); the signature; the claims, a JSON object
  // with well-typed registered claims; exp, nbf, iss, aud; exp present if
  // required. Errors: Unauthenticated (HTTP 401) with a short reason that
  // never echoes the token; `*rejection`, when not null, says which check
  // failed (kNone on success). Thread-safe.
  absl::StatusOr<Claims> Verify(std::string_view token, JwtRejection* rejection = nullptr) const;

  // Verify, remembering verified tokens that carry an exp (by the SHA-256 of
  // the token) until they expire: a token seen before is not verified again,
  // but its exp is checked against the clock each time. At most
  // cache_capacity entries; when full, expired entries go first, then
  // others. Thread-safe.
  absl::StatusOr<std::shared_ptr<const Claims>> VerifyCached(std::string_view token, JwtRejection* rejection = nullptr);

 private:
  struct Cached {
    std::shared_ptr<const Claims> claims;
    int64_t expires_at;
  };
  int64_t NowSeconds() const;

  const std::shared_ptr<KeyProvider> keys_;
  const VerifyOptions options_;
  const core::Clock& clock_;
  absl::Mutex mu_;
  std::unordered_map<std::string, Cached> cache_ ABSL_GUARDED_BY(mu_);  // by SHA-256 of the token
};

// Signs tokens with one private key. Copies share the key. Thread-safe.
class JwtSigner {
 public:
  // A PEM private key (PKCS#8 "PRIVATE KEY", unencrypted): RSA of 2048 bits
  // or more (RS256), EC P-256 (ES256) or Ed25519 (EdDSA). `kid` names it in
  // tokens and in PublicJwks; may be empty. Errors: InvalidArgument for
  // anything else.
  static absl::StatusOr<JwtSigner> FromPem(std::string_view private_key_pem, std::string kid);

  JwtAlg alg() const { return alg_; }
  const std::string& kid() const { return kid_; }

  // A compact JWS of `claims` with the header {"alg","typ":"JWT","kid"}
  // (kid left out when empty). Empty only if OpenSSL fails (out of memory).
  std::string Sign(const boost::json::object& claims) const;
  // {"keys":[{the public JWK, with "kid", "alg" and "use":"sig"}]}.
  std::string PublicJwks() const;

 private:
  struct Key;  // the EVP_PKEY; defined in jwt.cc
  JwtSigner(std::shared_ptr<const Key> key, JwtAlg alg, std::string kid);
  std::shared_ptr<const Key> key_;
  JwtAlg alg_;
  std::string kid_;
};

// A new private key as PKCS#8 PEM: RSA 2048 for RS256, EC P-256 for ES256,
// Ed25519 for EdDSA. Errors: Internal if OpenSSL fails.
absl::StatusOr<std::string> GeneratePrivateKeyPem(JwtAlg alg);

}  // namespace medgrid::auth
