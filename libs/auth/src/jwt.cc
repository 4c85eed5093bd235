// JWS verification and signing on OpenSSL 3's EVP interfaces.
//
// Invariants: a token's signature is checked before anything of its payload
// is parsed or believed; the key is chosen by the header alone and must fit
// the header's alg (type and the JWK's own "alg"); only RS256, ES256 and
// EdDSA exist here, so HMAC, and with it the public-key-as-secret confusion,
// cannot be reached. OpenSSL's thread error queue is cleared after each
// failed call so no failure leaks into unrelated code.
#include "medgrid/auth/jwt.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cmath>

#include "boost/json.hpp"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::auth {
namespace json = boost::json;
namespace {

template <auto kFree>
struct Free {
  template <typename T>
  void operator()(T* p) const {
    kFree(p);
  }
};
using Pkey = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, Free<EVP_PKEY_CTX_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Free<EVP_MD_CTX_free>>;
using Bn = std::unique_ptr<BIGNUM, Free<BN_free>>;
using ParamBld = std::unique_ptr<OSSL_PARAM_BLD, Free<OSSL_PARAM_BLD_free>>;
using Params = std::unique_ptr<OSSL_PARAM, Free<OSSL_PARAM_free>>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, Free<ECDSA_SIG_free>>;
using Bio = std::unique_ptr<BIO, Free<BIO_free>>;

const unsigned char* Bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

// A larger token is refused before any parsing or hashing.
constexpr std::size_t kMaxTokenBytes = 64 << 10;
// NumericDates are clamped to this many seconds either side of 1970, so
// adding the clock skew cannot overflow.
constexpr int64_t kMaxDate = int64_t{1} << 53;

std::string Base64UrlEncode(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  auto byte = [&](std::size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(v >> shift) & 63];
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {
    const uint32_t v = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    if (rest == 2) out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

// One part of a compact JWS: base64url without padding (core::Base64Decode
// would skip '=' anywhere, and a lone trailing character holds no byte).
std::optional<std::string> DecodeSegment(std::string_view s) {
  if (s.find('=') != std::string_view::npos || s.size() % 4 == 1) return std::nullopt;
  return core::Base64Decode(s, /*url_safe=*/true);
}

std::optional<json::object> ParseObject(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.get_object());
}

std::string_view View(const json::string& s) { return {s.data(), s.size()}; }

std::optional<JwtAlg> AlgFromName(std::string_view name) {
  for (JwtAlg alg : {JwtAlg::kRS256, JwtAlg::kES256, JwtAlg::kEdDSA}) {
    if (name == AlgName(alg)) return alg;
  }
  return std::nullopt;
}

bool IsNone(std::string_view alg) {
  return alg.size() == 4 && std::equal(alg.begin(), alg.end(), "none",
                                       [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
}

// JOSE's ES256 signature is r||s, 32 bytes each; OpenSSL's is DER.
std::string EcdsaRawToDer(std::string_view raw) {
  Bn r(BN_bin2bn(Bytes(raw), 32, nullptr));
  Bn s(BN_bin2bn(Bytes(raw) + 32, 32, nullptr));
  EcdsaSig sig(ECDSA_SIG_new());
  if (!r || !s || !sig || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) return {};
  r.release();  // owned by sig now
  s.release();
  const int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return {};
  std::string der(static_cast<std::size_t>(len), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  return i2d_ECDSA_SIG(sig.get(), &out) == len ? der : std::string();
}

std::string EcdsaDerToRaw(std::string_view der) {
  const unsigned char* in = Bytes(der);
  EcdsaSig sig(d2i_ECDSA_SIG(nullptr, &in, static_cast<long>(der.size())));
  if (!sig) return {};
  std::string raw(64, '\0');
  auto* out = reinterpret_cast<unsigned char*>(raw.data());
  if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), out, 32) != 32 ||
      BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), out + 32, 32) != 32) {
    return {};
  }
  return raw;
}

// SHA-256 for RS256 and ES256; Ed25519 hashes internally and takes none.
const char* DigestOf(JwtAlg alg) { return alg == JwtAlg::kEdDSA ? nullptr : "SHA256"; }

std::string Sha256(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1) return {};
  return std::string(reinterpret_cast<const char*>(digest), len);
}

Pkey PublicKeyFromParams(const char* type, const OSSL_PARAM* params) {
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, const_cast<OSSL_PARAM*>(params)) != 1) {
    return nullptr;
  }
  return Pkey(key);
}

