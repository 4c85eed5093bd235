// Degradation levels on the running server: the level on every response
// (X-Degradation-Level) and in /metrics, GET /admin/degradation, an
// operator's override for a drill (POST) and its removal (DELETE), and
// level 4 making the FHIR API read-only: writes 503 with Retry-After and an
// OperationOutcome, reads and searches still served.
#include "boost/json.hpp"
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

const std::map<std::string, std::string> kJson = {{"Content-Type", "application/json"}};

TEST(Degradation, OverrideToReadOnlyAndBack) {
  TestServer server("degradation", {"t1"});
  HttpClient& http = server.client();
  ASSERT_EQ(http.Put("/fhir/t1/Patient/a", R"({"resourceType":"Patient","id":"a"})").status, 201);

  HttpResponse status = http.Get("/admin/degradation");
  ASSERT_EQ(status.status, 200) << status.body;
  json::value s = json::parse(status.body);
  EXPECT_EQ(s.at("level").as_int64(), 0);
  EXPECT_EQ(s.at("name").as_string(), "normal");
  EXPECT_TRUE(s.at("reasons").as_array().empty());
  EXPECT_EQ(http.Get("/livez").Header("X-Degradation-Level"), "0");
  EXPECT_EQ(http.Get("/fhir/t1/Patient/a").Header("X-Degradation-Level"), "0");

  // A drill: level 4, read-only.
  HttpResponse set = http.Send("POST", "/admin/degradation", R"({"level":4,"reason":"failover drill"})", kJson);
  ASSERT_EQ(set.status, 200) << set.body;
  s = json::parse(set.body);
  EXPECT_EQ(s.at("level").as_int64(), 4);
  EXPECT_EQ(s.at("computed").as_int64(), 0);
  EXPECT_EQ(s.at("override").at("reason").as_string(), "failover drill");
  HttpResponse write = http.Put("/fhir/t1/Patient/b", R"({"resourceType":"Patient","id":"b"})");
  EXPECT_EQ(write.status, 503);
  EXPECT_EQ(write.Json().at("resourceType").as_string(), "OperationOutcome");
  EXPECT_FALSE(write.Header("Retry-After").empty());
  EXPECT_EQ(write.Header("X-Degradation-Level"), "4");
  EXPECT_EQ(http.Post("/fhir/t1/Patient", R"({"resourceType":"Patient"})").status, 503);
  EXPECT_EQ(http.Delete("/fhir/t1/Patient/a").status, 503);
  EXPECT_EQ(http.Get("/fhir/t1/Patient/a").status, 200);
  EXPECT_EQ(http.Get("/fhir/t1/Patient?_id=a").status, 200);
  EXPECT_EQ(http.Send("POST", "/fhir/t1/Patient/_search", "_id=a", {{"Content-Type", "application/x-www-form-urlencoded"}})
                .status,
            200);
  EXPECT_NE(http.Get("/metrics").body.find("medgrid_degradation_level 4"), std::string::npos);
  EXPECT_EQ(http.Get("/fhir/t1/Patient/b").status, 404);  // nothing was written

  // Cleared: back to the computed level, writes again.
  HttpResponse cleared = http.Send("DELETE", "/admin/degradation");
  ASSERT_EQ(cleared.status, 200);
  EXPECT_EQ(json::parse(cleared.body).at("level").as_int64(), 0);
  EXPECT_FALSE(json::parse(cleared.body).as_object().contains("override"));
  EXPECT_EQ(http.Put("/fhir/t1/Patient/b", R"({"resourceType":"Patient","id":"b"})").status, 201);

  // Bad requests.
  for (const char* body : {R"({"level":6})", R"({"level":-1})", R"({"level":"4"})", R"({"reason":"x"})",
                           R"({"level":1,"extra":true})", "not json"}) {
    EXPECT_EQ(http.Send("POST", "/admin/degradation", body, kJson).status, 400) << body;
  }
  EXPECT_EQ(http.Send("PUT", "/admin/degradation", "{}", kJson).status, 405);
}

}  // namespace
}  // namespace medgrid::testing
