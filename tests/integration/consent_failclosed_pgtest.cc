// The consent service when what it depends on fails, with servers of the
// test's own, started and stopped with deploy/local/lib.sh.
//
// Fail-closed consent: the consent registry runs in a PostgreSQL server of
// its own, and the test really stops it. Non-emergency access to patient data whose Consents are not cached is
// then refused with 503 and an OperationOutcome, within the deadline and,
// once the breaker opens, at once; break-the-glass access still works; data
// that is not a patient's is still served. When the server comes back, the
// breaker lets probes through and access resumes. A restart with no lookup
// in between fails no lookup: the broken connections are replaced.
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "integration/receiver.h"
#include "medgrid/core/strings.h"

namespace medgrid::testing {
namespace {

// The value of a counter line of /metrics, 0 when absent.
double Metric(HttpClient& http, const std::string& series) {
  const std::string body = http.Get("/metrics").body;
  const std::size_t at = body.find(series + " ");
  return at == std::string::npos ? 0 : std::stod(body.substr(at + series.size() + 1));
}

std::string ConsentDeny(const std::string& patient) {
  return core::StrCat(
      R"({"resourceType":"Consent","status":"active","scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},)",
      R"("category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/)",
      patient, R"("},"policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"OPTOUT"}]},)",
      R"("provision":{"type":"deny"}})");
}

std::string PatientJson(const std::string& id) {
  return core::StrCat(R"({"resourceType":"Patient","id":")", id, R"("})");
}

TEST(ConsentFailClosed, StoppedRegistryRefusesAllButBreakTheGlassAndRecovers) {
  OwnPostgres registry;
  TestTokens tokens;
  app::AppConfig c = TestServer::BaseConfig("failclosed");
  c.security.consent_dsn = registry.Dsn();
  tokens.Configure(c);
  c.redis.clear();  // the registry alone decides what is cached: L1 only
  c.security.consent_deadline = std::chrono::milliseconds(300);
  c.security.consent_breaker.open_timeout = std::chrono::seconds(2);
  c.degradation_interval = std::chrono::milliseconds(100);
  TestServer server("failclosed", {"t1"}, c, &tokens);
  HttpClient& http = server.client();
  const auto writer = TestTokens::Bearer(tokens.User("t1", "system/*.cruds"));
  for (const std::string p : {"a", "b", "c", "d", "e", "f", "g", "h"}) {
    ASSERT_EQ(http.Put("/fhir/t1/Patient/" + p, PatientJson(p), writer).status, 201);
  }
  ASSERT_EQ(http.Put("/fhir/t1/Organization/org1", R"({"resourceType":"Organization","id":"org1"})", writer).status,
            201);
  auto clinician = TestTokens::Bearer(tokens.User(
      "t1", "user/*.read", {{"sub", "dr-1"}, {"fhirUser", "Practitioner/d1"}, {"roles", boost::json::array{"physician"}}}));
  ASSERT_EQ(http.Get("/fhir/t1/Patient/a", clinician).status, 200);  // a's (empty) Consents are cached now

  ASSERT_TRUE(registry.Run("pg_stop"));
  HttpResponse refused = http.Get("/fhir/t1/Patient/b", clinician);
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_EQ(refused.Json().at("resourceType").as_string(), "OperationOutcome");
  EXPECT_EQ(refused.IssueCode(), "transient");
  EXPECT_NE(refused.Diagnostics().find("Emergency access"), std::string::npos);
  // Searches fail closed as a whole rather than dropping silently.
  EXPECT_EQ(http.Get("/fhir/t1/Patient?_id=c", clinician).status, 503);
  // Not patient data: no Consent applies.
  EXPECT_EQ(http.Get("/fhir/t1/Organization/org1", clinician).status, 200);
  // A cached decision still holds.
  EXPECT_EQ(http.Get("/fhir/t1/Patient/a", clinician).status, 200);
  // Break-the-glass goes through, with its reason.
  auto emergency = clinician;
  emergency["X-Purpose-Of-Use"] = "BTG";
  emergency["X-BTG-Reason"] = "cardiac arrest, consent service down";
  EXPECT_EQ(http.Get("/fhir/t1/Patient/b", emergency).status, 200);
  // After five failures the breaker is open: refusals come without waiting.
  for (int i = 0; i < 6; ++i) http.Get("/fhir/t1/Patient/c", clinician);
  EXPECT_EQ(http.Get("/fhir/t1/Patient/c", clinician).status, 503);
  HttpResponse metrics = http.Get("/metrics");
  EXPECT_NE(metrics.body.find(R"(medgrid_circuit_breaker_state{dependency="consent"} 1)"), std::string::npos);
  EXPECT_NE(metrics.body.find(R"(medgrid_consent_lookups_total{source="failed"})"), std::string::npos);
  // The consent breaker open is degradation level 3, with its reason.
  const auto admin = TestTokens::Bearer(tokens.Admin());
  EXPECT_TRUE(WaitFor([&] {
    HttpResponse d = http.Get("/admin/degradation", admin);
    return d.status == 200 && d.body.find(R"("level":3)") != std::string::npos &&
           d.body.find("consent") != std::string::npos;
  }, std::chrono::seconds(10)));
  EXPECT_EQ(http.Get("/fhir/t1/Organization/org1", clinician).Header("X-Degradation-Level"), "3");

  ASSERT_TRUE(registry.Run("pg_start"));
  EXPECT_TRUE(WaitFor([&] { return http.Get("/fhir/t1/Patient/c", clinician).status == 200; },
                      std::chrono::seconds(30)));
  // Once back, every lookup succeeds, on whichever of the 4 registry
  // connections it lands: each one made before the restart is replaced at
  // its first use, not failed.
  for (const std::string p : {"b", "d", "e", "f", "g", "h"}) {
    EXPECT_EQ(http.Get("/fhir/t1/Patient/" + p, clinician).status, 200) << p;
  }
}

