// FHIR REST interactions over HTTP against real PostgreSQL: create, read,
// vread, update (and update-as-create), patch, delete, history, and the
// headers and statuses the R4 http.html page asks for.
#include <algorithm>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/fhir/json.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

constexpr const char* kPatient =
    R"({"resourceType":"Patient","active":true,"name":[{"family":"Chalmers","given":["Peter","James"]}],)"
    R"("gender":"male","birthDate":"1974-12-25"})";

class CrudTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new TestServer("crud"); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  HttpClient& c() { return server_->client(); }

  // Creates a Patient and returns its id.
  std::string CreatePatient(const std::string& tenant = "t1") {
    auto res = c().Post("/fhir/" + tenant + "/Patient", kPatient);
    EXPECT_EQ(res.status, 201) << res.body;
    return std::string(res.Json().at("id").as_string());
  }

  static TestServer* server_;
};
TestServer* CrudTest::server_ = nullptr;

TEST_F(CrudTest, CreateAssignsIdVersionAndHeaders) {
  auto res = c().Post("/fhir/t1/Patient", R"({"resourceType":"Patient","id":"ignored","gender":"female"})");
  ASSERT_EQ(res.status, 201) << res.body;
  json::value body = res.Json();
  std::string id(body.at("id").as_string());
  EXPECT_NE(id, "ignored");  // the server ignores a client id on create
  EXPECT_EQ(body.at("meta").at("versionId").as_string(), "1");
  EXPECT_FALSE(body.at("meta").at("lastUpdated").as_string().empty());
  EXPECT_EQ(res.Header("ETag"), "W/\"1\"");
  EXPECT_FALSE(res.Header("Last-Modified").empty());
  EXPECT_EQ(res.Header("Location"), "http://127.0.0.1:" + std::to_string(server_->port()) + "/fhir/t1/Patient/" +
                                        id + "/_history/1");
  EXPECT_EQ(res.Header("Content-Type"), "application/fhir+json; charset=utf-8");
}

TEST_F(CrudTest, ReadReturnsStoredResourceWithDecimalPrecision) {
  auto created = c().Post("/fhir/t1/Observation",
                          R"({"resourceType":"Observation","status":"final","code":{"text":"Hb"},)"
                          R"("valueQuantity":{"value":13.50,"unit":"g/dL"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  std::string id(created.Json().at("id").as_string());
  auto read = c().Get("/fhir/t1/Observation/" + id);
  ASSERT_EQ(read.status, 200);
  EXPECT_EQ(read.body, created.body);
  EXPECT_NE(read.body.find("\"value\":13.50"), std::string::npos) << read.body;
  EXPECT_EQ(read.Header("ETag"), "W/\"1\"");
}

TEST_F(CrudTest, HeadHasHeadersButNoBody) {
  std::string id = CreatePatient();
  auto get = c().Get("/fhir/t1/Patient/" + id);
  auto head = c().Send("HEAD", "/fhir/t1/Patient/" + id);
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  EXPECT_EQ(head.Header("ETag"), "W/\"1\"");
  EXPECT_EQ(head.Header("Content-Length"), std::to_string(get.body.size()));
  // The connection stays usable after a bodiless response.
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id).body, get.body);
}

TEST_F(CrudTest, UpdateBumpsVersionAndVreadKeepsOld) {
  std::string id = CreatePatient();
  std::string v2 = R"({"resourceType":"Patient","id":")" + id + R"(","gender":"other"})";
  auto res = c().Put("/fhir/t1/Patient/" + id, v2);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.Header("ETag"), "W/\"2\"");
  EXPECT_EQ(res.Json().at("meta").at("versionId").as_string(), "2");
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id).Json().at("gender").as_string(), "other");
  auto old = c().Get("/fhir/t1/Patient/" + id + "/_history/1");
  ASSERT_EQ(old.status, 200);
  EXPECT_EQ(old.Json().at("gender").as_string(), "male");
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id + "/_history/3").status, 404);
}

