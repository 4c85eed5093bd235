// Bearer token verification and signing: the RFC 7515 and RFC 8037 known
// answers, a sign/verify round trip per algorithm, each reason a token is
// refused, key rotation through a JWKS file, the verified-token cache, and
// a JWKS served over loopback HTTP.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/json.hpp"
#include "gtest/gtest.h"
#include "integration/receiver.h"
#include "medgrid/auth/jwks.h"
#include "medgrid/auth/jwt.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/http/client.h"
#include "medgrid/http/external.h"

namespace medgrid::auth {

// gtest prints rejections by name.
void PrintTo(JwtRejection r, std::ostream* os) { *os << RejectionName(r); }

namespace {

namespace json = boost::json;
using std::chrono::milliseconds;
using std::chrono::microseconds;
using std::chrono::seconds;
using medgrid::testing::Receiver;

constexpr int64_t kNow = 1'700'000'000;
constexpr std::string_view kIssuer = "https://idp.example";
constexpr std::string_view kAudience = "medgrid";

std::string B64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::string Unb64(std::string_view in) { return core::Base64Decode(in, true).value(); }

// A compact JWS of the given parts, with `signature` (raw bytes) as is.
std::string Token(std::string_view header, std::string_view payload, std::string_view signature) {
  return core::StrCat(B64(header), ".", B64(payload), ".", B64(signature));
}

// The token with one character of part `part` (0 header, 1 payload, 2
// signature) replaced by another base64url character.
std::string Tamper(std::string token, int part) {
  std::size_t start = 0;
  for (int i = 0; i < part; ++i) start = token.find('.', start) + 1;
  char& c = token[start + 5];
  c = c == 'A' ? 'B' : 'A';
  return token;
}

// The token with one byte of its decoded signature flipped.
std::string FlipSignatureByte(const std::string& token) {
  const std::size_t dot = token.rfind('.');
  std::string signature = Unb64(token.substr(dot + 1));
  signature[signature.size() / 2] ^= 0x01;
  return core::StrCat(token.substr(0, dot + 1), B64(signature));
}

std::string S(const json::value& v) { return std::string(v.as_string().data(), v.as_string().size()); }

struct TestKey {
  std::string pem;
  JwtSigner signer;
};

// Keys are made once: RSA generation takes a while.
const TestKey& Key(JwtAlg alg, std::string_view kid) {
  static std::map<std::string, std::unique_ptr<TestKey>, std::less<>> keys;
  const std::string name = core::StrCat(AlgName(alg), "/", kid);
  if (auto it = keys.find(name); it != keys.end()) return *it->second;
  std::string pem = GeneratePrivateKeyPem(alg).value();
  JwtSigner signer = JwtSigner::FromPem(pem, std::string(kid)).value();
  return *keys.emplace(name, std::make_unique<TestKey>(TestKey{std::move(pem), std::move(signer)})).first->second;
}
const JwtSigner& Rsa() { return Key(JwtAlg::kRS256, "rsa-1").signer; }
const JwtSigner& Ec() { return Key(JwtAlg::kES256, "ec-1").signer; }
const JwtSigner& Ed() { return Key(JwtAlg::kEdDSA, "ed-1").signer; }

std::string JwksOf(json::array keys) {
  json::object doc;
  doc["keys"] = std::move(keys);
  return json::serialize(doc);
}

// One JWKS of the public keys of `signers`.
std::string Jwks(std::initializer_list<const JwtSigner*> signers) {
  json::array keys;
  for (const JwtSigner* s : signers) {
    json::value jwks = json::parse(s->PublicJwks());
    for (json::value& k : jwks.at("keys").as_array()) keys.push_back(std::move(k));
  }
  return JwksOf(std::move(keys));
}

std::shared_ptr<const KeySet> Keys(std::string_view jwks) { return KeySet::Parse(jwks).value(); }

// Keys that tests swap, counting the refetches a verifier asks for.
class FakeKeys final : public KeyProvider {
 public:
  explicit FakeKeys(std::shared_ptr<const KeySet> keys) : keys_(std::move(keys)) {}
  std::shared_ptr<const KeySet> Keys() override { return keys_; }
  std::shared_ptr<const KeySet> KeysAfterUnknownKid(std::string_view kid) override {
    refetched_kids.emplace_back(kid);
    return keys_;
  }
  void Set(std::shared_ptr<const KeySet> keys) { keys_ = std::move(keys); }
  std::vector<std::string> refetched_kids;

 private:
  std::shared_ptr<const KeySet> keys_;
};

// Ed25519 over any bytes, for payloads JwtSigner would not produce.
std::string SignEd25519(std::string_view pem, std::string_view input) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::string signature(64, '\0');
  std::size_t len = signature.size();
  EXPECT_EQ(EVP_DigestSignInit_ex(ctx, nullptr, nullptr, nullptr, nullptr, key, nullptr), 1);
  EXPECT_EQ(EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(signature.data()), &len,
                           reinterpret_cast<const unsigned char*>(input.data()), input.size()),
            1);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  BIO_free(bio);
  return signature;
}

