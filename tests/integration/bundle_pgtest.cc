// Batch and transaction Bundles over HTTP against real PostgreSQL: the
// official examples, atomic rollback, fullUrl and conditional reference
// rewriting, per-entry conditions, limits and tenant isolation.
#include <fstream>
#include <set>
#include <sstream>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/fhir/json.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

std::string ReadExample(const std::string& file) {
  std::ifstream in(TestServer::FhirPackageDir() + "/" + file);
  EXPECT_TRUE(in.good()) << file;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Str(const json::value& v) { return v.is_string() ? std::string(v.as_string()) : std::string(); }

// The entry.response objects of a response Bundle.
std::vector<json::object> Responses(const json::value& bundle) {
  std::vector<json::object> out;
  for (const json::value& e : bundle.at("entry").as_array()) out.push_back(e.at("response").as_object());
  return out;
}

// "Type/id" of a response location "Type/id/_history/v".
std::string RefOf(const json::object& response) {
  std::string loc = Str(response.at("location"));
  return loc.substr(0, loc.find("/_history/"));
}

class BundleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    app::AppConfig config = TestServer::BaseConfig("bundle");
    config.engine.max_bundle_entries = 40;
    config.engine.max_bundle_bytes = 256 * 1024;
    server_ = new TestServer("bundle", {"t1", "t2", "t3"}, config);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  HttpClient& c() { return server_->client(); }

  // The number of live resources of `type` in `tenant`.
  int64_t Count(const std::string& tenant, const std::string& type) {
    auto res = c().Get("/fhir/" + tenant + "/" + type + "?_summary=count");
    EXPECT_EQ(res.status, 200) << res.body;
    return res.Json().at("total").as_int64();
  }
  // The number of versions in the tenant's history.
  std::size_t HistorySize(const std::string& tenant) {
    auto res = c().Get("/fhir/" + tenant + "/_history?_count=1000");
    EXPECT_EQ(res.status, 200) << res.body;
    return res.Json().at("entry").as_array().size();
  }

  static TestServer* server_;
};
TestServer* BundleTest::server_ = nullptr;

TEST_F(BundleTest, OfficialTransactionExampleFailsWholeOnUnsupportedOperation) {
  const std::size_t before = HistorySize("t1");
  auto res = c().Post("/fhir/t1", ReadExample("Bundle-bundle-transaction.json"));
  // Entry 7 is POST ValueSet/$lookup, an operation this server does not run
  // inside a Bundle: the whole transaction fails, naming the entry.
  EXPECT_EQ(res.status, 400) << res.body;
  EXPECT_NE(res.Diagnostics().find("Bundle.entry[7]"), std::string::npos) << res.body;
  EXPECT_EQ(Str(res.Json().at("issue").as_array()[0].at("expression").as_array()[0]), "Bundle.entry[7]");
  EXPECT_EQ(HistorySize("t1"), before);
}

