// SMART on FHIR auth, consent and break-the-glass end to end over HTTP with
// minted tokens, against real PostgreSQL (and Redis when the harness has
// one): public endpoints, 401s and their challenges, the admin scope,
// v1/v2 scopes with query filters, the patient context's compartment,
// Consent decisions per resource (reads 403, searches drop and say so),
// the decision cache seeing a Consent change at once (also on a second
// instance sharing the registry and Redis), and break-the-glass with its
// roles, reason, grant and webhook.
#include <thread>

#include "boost/json.hpp"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "integration/receiver.h"
#include "medgrid/core/strings.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

constexpr const char* kLab = R"("category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}])";
constexpr const char* kVital = R"("category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}])";

std::string PatientJson(const std::string& id) {
  return core::StrCat(R"({"resourceType":"Patient","id":")", id, R"(","name":[{"family":"Fam-)", id, R"("}]})");
}

std::string ObservationJson(const std::string& id, const std::string& patient, const char* category) {
  return core::StrCat(R"({"resourceType":"Observation","id":")", id, R"(","status":"final",)", category,
                      R"(,"code":{"text":"x"},"subject":{"reference":"Patient/)", patient, R"("}})");
}

// A privacy Consent of `patient` whose root provision is `type` for
// everyone, optionally limited to an actor.
std::string ConsentJson(const std::string& patient, const std::string& type, const std::string& actor = "") {
  json::object provision{{"type", type}};
  if (!actor.empty()) {
    provision["actor"] = json::array{json::object{
        {"role", json::object{{"coding", json::array{json::object{
                                             {"system", "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"},
                                             {"code", "PRCP"}}}}}},
        {"reference", json::object{{"reference", actor}}}}};
  }
  json::object c{
      {"resourceType", "Consent"},
      {"status", "active"},
      {"scope", json::object{{"coding", json::array{json::object{
                                            {"system", "http://terminology.hl7.org/CodeSystem/consentscope"},
                                            {"code", "patient-privacy"}}}}}},
      {"category", json::array{json::object{
                       {"coding", json::array{json::object{{"system", "http://loinc.org"}, {"code", "59284-0"}}}}}}},
      {"patient", json::object{{"reference", "Patient/" + patient}}},
      {"dateTime", "2026-01-01T00:00:00Z"},
      {"policyRule", json::object{{"coding", json::array{json::object{
                                                 {"system", "http://terminology.hl7.org/CodeSystem/v3-ActCode"},
                                                 {"code", type == "deny" ? "OPTOUT" : "OPTIN"}}}}}},
      {"provision", provision}};
  return json::serialize(c);
}

// Ids of the resources (not OperationOutcomes) of a searchset.
std::vector<std::string> Ids(const HttpResponse& res) {
  std::vector<std::string> ids;
  const json::value v = res.Json();
  const json::value* entries = v.as_object().if_contains("entry");
  if (entries == nullptr) return ids;
  for (const json::value& e : entries->as_array()) {
    const json::object& r = e.at("resource").as_object();
    if (r.at("resourceType").as_string() == "OperationOutcome") continue;
    ids.emplace_back(r.at("id").as_string());
  }
  return ids;
}

bool HasWithheldOutcome(const HttpResponse& res) {
  json::value v = res.Json();
  const json::value* entries = v.as_object().if_contains("entry");
  if (entries == nullptr) return false;
  for (const json::value& e : entries->as_array()) {
    if (e.at("resource").at("resourceType").as_string() == "OperationOutcome" &&
        e.at("search").at("mode").as_string() == "outcome") {
      return true;
    }
  }
  return false;
}