TEST_F(CrudTest, UpdateAsCreateWithClientId) {
  auto res = c().Put("/fhir/t1/Patient/client-chosen-1", R"({"resourceType":"Patient","id":"client-chosen-1"})");
  ASSERT_EQ(res.status, 201) << res.body;
  EXPECT_EQ(res.Header("ETag"), "W/\"1\"");
  EXPECT_FALSE(res.Header("Location").empty());
  EXPECT_EQ(c().Get("/fhir/t1/Patient/client-chosen-1").status, 200);
}

TEST_F(CrudTest, UpdateRejectsMissingOrMismatchedId) {
  auto missing = c().Put("/fhir/t1/Patient/abc", R"({"resourceType":"Patient"})");
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(missing.IssueCode(), "required");
  auto mismatch = c().Put("/fhir/t1/Patient/abc", R"({"resourceType":"Patient","id":"xyz"})");
  EXPECT_EQ(mismatch.status, 400);
  auto wrong_type = c().Put("/fhir/t1/Patient/abc", R"({"resourceType":"Observation","id":"abc"})");
  EXPECT_EQ(wrong_type.status, 400);
  EXPECT_NE(wrong_type.Diagnostics().find("does not match"), std::string::npos);
}

TEST_F(CrudTest, IfMatchMismatchGives412) {
  std::string id = CreatePatient();
  std::string body = R"({"resourceType":"Patient","id":")" + id + R"("})";
  EXPECT_EQ(c().Put("/fhir/t1/Patient/" + id, body, {{"If-Match", "W/\"7\""}}).status, 412);
  EXPECT_EQ(c().Put("/fhir/t1/Patient/" + id, body, {{"If-Match", "W/\"1\""}}).status, 200);
  EXPECT_EQ(c().Put("/fhir/t1/Patient/" + id, body, {{"If-Match", "W/\"1\""}}).status, 412);
  EXPECT_EQ(c().Put("/fhir/t1/Patient/" + id, body, {{"If-Match", "garbage"}}).status, 400);
  EXPECT_EQ(c().Delete("/fhir/t1/Patient/" + id, {{"If-Match", "W/\"1\""}}).status, 412);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id).Json().at("meta").at("versionId").as_string(), "2");
}

TEST_F(CrudTest, IfNoneMatchGives304) {
  std::string id = CreatePatient();
  auto res = c().Get("/fhir/t1/Patient/" + id, {{"If-None-Match", "W/\"1\""}});
  EXPECT_EQ(res.status, 304);
  EXPECT_TRUE(res.body.empty());
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id, {{"If-None-Match", "W/\"2\""}}).status, 200);
}

TEST_F(CrudTest, IfModifiedSinceGives304) {
  std::string id = CreatePatient();
  auto read = c().Get("/fhir/t1/Patient/" + id);
  const std::string last_modified = read.Header("Last-Modified");
  ASSERT_FALSE(last_modified.empty());
  auto same = c().Get("/fhir/t1/Patient/" + id, {{"If-Modified-Since", last_modified}});
  EXPECT_EQ(same.status, 304);
  EXPECT_TRUE(same.body.empty());
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id + "/_history/1", {{"If-Modified-Since", last_modified}}).status, 304);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id, {{"If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT"}}).status, 200);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id, {{"If-Modified-Since", "not a date"}}).status, 200);
  // If-None-Match decides when both are present.
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id, {{"If-Modified-Since", last_modified}, {"If-None-Match", "W/\"9\""}})
                .status,
            200);
}

TEST_F(CrudTest, PreferReturn) {
  auto minimal = c().Post("/fhir/t1/Patient", kPatient, {{"Prefer", "return=minimal"}});
  EXPECT_EQ(minimal.status, 201);
  EXPECT_TRUE(minimal.body.empty());
  EXPECT_FALSE(minimal.Header("Location").empty());
  auto outcome = c().Post("/fhir/t1/Patient", kPatient, {{"Prefer", "return=OperationOutcome"}});
  EXPECT_EQ(outcome.status, 201);
  EXPECT_EQ(outcome.Json().at("resourceType").as_string(), "OperationOutcome");
  auto full = c().Post("/fhir/t1/Patient", kPatient, {{"Prefer", "return=representation"}});
  EXPECT_EQ(full.Json().at("resourceType").as_string(), "Patient");
}

