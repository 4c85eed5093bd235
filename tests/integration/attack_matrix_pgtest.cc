// Tenant-isolation attack matrix, with SMART bearer-token auth on: every
// kind of token tenant A ("ta") can hold attacks tenant B ("tb").
//
//   - Through B's base (/fhir/tb/...): every interaction and operation
//     (read, vread, history, search with includes, chains and _has,
//     conditional and plain writes, Bundles, $everything, bulk $export and
//     its status and files, Subscriptions and their websocket, $reindex)
//     is refused with 401, 403 or 404.
//   - Through A's own base, reaching for B's ids, identifiers and names:
//     answered as if B did not exist (nothing matches, conditional
//     operations act on A alone, a B id reads like one that never existed).
//   - Path tricks, the admin API, missing and bad tokens, and probes that
//     compare an existing B id with an unknown one (answer and latency).
//
// The leak rule: no answer to an attack (body or header) may contain a
// secret of B (ids, names, identifiers, codes, its export job) that the
// request itself did not carry. A 404 may echo the id it was asked about;
// it may not add anything of B's. One B patient is referenced by A's own
// data ("planted"), so A knows its id: that id is not a secret, its name is.
//
// Each group is a table of cases: method, path, body, headers, the statuses
// allowed (per kind of token where they differ) and optionally a check of
// a 2xx answer's content. Every case reports its name and token on failure.
// B's data is checked to be unchanged after the attacks that write.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <set>
#include <thread>

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/websocket.hpp"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/core/strings.h"

namespace medgrid::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace json = boost::json;
using namespace std::chrono_literals;
using tcp = asio::ip::tcp;

using Headers = std::map<std::string, std::string>;
using Statuses = std::set<int>;

// The kinds of token tenant A holds.
enum class Kind { kUser, kSystem, kPatient, kNoTenant };

struct Token {
  std::string name;
  Kind kind;
  Headers auth;  // the Authorization header; empty for no token
};

// Further checks of a 2xx answer, for the token kind that got it.
using Check = std::function<void(const HttpResponse&, Kind)>;

struct Case {
  std::string name = {};
  std::string method = {};
  std::string path = {};
  std::string body = {};
  Headers headers = {};  // besides Authorization; Content-Type is added for bodies
  Statuses allowed = {};
  std::map<Kind, Statuses> by_kind = {};  // overrides `allowed` for these kinds
  Check check = {};
  bool fresh_connection = false;  // the request may take over its connection (websocket upgrade)
};

constexpr char kBSystem[] = "http://tb.example.org/mrn";
constexpr char kBCode[] = "tb-secret-code-77";
constexpr char kASystem[] = "http://ta.example.org/mrn";
constexpr char kACode[] = "ta-code-11";
constexpr int kBPatients = 11;
constexpr int kBObservations = 29;
const Statuses kRefused = {401, 403, 404};

std::string Str(const json::value& v) { return std::string(v.as_string()); }

std::string PathOf(const std::string& url) {
  const std::size_t at = url.find("/fhir/");
  return at == std::string::npos ? url : url.substr(at);
}

std::string Base64UrlEncode(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  return out;
}

// The claims of a JWT (not verified).
json::object ClaimsOf(const std::string& jwt) {
  const std::vector<std::string_view> parts = core::StrSplit(jwt, '.');
  EXPECT_EQ(parts.size(), 3u);
  std::optional<std::string> payload = core::Base64Decode(parts.at(1), /*url_safe=*/true);
  EXPECT_TRUE(payload.has_value());
  return json::parse(payload.value_or("{}")).as_object();
}

// An active privacy Consent of Patient/`patient` under `policy_rule`
// (OPTIN, OPTOUT) whose root provision is `provision` (permit, deny).
std::string ConsentJson(const std::string& patient, const std::string& policy_rule, const std::string& provision) {
  return json::serialize(json::object{
      {"resourceType", "Consent"},
      {"status", "active"},
      {"scope", json::object{{"coding",
                              json::array{json::object{{"system", "http://terminology.hl7.org/CodeSystem/consentscope"},
                                                       {"code", "patient-privacy"}}}}}},
      {"category", json::array{json::object{
                       {"coding", json::array{json::object{{"system", "http://loinc.org"}, {"code", "59284-0"}}}}}}},
      {"patient", json::object{{"reference", "Patient/" + patient}}},
      {"dateTime", "2026-01-01"},
      {"policyRule",
       json::object{{"coding", json::array{json::object{{"system", "http://terminology.hl7.org/CodeSystem/v3-ActCode"},
                                                        {"code", policy_rule}}}}}},
      {"provision", json::object{{"type", provision}}}});
}

// The resources of a Bundle's entries, OperationOutcomes left out.
std::vector<json::object> Resources(const HttpResponse& res) {
  std::vector<json::object> out;
  const json::value v = res.Json();
  const json::value* entries = v.is_object() ? v.get_object().if_contains("entry") : nullptr;
  if (entries == nullptr || !entries->is_array()) return out;
  for (const json::value& e : entries->get_array()) {
    const json::value* r = e.is_object() ? e.get_object().if_contains("resource") : nullptr;
    if (r == nullptr || !r->is_object()) continue;
    if (r->get_object().at("resourceType").as_string() == "OperationOutcome") continue;
    out.push_back(r->get_object());
  }
  return out;
}

std::set<std::string> KeysOf(const HttpResponse& res) {
  std::set<std::string> out;
  for (const json::object& r : Resources(res)) out.insert(Str(r.at("resourceType")) + "/" + Str(r.at("id")));
  return out;
}

// The entry.response objects of a batch/transaction response.
std::vector<json::object> Responses(const HttpResponse& res) {
  std::vector<json::object> out;
  const json::value v = res.Json();
  for (const json::value& e : v.at("entry").as_array()) out.push_back(e.at("response").as_object());
  return out;
}

class AttackMatrixTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    b_ = {};
    a_ = {};
    tokens_ = new TestTokens();
    other_key_ = new TestTokens();
    config_ = new app::AppConfig(TestServer::BaseConfig("attack"));
    tokens_->Configure(*config_);
    config_->export_dir =
        (std::filesystem::temp_directory_path() / ("mg_attack_" + std::to_string(::getpid()))).string();
    config_->exports.idle_poll = 50ms;
    server_ = new TestServer("attack", {"ta", "tb"}, *config_, tokens_);
    LoadTenantB();
    LoadTenantA();
    StartBExport();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    std::filesystem::remove_all(config_->export_dir);
    delete config_;
    delete other_key_;
    delete tokens_;
  }

  static HttpClient& c() { return server_->client(); }
  static Headers BUser() { return TestTokens::Bearer(tokens_->User("tb", "user/*.cruds")); }
  static Headers BSystem() { return TestTokens::Bearer(tokens_->User("tb", "system/*.cruds")); }
  static Headers AUser() { return TestTokens::Bearer(tokens_->User("ta", "user/*.cruds")); }

  static std::string Create(const std::string& tenant, const std::string& type, const std::string& body,
                            const Headers& auth) {
    HttpResponse res = c().Post("/fhir/" + tenant + "/" + type, body, auth);
    EXPECT_EQ(res.status, 201) << type << ": " << res.body;
    if (res.status != 201) return "";
    return Str(res.Json().at("id"));
  }

  static void LoadTenantB() {
    const Headers b = BUser();
    b_.practitioner =
        Create("tb", "Practitioner", R"({"resourceType":"Practitioner","name":[{"family":"Tbsecretdoctor"}]})", b);
    for (int i = 0; i < kBPatients; ++i) {
      const std::string family = "Tbsecretfamily" + std::to_string(100 + i);
      const std::string mrn = "tb-mrn-" + std::to_string(5500 + i);
      b_.families.push_back(family);
      b_.mrns.push_back(mrn);
      json::object p{
          {"resourceType", "Patient"},
          {"name", json::array{json::object{{"family", family}, {"given", json::array{"Tbsecretgiven"}}}}},
          {"identifier", json::array{json::object{{"system", kBSystem}, {"value", mrn}}}},
          {"generalPractitioner", json::array{json::object{{"reference", "Practitioner/" + b_.practitioner}}}}};
      b_.patients.push_back(Create("tb", "Patient", json::serialize(p), b));
    }
    for (int i = 0; i < kBObservations; ++i) {
      json::object o{
          {"resourceType", "Observation"},
          {"status", "final"},
          {"code",
           json::object{{"coding", json::array{json::object{{"system", "http://loinc.org"}, {"code", kBCode}}}}}},
          {"subject", json::object{{"reference", "Patient/" + b_.patients[i % kBPatients]}}}};
      b_.observations.push_back(Create("tb", "Observation", json::serialize(o), b));
    }
    b_.encounter = Create("tb", "Encounter",
                          R"({"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},)"
                          R"("subject":{"reference":"Patient/)" +
                              b_.patients[0] + R"("}})",
                          b);
    json::array members;
    for (int i = 0; i < 5; ++i) {
      members.push_back(json::object{{"entity", json::object{{"reference", "Patient/" + b_.patients[i]}}}});
    }
    b_.group = Create("tb", "Group",
                      json::serialize(json::object{
                          {"resourceType", "Group"}, {"type", "person"}, {"actual", true}, {"member", members}}),
                      b);
    b_.subscription =
        Create("tb", "Subscription",
               json::serialize(json::object{{"resourceType", "Subscription"},
                                            {"status", "requested"},
                                            {"reason", "tb secret watch"},
                                            {"criteria", std::string("Observation?code=http://loinc.org|") + kBCode},
                                            {"channel", json::object{{"type", "websocket"}}}}),
               b);
    b_.consent = Create("tb", "Consent", ConsentJson(b_.patients[0], "OPTOUT", "permit"), b);
    b_.planted = b_.patients.back();
    // The secret check needs ids that cannot turn up by chance.
    for (const std::string& id : b_.patients) ASSERT_GE(id.size(), 8u) << id;
  }

  static void LoadTenantA() {
    const Headers a = AUser();
    a_.patient = Create("ta", "Patient",
                        std::string(R"({"resourceType":"Patient","name":[{"family":"Aownfamily"}],)") +
                            R"("identifier":[{"system":")" + kASystem + R"(","value":"ta-mrn-1"}]})",
                        a);
    a_.patient2 = Create("ta", "Patient", R"({"resourceType":"Patient","name":[{"family":"Aotherfamily"}]})", a);
    auto observation = [&](const std::string& subject) {
      return Create(
          "ta", "Observation",
          json::serialize(json::object{
              {"resourceType", "Observation"},
              {"status", "final"},
              {"code",
               json::object{{"coding", json::array{json::object{{"system", "http://loinc.org"}, {"code", kACode}}}}}},
              {"subject", json::object{{"reference", subject}}}}),
          a);
    };
    a_.observation = observation("Patient/" + a_.patient);
    // A's own data pointing at B: includes, chains and $everything must not
    // follow it across.
    a_.planted_observation = observation("Patient/" + b_.planted);
    a_.planted_absolute =
        observation("http://127.0.0.1:" + std::to_string(server_->port()) + "/fhir/tb/Patient/" + b_.planted);
  }

  // A system-level export of `tenant`, run to the end: its job id and the
  // paths of its files (empty on failure). The export runs in the
  // background: polling is the only way to see it finish.
  static std::pair<std::string, std::vector<std::string>> RunExport(const std::string& tenant, const Headers& auth) {
    Headers kick = auth;
    kick["Prefer"] = "respond-async";
    kick["Accept"] = "application/fhir+json";
    HttpResponse res = c().Get("/fhir/" + tenant + "/$export", kick);
    EXPECT_EQ(res.status, 202) << res.body;
    const std::string status = PathOf(res.Header("content-location"));
    HttpResponse manifest;
    for (int i = 0; i < 800; ++i) {
      manifest = c().Get(status, auth);
      if (manifest.status != 202) break;
      std::this_thread::sleep_for(25ms);
    }
    EXPECT_EQ(manifest.status, 200) << manifest.body;
    if (manifest.status != 200) return {};
    std::vector<std::string> files;
    const json::value body = manifest.Json();
    for (const json::value& f : body.at("output").as_array()) files.push_back(PathOf(Str(f.at("url"))));
    return {status.substr(status.rfind('/') + 1), files};
  }

  // B runs an export of its own, so that A can reach for a real job and a
  // real file.
  static void StartBExport() {
    auto [job, files] = RunExport("tb", BSystem());
    ASSERT_FALSE(files.empty());
    b_.export_job = job;
    b_.export_file = files[0];
    b_.export_file_name = b_.export_file.substr(b_.export_file.rfind('/') + 1);
  }

  // Everything of B's that A must never see.
  static std::vector<std::string> Secrets() {
    std::vector<std::string> s = {b_.practitioner,  b_.encounter,    b_.group,         b_.subscription,
                                  b_.consent,       b_.export_job,   kBSystem,         kBCode,
                                  "Tbsecretdoctor", "Tbsecretgiven", "tb secret watch"};
    for (const std::string& p : b_.patients) {
      if (p != b_.planted) s.push_back(p);
    }
    s.insert(s.end(), b_.observations.begin(), b_.observations.end());
    s.insert(s.end(), b_.families.begin(), b_.families.end());
    s.insert(s.end(), b_.mrns.begin(), b_.mrns.end());
    return s;
  }

  // A's tokens: user, system and patient-context tokens of ta, and a token
  // that names no tenant at all.
  static std::vector<Token> ATokens() {
    return {
        {"A user/*.cruds", Kind::kUser, TestTokens::Bearer(tokens_->User("ta", "user/*.cruds"))},
        {"A system/*.cruds", Kind::kSystem, TestTokens::Bearer(tokens_->User("ta", "system/*.cruds"))},
        {"A patient/*.cruds", Kind::kPatient,
         TestTokens::Bearer(tokens_->User("ta", "patient/*.cruds", {{"patient", a_.patient}}))},
        {"A without tenant", Kind::kNoTenant,
         TestTokens::Bearer(tokens_->Mint({{"scope", "user/*.cruds system/*.cruds"}}))},
    };
  }

  // Sends one case with one token and checks its status, the leak rule and
  // the case's own check. Returns the answer.
  HttpResponse Run(const Case& k, const Token& token) {
    ++cases_run_;
    SCOPED_TRACE("case '" + k.name + "' with token '" + token.name + "': " + k.method + " " + k.path);
    Headers headers = k.headers;
    for (const auto& [name, value] : token.auth) headers[name] = value;
    if (!k.body.empty() && headers.count("Content-Type") == 0) headers["Content-Type"] = "application/fhir+json";
    std::optional<HttpClient> fresh;
    if (k.fresh_connection) fresh.emplace(server_->port());
    HttpResponse res = (fresh ? *fresh : c()).Send(k.method, k.path, k.body, headers);

    const auto by_kind = k.by_kind.find(token.kind);
    const Statuses& allowed = by_kind == k.by_kind.end() ? k.allowed : by_kind->second;
    EXPECT_TRUE(allowed.count(res.status) == 1)
        << "status " << res.status << " is not one of the allowed; body: " << res.body.substr(0, 600);

    std::string request = k.path + "\n" + k.body;
    for (const auto& [name, value] : headers) request += "\n" + value;
    std::string answer = res.body;
    for (const auto& [name, value] : res.headers) {
      if (name != "x-request-id") answer += "\n" + name + ": " + value;
    }
    std::string leaked;
    for (const std::string& secret : Secrets()) {
      if (request.find(secret) != std::string::npos) continue;  // an echo of the request is no leak
      if (answer.find(secret) != std::string::npos) leaked += " '" + secret + "'";
    }
    EXPECT_TRUE(leaked.empty()) << "the answer (" << res.status << ") leaks B's" << leaked << ": "
                                << answer.substr(0, 600);
    // A refusal is an OperationOutcome, never a Bundle or a resource.
    if (res.status >= 400 && !res.body.empty() && k.method != "HEAD") {
      const json::value v = res.Json();
      const json::value* type = v.is_object() ? v.get_object().if_contains("resourceType") : nullptr;
      EXPECT_TRUE(type != nullptr && type->is_string() && type->get_string() == "OperationOutcome")
          << res.body.substr(0, 600);
    }
    if (k.check && res.status >= 200 && res.status < 300) k.check(res, token.kind);
    return res;
  }

  // What B must still hold after the attacks: every resource readable by B
  // (no Consent of A's applies) at version 1 (the Subscription is the
  // server's to activate), its counts, its export.
  static void ExpectBUntouched() {
    SCOPED_TRACE("B's data after the attacks");
    const Headers b = BUser();
    std::vector<std::string> refs = {"Practitioner/" + b_.practitioner, "Encounter/" + b_.encounter,
                                     "Group/" + b_.group, "Consent/" + b_.consent};
    for (const std::string& p : b_.patients) refs.push_back("Patient/" + p);
    for (const std::string& o : b_.observations) refs.push_back("Observation/" + o);
    for (const std::string& ref : refs) {
      HttpResponse res = c().Get("/fhir/tb/" + ref, b);
      ASSERT_EQ(res.status, 200) << ref << ": " << res.body;
      EXPECT_EQ(Str(res.Json().at("meta").at("versionId")), "1") << ref;
    }
    EXPECT_EQ(c().Get("/fhir/tb/Subscription/" + b_.subscription, b).status, 200);
    for (const auto& [type, count] : {std::pair{"Patient", kBPatients}, std::pair{"Observation", kBObservations}}) {
      HttpResponse res = c().Get(std::string("/fhir/tb/") + type + "?_summary=count", b);
      ASSERT_EQ(res.status, 200) << res.body;
      EXPECT_EQ(res.Json().at("total").as_int64(), count) << type;
    }
    EXPECT_EQ(c().Get("/fhir/tb/$export-status/" + b_.export_job, BSystem()).status, 200);
    EXPECT_EQ(c().Get(b_.export_file, BSystem()).status, 200);
  }

  struct TenantB {
    std::vector<std::string> patients, families, mrns, observations;
    std::string planted;  // the B patient A's own data refers to
    std::string practitioner, encounter, group, subscription, consent;
    std::string export_job, export_file, export_file_name;
  };
  struct TenantA {
    std::string patient, patient2, observation, planted_observation, planted_absolute;
  };

  static TestTokens* tokens_;
  static TestTokens* other_key_;
  static app::AppConfig* config_;
  static TestServer* server_;
  static TenantB b_;
  static TenantA a_;
  int cases_run_ = 0;
};
TestTokens* AttackMatrixTest::tokens_ = nullptr;
TestTokens* AttackMatrixTest::other_key_ = nullptr;
app::AppConfig* AttackMatrixTest::config_ = nullptr;
TestServer* AttackMatrixTest::server_ = nullptr;
AttackMatrixTest::TenantB AttackMatrixTest::b_;
AttackMatrixTest::TenantA AttackMatrixTest::a_;