class JwtTest : public ::testing::Test {
 protected:
  JwtTest() {
    options_.issuer = std::string(kIssuer);
    options_.audience = std::string(kAudience);
  }

  json::object Claims(int64_t expires_in = 300) const {
    return {{"iss", kIssuer}, {"sub", "user-7"}, {"aud", kAudience}, {"exp", kNow + expires_in},
            {"iat", kNow},    {"jti", "t-1"},    {"tenant", "acme"}};
  }

  // Verifies with the RSA, EC and Ed25519 test keys; the rejection, kNone if accepted.
  JwtRejection Check(std::string_view token) {
    JwtVerifier verifier(keys_, options_, clock_);
    JwtRejection why = JwtRejection::kAlgNone;  // Verify must overwrite it
    absl::StatusOr<auth::Claims> claims = verifier.Verify(token, &why);
    if (claims.ok()) {
      EXPECT_EQ(why, JwtRejection::kNone);
      return why;
    }
    EXPECT_EQ(claims.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(core::HttpStatusOf(claims.status()), 401);
    if (!token.empty()) {
      EXPECT_EQ(std::string(claims.status().message()).find(std::string(token)), std::string::npos);
    }
    EXPECT_NE(why, JwtRejection::kNone);
    return why;
  }

  core::SimulatedClock clock_{core::FromUnixMicros(kNow * 1'000'000)};
  VerifyOptions options_;
  std::shared_ptr<FakeKeys> keys_ = std::make_shared<FakeKeys>(Keys(Jwks({&Rsa(), &Ec(), &Ed()})));
};

// ---- Known answers ----

constexpr std::string_view kRfcPayload =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

class KnownAnswerTest : public ::testing::Test {
 protected:
  KnownAnswerTest() { options_.require_expiry = false; }
  // The RFC 7515 payloads expire at 1300819380.
  core::SimulatedClock clock_{core::FromUnixMicros(int64_t{1'300'000'000} * 1'000'000)};
  VerifyOptions options_;
};

TEST_F(KnownAnswerTest, Rfc7515A2Rs256) {
  const std::string jwk = R"({"keys":[{"kty":"RSA",
    "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
    "e":"AQAB"}]})";
  const std::string token = core::StrCat(
      "eyJhbGciOiJSUzI1NiJ9.", kRfcPayload,
      ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7"
      "t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi1"
      "2jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlU"
      "PQGe77Rw");
  JwtVerifier verifier(std::make_shared<StaticKeys>(Keys(jwk)), options_, clock_);
  absl::StatusOr<Claims> claims = verifier.Verify(token);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->issuer, "joe");
  EXPECT_EQ(claims->expires_at, 1300819380);
  EXPECT_TRUE(claims->all.at("http://example.com/is_root").as_bool());
  JwtRejection why = JwtRejection::kNone;
  EXPECT_FALSE(verifier.Verify(Tamper(token, 1), &why).ok());
  EXPECT_EQ(why, JwtRejection::kBadSignature);
  EXPECT_FALSE(verifier.Verify(FlipSignatureByte(token), &why).ok());
  EXPECT_EQ(why, JwtRejection::kBadSignature);
}

TEST_F(KnownAnswerTest, Rfc7515A3Es256) {
  const std::string jwk = R"({"keys":[{"kty":"EC","crv":"P-256",
    "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})";
  const std::string token =
      core::StrCat("eyJhbGciOiJFUzI1NiJ9.", kRfcPayload,
                   ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q");
  JwtVerifier verifier(std::make_shared<StaticKeys>(Keys(jwk)), options_, clock_);
  absl::StatusOr<Claims> claims = verifier.Verify(token);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->issuer, "joe");
  JwtRejection why = JwtRejection::kNone;
  EXPECT_FALSE(verifier.Verify(Tamper(token, 1), &why).ok());
  EXPECT_EQ(why, JwtRejection::kBadSignature);
  EXPECT_FALSE(verifier.Verify(FlipSignatureByte(token), &why).ok());
  EXPECT_EQ(why, JwtRejection::kBadSignature);
  // The JOSE form is exactly 64 bytes (r||s); any other length is refused.
  const std::string input = token.substr(0, token.rfind('.') + 1);
  const std::string raw = Unb64(token.substr(token.rfind('.') + 1));
  for (const std::string& signature : {core::StrCat(raw, std::string(1, '\0')), raw.substr(0, 63)}) {
    EXPECT_FALSE(verifier.Verify(core::StrCat(input, B64(signature)), &why).ok());
    EXPECT_EQ(why, JwtRejection::kBadSignature);
  }
}

TEST_F(KnownAnswerTest, Rfc8037A4Ed25519) {
  auto keys = Keys(R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})");
  const std::string input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
  const std::string token =
      input + ".hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
  const std::string signature = Unb64(token.substr(token.rfind('.') + 1));
  EXPECT_EQ(keys->Verify(JwtAlg::kEdDSA, "", input, signature), JwtRejection::kNone);
  // The vector's payload is text, not claims: the token passes the
  // signature check and only then fails, as malformed.
  JwtVerifier verifier(std::make_shared<StaticKeys>(keys), options_, clock_);
  JwtRejection why = JwtRejection::kNone;
  EXPECT_FALSE(verifier.Verify(token, &why).ok());
  EXPECT_EQ(why, JwtRejection::kMalformed);
  EXPECT_FALSE(verifier.Verify(Tamper(token, 1), &why).ok());
  EXPECT_EQ(why, JwtRejection::kBadSignature);
  EXPECT_FALSE(verifier.Verify(FlipSignatureByte(token), &why).ok());
  EXPECT_EQ(why, JwtRejection::kBadSignature);
}