Pkey RsaPublicKey(std::string_view n, std::string_view e) {
  Bn bn_n(BN_bin2bn(Bytes(n), static_cast<int>(n.size()), nullptr));
  Bn bn_e(BN_bin2bn(Bytes(e), static_cast<int>(e.size()), nullptr));
  ParamBld bld(OSSL_PARAM_BLD_new());
  // An exponent of 1 (or an even one) would make every "signature" trivial or none valid.
  if (!bn_n || !bn_e || !BN_is_odd(bn_e.get()) || BN_is_one(bn_e.get()) || !bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return nullptr;
  }
  Params params(OSSL_PARAM_BLD_to_param(bld.get()));
  return params ? PublicKeyFromParams("RSA", params.get()) : nullptr;
}

// OpenSSL decodes the point and refuses one that is not on the curve.
Pkey P256PublicKey(std::string_view x, std::string_view y) {
  if (x.size() != 32 || y.size() != 32) return nullptr;
  std::string point = core::StrCat('\x04', x, y);  // SEC 1 uncompressed form
  char group[] = "prime256v1";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end(),
  };
  return PublicKeyFromParams("EC", params);
}

Pkey Ed25519PublicKey(std::string_view x) {
  if (x.size() != 32) return nullptr;
  return Pkey(EVP_PKEY_new_raw_public_key_ex(nullptr, "ED25519", nullptr, Bytes(x), x.size()));
}

std::string BnBytes(const BIGNUM* bn, int width) {
  std::string out(static_cast<std::size_t>(width), '\0');
  if (BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), width) != width) return {};
  return out;
}

std::string BnParam(const EVP_PKEY* key, const char* name, int width = 0) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) return {};
  Bn bn(raw);
  return BnBytes(bn.get(), width > 0 ? width : BN_num_bytes(bn.get()));
}

// Claims with their registered members read; nullopt when one has the wrong type.
std::optional<Claims> ClaimsFromJson(json::object payload) {
  bool ok = true;
  auto text = [&](std::string_view name) -> std::string {
    const json::value* v = payload.if_contains(name);
    if (v == nullptr) return {};
    if (!v->is_string()) ok = false;
    return v->is_string() ? std::string(View(v->get_string())) : std::string();
  };
  auto date = [&](std::string_view name) -> std::optional<int64_t> {
    const json::value* v = payload.if_contains(name);
    if (v == nullptr) return std::nullopt;
    double d = 0;
    if (v->is_int64()) {
      d = static_cast<double>(std::clamp(v->get_int64(), -kMaxDate, kMaxDate));
    } else if (v->is_uint64()) {
      d = static_cast<double>(std::min<uint64_t>(v->get_uint64(), kMaxDate));
    } else if (v->is_double() && std::isfinite(v->get_double())) {
      d = std::clamp(std::floor(v->get_double()), -static_cast<double>(kMaxDate), static_cast<double>(kMaxDate));
    } else {
      ok = false;
      return std::nullopt;
    }
    return static_cast<int64_t>(d);
  };
  Claims c;
  c.issuer = text("iss");
  c.subject = text("sub");
  c.token_id = text("jti");
  c.expires_at = date("exp");
  c.not_before = date("nbf");
  c.issued_at = date("iat");
  if (const json::value* aud = payload.if_contains("aud")) {
    if (aud->is_string()) {
      c.audience.emplace_back(View(aud->get_string()));
    } else if (aud->is_array()) {
      for (const json::value& a : aud->get_array()) {
        if (!a.is_string()) return std::nullopt;
        c.audience.emplace_back(View(a.get_string()));
      }
    } else {
      return std::nullopt;
    }
  }
  if (!ok) return std::nullopt;
  c.all = std::move(payload);
  return c;
}

}  // namespace

std::string_view AlgName(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::kRS256:
      return "RS256";
    case JwtAlg::kES256:
      return "ES256";
    case JwtAlg::kEdDSA:
      return "EdDSA";
  }
  return "";
}