// Every A token against B's own base: refused, whatever the interaction.
TEST_F(AttackMatrixTest, EveryATokenIsRefusedAtTenantBsBase) {
  const std::string p0 = b_.patients[0];
  const std::string o0 = b_.observations[0];
  const std::string mrn0 = std::string(kBSystem) + "|" + b_.mrns[0];
  const Headers async = {{"Prefer", "respond-async"}, {"Accept", "application/fhir+json"}};
  const Headers json_patch = {{"Content-Type", "application/json-patch+json"}};
  const std::string patient_body = R"({"resourceType":"Patient","active":false})";
  const std::string bundle_entries =
      core::StrCat(R"([{"request":{"method":"GET","url":"Patient/)", p0, R"("}},)",
                   R"({"request":{"method":"GET","url":"Observation?subject=Patient/)", p0, R"("}},)",
                   R"({"request":{"method":"DELETE","url":"Observation/)", o0, R"("}},)",
                   R"({"request":{"method":"POST","url":"Observation"},)",
                   R"("resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},)",
                   R"("subject":{"reference":"Patient?identifier=)", mrn0, R"("}}}])");
  // clang-format off
  const std::vector<Case> cases = {
      // Reads, by id and version.
      {.name = "read Patient", .method = "GET", .path = "/fhir/tb/Patient/" + p0, .allowed = kRefused},
      {.name = "HEAD Patient", .method = "HEAD", .path = "/fhir/tb/Patient/" + p0, .allowed = kRefused},
      {.name = "read Observation", .method = "GET", .path = "/fhir/tb/Observation/" + o0, .allowed = kRefused},
      {.name = "read Encounter", .method = "GET", .path = "/fhir/tb/Encounter/" + b_.encounter, .allowed = kRefused},
      {.name = "read Practitioner", .method = "GET", .path = "/fhir/tb/Practitioner/" + b_.practitioner,
       .allowed = kRefused},
      {.name = "read Group", .method = "GET", .path = "/fhir/tb/Group/" + b_.group, .allowed = kRefused},
      {.name = "read Subscription", .method = "GET", .path = "/fhir/tb/Subscription/" + b_.subscription,
       .allowed = kRefused},
      {.name = "read Consent", .method = "GET", .path = "/fhir/tb/Consent/" + b_.consent, .allowed = kRefused},
      {.name = "conditional read", .method = "GET", .path = "/fhir/tb/Patient/" + p0,
       .headers = {{"If-None-Match", "W/\"1\""}}, .allowed = kRefused},
      {.name = "vread", .method = "GET", .path = "/fhir/tb/Patient/" + p0 + "/_history/1", .allowed = kRefused},
      {.name = "instance history", .method = "GET", .path = "/fhir/tb/Patient/" + p0 + "/_history",
       .allowed = kRefused},
      {.name = "type history", .method = "GET", .path = "/fhir/tb/Patient/_history", .allowed = kRefused},
      {.name = "system history", .method = "GET", .path = "/fhir/tb/_history?_count=1000", .allowed = kRefused},
      // Searches.
      {.name = "type search", .method = "GET", .path = "/fhir/tb/Patient?name=Tbsecretfamily", .allowed = kRefused},
      {.name = "type search, all", .method = "GET", .path = "/fhir/tb/Observation?_count=100", .allowed = kRefused},
      {.name = "type search, count only", .method = "GET", .path = "/fhir/tb/Observation?_summary=count",
       .allowed = kRefused},
      {.name = "search by identifier", .method = "GET", .path = "/fhir/tb/Patient?identifier=" + mrn0,
       .allowed = kRefused},
      {.name = "POST _search", .method = "POST", .path = "/fhir/tb/Patient/_search", .body = "name=Tbsecretfamily",
       .headers = {{"Content-Type", "application/x-www-form-urlencoded"}}, .allowed = kRefused},
      {.name = "system search _type", .method = "GET", .path = "/fhir/tb?_type=Patient,Observation&_count=100",
       .allowed = kRefused},
      {.name = "system _search", .method = "GET", .path = "/fhir/tb/_search?_type=Patient", .allowed = kRefused},
      {.name = "compartment search", .method = "GET", .path = "/fhir/tb/Patient/" + p0 + "/Observation",
       .allowed = kRefused},
      {.name = "compartment search, all types", .method = "GET", .path = "/fhir/tb/Patient/" + p0 + "/*",
       .allowed = kRefused},
      {.name = "_include", .method = "GET",
       .path = "/fhir/tb/Observation?_id=" + o0 + "&_include=Observation:subject", .allowed = kRefused},
      {.name = "_include:iterate", .method = "GET",
       .path = "/fhir/tb/Observation?_id=" + o0 +
               "&_include=Observation:subject&_include:iterate=Patient:general-practitioner",
       .allowed = kRefused},
      {.name = "_revinclude", .method = "GET",
       .path = "/fhir/tb/Patient?_id=" + p0 + "&_revinclude=Observation:subject", .allowed = kRefused},
      {.name = "_revinclude:iterate", .method = "GET",
       .path = "/fhir/tb/Practitioner?_id=" + b_.practitioner +
               "&_revinclude=Patient:general-practitioner&_revinclude:iterate=Observation:subject",
       .allowed = kRefused},
      {.name = "chain by name", .method = "GET", .path = "/fhir/tb/Observation?subject:Patient.name=Tbsecretfamily",
       .allowed = kRefused},
      {.name = "chain by identifier", .method = "GET",
       .path = "/fhir/tb/Observation?subject:Patient.identifier=" + mrn0, .allowed = kRefused},
      {.name = "_has", .method = "GET",
       .path = std::string("/fhir/tb/Patient?_has:Observation:subject:code=") + kBCode, .allowed = kRefused},
      // Writes.
      {.name = "create", .method = "POST", .path = "/fhir/tb/Patient", .body = patient_body, .allowed = kRefused},
      {.name = "conditional create", .method = "POST", .path = "/fhir/tb/Patient", .body = patient_body,
       .headers = {{"If-None-Exist", "identifier=" + mrn0}}, .allowed = kRefused},
      {.name = "conditional update", .method = "PUT", .path = "/fhir/tb/Patient?identifier=" + mrn0,
       .body = patient_body, .allowed = kRefused},
      {.name = "conditional delete", .method = "DELETE", .path = "/fhir/tb/Patient?identifier=" + mrn0,
       .allowed = kRefused},
      {.name = "PATCH", .method = "PATCH", .path = "/fhir/tb/Patient/" + p0,
       .body = R"([{"op":"replace","path":"/active","value":false}])", .headers = json_patch, .allowed = kRefused},
      {.name = "PUT", .method = "PUT", .path = "/fhir/tb/Patient/" + p0,
       .body = R"({"resourceType":"Patient","id":")" + p0 + R"(","active":false})", .allowed = kRefused},
      {.name = "PUT with If-Match", .method = "PUT", .path = "/fhir/tb/Patient/" + p0,
       .body = R"({"resourceType":"Patient","id":")" + p0 + R"(","active":false})",
       .headers = {{"If-Match", "W/\"1\""}}, .allowed = kRefused},
      {.name = "DELETE Patient", .method = "DELETE", .path = "/fhir/tb/Patient/" + p0, .allowed = kRefused},
      {.name = "DELETE Observation", .method = "DELETE", .path = "/fhir/tb/Observation/" + o0, .allowed = kRefused},
      {.name = "DELETE Consent", .method = "DELETE", .path = "/fhir/tb/Consent/" + b_.consent, .allowed = kRefused},
      {.name = "PUT Consent", .method = "PUT", .path = "/fhir/tb/Consent/" + b_.consent,
       .body = R"({"resourceType":"Consent","id":")" + b_.consent + R"(","status":"inactive"})", .allowed = kRefused},
      {.name = "transaction", .method = "POST", .path = "/fhir/tb",
       .body = R"({"resourceType":"Bundle","type":"transaction","entry":)" + bundle_entries + "}",
       .allowed = kRefused},
      {.name = "batch", .method = "POST", .path = "/fhir/tb",
       .body = R"({"resourceType":"Bundle","type":"batch","entry":)" + bundle_entries + "}", .allowed = kRefused},
      // Operations.
      {.name = "$everything", .method = "GET", .path = "/fhir/tb/Patient/" + p0 + "/$everything",
       .allowed = kRefused},
      {.name = "type $everything", .method = "GET", .path = "/fhir/tb/Patient/$everything", .allowed = kRefused},
      {.name = "system $export", .method = "GET", .path = "/fhir/tb/$export", .headers = async, .allowed = kRefused},
      {.name = "system %24export", .method = "GET", .path = "/fhir/tb/%24export", .headers = async,
       .allowed = kRefused},
      {.name = "Patient $export", .method = "GET", .path = "/fhir/tb/Patient/$export", .headers = async,
       .allowed = kRefused},
      {.name = "Group $export", .method = "GET", .path = "/fhir/tb/Group/" + b_.group + "/$export",
       .headers = async, .allowed = kRefused},
      {.name = "B's $export-status", .method = "GET", .path = "/fhir/tb/$export-status/" + b_.export_job,
       .allowed = kRefused},
      {.name = "cancel B's export", .method = "DELETE", .path = "/fhir/tb/$export-status/" + b_.export_job,
       .allowed = kRefused},
      {.name = "B's export file", .method = "GET", .path = b_.export_file, .allowed = kRefused},
      {.name = "create Subscription", .method = "POST", .path = "/fhir/tb/Subscription",
       .body = std::string(R"({"resourceType":"Subscription","status":"requested","reason":"x",)") +
               R"("criteria":"Observation?code=http://loinc.org|)" + kBCode +
               R"(","channel":{"type":"rest-hook","endpoint":"http://127.0.0.1:9/hook"}})",
       .allowed = kRefused},
      {.name = "search Subscriptions", .method = "GET", .path = "/fhir/tb/Subscription", .allowed = kRefused},
      {.name = "websocket upgrade", .method = "GET", .path = "/fhir/tb/$subscription-websocket",
       .headers = {{"Connection", "Upgrade"},
                   {"Upgrade", "websocket"},
                   {"Sec-WebSocket-Version", "13"},
                   {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}},
       .allowed = kRefused, .fresh_connection = true},
      {.name = "$reindex", .method = "POST", .path = "/fhir/tb/$reindex", .allowed = kRefused},
      {.name = "$reindex status", .method = "GET", .path = "/fhir/tb/$reindex", .allowed = kRefused},
      {.name = "type $reindex", .method = "POST", .path = "/fhir/tb/Patient/$reindex", .allowed = kRefused},
      // Public: they answer, with nothing of B's.
      {.name = "metadata (public)", .method = "GET", .path = "/fhir/tb/metadata", .allowed = {200}},
      {.name = "smart-configuration (public)", .method = "GET", .path = "/fhir/tb/.well-known/smart-configuration",
       .allowed = {200}},
  };
  // clang-format on
  for (const Token& token : ATokens()) {
    for (const Case& k : cases) Run(k, token);
  }
  ExpectBUntouched();
  RecordProperty("cases", cases_run_);
}

