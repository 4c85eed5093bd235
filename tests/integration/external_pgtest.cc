// External dependencies on the running server: start-up survives an identity
// provider whose JWKS URL answers 503 twice (the load is retried), the
// break-the-glass webhook is retried after a 503, both show in /metrics, a
// shutdown ends the webhook's wait for a retry, and the external_hie
// dependency's breaker, once open, puts the server in degradation level 2
// (interop_degraded).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "boost/json.hpp"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "integration/receiver.h"
#include "medgrid/core/strings.h"
#include "medgrid/http/external.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

// The value of a series of /metrics ("name{labels}"), -1 when absent.
double Metric(HttpClient& http, const std::string& series) {
  const std::string body = "\n" + http.Get("/metrics").body;
  const std::size_t at = body.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(body.substr(at + series.size() + 2));
}

std::string ConsentDeny(const std::string& patient) {
  return core::StrCat(
      R"({"resourceType":"Consent","status":"active","scope":{"coding":[{"system":)",
      R"("http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},)",
      R"("category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],"patient":{"reference":"Patient/)",
      patient, R"("},"policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode",)",
      R"("code":"OPTOUT"}]},"provision":{"type":"deny"}})");
}

// Patient e1 opts out, then a physician reads e1 with break-the-glass:
// 200, and the server posts its notice to the webhook.
int BreakTheGlassOnAnOptOut(HttpClient& http, TestTokens& tokens, const std::map<std::string, std::string>& writer) {
  if (http.Post("/fhir/t1/Consent", ConsentDeny("e1"), writer).status != 201) return -1;
  auto doctor = TestTokens::Bearer(tokens.User(
      "t1", "user/*.read", {{"sub", "dr-who"}, {"fhirUser", "Practitioner/d1"}, {"roles", json::array{"physician"}}}));
  doctor["X-Purpose-Of-Use"] = "BTG";
  doctor["X-BTG-Reason"] = "unconscious in ED";
  return http.Get("/fhir/t1/Patient/e1", doctor).status;
}

http::ExternalDependencySettings* Find(app::AppConfig& c, std::string_view name) {
  for (http::ExternalDependencySettings& s : c.external) {
    if (s.name == name) return &s;
  }
  ADD_FAILURE() << "no external dependency " << name;
  return nullptr;
}

TEST(External, JwksAndWebhookAreRetriedAndCounted) {
  TestTokens tokens;
  Receiver idp;
  idp.Script(
      {{503, "", {}}, {503, "", {}}, {200, ReadFile(tokens.jwks_path()), {{"Content-Type", "application/json"}}}});
  Receiver webhook;
  webhook.Script({{503, "", {}}});  // then 200
  app::AppConfig c = TestServer::BaseConfig("external");
  tokens.Configure(c);
  c.security.auth.jwks = idp.Url("/jwks.json");
  c.security.break_glass.webhook_url = webhook.Url("/btg");
  TestServer server("external", {"t1"}, c, &tokens);
  HttpClient& http = server.client();
  // Start-up loaded the keys on the third attempt: tokens signed with them work.
  EXPECT_EQ(idp.Count(), 3u);
  const auto writer = TestTokens::Bearer(tokens.User("t1", "system/*.cruds"));
  ASSERT_EQ(http.Put("/fhir/t1/Patient/e1", R"({"resourceType":"Patient","id":"e1"})", writer).status, 201);

  EXPECT_EQ(Metric(http, R"(medgrid_external_retries_total{dependency="jwks"})"), 2);
  EXPECT_EQ(Metric(http, R"(medgrid_external_calls_total{dependency="jwks",outcome="success"})"), 1);
  EXPECT_EQ(Metric(http, R"(medgrid_external_calls_total{dependency="jwks",outcome="failure"})"), 0);
  EXPECT_EQ(Metric(http, R"(medgrid_retry_budget_exhausted_total{dependency="jwks"})"), 0);
  EXPECT_EQ(Metric(http, R"(medgrid_circuit_breaker_state{dependency="jwks"})"), 0);
  // Declared, not called yet.
  EXPECT_EQ(Metric(http, R"(medgrid_external_calls_total{dependency="external_hie",outcome="success"})"), 0);
  EXPECT_EQ(Metric(http, R"(medgrid_circuit_breaker_state{dependency="ai"})"), 0);

  // Break-the-glass on a patient who opted out: the notice is POSTed, answered
  // 503, and posted again.
  ASSERT_EQ(BreakTheGlassOnAnOptOut(http, tokens, writer), 200);
  ASSERT_TRUE(WaitFor([&] { return webhook.Count() == 2; }));
  const std::vector<Received> notices = webhook.Requests();
  EXPECT_EQ(notices[0].method, "POST");
  EXPECT_EQ(notices[0].body, notices[1].body);
  ASSERT_TRUE(WaitFor([&] {
    return Metric(http, R"(medgrid_external_calls_total{dependency="btg_webhook",outcome="success"})") == 1;
  }));
  EXPECT_EQ(Metric(http, R"(medgrid_external_retries_total{dependency="btg_webhook"})"), 1);
}