TEST_F(CrudTest, JsonPatch) {
  std::string id = CreatePatient();
  auto res = c().Send("PATCH", "/fhir/t1/Patient/" + id,
                      R"([{"op":"replace","path":"/gender","value":"female"},)"
                      R"({"op":"add","path":"/name/0/given/-","value":"Jim"}])",
                      {{"Content-Type", "application/json-patch+json"}});
  ASSERT_EQ(res.status, 200) << res.body;
  json::value body = res.Json();
  EXPECT_EQ(body.at("gender").as_string(), "female");
  EXPECT_EQ(body.at("name").at(0).at("given").as_array().size(), 3u);
  EXPECT_EQ(body.at("meta").at("versionId").as_string(), "2");

  // A patch that makes the resource invalid: 422, nothing written.
  auto invalid = c().Send("PATCH", "/fhir/t1/Patient/" + id, R"([{"op":"add","path":"/bogus","value":1}])",
                          {{"Content-Type", "application/json-patch+json"}});
  EXPECT_EQ(invalid.status, 422) << invalid.body;
  EXPECT_NE(invalid.Diagnostics().find("Patient.bogus"), std::string::npos) << invalid.body;
  // A failing test op: 422.
  auto failed = c().Send("PATCH", "/fhir/t1/Patient/" + id,
                         R"([{"op":"test","path":"/gender","value":"male"}])",
                         {{"Content-Type", "application/json-patch+json"}});
  EXPECT_EQ(failed.status, 422) << failed.body;
  // Malformed patch document: 400.
  auto malformed = c().Send("PATCH", "/fhir/t1/Patient/" + id, R"({"op":"remove"})",
                            {{"Content-Type", "application/json-patch+json"}});
  EXPECT_EQ(malformed.status, 400) << malformed.body;
  // Wrong content type: 415.
  EXPECT_EQ(c().Send("PATCH", "/fhir/t1/Patient/" + id, "[]", {{"Content-Type", "application/fhir+json"}}).status,
            415);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id).Json().at("meta").at("versionId").as_string(), "2");
  // Patch of a missing resource: 404.
  EXPECT_EQ(c().Send("PATCH", "/fhir/t1/Patient/nope", "[]", {{"Content-Type", "application/json-patch+json"}}).status,
            404);
}

TEST_F(CrudTest, DeleteIsVersionedTombstone) {
  std::string id = CreatePatient();
  auto del = c().Delete("/fhir/t1/Patient/" + id);
  EXPECT_EQ(del.status, 204);
  EXPECT_EQ(del.Header("ETag"), "W/\"2\"");
  auto gone = c().Get("/fhir/t1/Patient/" + id);
  EXPECT_EQ(gone.status, 410);
  EXPECT_EQ(gone.IssueCode(), "deleted");
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id + "/_history/1").status, 200);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id + "/_history/2").status, 410);
  // Deleting again is idempotent and writes no version.
  EXPECT_EQ(c().Delete("/fhir/t1/Patient/" + id).status, 204);
  auto history = c().Get("/fhir/t1/Patient/" + id + "/_history").Json();
  EXPECT_EQ(history.at("entry").as_array().size(), 2u);
  EXPECT_EQ(history.at("entry").at(0).at("request").at("method").as_string(), "DELETE");
  // Never existed: 404.
  EXPECT_EQ(c().Delete("/fhir/t1/Patient/never-there").status, 404);
  // Update after delete brings it back as version 3 (201).
  auto back = c().Put("/fhir/t1/Patient/" + id, R"({"resourceType":"Patient","id":")" + id + R"("})");
  EXPECT_EQ(back.status, 201);
  EXPECT_EQ(back.Header("ETag"), "W/\"3\"");
}