// Paths that try to name one tenant to the gateway and another to the
// FHIR layer: refused or malformed, never B's data.
TEST_F(AttackMatrixTest, PathTricksDoNotCrossTenants) {
  const std::string p0 = b_.patients[0];
  const Statuses refused_or_malformed = {400, 401, 403, 404};
  // clang-format off
  const std::vector<Case> cases = {
      {.name = "dot-dot from ta", .method = "GET", .path = "/fhir/ta/../tb/Patient/" + p0,
       .allowed = refused_or_malformed},
      {.name = "encoded dot-dot from ta", .method = "GET", .path = "/fhir/ta/%2e%2e/tb/Patient/" + p0,
       .allowed = refused_or_malformed},
      {.name = "encoded slash", .method = "GET", .path = "/fhir/ta%2F..%2Ftb/Patient/" + p0,
       .allowed = refused_or_malformed},
      {.name = "dot-dot into ta", .method = "GET", .path = "/fhir/tb/../ta/Patient/" + p0,
       .allowed = refused_or_malformed},
      {.name = "encoded tenant", .method = "GET", .path = "/fhir/%74b/Patient/" + p0, .allowed = refused_or_malformed},
      {.name = "upper-case tenant", .method = "GET", .path = "/fhir/TB/Patient/" + p0, .allowed = refused_or_malformed},
      {.name = "empty segment", .method = "GET", .path = "/fhir//tb/Patient/" + p0, .allowed = refused_or_malformed},
      {.name = "double slash prefix", .method = "GET", .path = "//fhir/tb/Patient/" + p0,
       .allowed = refused_or_malformed},
      {.name = "tenant parameter", .method = "GET", .path = "/fhir/ta/Patient/" + p0 + "?tenant=tb",
       .allowed = refused_or_malformed},
      {.name = "tenant header", .method = "GET", .path = "/fhir/ta/Patient/" + p0,
       .headers = {{"X-Tenant", "tb"}, {"X-Tenant-Id", "tb"}}, .allowed = refused_or_malformed},
  };
  // clang-format on
  for (const Token& token : ATokens()) {
    for (const Case& k : cases) Run(k, token);
  }
  RecordProperty("cases", cases_run_);
}