// A registry restart with no lookup while it is down: every registry
// connection made before it is broken, and each is replaced at its first
// use, so no lookup fails and the breaker stays closed.
TEST(ConsentFailClosed, ARegistryRestartCostsNoLookup) {
  OwnPostgres registry;
  TestTokens tokens;
  app::AppConfig c = TestServer::BaseConfig("restart");
  c.security.consent_dsn = registry.Dsn();
  tokens.Configure(c);
  c.redis.clear();
  c.security.consent_deadline = std::chrono::milliseconds(2000);
  TestServer server("restart", {"t1"}, c, &tokens);
  HttpClient& http = server.client();
  const auto writer = TestTokens::Bearer(tokens.User("t1", "system/*.cruds"));
  constexpr int kWarm = 16, kAfter = 8;
  for (int i = 0; i < kWarm + kAfter; ++i) {
    const std::string id = core::StrCat("r", i);
    ASSERT_EQ(http.Put("/fhir/t1/Patient/" + id, PatientJson(id), writer).status, 201);
  }
  auto clinician = TestTokens::Bearer(tokens.User(
      "t1", "user/*.read", {{"sub", "dr-1"}, {"fhirUser", "Practitioner/d1"}, {"roles", boost::json::array{"physician"}}}));
  // Concurrent lookups, so that the registry threads (4) all connect.
  std::vector<std::thread> readers;
  std::atomic<int> ok{0};
  for (int i = 0; i < kWarm; ++i) {
    readers.emplace_back([&, i] {
      HttpClient own(server.app().port());
      ok += own.Get(core::StrCat("/fhir/t1/Patient/r", i), clinician).status == 200 ? 1 : 0;
    });
  }
  for (std::thread& t : readers) t.join();
  ASSERT_EQ(ok.load(), kWarm);

  ASSERT_TRUE(registry.Run("pg_stop"));
  ASSERT_TRUE(registry.Run("pg_start"));
  const double failed_before = Metric(http, R"(medgrid_consent_lookups_total{source="failed"})");
  for (int i = kWarm; i < kWarm + kAfter; ++i) {
    EXPECT_EQ(http.Get(core::StrCat("/fhir/t1/Patient/r", i), clinician).status, 200) << i;
  }
  EXPECT_EQ(Metric(http, R"(medgrid_consent_lookups_total{source="failed"})"), failed_before);
  EXPECT_NE(http.Get("/metrics").body.find(R"(medgrid_circuit_breaker_state{dependency="consent"} 0)"),
            std::string::npos);
}