// ---- Signing ----

TEST_F(JwtTest, EachAlgorithmRoundTrips) {
  for (const JwtSigner* signer : {&Rsa(), &Ec(), &Ed()}) {
    SCOPED_TRACE(AlgName(signer->alg()));
    const std::string token = signer->Sign(Claims());
    JwtVerifier verifier(keys_, options_, clock_);
    absl::StatusOr<auth::Claims> claims = verifier.Verify(token);
    ASSERT_TRUE(claims.ok()) << claims.status();
    EXPECT_EQ(claims->issuer, kIssuer);
    EXPECT_EQ(claims->subject, "user-7");
    EXPECT_EQ(claims->audience, std::vector<std::string>{std::string(kAudience)});
    EXPECT_EQ(claims->expires_at, kNow + 300);
    EXPECT_EQ(claims->issued_at, kNow);
    EXPECT_EQ(claims->not_before, std::nullopt);
    EXPECT_EQ(claims->token_id, "t-1");
    EXPECT_EQ(S(claims->all.at("tenant")), "acme");
    const json::value header = json::parse(Unb64(token.substr(0, token.find('.'))));
    EXPECT_EQ(S(header.at("alg")), AlgName(signer->alg()));
    EXPECT_EQ(S(header.at("typ")), "JWT");
    EXPECT_EQ(S(header.at("kid")), signer->kid());
    EXPECT_EQ(Check(FlipSignatureByte(token)), JwtRejection::kBadSignature);
  }
  EXPECT_EQ(Rsa().alg(), JwtAlg::kRS256);
  EXPECT_EQ(Ec().alg(), JwtAlg::kES256);
  EXPECT_EQ(Ed().alg(), JwtAlg::kEdDSA);
  const std::string es256 = Ec().Sign(Claims());
  EXPECT_EQ(Unb64(es256.substr(es256.rfind('.') + 1)).size(), 64u);
}

TEST(JwtSignerTest, PublishesItsPublicKeyOnly) {
  const json::value jwks = json::parse(Rsa().PublicJwks());
  const json::object& key = jwks.at("keys").at(0).as_object();
  EXPECT_EQ(S(key.at("kty")), "RSA");
  EXPECT_EQ(S(key.at("kid")), "rsa-1");
  EXPECT_EQ(S(key.at("alg")), "RS256");
  EXPECT_EQ(S(key.at("use")), "sig");
  EXPECT_EQ(S(key.at("e")), "AQAB");
  EXPECT_FALSE(key.contains("d"));
  EXPECT_EQ(Unb64(S(key.at("n"))).size(), 256u);
  const json::value ec_jwks = json::parse(Ec().PublicJwks());
  const json::object& ec = ec_jwks.at("keys").at(0).as_object();
  EXPECT_EQ(S(ec.at("crv")), "P-256");
  EXPECT_EQ(Unb64(S(ec.at("x"))).size(), 32u);
  EXPECT_FALSE(ec.contains("d"));
  const json::value ed_jwks = json::parse(Ed().PublicJwks());
  const json::object& ed = ed_jwks.at("keys").at(0).as_object();
  EXPECT_EQ(S(ed.at("kty")), "OKP");
  EXPECT_EQ(S(ed.at("crv")), "Ed25519");
  EXPECT_EQ(Unb64(S(ed.at("x"))).size(), 32u);
  EXPECT_FALSE(ed.contains("d"));
}

TEST(JwtSignerTest, RefusesKeysItCannotUse) {
  EXPECT_EQ(JwtSigner::FromPem("not a key", "k").status().code(), absl::StatusCode::kInvalidArgument);
  EVP_PKEY* p384 = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
  EVP_PKEY* rsa1024 = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{1024});
  for (EVP_PKEY* key : {p384, rsa1024}) {
    BIO* bio = BIO_new(BIO_s_mem());
    ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    EXPECT_EQ(JwtSigner::FromPem(std::string_view(data, static_cast<std::size_t>(len)), "k").status().code(),
              absl::StatusCode::kInvalidArgument);
    BIO_free(bio);
    EVP_PKEY_free(key);
  }
  // The same code accepts a key it can use.
  EXPECT_TRUE(JwtSigner::FromPem(Key(JwtAlg::kES256, "ec-1").pem, "k").ok());
}

// ---- Key sets ----