TEST_F(BundleTest, OfficialTransactionExampleCommitsEveryEntry) {
  // What the example expects to exist: Patient/123a at version 2, Patient/234
  // to delete, Patient/12334 to read.
  const std::string p = R"({"resourceType":"Patient","id":"ID","active":true})";
  for (const char* id : {"123a", "123a", "234", "12334"}) {
    std::string body = p;
    body.replace(body.find("ID"), 2, id);
    ASSERT_LT(c().Put(std::string("/fhir/t2/Patient/") + id, body).status, 300);
  }
  json::value bundle = json::parse(ReadExample("Bundle-bundle-transaction.json"));
  json::array& entries = bundle.at("entry").as_array();
  ASSERT_EQ(Str(entries[7].at("request").at("url")), "ValueSet/$lookup");
  entries.erase(entries.begin() + 7);

  auto res = c().Post("/fhir/t2", json::serialize(bundle));
  ASSERT_EQ(res.status, 200) << res.body;
  json::value out = res.Json();
  EXPECT_EQ(Str(out.at("type")), "transaction-response");
  std::vector<json::object> r = Responses(out);
  ASSERT_EQ(r.size(), 9u);
  EXPECT_EQ(Str(r[0].at("status")), "201 Created");
  EXPECT_EQ(Str(r[0].at("etag")), "W/\"1\"");
  EXPECT_TRUE(r[0].contains("lastModified"));
  EXPECT_EQ(Str(r[1].at("status")), "201 Created");  // ifNoneExist: nothing matched
  EXPECT_EQ(Str(r[2].at("status")), "201 Created");  // PUT Patient/123 made it
  EXPECT_EQ(RefOf(r[2]), "Patient/123");
  EXPECT_EQ(Str(r[3].at("status")), "201 Created");  // conditional update, no match
  EXPECT_EQ(Str(r[4].at("status")), "200 OK");       // ifMatch W/"2" held
  EXPECT_EQ(Str(r[4].at("location")), "Patient/123a/_history/3");
  EXPECT_EQ(Str(r[5].at("status")), "204 No Content");
  EXPECT_EQ(Str(r[5].at("location")), "Patient/234/_history/2");
  EXPECT_EQ(Str(r[6].at("status")), "204 No Content");  // conditional delete of nothing
  EXPECT_EQ(Str(r[7].at("status")), "200 OK");
  EXPECT_EQ(Str(out.at("entry").as_array()[7].at("resource").at("type")), "searchset");
  EXPECT_EQ(Str(r[8].at("status")), "200 OK");
  EXPECT_EQ(Str(out.at("entry").as_array()[8].at("resource").at("id")), "12334");

  EXPECT_EQ(c().Get("/fhir/t2/Patient/234").status, 410);
  EXPECT_EQ(c().Get("/fhir/t2/" + RefOf(r[0])).status, 200);
  const std::string matched_by_identifier = RefOf(r[1]);

  // Again: entry 1's ifNoneExist now matches (200, same resource), and
  // entry 4's ifMatch W/"2" no longer holds, which fails everything.
  const std::size_t before = HistorySize("t2");
  const int64_t patients = Count("t2", "Patient");
  res = c().Post("/fhir/t2", json::serialize(bundle));
  EXPECT_EQ(res.status, 412) << res.body;
  EXPECT_NE(res.Diagnostics().find("Bundle.entry[4]"), std::string::npos) << res.body;
  EXPECT_EQ(HistorySize("t2"), before);
  EXPECT_EQ(Count("t2", "Patient"), patients);

  entries[4].at("request").as_object()["ifMatch"] = "W/\"3\"";
  entries.erase(entries.begin() + 5);  // Patient/234 is deleted already; deleting it again is a no-op anyway
  res = c().Post("/fhir/t2", json::serialize(bundle));
  ASSERT_EQ(res.status, 200) << res.body;
  r = Responses(res.Json());
  EXPECT_EQ(Str(r[1].at("status")), "200 OK");
  EXPECT_EQ(RefOf(r[1]), matched_by_identifier);
  EXPECT_EQ(Str(r[3].at("status")), "200 OK");  // the conditional update now matches
}

TEST_F(BundleTest, XdsExampleRewritesAbsoluteFullUrlsAndRelativeReferences) {
  auto res = c().Post("/fhir/t1", ReadExample("Bundle-xds.json"));
  ASSERT_EQ(res.status, 200) << res.body;
  std::vector<json::object> r = Responses(res.Json());
  ASSERT_EQ(r.size(), 5u);
  for (const auto& e : r) EXPECT_EQ(Str(e.at("status")), "201 Created");
  const std::string doc = RefOf(r[0]), patient = RefOf(r[1]), pr1 = RefOf(r[2]), pr2 = RefOf(r[3]);
  EXPECT_NE(patient, "Patient/a2");  // server-assigned
  auto read = c().Get("/fhir/t1/" + doc);
  ASSERT_EQ(read.status, 200);
  json::value d = read.Json();
  EXPECT_EQ(Str(d.at("subject").at("reference")), patient);
  EXPECT_EQ(Str(d.at("author").as_array()[0].at("reference")), pr1);
  EXPECT_EQ(Str(d.at("author").as_array()[1].at("reference")), pr2);
  // Searchable by the rewritten reference.
  auto found = c().Get("/fhir/t1/DocumentReference?subject=" + patient);
  EXPECT_EQ(found.Json().at("entry").as_array().size(), 1u) << found.body;
}