// A's own base, reaching for B: nothing of B's matches, resolves or is
// returned; conditional operations act on A alone.
TEST_F(AttackMatrixTest, TenantAsBaseNeverReachesIntoB) {
  const std::string p0 = b_.patients[0];
  const std::string o0 = b_.observations[0];
  const std::string mrn0 = std::string(kBSystem) + "|" + b_.mrns[0];
  const std::string mrn1 = std::string(kBSystem) + "|" + b_.mrns[1];
  const std::string mrn2 = std::string(kBSystem) + "|" + b_.mrns[2];
  const std::string base_tb = "http://127.0.0.1:" + std::to_string(server_->port()) + "/fhir/tb/";
  const Headers async = {{"Prefer", "respond-async"}, {"Accept", "application/fhir+json"}};
  const std::set<std::string> a_observations = {
      "Observation/" + a_.observation, "Observation/" + a_.planted_observation, "Observation/" + a_.planted_absolute};

  const Check empty = [](const HttpResponse& res, Kind) { EXPECT_TRUE(KeysOf(res).empty()) << res.body; };
  const Check total_zero = [](const HttpResponse& res, Kind) {
    EXPECT_EQ(res.Json().at("total").as_int64(), 0) << res.body;
  };
  // Only A's observations; with patient/ scopes only the patient's own.
  const Check only_a_observations = [&](const HttpResponse& res, Kind kind) {
    for (const std::string& key : KeysOf(res)) {
      EXPECT_EQ(a_observations.count(key), 1u) << key << " is not one of A's observations";
      if (kind == Kind::kPatient) {
        EXPECT_EQ(key, "Observation/" + a_.observation);
      }
    }
  };
  const Check no_patient_included = [&](const HttpResponse& res, Kind) {
    for (const std::string& key : KeysOf(res)) {
      EXPECT_EQ(key.rfind("Patient/", 0), std::string::npos) << "an include crossed into B: " << key;
      EXPECT_EQ(key.rfind("Practitioner/", 0), std::string::npos) << "an include crossed into B: " << key;
    }
    EXPECT_EQ(res.body.find("Tbsecretfamily"), std::string::npos);
  };
  const Check created_in_a = [&](const HttpResponse& res, Kind) {
    const std::string id = Str(res.Json().at("id"));
    EXPECT_EQ(std::count(b_.patients.begin(), b_.patients.end(), id), 0) << "the answer is B's patient " << id;
    EXPECT_EQ(c().Get("/fhir/ta/Patient/" + id, AUser()).status, 200) << "not a resource of A's";
  };
  // Each read of a B id is a 404; each search finds nothing.
  const Check entries_not_found = [](const HttpResponse& res, Kind) {
    const json::value v = res.Json();
    for (const json::value& e : v.at("entry").as_array()) {
      const std::string status = Str(e.at("response").at("status"));
      const json::value* r = e.as_object().if_contains("resource");
      if (status.rfind("200", 0) == 0 && r != nullptr && r->at("resourceType").as_string() == "Bundle") {
        const json::value* inner = r->as_object().if_contains("entry");
        EXPECT_TRUE(inner == nullptr || inner->as_array().empty()) << res.body;
        continue;
      }
      EXPECT_TRUE(status.rfind("404", 0) == 0 || status.rfind("400", 0) == 0) << status << " in " << res.body;
      EXPECT_TRUE(r == nullptr) << res.body;
    }
  };

  // clang-format off
  std::vector<Case> cases = {
      // Searches that name B's data.
      {.name = "reference to a B id", .method = "GET", .path = "/fhir/ta/Observation?subject=Patient/" + p0,
       .allowed = {200}, .check = empty},
      {.name = "reference to the planted B id", .method = "GET",
       .path = "/fhir/ta/Observation?subject=Patient/" + b_.planted, .allowed = {200},
       .check = only_a_observations},
      {.name = "reference by absolute URL into tb", .method = "GET",
       .path = "/fhir/ta/Observation?subject=" + base_tb + "Patient/" + p0, .allowed = {200}, .check = empty},
      {.name = "chain by B's name", .method = "GET",
       .path = "/fhir/ta/Observation?subject:Patient.name=" + b_.families[0], .allowed = {200}, .check = empty},
      {.name = "chain by B's identifier", .method = "GET",
       .path = "/fhir/ta/Observation?subject:Patient.identifier=" + mrn0, .allowed = {200}, .check = empty},
      {.name = "chain to the planted patient's name", .method = "GET",
       .path = "/fhir/ta/Observation?subject:Patient.name=" + b_.families.back(), .allowed = {200}, .check = empty},
      {.name = "search by B's identifier", .method = "GET", .path = "/fhir/ta/Patient?identifier=" + mrn0,
       .allowed = {200}, .check = empty},
      {.name = "count by B's identifier", .method = "GET",
       .path = "/fhir/ta/Patient?identifier=" + mrn0 + "&_summary=count", .allowed = {200}, .check = total_zero},
      {.name = "count by B's code", .method = "GET",
       .path = std::string("/fhir/ta/Observation?code=http://loinc.org|") + kBCode + "&_summary=count",
       .allowed = {200}, .check = total_zero},
      {.name = "A's own count", .method = "GET", .path = "/fhir/ta/Observation?_summary=count", .allowed = {200},
       .check =
           [](const HttpResponse& res, Kind kind) {
             EXPECT_EQ(res.Json().at("total").as_int64(), kind == Kind::kPatient ? 1 : 3) << res.body;
           }},
      {.name = "_id of B's", .method = "GET", .path = "/fhir/ta/Observation?_id=" + o0, .allowed = {200},
       .check = empty},
      {.name = "_include of the planted reference", .method = "GET",
       .path = "/fhir/ta/Observation?_id=" + a_.planted_observation + "&_include=Observation:subject",
       .allowed = {200}, .check = no_patient_included},
      {.name = "_include:iterate of the planted reference", .method = "GET",
       .path = "/fhir/ta/Observation?_id=" + a_.planted_observation +
               "&_include=Observation:subject&_include:iterate=Patient:general-practitioner",
       .allowed = {200}, .check = no_patient_included},
      {.name = "_include of an absolute reference into tb", .method = "GET",
       .path = "/fhir/ta/Observation?_id=" + a_.planted_absolute + "&_include=Observation:subject",
       .allowed = {200}, .check = no_patient_included},
      {.name = "_include of every A observation", .method = "GET",
       .path = "/fhir/ta/Observation?_include=Observation:subject&_include:iterate=Patient:general-practitioner",
       .allowed = {200},
       .check =
           [&](const HttpResponse& res, Kind) {
             for (const std::string& key : KeysOf(res)) {
               const bool own = a_observations.count(key) == 1 || key == "Patient/" + a_.patient;
               EXPECT_TRUE(own) << key << " is not A's";
             }
           }},
      {.name = "_revinclude", .method = "GET",
       .path = "/fhir/ta/Patient?_id=" + a_.patient + "&_revinclude=Observation:subject", .allowed = {200},
       .check =
           [&](const HttpResponse& res, Kind) {
             EXPECT_EQ(KeysOf(res),
                       (std::set<std::string>{"Patient/" + a_.patient, "Observation/" + a_.observation}));
           }},
      {.name = "_has on B's code", .method = "GET",
       .path = std::string("/fhir/ta/Patient?_has:Observation:subject:code=") + kBCode, .allowed = {200},
       .check = empty},
      {.name = "_has on a B id", .method = "GET", .path = "/fhir/ta/Patient?_has:Observation:subject:_id=" + o0,
       .allowed = {200}, .check = empty},
      {.name = "_has through the planted reference", .method = "GET",
       .path = "/fhir/ta/Patient?_id=" + b_.planted + "&_has:Observation:subject:code=" + kACode, .allowed = {200},
       .check = empty},
      {.name = "A's own $everything", .method = "GET", .path = "/fhir/ta/Patient/" + a_.patient + "/$everything",
       .allowed = {200},
       .check =
           [&](const HttpResponse& res, Kind) {
             EXPECT_EQ(KeysOf(res),
                       (std::set<std::string>{"Patient/" + a_.patient, "Observation/" + a_.observation}));
           }},
      {.name = "system search _type", .method = "GET", .path = "/fhir/ta?_type=Patient,Observation&_count=100",
       .allowed = {200}, .by_kind = {{Kind::kPatient, {200, 403}}}},
      {.name = "system history", .method = "GET", .path = "/fhir/ta/_history?_count=1000", .allowed = {200}},
      {.name = "type history", .method = "GET", .path = "/fhir/ta/Patient/_history?_count=1000", .allowed = {200}},
      {.name = "compartment of a B patient", .method = "GET", .path = "/fhir/ta/Patient/" + p0 + "/Observation",
       .allowed = {200}, .by_kind = {{Kind::kPatient, {403}}}, .check = empty},
      {.name = "compartment of the planted patient", .method = "GET",
       .path = "/fhir/ta/Patient/" + b_.planted + "/*", .allowed = {200}, .by_kind = {{Kind::kPatient, {403}}},
       .check = only_a_observations},
      {.name = "Subscription search by B's id", .method = "GET", .path = "/fhir/ta/Subscription?_id=" + b_.subscription,
       .allowed = {200}, .by_kind = {{Kind::kPatient, {403}}}, .check = empty},
      // B's ids read through A's base: unknown.
      {.name = "read B Patient", .method = "GET", .path = "/fhir/ta/Patient/" + p0, .allowed = {404}},
      {.name = "read the planted Patient", .method = "GET", .path = "/fhir/ta/Patient/" + b_.planted,
       .allowed = {404}},
      {.name = "vread B Patient", .method = "GET", .path = "/fhir/ta/Patient/" + p0 + "/_history/1",
       .allowed = {404}},
      {.name = "history of B Patient", .method = "GET", .path = "/fhir/ta/Patient/" + p0 + "/_history",
       .allowed = {404}},
      {.name = "read B Observation", .method = "GET", .path = "/fhir/ta/Observation/" + o0, .allowed = {404}},
      {.name = "read B Encounter", .method = "GET", .path = "/fhir/ta/Encounter/" + b_.encounter, .allowed = {404}},
      {.name = "read B Practitioner", .method = "GET", .path = "/fhir/ta/Practitioner/" + b_.practitioner,
       .allowed = {404}},
      {.name = "read B Group", .method = "GET", .path = "/fhir/ta/Group/" + b_.group, .allowed = {404}},
      {.name = "read B Subscription", .method = "GET", .path = "/fhir/ta/Subscription/" + b_.subscription,
       .allowed = {404}},
      {.name = "read B Consent", .method = "GET", .path = "/fhir/ta/Consent/" + b_.consent, .allowed = {404}},
      {.name = "$everything of a B patient", .method = "GET", .path = "/fhir/ta/Patient/" + p0 + "/$everything",
       .allowed = {404}},
      {.name = "$everything of the planted patient", .method = "GET",
       .path = "/fhir/ta/Patient/" + b_.planted + "/$everything", .allowed = {404}},
      // Writes to B's ids through A's base: nothing there to write.
      {.name = "PATCH B Patient", .method = "PATCH", .path = "/fhir/ta/Patient/" + p0,
       .body = R"([{"op":"replace","path":"/active","value":false}])",
       .headers = {{"Content-Type", "application/json-patch+json"}}, .allowed = {404}},
      {.name = "DELETE B Patient", .method = "DELETE", .path = "/fhir/ta/Patient/" + p0, .allowed = {404}},
      {.name = "DELETE B Consent", .method = "DELETE", .path = "/fhir/ta/Consent/" + b_.consent, .allowed = {404}},
      // The id is A's to take when it has none of its own: If-Match makes
      // it an update, which finds nothing.
      {.name = "PUT B Patient with If-Match", .method = "PUT", .path = "/fhir/ta/Patient/" + p0,
       .body = R"({"resourceType":"Patient","id":")" + p0 + R"(","active":false})",
       .headers = {{"If-Match", "W/\"1\""}}, .allowed = {412}, .by_kind = {{Kind::kPatient, {403}}}},
      // Conditional operations matching only B's data: as if nothing matched.
      {.name = "If-None-Exist on B's identifier", .method = "POST", .path = "/fhir/ta/Patient",
       .body = R"({"resourceType":"Patient","name":[{"family":"Acondcreate"}]})",
       .headers = {{"If-None-Exist", "identifier=" + mrn0}}, .allowed = {201}, .by_kind = {{Kind::kPatient, {403}}},
       .check = created_in_a},
      {.name = "conditional update on B's identifier", .method = "PUT", .path = "/fhir/ta/Patient?identifier=" + mrn1,
       .body = R"({"resourceType":"Patient","name":[{"family":"Acondupdate"}]})", .allowed = {201},
       .by_kind = {{Kind::kPatient, {403}}}, .check = created_in_a},
      {.name = "conditional delete on B's identifier", .method = "DELETE",
       .path = "/fhir/ta/Patient?identifier=" + mrn2, .allowed = {204}, .by_kind = {{Kind::kPatient, {403}}}},
      {.name = "conditional delete on B's name", .method = "DELETE",
       .path = "/fhir/ta/Observation?subject:Patient.name=" + b_.families[3], .allowed = {204},
       .by_kind = {{Kind::kPatient, {403}}}},
      // Bundles.
      {.name = "transaction: conditional reference to B's identifier", .method = "POST", .path = "/fhir/ta",
       .body = R"({"resourceType":"Bundle","type":"transaction","entry":[)"
               R"({"request":{"method":"POST","url":"Observation"},)"
               R"("resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},)"
               R"("subject":{"reference":"Patient?identifier=)" + mrn0 + R"("}}}]})",
       .allowed = {404, 412}, .by_kind = {{Kind::kPatient, {403, 404, 412}}}},
      {.name = "transaction: ifNoneExist on B's identifier", .method = "POST", .path = "/fhir/ta",
       .body = R"({"resourceType":"Bundle","type":"transaction","entry":[)"
               R"({"request":{"method":"POST","url":"Patient",)"
               R"("ifNoneExist":"identifier=)" + mrn0 + R"("},)"
               R"("resource":{"resourceType":"Patient","name":[{"family":"Atxcreate"}]}}]})",
       .allowed = {200}, .by_kind = {{Kind::kPatient, {403}}},
       .check =
           [](const HttpResponse& res, Kind) {
             const std::vector<json::object> r = Responses(res);
             ASSERT_EQ(r.size(), 1u);
             EXPECT_EQ(Str(r[0].at("status")), "201 Created") << res.body;
           }},
      {.name = "transaction: conditional update on B's identifier", .method = "POST", .path = "/fhir/ta",
       .body = R"({"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PUT",)"
               R"("url":"Patient?identifier=)" + mrn1 + R"("},)"
               R"("resource":{"resourceType":"Patient","name":[{"family":"Atxupdate"}]}}]})",
       .allowed = {200}, .by_kind = {{Kind::kPatient, {403}}},
       .check =
           [](const HttpResponse& res, Kind) {
             const std::vector<json::object> r = Responses(res);
             ASSERT_EQ(r.size(), 1u);
             EXPECT_EQ(Str(r[0].at("status")), "201 Created") << res.body;
           }},
      {.name = "batch: reads of B's ids and identifiers", .method = "POST", .path = "/fhir/ta",
       .body = R"({"resourceType":"Bundle","type":"batch","entry":[)"
               R"({"request":{"method":"GET","url":"Patient/)" + p0 + R"("}},)"
               R"({"request":{"method":"GET","url":"Observation/)" + o0 + R"("}},)"
               R"({"request":{"method":"GET","url":"Patient?identifier=)" + mrn0 + R"("}},)"
               R"({"request":{"method":"GET","url":"Patient/)" + p0 + R"(/_history/1"}},)"
               R"({"request":{"method":"GET","url":")" + base_tb + "Patient/" + p0 + R"("}},)"
               R"({"request":{"method":"GET","url":"/fhir/tb/Patient/)" + p0 + R"("}}]})",
       .allowed = {200}, .check = entries_not_found},
      {.name = "batch: writes to B's ids", .method = "POST", .path = "/fhir/ta",
       .body = R"({"resourceType":"Bundle","type":"batch","entry":[)"
               R"({"request":{"method":"DELETE","url":"Patient/)" + p0 + R"("}},)"
               R"({"request":{"method":"DELETE","url":"Observation/)" + o0 + R"("}},)"
               R"({"request":{"method":"DELETE","url":")" + base_tb + "Observation/" + o0 + R"("}},)"
               R"({"request":{"method":"PATCH","url":"Patient/)" + p0 + R"("},"resource":{"resourceType":"Binary",)"
               R"("contentType":"application/json-patch+json",)"
               R"("data":"W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9hY3RpdmUiLCJ2YWx1ZSI6ZmFsc2V9XQ=="}}]})",
       .allowed = {200}, .by_kind = {{Kind::kPatient, {403}}}, .check = entries_not_found},
      // B's export job, files and Group through A's base.
      {.name = "B's $export-status", .method = "GET", .path = "/fhir/ta/$export-status/" + b_.export_job,
       .allowed = {403}, .by_kind = {{Kind::kSystem, {404}}}},
      {.name = "cancel B's export", .method = "DELETE", .path = "/fhir/ta/$export-status/" + b_.export_job,
       .allowed = {403}, .by_kind = {{Kind::kSystem, {404}}}},
      {.name = "B's export file", .method = "GET",
       .path = "/fhir/ta/$export-file/" + b_.export_job + "/" + b_.export_file_name, .allowed = {403},
       .by_kind = {{Kind::kSystem, {404}}}},
      {.name = "B's Group $export", .method = "GET", .path = "/fhir/ta/Group/" + b_.group + "/$export",
       .headers = async, .allowed = {403}, .by_kind = {{Kind::kSystem, {404}}}},
  };
  // clang-format on
  // A token that names no tenant is valid for none.
  for (Case& k : cases) k.by_kind[Kind::kNoTenant] = {403};
  for (const Token& token : ATokens()) {
    for (const Case& k : cases) Run(k, token);
  }
  // Last, as it hides A's planted observations from the searches above: A's
  // Consent denying all access to the planted patient binds A's registry
  // only. It is in force in A, so B reading that patient in
  // ExpectBUntouched shows isolation, not a Consent that never took effect.
  Run({.name = "A's Consent denying the planted patient",
       .method = "POST",
       .path = "/fhir/ta/Consent",
       .body = ConsentJson(b_.planted, "OPTIN", "deny"),
       .allowed = {201}},
      ATokens()[0]);
  EXPECT_EQ(c().Get("/fhir/ta/Observation/" + a_.planted_observation, AUser()).status, 403);
  ExpectBUntouched();
  RecordProperty("cases", cases_run_);
}