std::string_view RejectionName(JwtRejection rejection) {
  switch (rejection) {
    case JwtRejection::kNone:
      return "none";
    case JwtRejection::kMalformed:
      return "malformed token";
    case JwtRejection::kAlgNone:
      return "unsigned token (alg none)";
    case JwtRejection::kUnsupportedAlg:
      return "unsupported alg";
    case JwtRejection::kUnknownKey:
      return "unknown signing key";
    case JwtRejection::kKeyAlgMismatch:
      return "key does not fit the alg";
    case JwtRejection::kBadSignature:
      return "bad signature";
    case JwtRejection::kExpired:
      return "expired";
    case JwtRejection::kNotYetValid:
      return "not yet valid";
    case JwtRejection::kWrongIssuer:
      return "wrong issuer";
    case JwtRejection::kWrongAudience:
      return "wrong audience";
    case JwtRejection::kMissingClaim:
      return "missing claim";
  }
  return "";
}

// ---- KeySet ----

struct KeySet::Key {
  Pkey pkey;
  JwtAlg fits = JwtAlg::kRS256;  // the one alg its type serves
  std::string kid;  // may be empty
  std::string alg;  // the JWK's own "alg", or empty
};

KeySet::KeySet() = default;
KeySet::~KeySet() = default;

absl::StatusOr<std::shared_ptr<const KeySet>> KeySet::Parse(std::string_view jwks_json) {
  const std::optional<json::object> doc = ParseObject(jwks_json);
  const json::value* keys = doc ? doc->if_contains("keys") : nullptr;
  if (keys == nullptr || !keys->is_array()) return absl::InvalidArgumentError("a JWKS must be {\"keys\":[...]}");
  std::shared_ptr<KeySet> set(new KeySet());
  for (const json::value& v : keys->get_array()) {
    if (!v.is_object()) return absl::InvalidArgumentError("a JWKS key is not an object");
    const json::object& jwk = v.get_object();
    auto member = [&](std::string_view name) -> std::optional<std::string_view> {
      const json::value* m = jwk.if_contains(name);
      if (m == nullptr || !m->is_string()) return std::nullopt;
      return View(m->get_string());
    };
    Key key;
    key.kid = std::string(member("kid").value_or(""));
    key.alg = std::string(member("alg").value_or(""));
    auto bad = [&](std::string_view what) {
      ERR_clear_error();
      return absl::InvalidArgumentError(core::StrCat("JWKS key '", key.kid, "': ", what));
    };
    if ((jwk.contains("kid") && !member("kid")) || (jwk.contains("alg") && !member("alg"))) {
      return bad("kid and alg must be strings");
    }
    if (const json::value* use = jwk.if_contains("use");
        use != nullptr && !(use->is_string() && use->get_string() == "sig")) {
      continue;
    }
    // A base64url member of the key; nullopt when absent or malformed.
    auto bytes = [&](std::string_view name) -> std::optional<std::string> {
      const std::optional<std::string_view> text = member(name);
      return text ? DecodeSegment(*text) : std::nullopt;
    };
    const std::string_view kty = member("kty").value_or("");
    const std::string_view crv = member("crv").value_or("");
    if (kty == "RSA") {
      const std::optional<std::string> n = bytes("n"), e = bytes("e");
      if (!n || !e || n->empty() || e->empty()) return bad("missing or malformed n or e");
      key.pkey = RsaPublicKey(*n, *e);
      if (!key.pkey) return bad("not a valid RSA public key");
      if (EVP_PKEY_get_bits(key.pkey.get()) < 2048) return bad("an RSA key must have 2048 bits or more");
      key.fits = JwtAlg::kRS256;
    } else if (kty == "EC" && crv == "P-256") {
      const std::optional<std::string> x = bytes("x"), y = bytes("y");
      if (!x || !y) return bad("missing or malformed x or y");
      key.pkey = P256PublicKey(*x, *y);
      if (!key.pkey) return bad("not a point on P-256");
      key.fits = JwtAlg::kES256;
    } else if (kty == "OKP" && crv == "Ed25519") {
      const std::optional<std::string> x = bytes("x");
      if (!x) return bad("missing or malformed x");
      key.pkey = Ed25519PublicKey(*x);
      if (!key.pkey) return bad("not a valid Ed25519 public key");
      key.fits = JwtAlg::kEdDSA;
    } else {
      continue;  // a kind this verifier has no use for
    }
    set->keys_.push_back(std::move(key));
  }
  ERR_clear_error();
  return std::shared_ptr<const KeySet>(std::move(set));
}

std::size_t KeySet::size() const { return keys_.size(); }

bool KeySet::HasKid(std::string_view kid) const {
  return std::any_of(keys_.begin(), keys_.end(), [&](const Key& k) { return k.kid == kid; });
}