TEST_F(BundleTest, HlaExampleLinksEveryEntry) {
  auto res = c().Post("/fhir/t3", ReadExample("Bundle-hla-1.json"));
  ASSERT_EQ(res.status, 200) << res.body;
  std::vector<json::object> r = Responses(res.Json());
  std::set<std::string> created;
  for (const auto& e : r) {
    EXPECT_EQ(Str(e.at("status")), "201 Created");
    created.insert(RefOf(e));
  }
  // Every reference among the entries names a resource the transaction made.
  auto report = c().Get("/fhir/t3/" + RefOf(r[0]));
  ASSERT_EQ(report.status, 200);
  std::string body = report.body;
  EXPECT_EQ(body.find("urn:uuid:"), std::string::npos) << body;
  int checked = 0;
  const json::value report_json = report.Json();
  for (const json::value& ref : report_json.at("result").as_array()) {
    EXPECT_TRUE(created.count(Str(ref.at("reference")))) << Str(ref.at("reference"));
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST_F(BundleTest, OfficialBatchExamplesAnswerEachEntry) {
  ASSERT_LT(c().Put("/fhir/t1/Patient/example", R"({"resourceType":"Patient","id":"example"})").status, 300);
  auto res = c().Post("/fhir/t1", ReadExample("Bundle-bundle-request-simplesummary.json"));
  ASSERT_EQ(res.status, 200) << res.body;
  json::value out = res.Json();
  EXPECT_EQ(Str(out.at("type")), "batch-response");
  for (const auto& r : Responses(out)) EXPECT_EQ(Str(r.at("status")), "200 OK") << json::serialize(r);
  EXPECT_EQ(Str(out.at("entry").as_array()[0].at("resource").at("id")), "example");

  // _list is not supported: those entries fail alone, with their outcome.
  res = c().Post("/fhir/t1", ReadExample("Bundle-bundle-request-medsallergies.json"));
  ASSERT_EQ(res.status, 200) << res.body;
  std::vector<json::object> r = Responses(res.Json());
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(Str(r[0].at("status")), "200 OK");
  EXPECT_EQ(Str(r[1].at("status")), "400 Bad Request");
  EXPECT_EQ(Str(r[1].at("outcome").at("resourceType")), "OperationOutcome");
}

TEST_F(BundleTest, FailureMidBundleRollsBackEverything) {
  const std::size_t before = HistorySize("t3");
  const std::string bundle = R"({"resourceType":"Bundle","type":"transaction","entry":[
    {"fullUrl":"urn:uuid:0a5e0b38-0001-4000-8000-000000000001","resource":{"resourceType":"Patient","active":true},
     "request":{"method":"POST","url":"Patient"}},
    {"resource":{"resourceType":"Patient","id":"keep-out","active":true},"request":{"method":"PUT","url":"Patient/keep-out"}},
    {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"bogus":1},
     "request":{"method":"POST","url":"Observation"}}]})";
  auto res = c().Post("/fhir/t3", bundle);
  EXPECT_EQ(res.status, 400) << res.body;
  EXPECT_NE(res.Diagnostics().find("Bundle.entry[2]"), std::string::npos) << res.body;
  EXPECT_EQ(HistorySize("t3"), before);
  EXPECT_EQ(c().Get("/fhir/t3/Patient/keep-out").status, 404);
}