// Redis under the consent cache: shared by two instances (L2 hits on the
// second), then unable to take writes while a Consent changes (the stale
// set it holds is not served; the missed invalidation is delivered once it
// can be), then killed (decisions come from the registry) and back.
TEST(ConsentRedis, L2IsSharedBypassedWhenFailingAndNeverServesAStaleSet) {
  OwnRedis redis;
  TestTokens tokens;
  app::AppConfig c = TestServer::BaseConfig("consentredis");
  tokens.Configure(c);
  c.redis = redis.Address();
  c.security.consent_redis_backoff = std::chrono::milliseconds(0);
  TestServer server("consentredis", {"t1"}, c, &tokens);
  HttpClient& a = server.client();
  auto second = app::App::Start(server.config());
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient b((*second)->port());
  const auto writer = TestTokens::Bearer(tokens.User("t1", "system/*.cruds"));
  for (const std::string p : {"r1", "r2", "r3", "r4", "r5"}) {
    ASSERT_EQ(a.Put("/fhir/t1/Patient/" + p, PatientJson(p), writer).status, 201);
  }
  const auto clinician = TestTokens::Bearer(tokens.User("t1", "user/*.read", {{"fhirUser", "Practitioner/d1"}}));
  const std::string l2 = R"(medgrid_consent_lookups_total{source="l2"})";

  ASSERT_EQ(a.Get("/fhir/t1/Patient/r1", clinician).status, 200);  // registry, then L2
  ASSERT_EQ(b.Get("/fhir/t1/Patient/r1", clinician).status, 200);
  EXPECT_EQ(Metric(b, l2), 1);

  // Redis takes no writes for a while: the Consent's invalidation cannot
  // reach it, and its old (empty) set for r1 is still readable there.
  ASSERT_TRUE(redis.Cli("CLIENT PAUSE 5000 WRITE"));
  ASSERT_EQ(a.Post("/fhir/t1/Consent", ConsentDeny("r1"), writer).status, 201);
  EXPECT_EQ(a.Get("/fhir/t1/Patient/r1", clinician).status, 403);
  ASSERT_TRUE(redis.Cli("CLIENT UNPAUSE"));
  // Once Redis takes writes again, the missed invalidation goes first.
  EXPECT_EQ(a.Get("/fhir/t1/Patient/r2", clinician).status, 200);
  EXPECT_TRUE(WaitFor([&] { return b.Get("/fhir/t1/Patient/r1", clinician).status == 403; },
                      std::chrono::seconds(65)));  // at worst, B's L1 entry expires (60 s)

  // Redis killed: decisions come from the registry, changes still count.
  ASSERT_TRUE(redis.Run("redis_stop"));
  EXPECT_EQ(a.Get("/fhir/t1/Patient/r3", clinician).status, 200);
  ASSERT_EQ(a.Post("/fhir/t1/Consent", ConsentDeny("r4"), writer).status, 201);
  EXPECT_EQ(a.Get("/fhir/t1/Patient/r4", clinician).status, 403);
  EXPECT_GT(Metric(a, R"(medgrid_consent_lookups_total{source="registry"})"), 0);

  // Back (empty): L2 fills and serves again.
  ASSERT_TRUE(redis.Run("redis_start"));
  const double b_l2 = Metric(b, l2);
  ASSERT_EQ(a.Get("/fhir/t1/Patient/r5", clinician).status, 200);  // registry, then L2
  ASSERT_EQ(b.Get("/fhir/t1/Patient/r5", clinician).status, 200);
  EXPECT_EQ(Metric(b, l2), b_l2 + 1);
  EXPECT_EQ(b.Get("/fhir/t1/Patient/r4", clinician).status, 403);
}

}  // namespace
}  // namespace medgrid::testing