TEST(KeySetTest, SkipsKeysOfOtherKindsAndUses) {
  json::object rsa = json::parse(Rsa().PublicJwks()).at("keys").at(0).as_object();
  json::object enc = rsa;
  enc["kid"] = "enc-1";
  enc["use"] = "enc";
  json::array others = json::parse(R"([
      {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
      {"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"},
      {"kty":"OKP","crv":"X25519","kid":"x","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}])")
                           .as_array();
  others.push_back(rsa);
  others.push_back(enc);
  absl::StatusOr<std::shared_ptr<const KeySet>> keys = KeySet::Parse(JwksOf(others));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ((*keys)->size(), 1u);
  EXPECT_TRUE((*keys)->HasKid("rsa-1"));
  EXPECT_FALSE((*keys)->HasKid("enc-1"));
  EXPECT_FALSE((*keys)->HasKid("hmac"));
}

TEST(KeySetTest, RefusesMalformedKeysOfKindsItUses) {
  const std::string x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
  std::string y = Unb64("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0");
  ASSERT_TRUE(
      KeySet::Parse(core::StrCat(R"({"keys":[{"kty":"EC","crv":"P-256","x":")", x, R"(","y":")", B64(y), R"("}]})"))
          .ok());
  y[31] ^= 1;  // off the curve
  const std::string short_n = B64(std::string(128, '\xff'));
  const std::string long_n = B64(std::string(256, '\xff'));
  for (const std::string& text : {
           std::string("[]"),
           std::string(R"({"keys":{}})"),
           std::string("not json"),
           std::string(R"({"keys":[{"kty":"RSA","kid":"k","n":"***","e":"AQAB"}]})"),
           std::string(R"({"keys":[{"kty":"RSA","kid":"k","e":"AQAB"}]})"),
           core::StrCat(R"({"keys":[{"kty":"RSA","kid":"k","n":")", short_n, R"(","e":"AQAB"}]})"),
           core::StrCat(R"({"keys":[{"kty":"RSA","kid":"k","n":")", long_n, R"(","e":"AQ"}]})"),  // e = 1
           core::StrCat(R"({"keys":[{"kty":"EC","crv":"P-256","x":")", x, R"(","y":")", B64(y), R"("}]})"),
           std::string(R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]})"),
           std::string(
               R"({"keys":[{"kty":"OKP","crv":"Ed25519","kid":7,"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})"),
       }) {
    EXPECT_EQ(KeySet::Parse(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

// ---- Each rejection ----

TEST_F(JwtTest, AlgNoneIsRefused) {
  const std::string payload = json::serialize(Claims());
  EXPECT_EQ(Check(core::StrCat(B64(R"({"alg":"none"})"), ".", B64(payload), ".")), JwtRejection::kAlgNone);
  EXPECT_EQ(Check(Token(R"({"alg":"none","kid":"rsa-1"})", payload, "signature")), JwtRejection::kAlgNone);
  EXPECT_EQ(Check(Token(R"({"alg":"NoNe"})", payload, "")), JwtRejection::kAlgNone);
}

TEST_F(JwtTest, Hs256WithThePublicKeyAsTheSecretIsRefused) {
  // The classic confusion: HMAC keyed with the RSA public key's PEM, which
  // anyone can fetch. A verifier that fed the key's bytes to HMAC would pass it.
  BIO* in = BIO_new_mem_buf(Key(JwtAlg::kRS256, "rsa-1").pem.data(), -1);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PUBKEY(out, key), 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(out, &data);
  const std::string public_pem(data, static_cast<std::size_t>(len));
  BIO_free(out);
  EVP_PKEY_free(key);
  BIO_free(in);

  const std::string input =
      core::StrCat(B64(R"({"alg":"HS256","typ":"JWT","kid":"rsa-1"})"), ".", B64(json::serialize(Claims())));
  unsigned char mac[32];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), public_pem.data(), static_cast<int>(public_pem.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &mac_len);
  const std::string token = core::StrCat(input, ".", B64(std::string_view(reinterpret_cast<char*>(mac), mac_len)));
  EXPECT_EQ(Check(token), JwtRejection::kUnsupportedAlg);
}

TEST_F(JwtTest, AlgOutsideTheAllowedListIsRefused) {
  const std::string token = Ed().Sign(Claims());
  EXPECT_EQ(Check(token), JwtRejection::kNone);
  options_.allowed_algs = {JwtAlg::kRS256, JwtAlg::kES256};
  EXPECT_EQ(Check(token), JwtRejection::kUnsupportedAlg);
  EXPECT_EQ(Check(Token(R"({"alg":"RS512","kid":"rsa-1"})", json::serialize(Claims()), "x")),
            JwtRejection::kUnsupportedAlg);
}

TEST_F(JwtTest, RsaKeyWithAnEs256HeaderIsAKeyAlgMismatch) {
  // A valid ES256 signature, under a header naming the RSA key: refused for
  // the key's type even when its JWK has no "alg" of its own.
  const JwtSigner& forger = Key(JwtAlg::kES256, "rsa-1").signer;
  EXPECT_EQ(Check(forger.Sign(Claims())), JwtRejection::kKeyAlgMismatch);
  json::object rsa = json::parse(Rsa().PublicJwks()).at("keys").at(0).as_object();
  rsa.erase("alg");
  keys_->Set(Keys(JwksOf(json::array({rsa}))));
  EXPECT_EQ(Check(forger.Sign(Claims())), JwtRejection::kKeyAlgMismatch);
}

TEST_F(JwtTest, KeyWithItsOwnAlgRefusesAnother) {
  json::object rsa = json::parse(Rsa().PublicJwks()).at("keys").at(0).as_object();
  rsa["alg"] = "PS256";
  keys_->Set(Keys(JwksOf(json::array({rsa}))));
  EXPECT_EQ(Check(Rsa().Sign(Claims())), JwtRejection::kKeyAlgMismatch);
  rsa["alg"] = "RS256";
  keys_->Set(Keys(JwksOf(json::array({rsa}))));
  EXPECT_EQ(Check(Rsa().Sign(Claims())), JwtRejection::kNone);
}

TEST_F(JwtTest, UnknownKidIsRefusedAfterOneRefetch) {
  const JwtSigner& stranger = Key(JwtAlg::kRS256, "rsa-2").signer;
  EXPECT_EQ(Check(stranger.Sign(Claims())), JwtRejection::kUnknownKey);
  EXPECT_EQ(keys_->refetched_kids, std::vector<std::string>{"rsa-2"});
  // Once the provider has the key, the same token verifies.
  keys_->Set(Keys(Jwks({&Rsa(), &stranger})));
  EXPECT_EQ(Check(stranger.Sign(Claims())), JwtRejection::kNone);
}

TEST_F(JwtTest, TokenWithoutKidNeedsExactlyOneKeyForItsAlg) {
  const JwtSigner& anonymous = Key(JwtAlg::kEdDSA, "").signer;
  const TestKey& other = Key(JwtAlg::kEdDSA, "ed-2");
  keys_->Set(Keys(Jwks({&Rsa(), &anonymous})));
  EXPECT_EQ(Check(anonymous.Sign(Claims())), JwtRejection::kNone);
  keys_->Set(Keys(Jwks({&Rsa(), &anonymous, &other.signer})));
  EXPECT_EQ(Check(anonymous.Sign(Claims())), JwtRejection::kUnknownKey);
  EXPECT_TRUE(keys_->refetched_kids.empty());  // no kid to look for
}

TEST_F(JwtTest, MalformedTokensAreRefused) {
  const std::string header = B64(R"({"alg":"EdDSA","kid":"ed-1"})");
  const std::string payload = B64(json::serialize(Claims()));
  const std::string input = core::StrCat(header, ".", payload);
  const std::string signature = B64(SignEd25519(Key(JwtAlg::kEdDSA, "ed-1").pem, input));
  ASSERT_EQ(Check(core::StrCat(input, ".", signature)), JwtRejection::kNone);

  EXPECT_EQ(Check(input), JwtRejection::kMalformed);                                     // 2 parts
  EXPECT_EQ(Check(core::StrCat(input, ".", signature, ".")), JwtRejection::kMalformed);  // 4 parts
  EXPECT_EQ(Check(""), JwtRejection::kMalformed);
  EXPECT_EQ(Check(core::StrCat(header, ".", payload, "*.", signature)), JwtRejection::kMalformed);        // base64
  EXPECT_EQ(Check(core::StrCat(header, "=.", payload, ".", signature)), JwtRejection::kMalformed);        // padding
  EXPECT_EQ(Check(core::StrCat(header, ".", payload, ".", signature, "AAA")), JwtRejection::kMalformed);  // 6 bits left
  EXPECT_EQ(Check(core::StrCat(B64("{\"alg\":"), ".", payload, ".", signature)), JwtRejection::kMalformed);
  EXPECT_EQ(Check(core::StrCat(B64(R"(["EdDSA"])"), ".", payload, ".", signature)), JwtRejection::kMalformed);
  EXPECT_EQ(Check(core::StrCat(B64(R"({"kid":"ed-1"})"), ".", payload, ".", signature)), JwtRejection::kMalformed);
  EXPECT_EQ(Check(core::StrCat(B64(R"({"alg":"EdDSA","crit":["exp"]})"), ".", payload, ".", signature)),
            JwtRejection::kMalformed);
  EXPECT_EQ(Check(std::string(70 << 10, 'a')), JwtRejection::kMalformed);

  // Claims that are not an object, or registered claims of the wrong type,
  // under a good signature.
  for (const std::string claims : {"[1,2]", "\"text\"", "not json", R"({"exp":"tomorrow"})", R"({"aud":7})",
                                   R"({"iss":["a"]})", R"({"aud":["medgrid",7]})"}) {
    const std::string signed_input = core::StrCat(header, ".", B64(claims));
    const std::string token =
        core::StrCat(signed_input, ".", B64(SignEd25519(Key(JwtAlg::kEdDSA, "ed-1").pem, signed_input)));
    EXPECT_EQ(Check(token), JwtRejection::kMalformed) << claims;
  }
}

TEST_F(JwtTest, SignatureIsCheckedBeforeClaims) {
  const std::string expired = Rsa().Sign(Claims(-3600));
  EXPECT_EQ(Check(expired), JwtRejection::kExpired);
  EXPECT_EQ(Check(FlipSignatureByte(expired)), JwtRejection::kBadSignature);
}

TEST_F(JwtTest, ExpiredTokenIsRefused) {
  EXPECT_EQ(Check(Ec().Sign(Claims(-61))), JwtRejection::kExpired);
  EXPECT_EQ(Check(Ec().Sign(Claims(-60))), JwtRejection::kExpired);  // exp + skew is past too
}

TEST_F(JwtTest, ExpiredWithinTheSkewIsAccepted) {
  const std::string token = Ec().Sign(Claims(-30));
  EXPECT_EQ(Check(token), JwtRejection::kNone);
  options_.clock_skew = seconds(0);
  EXPECT_EQ(Check(token), JwtRejection::kExpired);
}

TEST_F(JwtTest, NotYetValidTokenIsRefused) {
  json::object claims = Claims();
  claims["nbf"] = kNow + 61;
  EXPECT_EQ(Check(Ed().Sign(claims)), JwtRejection::kNotYetValid);
}

TEST_F(JwtTest, NotBeforeWithinTheSkewIsAccepted) {
  json::object claims = Claims();
  claims["nbf"] = kNow + 30;
  const std::string token = Ed().Sign(claims);
  EXPECT_EQ(Check(token), JwtRejection::kNone);
  options_.clock_skew = seconds(0);
  EXPECT_EQ(Check(token), JwtRejection::kNotYetValid);
}

TEST_F(JwtTest, WrongIssuerIsRefused) {
  json::object claims = Claims();
  claims["iss"] = "https://idp.example.evil";
  EXPECT_EQ(Check(Rsa().Sign(claims)), JwtRejection::kWrongIssuer);
  claims.erase("iss");
  EXPECT_EQ(Check(Rsa().Sign(claims)), JwtRejection::kWrongIssuer);
  options_.issuer.clear();  // not checked
  EXPECT_EQ(Check(Rsa().Sign(claims)), JwtRejection::kNone);
}

TEST_F(JwtTest, WrongAudienceIsRefused) {
  json::object claims = Claims();
  claims["aud"] = "other-api";
  EXPECT_EQ(Check(Rsa().Sign(claims)), JwtRejection::kWrongAudience);
  claims["aud"] = json::array{"other-api", "medgrid-admin"};
  EXPECT_EQ(Check(Rsa().Sign(claims)), JwtRejection::kWrongAudience);
  claims["aud"] = json::array{"other-api", kAudience};
  EXPECT_EQ(Check(Rsa().Sign(claims)), JwtRejection::kNone);
  claims.erase("aud");
  EXPECT_EQ(Check(Rsa().Sign(claims)), JwtRejection::kWrongAudience);
}

TEST_F(JwtTest, MissingExpiryIsRefused) {
  json::object claims = Claims();
  claims.erase("exp");
  const std::string token = Ed().Sign(claims);
  EXPECT_EQ(Check(token), JwtRejection::kMissingClaim);
  options_.require_expiry = false;
  EXPECT_EQ(Check(token), JwtRejection::kNone);
}

TEST(RejectionNameTest, EveryReasonHasItsOwnText) {
  std::set<std::string_view> names;
  for (int r = 0; r <= static_cast<int>(JwtRejection::kMissingClaim); ++r) {
    names.insert(RejectionName(static_cast<JwtRejection>(r)));
  }
  EXPECT_EQ(names.size(), static_cast<std::size_t>(JwtRejection::kMissingClaim) + 1);
  EXPECT_FALSE(names.contains(""));
}

// ---- The cache ----

TEST_F(JwtTest, VerifyCachedServesTheSameClaimsUntilExpiry) {
  JwtVerifier verifier(keys_, options_, clock_);
  const std::string token = Ec().Sign(Claims(100));
  absl::StatusOr<std::shared_ptr<const auth::Claims>> first = verifier.VerifyCached(token);
  ASSERT_TRUE(first.ok()) << first.status();
  // With the keys gone, only a cached answer can still be good.
  keys_->Set(Keys(R"({"keys":[]})"));
  JwtRejection why = JwtRejection::kAlgNone;
  absl::StatusOr<std::shared_ptr<const auth::Claims>> second = verifier.VerifyCached(token, &why);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(why, JwtRejection::kNone);
  EXPECT_EQ(first->get(), second->get());
  EXPECT_EQ((*second)->subject, "user-7");
  EXPECT_FALSE(verifier.Verify(token).ok());
  EXPECT_FALSE(verifier.VerifyCached(Ec().Sign(Claims(101))).ok());  // another token is verified afresh

  clock_.Advance(seconds(100 + 59));  // exp + skew not yet reached
  EXPECT_TRUE(verifier.VerifyCached(token).ok());
  clock_.Advance(seconds(1));
  absl::StatusOr<std::shared_ptr<const auth::Claims>> late = verifier.VerifyCached(token, &why);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(why, JwtRejection::kExpired);
}

TEST_F(JwtTest, VerifyCachedStaysWithinItsCapacity) {
  options_.cache_capacity = 3;
  JwtVerifier verifier(keys_, options_, clock_);
  std::vector<std::string> tokens;
  for (int i = 0; i < 5; ++i) tokens.push_back(Ed().Sign(Claims(100 + i)));
  for (const std::string& t : tokens) ASSERT_TRUE(verifier.VerifyCached(t).ok());
  keys_->Set(Keys(R"({"keys":[]})"));
  int still_cached = 0;
  for (const std::string& t : tokens) still_cached += verifier.VerifyCached(t).ok() ? 1 : 0;
  EXPECT_EQ(still_cached, 3);
}

// ---- Key rotation through a JWKS file ----

class JwksFileTest : public JwtTest {
 protected:
  void Write(std::string_view text) {
    std::ofstream out(path_, std::ios::trunc);
    out << text;
  }
  ~JwksFileTest() override { std::filesystem::remove(path_); }

  const std::string path_ = core::StrCat(::testing::TempDir(), "jwks_",
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name(), ".json");
};

TEST_F(JwksFileTest, RotatedKeysAreFoundByKid) {
  const JwtSigner& old_key = Rsa();
  const JwtSigner& new_key = Key(JwtAlg::kES256, "ec-2026").signer;
  Write(Jwks({&old_key}));
  JwksSourceOptions source_options;
  source_options.location = path_;
  source_options.refresh = seconds(3600);  // the background reload does not come during the test
  absl::StatusOr<std::unique_ptr<JwksSource>> source = JwksSource::Start(source_options, clock_);
  ASSERT_TRUE(source.ok()) << source.status();
  std::shared_ptr<JwksSource> keys = *std::move(source);
  JwtVerifier verifier(keys, options_, clock_);
  JwtRejection why = JwtRejection::kNone;
  EXPECT_TRUE(verifier.Verify(old_key.Sign(Claims(3600))).ok());

  Write(Jwks({&new_key}));
  // Within min_refetch of the last load, an unknown kid does not reload.
  EXPECT_FALSE(verifier.Verify(new_key.Sign(Claims(3600)), &why).ok());
  EXPECT_EQ(why, JwtRejection::kUnknownKey);
  clock_.Advance(seconds(31));
  absl::StatusOr<auth::Claims> rotated = verifier.Verify(new_key.Sign(Claims(3600)), &why);
  EXPECT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_TRUE(keys->Keys()->HasKid("ec-2026"));
  // The removed key is gone: its tokens fail, reload or not.
  EXPECT_FALSE(verifier.Verify(old_key.Sign(Claims(3600)), &why).ok());
  EXPECT_EQ(why, JwtRejection::kUnknownKey);
  clock_.Advance(seconds(31));
  EXPECT_FALSE(verifier.Verify(old_key.Sign(Claims(3600)), &why).ok());
  EXPECT_EQ(why, JwtRejection::kUnknownKey);

  // A broken file keeps the last good keys.
  Write("{ not json");
  clock_.Advance(seconds(31));
  EXPECT_FALSE(verifier.Verify(Key(JwtAlg::kRS256, "unknown").signer.Sign(Claims(3600)), &why).ok());
  EXPECT_EQ(why, JwtRejection::kUnknownKey);
  EXPECT_TRUE(verifier.Verify(new_key.Sign(Claims(3600))).ok());
  keys->Stop();
}

TEST_F(JwksFileTest, StartFailsWithoutGoodKeys) {
  JwksSourceOptions source_options;
  source_options.location = path_;
  EXPECT_EQ(JwksSource::Start(source_options, clock_).status().code(), absl::StatusCode::kNotFound);
  Write(R"({"keys":"none"})");
  EXPECT_EQ(JwksSource::Start(source_options, clock_).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- A JWKS over HTTP ----

// Serves `status` and `body` to one request on a loopback port and records the request.
class OneShotServer {
 public:
  OneShotServer(int status, std::string body) {
    thread_ = std::thread([this, status, body = std::move(body)] {
      namespace bhttp = boost::beast::http;
      boost::asio::ip::tcp::socket socket(io_);
      acceptor_.accept(socket);
      boost::beast::flat_buffer buffer;
      bhttp::request<bhttp::string_body> request;
      boost::system::error_code ec;
      bhttp::read(socket, buffer, request, ec);
      target_ = std::string(request.target());
      accept_ = std::string(request[bhttp::field::accept]);
      bhttp::response<bhttp::string_body> response{static_cast<bhttp::status>(status), 11};
      response.set(bhttp::field::content_type, "application/json");
      response.body() = body;
      response.prepare_payload();
      bhttp::write(socket, response, ec);
      socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    });
  }
  ~OneShotServer() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  std::string Url(std::string_view path) const {
    return core::StrCat("http://127.0.0.1:", acceptor_.local_endpoint().port(), path);
  }
  std::string target_, accept_;

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_{io_, {boost::asio::ip::make_address("127.0.0.1"), 0}};
  std::thread thread_;
};

TEST_F(JwtTest, JwksSourceLoadsFromAUrl) {
  OneShotServer server(200, Jwks({&Ed()}));
  JwksSourceOptions source_options;
  source_options.location = server.Url("/.well-known/jwks.json?v=1");
  source_options.refresh = seconds(3600);
  absl::StatusOr<std::unique_ptr<JwksSource>> source = JwksSource::Start(source_options, clock_);
  server.Join();
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(server.target_, "/.well-known/jwks.json?v=1");
  EXPECT_EQ(server.accept_, "application/json");
  JwtVerifier verifier(std::shared_ptr<JwksSource>(*std::move(source)), options_, clock_);
  EXPECT_TRUE(verifier.Verify(Ed().Sign(Claims())).ok());
}

TEST_F(JwtTest, JwksSourceRefusesAnErrorStatus) {
  OneShotServer server(404, "{}");
  JwksSourceOptions source_options;
  source_options.location = server.Url("/jwks.json");
  absl::StatusOr<std::unique_ptr<JwksSource>> source = JwksSource::Start(source_options, clock_);
  server.Join();
  EXPECT_EQ(source.status().code(), absl::StatusCode::kUnavailable) << source.status();
}

TEST_F(JwtTest, JwksSourceRetriesThroughItsDependency) {
  Receiver server;
  server.Script({{503, "", {}}, {503, "", {}}, {200, Jwks({&Ed()}), {}}});
  http::ExternalDependencySettings settings = http::ExternalDependencySettings::For("jwks");
  std::vector<microseconds> waits;
  settings.sleep = [&](microseconds d) {
    waits.push_back(d);
    clock_.Advance(d);
  };
  settings.seed = 1;
  http::ExternalDependency jwks(std::move(settings), clock_);
  JwksSourceOptions source_options;
  source_options.location = server.Url("/jwks.json");
  source_options.refresh = seconds(3600);
  source_options.dependency = &jwks;
  absl::StatusOr<std::unique_ptr<JwksSource>> source = JwksSource::Start(source_options, clock_);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(server.Count(), 3u);
  EXPECT_EQ(waits.size(), 2u);
  EXPECT_EQ(jwks.stats().retries, 2u);
  JwtVerifier verifier(std::shared_ptr<JwksSource>(*std::move(source)), options_, clock_);
  EXPECT_TRUE(verifier.Verify(Ed().Sign(Claims())).ok());

  // Without a dependency a load is one attempt.
  server.Script({{503, "", {}}, {200, Jwks({&Ed()}), {}}});
  source_options.dependency = nullptr;
  EXPECT_EQ(JwksSource::Start(source_options, clock_).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.Count(), 4u);
}

TEST_F(JwtTest, StopEndsARefreshsRetryWait) {
  Receiver server(0, 503);
  server.Script({{200, Jwks({&Ed()}), {}}});  // the load at start; refreshes get 503
  http::ExternalDependencySettings settings = http::ExternalDependencySettings::For("jwks");
  settings.retry.base_delay = seconds(2);  // the dependency's own sleeper: a real sleep
  http::ExternalDependency jwks(std::move(settings), clock_);
  JwksSourceOptions source_options;
  source_options.location = server.Url("/jwks.json");
  source_options.refresh = seconds(1);
  source_options.dependency = &jwks;
  absl::StatusOr<std::unique_ptr<JwksSource>> source = JwksSource::Start(source_options, clock_);
  ASSERT_TRUE(source.ok()) << source.status();
  // The first refresh (1 s after the start) is answered 503 and waits (2 s)
  // for its retry...
  const auto deadline = std::chrono::steady_clock::now() + seconds(20);
  while (server.Count() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(milliseconds(5));
  ASSERT_EQ(server.Count(), 2u);
  // ... which Stop ends: no retry is made, and the keys loaded stay.
  (*source)->Stop();
  EXPECT_EQ(server.Count(), 2u);
  EXPECT_EQ(jwks.stats().retries, 0u);
  EXPECT_EQ(jwks.stats().failures, 1u);
  EXPECT_TRUE((*source)->Keys()->HasKid(Ed().kid()));
}

TEST(FetchTest, RefusesInjectionBeforeConnecting) {
  http::FetchRequest request;
  request.url = {.tls = false, .host = "127.0.0.1", .port = 9, .target = "/jwks.json HTTP/1.1\r\nX: y"};
  EXPECT_EQ(http::Fetch(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.url.target = "/jwks.json";
  request.headers = {{"Accept", "application/json\r\nX-Injected: 1"}};
  EXPECT_EQ(http::Fetch(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.headers = {{"Bad Name", "v"}};
  EXPECT_EQ(http::Fetch(request).status().code(), absl::StatusCode::kInvalidArgument);
  request.headers.clear();
  request.method = "BREW";
  EXPECT_EQ(http::Fetch(request).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ParseUrlTest, SplitsSchemeHostPortAndTarget) {
  absl::StatusOr<http::Url> url = http::ParseUrl("https://idp.example/realms/a/certs?x=1#frag");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_TRUE(url->tls);
  EXPECT_EQ(url->host, "idp.example");
  EXPECT_EQ(url->port, 443);
  EXPECT_EQ(url->target, "/realms/a/certs?x=1");
  url = http::ParseUrl("http://[::1]:8080");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_FALSE(url->tls);
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, 8080);
  EXPECT_EQ(url->target, "/");
  for (std::string_view bad :
       {"ftp://a/b", "http://u:p@host/", "http://host:99999/", "http:///x", "/relative", "http://host:0/"}) {
    EXPECT_EQ(http::ParseUrl(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace medgrid::auth