TEST_F(BundleTest, UrnUuidRewrittenInExtensionsContainedAndNarrative) {
  const std::string p = "urn:uuid:7b1c6a52-0002-4000-8000-000000000002";
  const std::string bundle = R"({"resourceType":"Bundle","type":"transaction","entry":[
    {"fullUrl":"urn:uuid:7b1c6a52-0003-4000-8000-000000000003","request":{"method":"POST","url":"Observation"},
     "resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},
       "text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\")" + p + R"(\">p</a></div>"},
       "contained":[{"resourceType":"Provenance","id":"prov","target":[{"reference":")" + p + R"("}],
                     "recorded":"2026-01-01T00:00:00Z","agent":[{"who":{"reference":")" + p + R"("}}]}],
       "extension":[{"url":"http://example.org/ext","valueReference":{"reference":")" + p + R"("}}],
       "subject":{"reference":")" + p + R"("}}},
    {"fullUrl":")" + p + R"(","request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient"}}]})";
  auto res = c().Post("/fhir/t1", bundle);
  ASSERT_EQ(res.status, 200) << res.body;
  std::vector<json::object> r = Responses(res.Json());
  const std::string patient = RefOf(r[1]);
  auto obs = c().Get("/fhir/t1/" + RefOf(r[0]));
  ASSERT_EQ(obs.status, 200);
  EXPECT_EQ(obs.body.find("urn:uuid"), std::string::npos) << obs.body;
  json::value o = obs.Json();
  EXPECT_EQ(Str(o.at("subject").at("reference")), patient);
  EXPECT_EQ(Str(o.at("extension").as_array()[0].at("valueReference").at("reference")), patient);
  EXPECT_EQ(Str(o.at("contained").as_array()[0].at("target").as_array()[0].at("reference")), patient);
  EXPECT_EQ(Str(o.at("contained").as_array()[0].at("agent").as_array()[0].at("who").at("reference")), patient);
  EXPECT_NE(Str(o.at("text").at("div")).find(patient), std::string::npos);
}

TEST_F(BundleTest, ConditionalReferencesNeedExactlyOneMatch) {
  for (const char* id : {"cr-one", "cr-many-1", "cr-many-2"}) {
    std::string system = std::string(id).rfind("cr-many", 0) == 0 ? "many" : "one";
    auto put = c().Put(std::string("/fhir/t1/Patient/") + id,
                       std::string(R"({"resourceType":"Patient","id":")") + id +
                           R"(","identifier":[{"system":"http://example.org/cr","value":")" + system + "\"}]}");
    ASSERT_LT(put.status, 300) << put.body;
  }
  auto bundle = [](const std::string& criteria) {
    return R"({"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Observation"},
      "resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},
      "subject":{"reference":"Patient?identifier=http://example.org/cr|)" + criteria + "\"}}}]}";
  };
  auto one = c().Post("/fhir/t1", bundle("one"));
  ASSERT_EQ(one.status, 200) << one.body;
  auto obs = c().Get("/fhir/t1/" + RefOf(Responses(one.Json())[0]));
  EXPECT_EQ(Str(obs.Json().at("subject").at("reference")), "Patient/cr-one");

  const std::size_t before = HistorySize("t1");
  auto none = c().Post("/fhir/t1", bundle("none"));
  EXPECT_EQ(none.status, 412) << none.body;
  EXPECT_NE(none.Diagnostics().find("matches no resource"), std::string::npos) << none.body;
  auto many = c().Post("/fhir/t1", bundle("many"));
  EXPECT_EQ(many.status, 412) << many.body;
  EXPECT_EQ(many.IssueCode(), "multiple-matches");
  EXPECT_EQ(HistorySize("t1"), before);
}

TEST_F(BundleTest, PatchEntryAndPreferMinimal) {
  ASSERT_LT(c().Put("/fhir/t1/Patient/pt-patch", R"({"resourceType":"Patient","id":"pt-patch","active":true})").status,
            300);
  // [{"op":"replace","path":"/active","value":false}]
  const std::string bundle = R"({"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"PATCH",
    "url":"Patient/pt-patch","ifMatch":"W/\"1\""},"resource":{"resourceType":"Binary","contentType":"application/json-patch+json",
    "data":"W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9hY3RpdmUiLCJ2YWx1ZSI6ZmFsc2V9XQ=="}}]})";
  auto res = c().Post("/fhir/t1", bundle, {{"Prefer", "return=minimal"}});
  ASSERT_EQ(res.status, 200) << res.body;
  json::value out = res.Json();
  EXPECT_FALSE(out.at("entry").as_array()[0].as_object().contains("resource"));
  EXPECT_EQ(Str(Responses(out)[0].at("location")), "Patient/pt-patch/_history/2");
  EXPECT_FALSE(c().Get("/fhir/t1/Patient/pt-patch").Json().at("active").as_bool());
}