TEST_F(CrudTest, InstanceHistoryPagesNewestFirst) {
  std::string id = CreatePatient();
  for (int i = 0; i < 6; ++i) {
    auto r = c().Put("/fhir/t1/Patient/" + id,
                     R"({"resourceType":"Patient","id":")" + id + R"(","birthDate":"200)" + std::to_string(i) + R"("})");
    ASSERT_EQ(r.status, 200);
  }
  std::vector<std::string> versions;
  std::string next = "/fhir/t1/Patient/" + id + "/_history?_count=3";
  int pages = 0;
  while (!next.empty() && pages < 10) {
    auto page = c().Get(next);
    ASSERT_EQ(page.status, 200) << page.body;
    json::value b = page.Json();
    EXPECT_EQ(b.at("type").as_string(), "history");
    for (const auto& e : b.at("entry").as_array()) {
      versions.emplace_back(e.at("resource").at("meta").at("versionId").as_string());
    }
    next.clear();
    for (const auto& l : b.at("link").as_array()) {
      if (l.at("relation").as_string() == "next") {
        std::string url(l.at("url").as_string());
        next = url.substr(url.find("/fhir/"));
      }
    }
    ++pages;
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(versions, (std::vector<std::string>{"7", "6", "5", "4", "3", "2", "1"}));
}

TEST_F(CrudTest, TypeAndSystemHistoryAndSince) {
  auto created = c().Post("/fhir/t2/Device", R"({"resourceType":"Device","status":"active"})");
  ASSERT_EQ(created.status, 201);
  std::string last_updated(created.Json().at("meta").at("lastUpdated").as_string());
  auto type_hist = c().Get("/fhir/t2/Device/_history").Json();
  ASSERT_FALSE(type_hist.at("entry").as_array().empty());
  for (const auto& e : type_hist.at("entry").as_array()) {
    EXPECT_EQ(e.at("resource").at("resourceType").as_string(), "Device");
  }
  auto sys = c().Get("/fhir/t2/_history?_count=1").Json();
  EXPECT_EQ(sys.at("entry").as_array().size(), 1u);
  // _since after the write excludes it; at the write includes it.
  auto since_later = c().Get("/fhir/t2/Device/_history?_since=2999-01-01T00:00:00Z").Json();
  EXPECT_TRUE(since_later.at("entry").as_array().empty());
  auto since_at = c().Get("/fhir/t2/Device/_history?_since=" + last_updated).Json();
  EXPECT_FALSE(since_at.at("entry").as_array().empty());
  EXPECT_EQ(c().Get("/fhir/t2/Device/_history?_since=yesterday").status, 400);
  EXPECT_EQ(c().Get("/fhir/t2/Device/_history?_count=0").status, 400);
  EXPECT_EQ(c().Get("/fhir/t2/Device/_history?_at=2020").status, 400);
  EXPECT_EQ(c().Get("/fhir/t2/Device/nope/_history").status, 404);
}

TEST_F(CrudTest, ErrorStatuses) {
  EXPECT_EQ(c().Get("/fhir/t1/Patient/does-not-exist").status, 404);
  auto unknown_type = c().Get("/fhir/t1/Spaceship/1");
  EXPECT_EQ(unknown_type.status, 404);
  EXPECT_EQ(unknown_type.Json().at("resourceType").as_string(), "OperationOutcome");
  EXPECT_EQ(c().Post("/fhir/t1/Spaceship", R"({"resourceType":"Spaceship"})").status, 404);
  // Methods not allowed at a path: 405 with Allow.
  auto patch_type = c().Send("PATCH", "/fhir/t1/Patient", "[]", {{"Content-Type", "application/json-patch+json"}});
  EXPECT_EQ(patch_type.status, 405);
  EXPECT_EQ(patch_type.Header("Allow"), "GET, POST, PUT, DELETE");
  // A conditional delete without criteria would match everything: refused.
  EXPECT_EQ(c().Delete("/fhir/t1/Patient").status, 400);
  EXPECT_EQ(c().Post("/fhir/t1/Patient/123", kPatient).status, 405);
  // Validation: the message names the element path.
  auto invalid = c().Post("/fhir/t1/Patient", R"({"resourceType":"Patient","birthDate":"1974-13-45"})");
  EXPECT_EQ(invalid.status, 400);
  EXPECT_NE(invalid.Diagnostics().find("Patient.birthDate"), std::string::npos) << invalid.body;
  auto unknown_elem = c().Post("/fhir/t1/Patient", R"({"resourceType":"Patient","name":[{"famly":"X"}]})");
  EXPECT_EQ(unknown_elem.status, 400);
  EXPECT_NE(unknown_elem.Diagnostics().find("Patient.name[0].famly"), std::string::npos) << unknown_elem.body;
  // Unknown query parameters are rejected, not ignored.
  auto param = c().Get("/fhir/t1/Patient/x?_elements=id");
  EXPECT_EQ(param.status, 400);
  EXPECT_NE(param.Diagnostics().find("_elements"), std::string::npos);
}

TEST_F(CrudTest, ContentNegotiation) {
  std::string id = CreatePatient();
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id + "?_format=json").status, 200);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id + "?_format=application/fhir%2Bjson").status, 200);
  auto xml = c().Get("/fhir/t1/Patient/" + id + "?_format=xml");
  EXPECT_EQ(xml.status, 406);
  EXPECT_NE(xml.Diagnostics().find("XML"), std::string::npos);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id, {{"Accept", "application/fhir+xml"}}).status, 406);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/" + id, {{"Accept", "application/fhir+xml;q=0.9, application/json"}}).status,
            200);
  auto xml_body = c().Send("POST", "/fhir/t1/Patient", "<Patient xmlns=\"http://hl7.org/fhir\"/>",
                           {{"Content-Type", "application/fhir+xml"}});
  EXPECT_EQ(xml_body.status, 415);
  EXPECT_NE(xml_body.Diagnostics().find("XML"), std::string::npos);
  EXPECT_EQ(c().Send("POST", "/fhir/t1/Patient", kPatient, {{"Content-Type", "text/plain"}}).status, 415);
  EXPECT_EQ(c().Send("POST", "/fhir/t1/Patient", kPatient, {}).status, 415);
  EXPECT_EQ(c().Send("POST", "/fhir/t1/Patient", kPatient, {{"Content-Type", "application/json"}}).status, 201);
}