JwtRejection KeySet::Verify(JwtAlg alg, std::string_view kid, std::string_view signing_input,
                            std::string_view signature) const {
  const Key* key = nullptr;
  if (!kid.empty()) {
    // Of keys sharing the kid, prefer one whose type fits the alg.
    for (const Key& k : keys_) {
      if (k.kid == kid && (key == nullptr || (key->fits != alg && k.fits == alg))) key = &k;
    }
  } else {
    int usable = 0;
    for (const Key& k : keys_) {
      if (k.fits == alg && (k.alg.empty() || k.alg == AlgName(alg))) {
        key = &k;
        ++usable;
      }
    }
    if (usable != 1) key = nullptr;
  }
  if (key == nullptr) return JwtRejection::kUnknownKey;
  if (key->fits != alg || (!key->alg.empty() && key->alg != AlgName(alg))) return JwtRejection::kKeyAlgMismatch;

  std::string der;
  if (alg == JwtAlg::kES256) {
    if (signature.size() != 64) return JwtRejection::kBadSignature;
    der = EcdsaRawToDer(signature);
    signature = der;
  }
  MdCtx ctx(EVP_MD_CTX_new());
  const bool ok =
      ctx &&
      EVP_DigestVerifyInit_ex(ctx.get(), nullptr, DigestOf(alg), nullptr, nullptr, key->pkey.get(), nullptr) == 1 &&
      EVP_DigestVerify(ctx.get(), Bytes(signature), signature.size(), Bytes(signing_input), signing_input.size()) == 1;
  ERR_clear_error();
  return ok ? JwtRejection::kNone : JwtRejection::kBadSignature;
}

// ---- JwtVerifier ----

JwtVerifier::JwtVerifier(std::shared_ptr<KeyProvider> keys, VerifyOptions options, const core::Clock& clock)
    : keys_(std::move(keys)), options_(std::move(options)), clock_(clock) {}

JwtVerifier::~JwtVerifier() = default;

int64_t JwtVerifier::NowSeconds() const {
  const int64_t micros = core::ToUnixMicros(clock_.Now());
  return micros / 1000000 - (micros % 1000000 < 0 ? 1 : 0);
}

namespace {

absl::Status Rejected(JwtRejection why, std::string_view detail = {}) {
  const std::string message =
      detail.empty() ? std::string(RejectionName(why)) : core::StrCat(RejectionName(why), ": ", detail);
  return core::Error(absl::StatusCode::kUnauthenticated, message).Http(401);
}

bool Expired(int64_t expires_at, int64_t now, std::chrono::seconds skew) { return now >= expires_at + skew.count(); }

}  // namespace