class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokens_ = new TestTokens();
    webhook_ = new Receiver();
    app::AppConfig c = TestServer::BaseConfig("auth");
    tokens_->Configure(c);
    c.security.break_glass.webhook_url = webhook_->Url("/btg");
    server_ = new TestServer("auth", {"t1", "t2"}, c, tokens_);
    HttpClient& http = server_->client();
    auto admin = TestTokens::Bearer(tokens_->Admin());
    admin["Content-Type"] = "application/json";
    // An opt-in tenant too.
    HttpResponse res = http.Send("POST", "/admin/tenants", R"({"id":"optin","consentPolicy":"opt-in"})", admin);
    ASSERT_EQ(res.status, 201) << res.body;
    const auto writer = TestTokens::Bearer(tokens_->User("t1", "system/*.cruds"));
    for (const std::string p : {"p1", "p2", "p3"}) {
      ASSERT_EQ(http.Put("/fhir/t1/Patient/" + p, PatientJson(p), writer).status, 201);
    }
    ASSERT_EQ(http.Put("/fhir/t1/Observation/o1-lab", ObservationJson("o1-lab", "p1", kLab), writer).status, 201);
    ASSERT_EQ(http.Put("/fhir/t1/Observation/o1-vital", ObservationJson("o1-vital", "p1", kVital), writer).status,
              201);
    ASSERT_EQ(http.Put("/fhir/t1/Observation/o2-lab", ObservationJson("o2-lab", "p2", kLab), writer).status, 201);
    ASSERT_EQ(http.Put("/fhir/t1/Practitioner/doc1", R"({"resourceType":"Practitioner","id":"doc1"})", writer).status,
              201);
    const auto optin_writer = TestTokens::Bearer(tokens_->User("optin", "system/*.cruds"));
    ASSERT_EQ(http.Put("/fhir/optin/Patient/q1", PatientJson("q1"), optin_writer).status, 201);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete webhook_;
    delete tokens_;
  }

  HttpClient& http() { return server_->client(); }
  std::map<std::string, std::string> As(const std::string& tenant, const std::string& scope,
                                        json::object extra = {}) {
    return TestTokens::Bearer(tokens_->User(tenant, scope, std::move(extra)));
  }

  static TestTokens* tokens_;
  static Receiver* webhook_;
  static TestServer* server_;
};

TestTokens* AuthTest::tokens_ = nullptr;
Receiver* AuthTest::webhook_ = nullptr;
TestServer* AuthTest::server_ = nullptr;

TEST_F(AuthTest, PublicEndpointsNeedNoToken) {
  HttpResponse caps = http().Get("/fhir/t1/metadata");
  ASSERT_EQ(caps.status, 200) << caps.body;
  const json::value caps_json = caps.Json();
  const json::object& security = caps_json.at("rest").at(0).at("security").as_object();
  EXPECT_EQ(security.at("service").at(0).at("coding").at(0).at("code").as_string(), "SMART-on-FHIR");
  EXPECT_EQ(security.at("extension").at(0).at("url").as_string(),
            "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");

  HttpResponse smart = http().Get("/fhir/t1/.well-known/smart-configuration");
  ASSERT_EQ(smart.status, 200) << smart.body;
  json::value s = smart.Json();
  EXPECT_EQ(s.at("issuer").as_string(), TestTokens::kIssuer);
  EXPECT_EQ(s.at("code_challenge_methods_supported"), json::parse(R"(["S256"])"));
  for (const char* field : {"authorization_endpoint", "token_endpoint", "grant_types_supported", "capabilities"}) {
    EXPECT_TRUE(s.as_object().contains(field)) << field;
  }
  EXPECT_EQ(http().Get("/livez").status, 200);
}

