// Hostile and malformed input: each gets a precise 4xx OperationOutcome, the
// server keeps serving, and stored data is untouched.
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/core/strings.h"

namespace medgrid::testing {
namespace {

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer("badinput", {"demo"});
    auto res = server_->client().Put("/fhir/demo/Patient/keep",
                                     R"({"resourceType":"Patient","id":"keep","gender":"female"})");
    ASSERT_EQ(res.status, 201);
    keep_body_ = new std::string(res.body);
  }
  static void TearDownTestSuite() {
    // The server is still up and the stored resource is unchanged.
    HttpClient fresh(server_->port());
    EXPECT_EQ(fresh.Get("/livez").status, 200);
    auto res = fresh.Get("/fhir/demo/Patient/keep");
    EXPECT_EQ(res.status, 200);
    EXPECT_EQ(res.body, *keep_body_);
    delete server_;
    delete keep_body_;
  }
  HttpClient& c() { return server_->client(); }

  void ExpectOutcome(const HttpResponse& res, int status, const std::string& code = "") {
    EXPECT_EQ(res.status, status) << res.body.substr(0, 300);
    EXPECT_EQ(res.Header("Content-Type"), "application/fhir+json; charset=utf-8");
    EXPECT_EQ(res.Json().at("resourceType").as_string(), "OperationOutcome");
    if (!code.empty()) {
      EXPECT_EQ(res.IssueCode(), code);
    }
  }

  static TestServer* server_;
  static std::string* keep_body_;
};
TestServer* BadInputTest::server_ = nullptr;
std::string* BadInputTest::keep_body_ = nullptr;

TEST_F(BadInputTest, TruncatedJson) {
  ExpectOutcome(c().Post("/fhir/demo/Patient", R"({"resourceType":"Patient","name":[{"family":"Sm)"), 400,
                "structure");
  ExpectOutcome(c().Put("/fhir/demo/Patient/keep", R"({"resourceType":"Patient","id":"keep")"), 400, "structure");
  ExpectOutcome(c().Post("/fhir/demo/Patient", ""), 400, "structure");
  ExpectOutcome(c().Post("/fhir/demo/Patient", "[]"), 400, "structure");
  ExpectOutcome(c().Post("/fhir/demo/Patient", R"({"name":[]})"), 400, "required");
  ExpectOutcome(c().Post("/fhir/demo/Patient", R"({"resourceType":"Patient"} trailing)"), 400, "structure");
}

TEST_F(BadInputTest, DeepNesting100kLevels) {
  std::string arrays(100000, '[');
  arrays += std::string(100000, ']');
  ExpectOutcome(c().Post("/fhir/demo/Patient", arrays), 400, "structure");
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += R"({"a":)";
  objects += "1" + std::string(100000, '}');
  ExpectOutcome(c().Post("/fhir/demo/Patient", objects), 400, "structure");
  // Nesting inside an otherwise valid resource.
  std::string in_resource = R"({"resourceType":"Patient","extension":)" + arrays + "}";
  ExpectOutcome(c().Post("/fhir/demo/Patient", in_resource), 400, "structure");
}

TEST_F(BadInputTest, HugeBodiesAndStrings) {
  // Over the 16 MiB body limit: 413 before the body is read.
  std::string huge = R"({"resourceType":"Patient","name":[{"family":")" + std::string(17 << 20, 'x') + R"("}]})";
  auto res = c().Post("/fhir/demo/Patient", huge);
  ExpectOutcome(res, 413, "too-costly");
  // A string over FHIR's 1 MB limit inside an acceptable body: 400 naming it.
  std::string big = R"({"resourceType":"Patient","name":[{"family":")" + std::string((1 << 20) + 10, 'x') + R"("}]})";
  auto big_res = c().Post("/fhir/demo/Patient", big);
  ExpectOutcome(big_res, 400);
  EXPECT_NE(big_res.Diagnostics().find("Patient.name[0].family"), std::string::npos) << big_res.Diagnostics();
}

TEST_F(BadInputTest, InvalidUtf8AndControlCharacters) {
  std::string bad = "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xC3\x28\"}]}";
  ExpectOutcome(c().Post("/fhir/demo/Patient", bad), 400, "structure");
  std::string overlong = "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xC0\xAF\"}]}";
  ExpectOutcome(c().Post("/fhir/demo/Patient", overlong), 400, "structure");
  ExpectOutcome(c().Post("/fhir/demo/Patient", R"({"resourceType":"Patient","name":[{"family":"a\u0001b"}]})"), 400,
                "structure");
}

TEST_F(BadInputTest, WrongContentTypes) {
  const std::string body = R"({"resourceType":"Patient"})";
  ExpectOutcome(c().Send("POST", "/fhir/demo/Patient", body, {{"Content-Type", "application/fhir+xml"}}), 415);
  ExpectOutcome(c().Send("POST", "/fhir/demo/Patient", body, {{"Content-Type", "application/x-www-form-urlencoded"}}),
                415);
  ExpectOutcome(c().Send("PUT", "/fhir/demo/Patient/keep", body, {{"Content-Type", "text/html"}}), 415);
  ExpectOutcome(c().Get("/fhir/demo/Patient/keep", {{"Accept", "text/html"}}), 406);
}

TEST_F(BadInputTest, PathTraversalAndBadIds) {
  ExpectOutcome(c().Get("/fhir/demo/Patient/..%2F..%2Fadmin%2Ftenants"), 400, "value");
  ExpectOutcome(c().Get("/fhir/demo/Patient/%2E%2E"), 400, "value");
  ExpectOutcome(c().Get("/fhir/demo/Patient/.."), 400, "value");
  ExpectOutcome(c().Get("/fhir/demo/Patient/a%00b"), 400, "value");
  ExpectOutcome(c().Get(core::StrCat("/fhir/demo/Patient/", std::string(65, 'a'))), 400, "value");
  ExpectOutcome(c().Put("/fhir/demo/Patient/bad$id", R"({"resourceType":"Patient","id":"bad$id"})"), 400, "value");
  ExpectOutcome(c().Get("/fhir/demo/Patient/keep/_history/0"), 400, "value");
  ExpectOutcome(c().Get("/fhir/demo/Patient/keep/_history/abc"), 400, "value");
  ExpectOutcome(c().Get("/fhir/../admin/tenants"), 400);
  ExpectOutcome(c().Get("/fhir/DEMO/Patient/keep"), 400, "value");
  ExpectOutcome(c().Get("/fhir/demo/Patient/keep%ZZ"), 400);
}

TEST_F(BadInputTest, UnknownTenantAndType) {
  ExpectOutcome(c().Get("/fhir/nobody/Patient/keep"), 404, "not-found");
  ExpectOutcome(c().Post("/fhir/nobody/Patient", R"({"resourceType":"Patient"})"), 404, "not-found");
  ExpectOutcome(c().Get("/fhir/demo/patient/keep"), 404, "not-supported");
  ExpectOutcome(c().Get("/fhir/demo/DomainResource/keep"), 404, "not-supported");
}

TEST_F(BadInputTest, MalformedHttp) {
  auto garbage = c().SendRaw("THIS IS NOT HTTP\r\n\r\n");
  EXPECT_EQ(garbage.status, 400);
  std::string long_header = "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(32 * 1024, 'a') + "\r\n\r\n";
  EXPECT_EQ(c().SendRaw(long_header).status, 431);
  std::string lying = "POST /fhir/demo/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
                      "Content-Length: 99999999999\r\n\r\n{}";
  EXPECT_EQ(c().SendRaw(lying).status, 413);
}

}  // namespace
}  // namespace medgrid::testing