TEST_F(CrudTest, CapabilityStatementListsWhatIsImplemented) {
  auto res = c().Get("/fhir/t1/metadata");
  ASSERT_EQ(res.status, 200);
  json::value cs = res.Json();
  EXPECT_EQ(cs.at("resourceType").as_string(), "CapabilityStatement");
  EXPECT_EQ(cs.at("fhirVersion").as_string(), "4.0.1");
  const auto& resources = cs.at("rest").at(0).at("resource").as_array();
  EXPECT_EQ(resources.size(), 146u);  // every concrete R4 resource type
  std::vector<std::string> codes;
  for (const auto& i : resources[0].at("interaction").as_array()) codes.emplace_back(i.at("code").as_string());
  EXPECT_EQ(codes, (std::vector<std::string>{"read", "vread", "update", "patch", "delete", "history-instance",
                                             "history-type", "create", "search-type"}));
  // Every standard search parameter of the type is listed with its definition.
  for (const auto& r : resources) {
    if (r.at("type").as_string() != "Observation") continue;
    std::vector<std::string> params;
    for (const auto& p : r.at("searchParam").as_array()) params.emplace_back(p.at("name").as_string());
    for (const char* name : {"_id", "_lastUpdated", "_tag", "code", "subject", "patient", "date", "value-quantity",
                             "code-value-quantity", "_text", "_content"}) {
      EXPECT_NE(std::find(params.begin(), params.end(), name), params.end()) << name;
    }
    EXPECT_EQ(std::find(params.begin(), params.end(), "_query"), params.end());
    EXPECT_TRUE(r.at("conditionalCreate").as_bool());
    EXPECT_EQ(r.at("conditionalDelete").as_string(), "single");
  }
  EXPECT_EQ(c().Get("/fhir/nosuchtenant/metadata").status, 404);
}

}  // namespace
}  // namespace medgrid::testing