absl::StatusOr<Claims> JwtVerifier::Verify(std::string_view token, JwtRejection* rejection) const {
  JwtRejection unused;
  JwtRejection& why = rejection != nullptr ? *rejection : unused;
  auto reject = [&](JwtRejection r, std::string_view detail = {}) {
    why = r;
    return Rejected(r, detail);
  };
  why = JwtRejection::kNone;

  if (token.size() > kMaxTokenBytes) return reject(JwtRejection::kMalformed, "too long");
  const std::vector<std::string_view> parts = core::StrSplit(token, '.');
  if (parts.size() != 3) return reject(JwtRejection::kMalformed, "not three parts");
  std::optional<std::string> header_text = DecodeSegment(parts[0]);
  std::optional<std::string> payload_text = DecodeSegment(parts[1]);
  std::optional<std::string> signature = DecodeSegment(parts[2]);
  if (!header_text || !payload_text || !signature) return reject(JwtRejection::kMalformed, "bad base64url");

  const std::optional<json::object> header = ParseObject(*header_text);
  if (!header) return reject(JwtRejection::kMalformed, "header is not a JSON object");
  const json::value* alg_value = header->if_contains("alg");
  if (alg_value == nullptr || !alg_value->is_string()) return reject(JwtRejection::kMalformed, "no alg");
  const std::string_view alg_name = View(alg_value->get_string());
  if (IsNone(alg_name)) return reject(JwtRejection::kAlgNone);
  const std::optional<JwtAlg> alg = AlgFromName(alg_name);
  if (!alg ||
      std::find(options_.allowed_algs.begin(), options_.allowed_algs.end(), *alg) == options_.allowed_algs.end()) {
    return reject(JwtRejection::kUnsupportedAlg);
  }
  // RFC 7515 4.1.11: a critical extension the verifier does not know must fail it, and none is known here.
  if (header->contains("crit")) return reject(JwtRejection::kMalformed, "unsupported crit header");
  std::string_view kid;
  if (const json::value* k = header->if_contains("kid")) {
    if (!k->is_string()) return reject(JwtRejection::kMalformed, "kid is not a string");
    kid = View(k->get_string());
  }

  const std::string_view signing_input = token.substr(0, parts[0].size() + 1 + parts[1].size());
  JwtRejection checked = keys_->Keys()->Verify(*alg, kid, signing_input, *signature);
  if (checked == JwtRejection::kUnknownKey && !kid.empty()) {
    checked = keys_->KeysAfterUnknownKid(kid)->Verify(*alg, kid, signing_input, *signature);
  }
  if (checked != JwtRejection::kNone) return reject(checked);

  std::optional<json::object> payload = ParseObject(*payload_text);
  if (!payload) return reject(JwtRejection::kMalformed, "claims are not a JSON object");
  std::optional<Claims> claims = ClaimsFromJson(std::move(*payload));
  if (!claims) return reject(JwtRejection::kMalformed, "a registered claim has the wrong type");
  const int64_t now = NowSeconds();
  if (claims->expires_at && Expired(*claims->expires_at, now, options_.clock_skew)) {
    return reject(JwtRejection::kExpired);
  }
  if (claims->not_before && now + options_.clock_skew.count() < *claims->not_before) {
    return reject(JwtRejection::kNotYetValid);
  }
  if (!options_.issuer.empty() && claims->issuer != options_.issuer) return reject(JwtRejection::kWrongIssuer);
  if (!options_.audience.empty() &&
      std::find(claims->audience.begin(), claims->audience.end(), options_.audience) == claims->audience.end()) {
    return reject(JwtRejection::kWrongAudience);
  }
  if (options_.require_expiry && !claims->expires_at) return reject(JwtRejection::kMissingClaim, "exp");
  return std::move(*claims);
}

absl::StatusOr<std::shared_ptr<const Claims>> JwtVerifier::VerifyCached(std::string_view token,
                                                                        JwtRejection* rejection) {
  const std::string digest = token.size() <= kMaxTokenBytes ? Sha256(token) : std::string();
  const int64_t now = NowSeconds();
  if (!digest.empty()) {
    absl::MutexLock lock(&mu_);
    if (auto it = cache_.find(digest); it != cache_.end()) {
      if (!Expired(it->second.expires_at, now, options_.clock_skew)) {
        if (rejection != nullptr) *rejection = JwtRejection::kNone;
        return it->second.claims;
      }
      cache_.erase(it);
      if (rejection != nullptr) *rejection = JwtRejection::kExpired;
      return Rejected(JwtRejection::kExpired);
    }
  }
  ASSIGN_OR_RETURN(Claims verified, Verify(token, rejection));
  auto claims = std::make_shared<const Claims>(std::move(verified));
  if (digest.empty() || !claims->expires_at || options_.cache_capacity == 0) return claims;
  absl::MutexLock lock(&mu_);
  if (cache_.size() >= options_.cache_capacity) {
    for (auto it = cache_.begin(); it != cache_.end();) {
      it = Expired(it->second.expires_at, now, options_.clock_skew) ? cache_.erase(it) : std::next(it);
    }
    // Still full of live tokens: drop a tenth, whichever; they are verified again when next seen.
    while (!cache_.empty() && cache_.size() > options_.cache_capacity * 9 / 10) cache_.erase(cache_.begin());
  }
  cache_.emplace(digest, Cached{claims, *claims->expires_at});
  return claims;
}

// ---- JwtSigner ----

struct JwtSigner::Key {
  Pkey pkey;
};

JwtSigner::JwtSigner(std::shared_ptr<const Key> key, JwtAlg alg, std::string kid)
    : key_(std::move(key)), alg_(alg), kid_(std::move(kid)) {}

