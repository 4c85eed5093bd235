#include "medgrid/auth/principal.h"

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

#include "boost/json.hpp"
#include "medgrid/auth/jwks.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::auth {
namespace json = boost::json;
namespace {

absl::Status BadClaim(std::string_view name, std::string_view why) {
  return core::Error(absl::StatusCode::kUnauthenticated, core::StrCat("token claim '", name, "' ", why))
      .Http(401)
      .Issue("login");
}

bool IsFhirId(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return false;
  }
  return true;
}

bool IsTenantId(std::string_view s) {
  if (s.empty() || s.size() > 63 || !(std::islower(static_cast<unsigned char>(s[0])) || std::isdigit(static_cast<unsigned char>(s[0])))) {
    return false;
  }
  for (char c : s) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return false;
    }
  }
  return true;
}

// "Practitioner/123" from a relative or absolute reference; empty if it is
// neither.
std::string RelativeReference(std::string_view ref) {
  std::size_t slash = ref.rfind('/');
  if (slash == std::string_view::npos || slash == 0) return "";
  std::string_view id = ref.substr(slash + 1);
  std::string_view rest = ref.substr(0, slash);
  std::size_t type_start = rest.rfind('/');
  std::string_view type = type_start == std::string_view::npos ? rest : rest.substr(type_start + 1);
  if (type.empty() || !std::isupper(static_cast<unsigned char>(type[0])) || !IsFhirId(id)) return "";
  for (char c : type) {
    if (!std::isalpha(static_cast<unsigned char>(c))) return "";
  }
  return core::StrCat(type, "/", id);
}

const json::value* Claim(const Claims& claims, std::string_view name) { return claims.all.if_contains(name); }

absl::StatusOr<std::string> StringClaim(const Claims& claims, std::string_view name) {
  const json::value* v = Claim(claims, name);
  if (v == nullptr) return std::string();
  if (!v->is_string()) return BadClaim(name, "must be a string");
  return std::string(v->get_string());
}

}  // namespace

std::string Principal::Agent() const {
  if (!fhir_user.empty()) return fhir_user;
  if (!client_id.empty()) return core::StrCat("Device/", client_id);
  return subject;
}

absl::StatusOr<Principal> PrincipalFromClaims(const Claims& claims) {
  Principal p;
  p.subject = claims.subject;
  p.expires_at = claims.expires_at.value_or(0);
  ASSIGN_OR_RETURN(p.tenant, StringClaim(claims, "tenant"));
  if (!p.tenant.empty() && !IsTenantId(p.tenant)) return BadClaim("tenant", "is not a tenant id");
  ASSIGN_OR_RETURN(p.patient, StringClaim(claims, "patient"));
  if (!p.patient.empty() && !IsFhirId(p.patient)) return BadClaim("patient", "is not a FHIR id");
  ASSIGN_OR_RETURN(std::string fhir_user, StringClaim(claims, "fhirUser"));
  if (!fhir_user.empty()) {
    p.fhir_user = RelativeReference(fhir_user);
    if (p.fhir_user.empty()) return BadClaim("fhirUser", "is not a reference such as Practitioner/123");
  }
  ASSIGN_OR_RETURN(p.client_id, StringClaim(claims, "client_id"));
  if (p.client_id.empty()) {
    ASSIGN_OR_RETURN(p.client_id, StringClaim(claims, "azp"));
  }
  if (const json::value* roles = Claim(claims, "roles")) {
    const json::array* arr = roles->if_array();
    if (arr == nullptr) return BadClaim("roles", "must be an array of strings");
    for (const json::value& r : *arr) {
      if (!r.is_string()) return BadClaim("roles", "must be an array of strings");
      p.roles.emplace_back(r.get_string());
    }
  }
  if (const json::value* pou = Claim(claims, "purpose_of_use")) {
    if (pou->is_string()) {
      p.purpose_of_use = std::string(pou->get_string());
    } else if (const json::array* arr = pou->if_array(); arr != nullptr && !arr->empty() && (*arr)[0].is_string()) {
      p.purpose_of_use = std::string((*arr)[0].get_string());
    } else {
      return BadClaim("purpose_of_use", "must be a code or an array of codes");
    }
  }
  if (const json::value* scope = Claim(claims, "scope"); scope != nullptr && scope->is_string()) {
    p.scopes = ScopeSet::Parse(std::string_view(scope->get_string()));
  } else if (const json::value* scp = Claim(claims, "scp"); scp != nullptr && scp->is_array()) {
    std::vector<std::string> list;
    for (const json::value& s : scp->get_array()) {
      if (s.is_string()) list.emplace_back(s.get_string());
    }
    p.scopes = ScopeSet::FromList(list);
  } else if (scope != nullptr) {
    return BadClaim("scope", "must be a space-separated string");
  }
  return p;
}