// A's own bulk export holds A's data only, and B cannot read A's job either.
TEST_F(AttackMatrixTest, ExportOfAHoldsNothingOfB) {
  const Headers a = TestTokens::Bearer(tokens_->User("ta", "system/*.cruds"));
  auto [job, files] = RunExport("ta", a);
  ASSERT_FALSE(files.empty());
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    HttpResponse res = c().Get(file, a);
    ASSERT_EQ(res.status, 200) << res.body;
    for (const std::string& secret : Secrets()) {
      EXPECT_EQ(res.body.find(secret), std::string::npos) << "A's export holds B's '" << secret << "'";
    }
    EXPECT_EQ(res.body.find(b_.families.back()), std::string::npos) << "A's export holds the planted patient";
    const std::string in_b = "/fhir/tb/" + file.substr(std::string("/fhir/ta/").size());
    EXPECT_EQ(c().Get(in_b, BSystem()).status, 404) << in_b;
  }
  EXPECT_EQ(c().Get("/fhir/tb/$export-status/" + job, BSystem()).status, 404);
}

// The admin API needs medgrid/admin: no token of a tenant has it.
TEST_F(AttackMatrixTest, AdminApiRefusesTenantTokens) {
  // clang-format off
  const std::vector<Case> cases = {
      {.name = "list tenants", .method = "GET", .path = "/admin/tenants", .allowed = {403}},
      {.name = "list shards", .method = "GET", .path = "/admin/shards", .allowed = {403}},
      {.name = "explain B's search", .method = "GET", .path = "/admin/explain/tb/Patient?name=Tbsecretfamily",
       .allowed = {403}},
      {.name = "create a tenant", .method = "POST", .path = "/admin/tenants", .body = R"({"id":"evil"})",
       .headers = {{"Content-Type", "application/json"}}, .allowed = {403}},
  };
  // clang-format on
  for (const Token& token : ATokens()) {
    for (const Case& k : cases) Run(k, token);
  }
  HttpResponse tenants = c().Get("/admin/tenants", TestTokens::Bearer(tokens_->Admin()));
  ASSERT_EQ(tenants.status, 200);
  EXPECT_EQ(tenants.body.find("evil"), std::string::npos) << tenants.body;
  RecordProperty("cases", cases_run_);
}