TEST(External, AStopEndsTheWebhooksRetryWait) {
  TestTokens tokens;
  Receiver webhook(0, 503);  // down for good
  app::AppConfig c = TestServer::BaseConfig("external_stop");
  tokens.Configure(c);
  c.security.break_glass.webhook_url = webhook.Url("/btg");
  http::ExternalDependencySettings* dep = Find(c, "btg_webhook");
  ASSERT_NE(dep, nullptr);
  dep->retry.base_delay = std::chrono::seconds(5);  // a real wait before the retry
  auto server = std::make_unique<TestServer>("external_stop", std::vector<std::string>{"t1"}, c, &tokens);
  HttpClient& http = server->client();
  const auto writer = TestTokens::Bearer(tokens.User("t1", "system/*.cruds"));
  ASSERT_EQ(http.Put("/fhir/t1/Patient/e1", R"({"resourceType":"Patient","id":"e1"})", writer).status, 201);
  ASSERT_EQ(BreakTheGlassOnAnOptOut(http, tokens, writer), 200);
  // The notice is answered 503 and waits 5 s for its retry...
  ASSERT_TRUE(WaitFor([&] { return webhook.Count() == 1; }));
  // ... which the shutdown ends: the server stops without retrying.
  server.reset();
  EXPECT_EQ(webhook.Count(), 1u);
}

TEST(External, OpenHieBreakerMeansInteropDegraded) {
  app::AppConfig c = TestServer::BaseConfig("external_hie");
  c.degradation_interval = std::chrono::milliseconds(20);
  http::ExternalDependencySettings* hie = Find(c, "external_hie");
  ASSERT_NE(hie, nullptr);
  hie->sleep = [](std::chrono::microseconds) {};  // no real backoff waits
  TestServer server("external_hie", {"t1"}, c);
  HttpClient& http = server.client();
  EXPECT_EQ(server.app().degradation().level(), resilience::DegradationLevel::kNormal);

  // An HIE client's call through the dependency: three 503s open its breaker
  // (the seed's external_hie breaker opens after 3 failures).
  Receiver down(0, 503);
  http::ExternalDependency* dep = server.app().external("external_hie");
  ASSERT_NE(dep, nullptr);
  http::FetchRequest req;
  req.url = *http::ParseUrl(down.Url("/Patient"));
  absl::StatusOr<http::FetchResponse> res =
      http::FetchExternal(*dep, req, dep->clock().Now() + std::chrono::seconds(30));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(down.Count(), 3u);
  EXPECT_EQ(dep->breaker().state(), resilience::BreakerState::kOpen);

  ASSERT_TRUE(
      WaitFor([&] { return server.app().degradation().level() == resilience::DegradationLevel::kInteropDegraded; }));
  EXPECT_EQ(http.Get("/livez").Header("X-Degradation-Level"), "2");
  EXPECT_EQ(Metric(http, R"(medgrid_circuit_breaker_state{dependency="external_hie"})"), 1);
  EXPECT_EQ(Metric(http, R"(medgrid_external_calls_total{dependency="external_hie",outcome="failure"})"), 1);
  EXPECT_EQ(Metric(http, R"(medgrid_external_retries_total{dependency="external_hie"})"), 2);
  // While open, calls are refused without reaching the HIE.
  res = http::FetchExternal(*dep, req, dep->clock().Now() + std::chrono::seconds(30));
  EXPECT_EQ(res.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(down.Count(), 3u);
  EXPECT_EQ(Metric(http, R"(medgrid_external_calls_total{dependency="external_hie",outcome="refused"})"), 1);
}

}  // namespace
}  // namespace medgrid::testing