// Principals of verified tokens, by token, until they expire.
struct Authenticator::Cache {
  static constexpr std::size_t kMaxEntries = 50000;
  absl::Mutex mu;
  // Looked up by string_view: no copy of the token per request.
  absl::flat_hash_map<std::string, std::shared_ptr<const Principal>> by_token ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Start(const AuthConfig& config,
                                                                    const core::Clock& clock) {
  if (config.jwks.empty()) return absl::InvalidArgumentError("a JWKS file or URL is required");
  JwksSourceOptions options;
  options.location = config.jwks;
  options.dependency = config.jwks_dependency;
  ASSIGN_OR_RETURN(std::unique_ptr<JwksSource> source, JwksSource::Start(options, clock));
  return std::make_unique<Authenticator>(std::shared_ptr<KeyProvider>(std::move(source)), config, clock);
}

Authenticator::Authenticator(std::shared_ptr<KeyProvider> keys, AuthConfig config, const core::Clock& clock)
    : config_(std::move(config)), clock_(clock), keys_(std::move(keys)), cache_(std::make_unique<Cache>()) {
  VerifyOptions options;
  options.issuer = config_.issuer;
  options.audience = config_.audience;
  options.clock_skew = config_.clock_skew;
  verifier_ = std::make_unique<JwtVerifier>(keys_, options, clock_);
}

Authenticator::~Authenticator() = default;

std::string Authenticator::AuthorizeUrl() const {
  return config_.authorize_url.empty() ? core::StrCat(config_.issuer, "/authorize") : config_.authorize_url;
}

std::string Authenticator::TokenUrl() const {
  return config_.token_url.empty() ? core::StrCat(config_.issuer, "/token") : config_.token_url;
}

absl::StatusOr<std::shared_ptr<const Principal>> Authenticator::Authenticate(std::string_view authorization) {
  auto unauthenticated = [](std::string_view why) {
    return core::Error(absl::StatusCode::kUnauthenticated, std::string(why)).Http(401).Issue("login");
  };
  if (authorization.empty()) return unauthenticated("a bearer token is required");
  constexpr std::string_view kBearer = "bearer ";
  if (authorization.size() <= kBearer.size() ||
      !std::equal(kBearer.begin(), kBearer.end(), authorization.begin(),
                  [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); })) {
    return unauthenticated("the Authorization header must be 'Bearer <token>'");
  }
  std::string_view token = authorization.substr(kBearer.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty() || token.size() > 16384) return unauthenticated("malformed token");
  const int64_t now = core::ToUnixMicros(clock_.Now()) / 1000000;
  {
    absl::ReaderMutexLock lock(&cache_->mu);
    if (auto it = cache_->by_token.find(absl::string_view(token.data(), token.size())); it != cache_->by_token.end()) {
      // An expired entry is left for the next insertion's sweep.
      if (it->second->expires_at + config_.clock_skew.count() > now) return it->second;
    }
  }
  JwtRejection rejection = JwtRejection::kNone;
  absl::StatusOr<Claims> claims = verifier_->Verify(token, &rejection);
  if (!claims.ok()) return unauthenticated(std::string(claims.status().message()));
  ASSIGN_OR_RETURN(Principal p, PrincipalFromClaims(*claims));
  auto principal = std::make_shared<const Principal>(std::move(p));
  absl::MutexLock lock(&cache_->mu);
  if (cache_->by_token.size() >= Cache::kMaxEntries) {
    absl::erase_if(cache_->by_token, [&](const auto& kv) {
      return kv.second->expires_at + config_.clock_skew.count() <= now;
    });
    if (cache_->by_token.size() >= Cache::kMaxEntries) cache_->by_token.clear();
  }
  cache_->by_token.insert_or_assign(std::string(token), principal);
  return principal;
}

std::shared_ptr<const Principal>& CurrentPrincipal() {
  thread_local std::shared_ptr<const Principal> principal;
  return principal;
}

}  // namespace medgrid::auth