// No token, or one that does not verify: 401 with a Bearer challenge, on
// every kind of B endpoint and the admin API.
TEST_F(AttackMatrixTest, MissingAndBadTokensGet401WithABearerChallenge) {
  const std::string p0 = b_.patients[0];
  const std::string a_token = tokens_->User("ta", "user/*.cruds");
  const std::vector<std::string_view> parts = core::StrSplit(a_token, '.');
  ASSERT_EQ(parts.size(), 3u);
  json::object to_b = ClaimsOf(a_token);
  to_b["tenant"] = "tb";
  const std::string forged_claims = Base64UrlEncode(json::serialize(to_b));
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  // clang-format off
  const std::vector<Token> bad = {
      {"no token", Kind::kNoTenant, {}},
      {"not a JWT", Kind::kNoTenant, {{"Authorization", "Bearer not-a-jwt"}}},
      {"Basic credentials", Kind::kNoTenant, {{"Authorization", "Basic dGI6c2VjcmV0"}}},
      {"expired B token", Kind::kNoTenant,
       TestTokens::Bearer(tokens_->Mint({{"tenant", "tb"}, {"scope", "user/*.cruds"}}, -3600))},
      {"B token not yet valid", Kind::kNoTenant,
       TestTokens::Bearer(tokens_->Mint({{"tenant", "tb"}, {"scope", "user/*.cruds"}, {"nbf", now + 3600}}))},
      {"wrong audience", Kind::kNoTenant,
       TestTokens::Bearer(tokens_->Mint({{"tenant", "tb"}, {"scope", "user/*.cruds"}, {"aud", "another-api"}}))},
      {"wrong issuer", Kind::kNoTenant,
       TestTokens::Bearer(
           tokens_->Mint({{"tenant", "tb"}, {"scope", "user/*.cruds"}, {"iss", "https://idp.evil.example"}}))},
      {"signed by another key", Kind::kNoTenant, TestTokens::Bearer(other_key_->User("tb", "user/*.cruds"))},
      {"A token re-addressed to tb", Kind::kNoTenant,
       TestTokens::Bearer(std::string(parts[0]) + "." + forged_claims + "." + std::string(parts[2]))},
      {"alg none", Kind::kNoTenant,
       TestTokens::Bearer(Base64UrlEncode(R"({"alg":"none","typ":"JWT","kid":"test-1"})") + "." + forged_claims +
                          ".")},
  };
  // clang-format on
  const Statuses unauthorized = {401};
  // clang-format off
  const std::vector<Case> cases = {
      {.name = "read", .method = "GET", .path = "/fhir/tb/Patient/" + p0, .allowed = unauthorized},
      {.name = "search", .method = "GET", .path = "/fhir/tb/Patient?name=Tbsecretfamily", .allowed = unauthorized},
      {.name = "system history", .method = "GET", .path = "/fhir/tb/_history", .allowed = unauthorized},
      {.name = "delete", .method = "DELETE", .path = "/fhir/tb/Patient/" + p0, .allowed = unauthorized},
      {.name = "transaction", .method = "POST", .path = "/fhir/tb",
       .body = R"({"resourceType":"Bundle","type":"transaction","entry":[]})", .allowed = unauthorized},
      {.name = "$everything", .method = "GET", .path = "/fhir/tb/Patient/" + p0 + "/$everything",
       .allowed = unauthorized},
      {.name = "$export", .method = "GET", .path = "/fhir/tb/$export",
       .headers = {{"Prefer", "respond-async"}, {"Accept", "application/fhir+json"}}, .allowed = unauthorized},
      {.name = "$export-status", .method = "GET", .path = "/fhir/tb/$export-status/" + b_.export_job,
       .allowed = unauthorized},
      {.name = "create Subscription", .method = "POST", .path = "/fhir/tb/Subscription",
       .body = R"({"resourceType":"Subscription"})", .allowed = unauthorized},
      {.name = "websocket upgrade", .method = "GET", .path = "/fhir/tb/$subscription-websocket",
       .headers = {{"Connection", "Upgrade"},
                   {"Upgrade", "websocket"},
                   {"Sec-WebSocket-Version", "13"},
                   {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}},
       .allowed = unauthorized, .fresh_connection = true},
      {.name = "admin tenants", .method = "GET", .path = "/admin/tenants", .allowed = unauthorized},
      {.name = "admin shards", .method = "GET", .path = "/admin/shards", .allowed = unauthorized},
      {.name = "admin explain", .method = "GET", .path = "/admin/explain/tb/Patient", .allowed = unauthorized},
      {.name = "admin create tenant", .method = "POST", .path = "/admin/tenants", .body = R"({"id":"evil2"})",
       .headers = {{"Content-Type", "application/json"}}, .allowed = unauthorized},
  };
  // clang-format on
  for (const Token& token : bad) {
    for (const Case& k : cases) {
      HttpResponse res = Run(k, token);
      EXPECT_EQ(res.Header("WWW-Authenticate").rfind("Bearer", 0), 0u)
          << "case '" << k.name << "' with '" << token.name << "': WWW-Authenticate is '"
          << res.Header("WWW-Authenticate") << "' (status " << res.status << ")";
    }
  }
  RecordProperty("cases", cases_run_);
}