absl::StatusOr<JwtSigner> JwtSigner::FromPem(std::string_view private_key_pem, std::string kid) {
  Bio bio(BIO_new_mem_buf(private_key_pem.data(), static_cast<int>(private_key_pem.size())));
  // An encrypted key fails instead of prompting for a passphrase on the terminal.
  pem_password_cb* no_passphrase = [](char*, int, int, void*) { return 0; };
  Pkey pkey(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr) : nullptr);
  ERR_clear_error();
  if (!pkey) return absl::InvalidArgumentError("not an unencrypted PEM private key");
  JwtAlg alg;
  if (EVP_PKEY_is_a(pkey.get(), "RSA")) {
    if (EVP_PKEY_get_bits(pkey.get()) < 2048)
      return absl::InvalidArgumentError("an RSA key must have 2048 bits or more");
    alg = JwtAlg::kRS256;
  } else if (EVP_PKEY_is_a(pkey.get(), "EC")) {
    char group[32] = {};
    if (EVP_PKEY_get_utf8_string_param(pkey.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, nullptr) != 1 ||
        std::string_view(group) != "prime256v1") {
      ERR_clear_error();
      return absl::InvalidArgumentError("an EC key must be on P-256");
    }
    alg = JwtAlg::kES256;
  } else if (EVP_PKEY_is_a(pkey.get(), "ED25519")) {
    alg = JwtAlg::kEdDSA;
  } else {
    return absl::InvalidArgumentError("the key must be RSA, EC P-256 or Ed25519");
  }
  return JwtSigner(std::make_shared<const Key>(Key{std::move(pkey)}), alg, std::move(kid));
}

std::string JwtSigner::Sign(const json::object& claims) const {
  json::object header;
  header["alg"] = json::string_view(AlgName(alg_).data(), AlgName(alg_).size());
  header["typ"] = "JWT";
  if (!kid_.empty()) header["kid"] = kid_;
  const std::string input =
      core::StrCat(Base64UrlEncode(json::serialize(header)), ".", Base64UrlEncode(json::serialize(claims)));
  MdCtx ctx(EVP_MD_CTX_new());
  std::size_t len = 0;
  if (!ctx ||
      EVP_DigestSignInit_ex(ctx.get(), nullptr, DigestOf(alg_), nullptr, nullptr, key_->pkey.get(), nullptr) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, Bytes(input), input.size()) != 1) {
    ERR_clear_error();
    return {};
  }
  std::string signature(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &len, Bytes(input), input.size()) !=
      1) {
    ERR_clear_error();
    return {};
  }
  signature.resize(len);
  if (alg_ == JwtAlg::kES256) signature = EcdsaDerToRaw(signature);
  if (signature.empty()) return {};
  return core::StrCat(input, ".", Base64UrlEncode(signature));
}

std::string JwtSigner::PublicJwks() const {
  const EVP_PKEY* pkey = key_->pkey.get();
  json::object jwk;
  switch (alg_) {
    case JwtAlg::kRS256:
      jwk["kty"] = "RSA";
      jwk["n"] = Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_RSA_N));
      jwk["e"] = Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_RSA_E));
      break;
    case JwtAlg::kES256:
      jwk["kty"] = "EC";
      jwk["crv"] = "P-256";
      jwk["x"] = Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32));
      jwk["y"] = Base64UrlEncode(BnParam(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32));
      break;
    case JwtAlg::kEdDSA: {
      std::string x(32, '\0');
      std::size_t len = x.size();
      if (EVP_PKEY_get_raw_public_key(pkey, reinterpret_cast<unsigned char*>(x.data()), &len) != 1) x.clear();
      jwk["kty"] = "OKP";
      jwk["crv"] = "Ed25519";
      jwk["x"] = Base64UrlEncode(x.substr(0, len));
      break;
    }
  }
  ERR_clear_error();
  if (!kid_.empty()) jwk["kid"] = kid_;
  jwk["alg"] = json::string_view(AlgName(alg_).data(), AlgName(alg_).size());
  jwk["use"] = "sig";
  json::object jwks;
  jwks["keys"] = json::array{std::move(jwk)};
  return json::serialize(jwks);
}

absl::StatusOr<std::string> GeneratePrivateKeyPem(JwtAlg alg) {
  Pkey pkey;
  switch (alg) {
    case JwtAlg::kRS256:
      pkey.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{2048}));
      break;
    case JwtAlg::kES256:
      pkey.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
      break;
    case JwtAlg::kEdDSA:
      pkey.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
      break;
  }
  Bio bio(BIO_new(BIO_s_mem()));
  if (!pkey || !bio ||
      PEM_write_bio_PKCS8PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    ERR_clear_error();
    return absl::InternalError("OpenSSL could not generate a key");
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

}  // namespace medgrid::auth