TEST_F(AuthTest, MissingOrBadTokensGet401WithAChallenge) {
  HttpResponse none = http().Get("/fhir/t1/Patient/p1");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.Header("WWW-Authenticate"), R"(Bearer realm="medgrid")");
  EXPECT_EQ(none.IssueCode(), "login");

  HttpResponse garbage = http().Get("/fhir/t1/Patient/p1", {{"Authorization", "Bearer not.a.jwt"}});
  EXPECT_EQ(garbage.status, 401);
  EXPECT_NE(garbage.Header("WWW-Authenticate").find(R"(error="invalid_token")"), std::string::npos);

  const std::string expired = tokens_->Mint({{"tenant", "t1"}, {"scope", "user/*.read"}}, -3600);
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", TestTokens::Bearer(expired)).status, 401);
  TestTokens other;  // a key the server does not know
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", TestTokens::Bearer(other.User("t1", "user/*.read"))).status, 401);
  const std::string wrong_aud = tokens_->Mint({{"tenant", "t1"}, {"scope", "user/*.read"}, {"aud", "someone-else"}});
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", TestTokens::Bearer(wrong_aud)).status, 401);
  // A token of another tenant: 403, the same for a tenant that does not exist.
  HttpResponse other_tenant = http().Get("/fhir/t1/Patient/p1", As("t2", "user/*.read"));
  HttpResponse no_tenant = http().Get("/fhir/nope/Patient/p1", As("t2", "user/*.read"));
  EXPECT_EQ(other_tenant.status, 403);
  EXPECT_EQ(no_tenant.status, 403);
  EXPECT_EQ(other_tenant.body, no_tenant.body);
}

TEST_F(AuthTest, AdminApiNeedsTheAdminScope) {
  EXPECT_EQ(http().Get("/admin/tenants").status, 401);
  EXPECT_EQ(http().Get("/admin/tenants", As("t1", "user/*.cruds")).status, 403);
  EXPECT_EQ(http().Get("/admin/tenants", TestTokens::Bearer(tokens_->Admin())).status, 200);
  // ... and an admin token alone reads no tenant's data.
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", TestTokens::Bearer(tokens_->Admin())).status, 403);
}

TEST_F(AuthTest, ScopesV1AndV2GateInteractionsAndTypes) {
  const auto read_patients = As("t1", "user/Patient.read");
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", read_patients).status, 200);
  EXPECT_EQ(http().Get("/fhir/t1/Patient?name=Fam", read_patients).status, 200);
  EXPECT_EQ(http().Get("/fhir/t1/Observation/o1-lab", read_patients).status, 403);
  EXPECT_EQ(http().Post("/fhir/t1/Patient", PatientJson("x"), read_patients).status, 403);
  const auto v2 = As("t1", "user/Patient.rs user/Observation.cu");
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", v2).status, 200);
  EXPECT_EQ(http().Get("/fhir/t1/Observation/o1-lab", v2).status, 403);  // c and u, no r
  EXPECT_EQ(http().Post("/fhir/t1/Observation", ObservationJson("n1", "p3", kLab), v2).status, 201);
  EXPECT_EQ(http().Delete("/fhir/t1/Patient/p3", v2).status, 403);

  // A v2 query filter: laboratory Observations only, by id and in searches.
  const auto labs = As("t1", "user/Observation.rs?category=laboratory");
  EXPECT_EQ(http().Get("/fhir/t1/Observation/o1-lab", labs).status, 200);
  HttpResponse vital = http().Get("/fhir/t1/Observation/o1-vital", labs);
  EXPECT_EQ(vital.status, 404);
  EXPECT_EQ(vital.body, core::StrReplaceAll(http().Get("/fhir/t1/Observation/never-was", labs).body, "never-was",
                                            "o1-vital"));
  HttpResponse search = http().Get("/fhir/t1/Observation?subject=Patient/p1", labs);
  ASSERT_EQ(search.status, 200);
  EXPECT_EQ(Ids(search), std::vector<std::string>{"o1-lab"});
  EXPECT_FALSE(http().Get("/fhir/t1/Observation?_summary=count", labs).Json().as_object().contains("total"));
}

TEST_F(AuthTest, PatientContextLimitsEverythingToTheCompartment) {
  const auto p1 = As("t1", "patient/*.read", {{"patient", "p1"}});
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", p1).status, 200);
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p2", p1).status, 404);
  EXPECT_EQ(http().Get("/fhir/t1/Observation/o2-lab", p1).status, 404);
  HttpResponse obs = http().Get("/fhir/t1/Observation", p1);
  ASSERT_EQ(obs.status, 200) << obs.body;
  std::vector<std::string> ids = Ids(obs);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"o1-lab", "o1-vital"}));
  EXPECT_TRUE(Ids(http().Get("/fhir/t1/Observation?subject=Patient/p2", p1)).empty());
  // Counts: exact within the compartment; none where others' resources would count.
  const json::value count = http().Get("/fhir/t1/Observation?_summary=count", p1).Json();
  EXPECT_EQ(count.at("total").as_int64(), 2);
  const json::value system_count = http().Get("/fhir/t1?_type=Observation&_summary=count", p1).Json();
  EXPECT_EQ(system_count.at("resourceType").as_string(), "Bundle");
  EXPECT_FALSE(system_count.as_object().contains("total"));
  EXPECT_EQ(Ids(http().Get("/fhir/t1/Patient", p1)), std::vector<std::string>{"p1"});
  // An include that would reach outside the compartment drops the resource.
  HttpResponse inc = http().Get("/fhir/t1/Observation?_include=Observation:subject&_id=o1-lab", p1);
  ASSERT_EQ(inc.status, 200);
  ids = Ids(inc);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"o1-lab", "p1"}));
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1/$everything", p1).status, 200);
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p2/$everything", p1).status, 404);
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p2/_history", p1).status, 404);
  EXPECT_EQ(http().Get("/fhir/t1/Practitioner/doc1", p1).status, 404);
  // Writes: inside the compartment only.
  const auto p1w = As("t1", "patient/*.cruds", {{"patient", "p1"}});
  EXPECT_EQ(http().Post("/fhir/t1/Observation", ObservationJson("w1", "p1", kLab), p1w).status, 201);
  EXPECT_EQ(http().Post("/fhir/t1/Observation", ObservationJson("w2", "p2", kLab), p1w).status, 403);
  EXPECT_EQ(http().Delete("/fhir/t1/Observation/o2-lab", p1w).status, 404);
  // patient/ scopes without a patient claim grant nothing.
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p1", As("t1", "patient/*.read")).status, 403);
}

TEST_F(AuthTest, ConsentDeniesReadsAndFiltersSearchesAndAChangeIsSeenAtOnce) {
  const auto clinician = As("t1", "user/*.cruds", {{"fhirUser", "Practitioner/doc1"}, {"roles", json::array{"physician"}}});
  ASSERT_EQ(http().Get("/fhir/t1/Patient/p3", clinician).status, 200);  // opt-out tenant, no Consent yet
  HttpResponse created = http().Post("/fhir/t1/Consent", ConsentJson("p3", "deny"), clinician);
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string consent_id(created.Json().at("id").as_string());

  HttpResponse denied = http().Get("/fhir/t1/Patient/p3", clinician);
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(denied.IssueCode(), "suppressed");
  EXPECT_EQ(denied.body.find("Fam-p3"), std::string::npos);
  HttpResponse search = http().Get("/fhir/t1/Patient?name=Fam", clinician);
  ASSERT_EQ(search.status, 200);
  std::vector<std::string> ids = Ids(search);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"p1", "p2"}));
  EXPECT_TRUE(HasWithheldOutcome(search));
  EXPECT_FALSE(search.Json().as_object().contains("total"));

  // Deleting the Consent: the very next request sees it.
  ASSERT_EQ(http().Delete("/fhir/t1/Consent/" + consent_id, clinician).status, 204);
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p3", clinician).status, 200);
  // A Consent that denies someone else only leaves this clinician alone.
  ASSERT_EQ(http().Post("/fhir/t1/Consent", ConsentJson("p3", "deny", "Practitioner/other"), clinician).status, 201);
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p3", clinician).status, 200);
  // R4 actors have a role: the token's roles ("system|code") carry it.
  const auto other = As("t1", "user/*.read",
                        {{"fhirUser", "Practitioner/other"},
                         {"roles", json::array{"http://terminology.hl7.org/CodeSystem/v3-ParticipationType|PRCP"}}});
  EXPECT_EQ(http().Get("/fhir/t1/Patient/p3", other).status, 403);

  // Opt-in: nothing without a permitting Consent.
  const auto optin = As("optin", "user/*.cruds", {{"fhirUser", "Practitioner/doc1"}});
  EXPECT_EQ(http().Get("/fhir/optin/Patient/q1", optin).status, 403);
  ASSERT_EQ(http().Post("/fhir/optin/Consent", ConsentJson("q1", "permit"), optin).status, 201);
  EXPECT_EQ(http().Get("/fhir/optin/Patient/q1", optin).status, 200);
}

TEST_F(AuthTest, BreakTheGlassNeedsARoleAndAReasonAndIsTimeBoxedAndNotified) {
  const auto writer = As("t2", "system/*.cruds");
  ASSERT_EQ(http().Put("/fhir/t2/Patient/e1", PatientJson("e1"), writer).status, 201);
  ASSERT_EQ(http().Post("/fhir/t2/Consent", ConsentJson("e1", "deny"), writer).status, 201);
  auto doctor = As("t2", "user/*.read", {{"sub", "dr-who"}, {"fhirUser", "Practitioner/d1"}, {"roles", json::array{"physician"}}});
  auto nurse = As("t2", "user/*.read", {{"sub", "nurse-1"}, {"fhirUser", "Practitioner/n1"}, {"roles", json::array{"nurse"}}});
  EXPECT_EQ(http().Get("/fhir/t2/Patient/e1", doctor).status, 403);

  auto btg = [](std::map<std::string, std::string> h, const std::string& reason) {
    h["X-Purpose-Of-Use"] = "BTG";
    if (!reason.empty()) h["X-BTG-Reason"] = reason;
    return h;
  };
  HttpResponse no_reason = http().Get("/fhir/t2/Patient/e1", btg(doctor, ""));
  EXPECT_EQ(no_reason.status, 403);
  EXPECT_NE(no_reason.Diagnostics().find("reason"), std::string::npos);
  EXPECT_EQ(http().Get("/fhir/t2/Patient/e1", btg(nurse, "unconscious in ED")).status, 403);  // role not allowed
  EXPECT_EQ(webhook_->Count(), 0u);

  HttpResponse granted = http().Get("/fhir/t2/Patient/e1", btg(doctor, "unconscious in ED"));
  ASSERT_EQ(granted.status, 200) << granted.body;
  // The grant stays open: no reason needed again, but the emergency must be declared.
  EXPECT_EQ(http().Get("/fhir/t2/Patient/e1", btg(doctor, "")).status, 200);
  EXPECT_EQ(http().Get("/fhir/t2/Patient/e1", doctor).status, 403);
  // The token's purpose_of_use claim declares it too.
  auto doctor_claim = As("t2", "user/*.read",
                         {{"sub", "dr-who"}, {"fhirUser", "Practitioner/d1"}, {"roles", json::array{"physician"}},
                          {"purpose_of_use", "BTG"}});
  EXPECT_EQ(http().Get("/fhir/t2/Patient/e1", doctor_claim).status, 200);

  ASSERT_TRUE(WaitFor([&] { return webhook_->Count() == 1; }));
  Received notice = webhook_->Requests()[0];
  json::value n = json::parse(notice.body);
  EXPECT_EQ(n.at("event").as_string(), "break-the-glass");
  EXPECT_EQ(n.at("patient").as_string(), "Patient/e1");
  EXPECT_EQ(n.at("agent").as_string(), "Practitioner/d1");
  EXPECT_EQ(n.at("reason").as_string(), "unconscious in ED");
}

// Two instances on one registry and one Redis: a Consent written through
// the first is seen by the second on its next request, though the second
// had the patient's Consents cached.
TEST_F(AuthTest, ASecondInstanceSeesAConsentChangeOnItsNextRequest) {
  if (server_->config().redis.empty()) GTEST_SKIP() << "MEDGRID_TEST_REDIS is not set";
  auto second_app = app::App::Start(server_->config());
  ASSERT_TRUE(second_app.ok()) << second_app.status();
  HttpClient second_client((*second_app)->port());
  struct {
    HttpClient& c;
    HttpClient& client() { return c; }
  } second{second_client};
  const auto writer = As("t1", "system/*.cruds");
  ASSERT_EQ(http().Put("/fhir/t1/Patient/x1", PatientJson("x1"), writer).status, 201);
  const auto reader = As("t1", "user/*.read", {{"fhirUser", "Practitioner/doc1"}});
  ASSERT_EQ(second.client().Get("/fhir/t1/Patient/x1", reader).status, 200);  // cached there now
  ASSERT_EQ(http().Post("/fhir/t1/Consent", ConsentJson("x1", "deny"), writer).status, 201);
  // Pub/sub reaches the second instance's L1 within moments.
  EXPECT_TRUE(WaitFor([&] { return second.client().Get("/fhir/t1/Patient/x1", reader).status == 403; },
                      std::chrono::seconds(5)));
  EXPECT_EQ(http().Get("/fhir/t1/Patient/x1", reader).status, 403);
}

}  // namespace
}  // namespace medgrid::testing