// Probes: an existing B id and one that never existed get the same answer
// (status, headers, body but for the id echoed) through every A token, at
// B's base and at A's; an existing tenant and one that does not exist too.
TEST_F(AttackMatrixTest, ExistingAndUnknownIdsAnswerAlike) {
  for (const Token& token : ATokens()) {
    SCOPED_TRACE(token.name);
    for (const auto& [type, id] : {std::pair{"Patient", b_.patients[0]}, std::pair{"Patient", b_.planted},
                                   std::pair{"Observation", b_.observations[0]}, std::pair{"Consent", b_.consent},
                                   std::pair{"Subscription", b_.subscription}, std::pair{"Group", b_.group}}) {
      const std::string never(id.size(), 'z');  // the same length: Content-Length must not differ either
      for (const std::string tenant : {"ta", "tb"}) {
        const std::string base = "/fhir/" + tenant + "/" + type + "/";
        HttpResponse existing = c().Get(base + id, token.auth);
        HttpResponse unknown = c().Get(base + never, token.auth);
        SCOPED_TRACE(base + id + " vs " + base + never);
        EXPECT_EQ(existing.status, unknown.status);
        EXPECT_TRUE(existing.status == 403 || existing.status == 404) << existing.status << " " << existing.body;
        EXPECT_EQ(core::StrReplaceAll(existing.body, id, "{id}"), core::StrReplaceAll(unknown.body, never, "{id}"));
        auto headers = [](const HttpResponse& r) {
          std::map<std::string, std::string> h = r.headers;
          h.erase("x-request-id");
          h.erase("date");
          return h;
        };
        EXPECT_EQ(headers(existing), headers(unknown));
      }
      // A tenant that does not exist answers as B does.
      HttpResponse in_b = c().Get("/fhir/tb/" + std::string(type) + "/" + id, token.auth);
      HttpResponse nowhere = c().Get("/fhir/tz/" + std::string(type) + "/" + id, token.auth);
      EXPECT_EQ(in_b.status, nowhere.status);
      EXPECT_EQ(in_b.body, nowhere.body);
    }
  }
}

// Probe resistance, not speed: if answering for an id that exists in B took
// measurably longer than for one that never existed (a look-up in B's
// shard, a consent check, a body parsed and then hidden), an attacker could
// find B's ids by timing A's requests. Both populations are measured in
// this process, interleaved, so load on the machine affects both alike; the
// bound (3x the other median plus 2 ms) is loose enough that scheduling
// noise does not fail it. It catches gross differences (extra round trips
// to a database or the consent registry), not nanosecond ones.
TEST_F(AttackMatrixTest, ExistingAndUnknownIdsTakeAlikeTime) {
  constexpr int kRounds = 200;
  const Headers a = AUser();
  const std::string id = b_.patients[0];
  const std::string never(id.size(), 'z');
  for (const std::string tenant : {"ta", "tb"}) {
    SCOPED_TRACE("/fhir/" + tenant);
    const std::string existing = "/fhir/" + tenant + "/Patient/" + id;
    const std::string unknown = "/fhir/" + tenant + "/Patient/" + never;
    std::vector<double> t_existing, t_unknown;
    auto timed = [&](const std::string& path) {
      const auto start = std::chrono::steady_clock::now();
      HttpResponse res = c().Get(path, a);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      EXPECT_TRUE(res.status == 403 || res.status == 404) << path << ": " << res.status;
      return ms;
    };
    for (int i = 0; i < 10; ++i) {  // warm the connection, the token cache and the tenant look-up
      timed(existing);
      timed(unknown);
    }
    for (int i = 0; i < kRounds; ++i) {
      // Alternate which goes first so that neither always follows the other.
      if (i % 2 == 0) {
        t_existing.push_back(timed(existing));
        t_unknown.push_back(timed(unknown));
      } else {
        t_unknown.push_back(timed(unknown));
        t_existing.push_back(timed(existing));
      }
    }
    auto median = [](std::vector<double> v) {
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
      return v[v.size() / 2];
    };
    const double m_existing = median(t_existing);
    const double m_unknown = median(t_unknown);
    EXPECT_LT(std::max(m_existing, m_unknown), 3 * std::min(m_existing, m_unknown) + 2.0)
        << "median ms: existing B id " << m_existing << ", unknown id " << m_unknown;
  }
}

// A's own websocket cannot bind B's Subscription, and B's websocket does
// not upgrade for A (the matrix above checks the HTTP answer).
TEST_F(AttackMatrixTest, WebsocketCannotBindAnotherTenantsSubscription) {
  asio::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
  beast::websocket::stream<tcp::socket> ws(std::move(socket));
  const std::string auth = AUser().at("Authorization");
  ws.set_option(beast::websocket::stream_base::decorator(
      [auth](beast::websocket::request_type& req) { req.set(beast::http::field::authorization, auth); }));
  ws.handshake("127.0.0.1", "/fhir/ta/$subscription-websocket");
  ws.text(true);
  ws.write(asio::buffer("bind " + b_.subscription));
  // One message, or "" after 20 s (the socket is shut down to end the read).
  auto reply = std::async(std::launch::async, [&] {
    beast::flat_buffer buffer;
    beast::error_code ec;
    ws.read(buffer, ec);
    return ec ? std::string() : beast::buffers_to_string(buffer.data());
  });
  if (reply.wait_for(20s) != std::future_status::ready) {
    beast::error_code ec;
    ws.next_layer().shutdown(tcp::socket::shutdown_both, ec);
  }
  const std::string message = reply.get();
  EXPECT_EQ(message.rfind("error " + b_.subscription, 0), 0u) << message;
  for (const std::string& secret : Secrets()) {
    if (secret == b_.subscription) continue;  // the id A sent
    EXPECT_EQ(message.find(secret), std::string::npos) << secret;
  }
  beast::error_code ec;
  ws.close(beast::websocket::close_code::normal, ec);

  // B's base refuses the upgrade itself: the handshake fails.
  tcp::socket socket_b(io);
  socket_b.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
  beast::websocket::stream<tcp::socket> ws_b(std::move(socket_b));
  ws_b.set_option(beast::websocket::stream_base::decorator(
      [auth](beast::websocket::request_type& req) { req.set(beast::http::field::authorization, auth); }));
  beast::websocket::response_type response;
  ws_b.handshake(response, "127.0.0.1", "/fhir/tb/$subscription-websocket", ec);
  EXPECT_TRUE(ec) << "A's token opened B's websocket";
  EXPECT_EQ(response.result_int(), 403u);
}

}  // namespace
}  // namespace medgrid::testing