TEST_F(BundleTest, OneResourceTwiceInATransactionIsRefused) {
  const std::string bundle = R"({"resourceType":"Bundle","type":"transaction","entry":[
    {"resource":{"resourceType":"Patient","id":"twice"},"request":{"method":"PUT","url":"Patient/twice"}},
    {"resource":{"resourceType":"Patient","id":"twice","active":true},"request":{"method":"PUT","url":"Patient/twice"}}]})";
  auto res = c().Post("/fhir/t1", bundle);
  EXPECT_EQ(res.status, 400) << res.body;
  EXPECT_NE(res.Diagnostics().find("more than one entry"), std::string::npos) << res.body;
  EXPECT_EQ(c().Get("/fhir/t1/Patient/twice").status, 404);
}

TEST_F(BundleTest, LimitsGive413WithAnExplanation) {
  std::string many = R"({"resourceType":"Bundle","type":"batch","entry":[)";
  for (int i = 0; i < 41; ++i) {
    many += std::string(i ? "," : "") + R"({"request":{"method":"GET","url":"Patient/x"}})";
  }
  many += "]}";
  auto res = c().Post("/fhir/t1", many);
  EXPECT_EQ(res.status, 413) << res.body;
  EXPECT_NE(res.Diagnostics().find("at most 40"), std::string::npos) << res.body;

  std::string big = R"({"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST","url":"Patient"},
    "resource":{"resourceType":"Patient","name":[{"text":")" + std::string(300 * 1024, 'a') + "\"}]}}]}";
  res = c().Post("/fhir/t1", big);
  EXPECT_EQ(res.status, 413) << res.body;
  EXPECT_NE(res.Diagnostics().find("bytes"), std::string::npos) << res.body;
}

TEST_F(BundleTest, MalformedBundlesGetPreciseErrors) {
  EXPECT_EQ(c().Post("/fhir/t1", "{not json").status, 400);
  auto res = c().Post("/fhir/t1", R"({"resourceType":"Patient"})");
  EXPECT_EQ(res.status, 400);
  res = c().Post("/fhir/t1", R"({"resourceType":"Bundle","type":"collection"})");
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.Diagnostics().find("/Bundle"), std::string::npos) << res.body;
  res = c().Post("/fhir/t1", R"({"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"}}]})");
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.Diagnostics().find("request is missing"), std::string::npos) << res.body;
  res = c().Post("/fhir/t1", R"({"resourceType":"Bundle","type":"batch","entry":[
    {"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Observation"}},
    {"request":{"method":"FETCH","url":"Patient"}},
    {"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient"}}]})");
  ASSERT_EQ(res.status, 200) << res.body;
  std::vector<json::object> r = Responses(res.Json());
  EXPECT_EQ(Str(r[0].at("status")), "400 Bad Request");
  EXPECT_EQ(Str(r[1].at("status")), "400 Bad Request");
  EXPECT_EQ(Str(r[2].at("status")), "201 Created");
}

