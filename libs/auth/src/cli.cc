#include "medgrid/auth/cli.h"

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>

#include "boost/json.hpp"
#include "medgrid/auth/jwt.h"
#include "medgrid/core/strings.h"

namespace medgrid::auth {
namespace json = boost::json;
namespace {

constexpr const char* kUsage =
    "usage: medgridctl token keygen --key-out FILE --jwks-out FILE [--alg ES256|RS256|EdDSA] [--kid KID]\n"
    "       medgridctl token mint --key FILE --kid KID --issuer ISS --audience AUD --subject SUB [--tenant T]\n"
    "           [--scope SCOPES] [--patient ID] [--fhir-user Type/id] [--roles a,b] [--purpose-of-use CODE]\n"
    "           [--client-id ID] [--ttl-s SECONDS]\n";

// --name value pairs; false on anything else.
bool ParseOptions(const std::vector<std::string>& args, std::size_t from, std::map<std::string, std::string>& out) {
  for (std::size_t i = from; i < args.size(); i += 2) {
    if (args[i].rfind("--", 0) != 0 || i + 1 >= args.size()) return false;
    out[args[i].substr(2)] = args[i + 1];
  }
  return true;
}

bool ReadFile(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

bool WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
    if (!o) return false;
    ::chmod(tmp.c_str(), mode);
    o << text;
    if (!o.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

int Keygen(const std::map<std::string, std::string>& o, std::ostream& out, std::ostream& err) {
  auto key_out = o.find("key-out");
  auto jwks_out = o.find("jwks-out");
  if (key_out == o.end() || jwks_out == o.end()) {
    err << kUsage;
    return 2;
  }
  const std::string alg_name = o.contains("alg") ? o.at("alg") : "ES256";
  JwtAlg alg;
  if (alg_name == "ES256") {
    alg = JwtAlg::kES256;
  } else if (alg_name == "RS256") {
    alg = JwtAlg::kRS256;
  } else if (alg_name == "EdDSA") {
    alg = JwtAlg::kEdDSA;
  } else {
    err << "token keygen: --alg must be ES256, RS256 or EdDSA\n";
    return 2;
  }
  const std::string kid = o.contains("kid") ? o.at("kid") : "dev-1";
  std::string pem;
  if (!ReadFile(key_out->second, pem)) {
    // A key that exists is kept: tokens minted with it stay valid.
    absl::StatusOr<std::string> generated = GeneratePrivateKeyPem(alg);
    if (!generated.ok()) {
      err << "token keygen: " << generated.status().message() << "\n";
      return 1;
    }
    pem = *generated;
    if (!WriteFile(key_out->second, pem, 0600)) {
      err << "token keygen: cannot write " << key_out->second << "\n";
      return 1;
    }
  }
  absl::StatusOr<JwtSigner> signer = JwtSigner::FromPem(pem, kid);
  if (!signer.ok()) {
    err << "token keygen: " << signer.status().message() << "\n";
    return 1;
  }
  if (!WriteFile(jwks_out->second, signer->PublicJwks() + "\n", 0644)) {
    err << "token keygen: cannot write " << jwks_out->second << "\n";
    return 1;
  }
  out << jwks_out->second << "\n";
  return 0;
}

int Mint(const std::map<std::string, std::string>& o, const core::Clock& clock, std::ostream& out,
         std::ostream& err) {
  for (const char* required : {"key", "kid", "issuer", "audience", "subject"}) {
    if (!o.contains(required)) {
      err << "token mint: --" << required << " is required\n" << kUsage;
      return 2;
    }
  }
  std::string pem;
  if (!ReadFile(o.at("key"), pem)) {
    err << "token mint: cannot read " << o.at("key") << "\n";
    return 1;
  }
  absl::StatusOr<JwtSigner> signer = JwtSigner::FromPem(pem, o.at("kid"));
  if (!signer.ok()) {
    err << "token mint: " << signer.status().message() << "\n";
    return 1;
  }
  int64_t ttl = 3600;
  if (o.contains("ttl-s")) {
    try {
      ttl = std::stoll(o.at("ttl-s"));
    } catch (const std::exception&) {
      ttl = 0;
    }
    if (ttl <= 0) {
      err << "token mint: --ttl-s must be a positive number of seconds\n";
      return 2;
    }
  }
  const int64_t now = core::ToUnixMicros(clock.Now()) / 1000000;
  json::object claims{{"iss", o.at("issuer")}, {"aud", o.at("audience")}, {"sub", o.at("subject")},
                      {"iat", now},            {"nbf", now},              {"exp", now + ttl},
                      {"jti", core::TimeOrderedId(clock.Now())}};
  const std::map<std::string, std::string> string_claims = {{"tenant", "tenant"},     {"scope", "scope"},
                                                            {"patient", "patient"},   {"fhir-user", "fhirUser"},
                                                            {"client-id", "client_id"},
                                                            {"purpose-of-use", "purpose_of_use"}};
  for (const auto& [flag, claim] : string_claims) {
    if (o.contains(flag)) claims[claim] = o.at(flag);
  }
  if (o.contains("roles")) {
    json::array roles;
    for (std::string_view r : core::StrSplit(o.at("roles"), ',')) {
      if (!r.empty()) roles.emplace_back(r);
    }
    claims["roles"] = std::move(roles);
  }
  out << signer->Sign(claims) << "\n";
  return 0;
}

}  // namespace

int RunTokenCommand(const std::vector<std::string>& args, const core::Clock& clock, std::ostream& out,
                    std::ostream& err) {
  std::map<std::string, std::string> options;
  if (args.empty() || !ParseOptions(args, 1, options)) {
    err << kUsage;
    return 2;
  }
  if (args[0] == "keygen") return Keygen(options, out, err);
  if (args[0] == "mint") return Mint(options, clock, out, err);
  err << kUsage;
  return 2;
}

}  // namespace medgrid::auth