TEST_F(BundleTest, OtherBundleTypesAreStoredAtBundle) {
  auto res = c().Post("/fhir/t1/Bundle", ReadExample("Bundle-bundle-response.json"));
  EXPECT_EQ(res.status, 201) << res.body;
  res = c().Post("/fhir/t1/Bundle", R"({"resourceType":"Bundle","type":"collection","entry":[
    {"fullUrl":"urn:uuid:1d0f0d80-0004-4000-8000-000000000004","resource":{"resourceType":"Patient","active":true}}]})");
  ASSERT_EQ(res.status, 201) << res.body;
  EXPECT_EQ(Str(res.Json().at("type")), "collection");
  // Stored as it is: the entry is not created as a Patient of its own.
  EXPECT_NE(res.body.find("urn:uuid:1d0f0d80"), std::string::npos);
}

TEST_F(BundleTest, AnotherTenantsDataIsOutOfReach) {
  ASSERT_LT(c().Put("/fhir/t2/Patient/iso-b", R"({"resourceType":"Patient","id":"iso-b","name":[{"family":"Secretname"}],
    "identifier":[{"system":"http://example.org/iso","value":"b"}]})").status, 300);
  // A conditional reference, a conditional update and a read, from t3 at t2's data.
  auto res = c().Post("/fhir/t3", R"({"resourceType":"Bundle","type":"transaction","entry":[
    {"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","status":"final",
     "code":{"text":"x"},"subject":{"reference":"Patient?identifier=http://example.org/iso|b"}}}]})");
  EXPECT_EQ(res.status, 412) << res.body;
  EXPECT_EQ(res.body.find("Secretname"), std::string::npos);
  res = c().Post("/fhir/t3", R"({"resourceType":"Bundle","type":"batch","entry":[
    {"request":{"method":"GET","url":"Patient/iso-b"}},
    {"request":{"method":"GET","url":"Patient?identifier=http://example.org/iso|b"}},
    {"request":{"method":"DELETE","url":"Patient/iso-b"}},
    {"request":{"method":"PUT","url":"Patient?identifier=http://example.org/iso|b"},
     "resource":{"resourceType":"Patient","active":false}}]})");
  ASSERT_EQ(res.status, 200) << res.body;
  std::vector<json::object> r = Responses(res.Json());
  EXPECT_EQ(Str(r[0].at("status")), "404 Not Found");
  const json::value batch = res.Json();
  const json::value* found = batch.at("entry").as_array()[1].at("resource").as_object().if_contains("entry");
  EXPECT_TRUE(found == nullptr || found->as_array().empty()) << res.body;
  EXPECT_EQ(Str(r[2].at("status")), "404 Not Found");
  EXPECT_EQ(Str(r[3].at("status")), "201 Created");  // a new t3 Patient, not t2's
  // Nothing of t2's resource comes back; the 404 is the one of an id that never existed.
  EXPECT_EQ(res.body.find("Secretname"), std::string::npos) << res.body;
  auto never = c().Post("/fhir/t3", R"({"resourceType":"Bundle","type":"batch","entry":[
    {"request":{"method":"GET","url":"Patient/iso-never"}}]})");
  EXPECT_EQ(Str(Responses(never.Json())[0].at("outcome").at("issue").as_array()[0].at("code")),
            Str(r[0].at("outcome").at("issue").as_array()[0].at("code")));
  auto b = c().Get("/fhir/t2/Patient/iso-b");
  EXPECT_EQ(b.Json().at("meta").at("versionId").as_string(), "1");
}

TEST_F(BundleTest, CapabilityStatementDeclaresBatchAndTransaction) {
  auto res = c().Get("/fhir/t1/metadata");
  ASSERT_EQ(res.status, 200);
  std::set<std::string> codes;
  const json::value caps = res.Json();
  for (const json::value& i : caps.at("rest").as_array()[0].at("interaction").as_array()) {
    codes.insert(Str(i.at("code")));
  }
  EXPECT_TRUE(codes.count("transaction"));
  EXPECT_TRUE(codes.count("batch"));
}

}  // namespace
}  // namespace medgrid::testing
