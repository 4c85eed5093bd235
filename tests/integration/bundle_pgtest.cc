// Batch and transaction Bundles over HTTP against real PostgreSQL: the
// official examples, atomic rollback, fullUrl and conditional reference
// rewriting, per-entry conditions, limits and tenant isolation.
#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/fhir/json.h"
#include "pqxx/pqxx"

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

// Large transaction write sets go to the store's COPY path
// (StoreConfig::copy_write_min_versions), small ones to one INSERT ...
// SELECT statement; both must write the same rows. One tenant gets a
// bundle of 122 PUTs (COPY), the other the same entries in bundles of 40
// (the statement); then every resource is updated or deleted the same
// way. Triggers record the outbox and count-delta rows before the
// background workers consume them, and whether COPY inserted them.
class BundleWritePathTest : public ::testing::Test {
 protected:
  static constexpr int kCopyMin = 64;
  static constexpr std::size_t kChunk = 40;

  static void SetUpTestSuite() {
    app::AppConfig config = TestServer::BaseConfig("bundle_paths");
    config.store.copy_write_min_versions = kCopyMin;
    server_ = new TestServer("bundle_paths", {"bycopy", "bystmt"}, config);
    for (const std::string& db : server_->config().store.bootstrap_shards) {
      pqxx::connection conn(TestServer::Dsn(db));
      pqxx::work tx(conn);
      tx.exec(R"sql(
        CREATE TABLE test_outbox_seen (LIKE outbox, by_copy boolean);
        CREATE TABLE test_delta_seen (LIKE idx_token_count_delta, by_copy boolean);
        CREATE FUNCTION test_outbox_seen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO test_outbox_seen SELECT NEW.*, current_query() LIKE 'COPY%'; RETURN NULL; END $$;
        CREATE FUNCTION test_delta_seen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO test_delta_seen SELECT NEW.*, current_query() LIKE 'COPY%'; RETURN NULL; END $$;
        CREATE TRIGGER test_outbox_seen AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION test_outbox_seen();
        CREATE TRIGGER test_delta_seen AFTER INSERT ON idx_token_count_delta FOR EACH ROW
          EXECUTE FUNCTION test_delta_seen();
      )sql");
      tx.commit();
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  HttpClient& c() { return server_->client(); }

  static json::object Coding(const std::string& system, const std::string& code, const std::string& display) {
    json::object c{{"code", code}, {"display", display}};
    if (!system.empty()) c["system"] = system;
    return c;
  }
  static json::object Concept(json::array codings, const std::string& text = "") {
    json::object cc;
    if (!codings.empty()) cc["coding"] = std::move(codings);
    if (!text.empty()) cc["text"] = text;
    return cc;
  }
  static json::object Ref(const std::string& ref) { return {{"reference", ref}}; }

  // Round 0 creates; round 1 changes every resource and deletes some.
  static json::array Entries(int round) {
    json::array entries;
    auto put = [&](const std::string& type, const std::string& id, json::object r) {
      r["resourceType"] = type;
      r["id"] = id;
      entries.push_back(
          json::object{{"resource", std::move(r)}, {"request", {{"method", "PUT"}, {"url", type + "/" + id}}}});
    };
    const std::string loinc = "http://loinc.org";
    const std::string snomed = "http://snomed.info/sct";
    const std::string ucum = "http://unitsofmeasure.org";
    for (int i = 0; i < 10; ++i) {
      const std::string n = std::to_string(i);
      json::object p{
          {"identifier",
           json::array{json::object{
               {"type", Concept({Coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record")})},
               {"system", "urn:oid:1.2.36.146.595.217.0.1"},
               {"value", "MRN-" + n}}}},
          {"name", json::array{json::object{{"family", i % 3 == 0 ? "M\u00fcller-" + n : "O'Brien \\\"" + n + "\""},
                                            {"given", json::array{"Ann", "Z\u00e9 " + n}}}}},
          {"telecom", json::array{json::object{{"system", "phone"}, {"value", "555-01" + n}}}},
          {"gender", i % 2 ? "female" : "male"},
          {"birthDate", i % 4 == 0 ? "1970" : "1980-0" + std::to_string(1 + i % 9) + "-15"},
          {"address",
           json::array{json::object{
               {"line", json::array{"1 Main St", "Apt\t" + n}}, {"city", "Springfield"}, {"postalCode", "0" + n}}}}};
      if (round == 1) p["active"] = true;
      put("Patient", "p" + n, p);
    }
    for (const char* vs : {"a", "b"}) {
      put("ValueSet", std::string("vs-") + vs,
          {{"url", std::string("http://example.org/fhir/ValueSet/") + vs},
           {"status", round == 0 ? "draft" : "active"},
           {"name", std::string("Set ") + vs}});
    }
    for (int i = 0; i < 10; ++i) {
      const std::string n = std::to_string(i);
      const std::string day = "2020-0" + std::to_string(1 + i % 9) + "-1" + std::to_string(round);
      put("Encounter", "e" + n,
          {{"status", "finished"},
           {"class", Coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", "ambulatory")},
           {"type", json::array{Concept({Coding(snomed, i % 2 ? "185349003" : "410620009", "Check up")},
                                        "Encounter for check up")}},
           {"subject", Ref("Patient/p" + n)},
           {"period", i % 5 == 0 ? json::object{{"start", day + "T09:00:00Z"}}
                                 : json::object{{"start", day + "T09:00:00Z"}, {"end", day + "T09:30:00+02:00"}}}});
    }
    for (int i = 0; i < 10; ++i) {
      const std::string n = std::to_string(i);
      const std::string when = i % 3 == 0   ? "2020-0" + std::to_string(1 + i % 9)
                               : i % 3 == 1 ? "2020-02-2" + n.substr(0, 1)
                                            : "2020-03-0" + std::to_string(1 + i % 9) + "T10:1" + n + ":00.25Z";
      auto obs = [&](const std::string& id, json::object code) {
        return json::object{
            {"status", "final"},
            {"category", json::array{Concept({Coding("http://terminology.hl7.org/CodeSystem/observation-category",
                                                     "vital-signs", "Vital Signs")})}},
            {"code", std::move(code)},
            {"subject", Ref("Patient/p" + n)},
            {"encounter", Ref("Encounter/e" + n)},
            {"effectiveDateTime", when},
            {"id", id}};
      };
      json::object hr = obs("o" + n + "-hr", Concept({Coding(loinc, "8867-4", "Heart rate")}));
      hr["valueQuantity"] = {{"value", 60 + i + round}, {"unit", "beats/minute"}, {"system", ucum}, {"code", "/min"}};
      put("Observation", "o" + n + "-hr", hr);
      // The same code twice, and with and without a system: one count
      // delta per distinct code and per distinct system and code.
      json::object wt =
          obs("o" + n + "-wt",
              Concept({Coding(loinc, "29463-7", "Body weight"), Coding(loinc, "29463-7", "Body weight measured"),
                       Coding("", "29463-7", "Weight"), Coding(snomed, "27113001", "Body weight")},
                      "Weight"));
      wt["valueQuantity"] = {
          {"value", json::parse(std::to_string(70 + i) + ".50")}, {"unit", "kg"}, {"system", ucum}, {"code", "kg"}};
      if (round == 1) wt["performer"] = json::array{Ref("http://example.org/fhir/Practitioner/pr" + n)};
      put("Observation", "o" + n + "-wt", wt);
      json::object bp = obs("o" + n + "-bp", Concept({Coding(loinc, "85354-9", "Blood pressure panel")}));
      bp["component"] = json::array{
          json::object{
              {"code", Concept({Coding(loinc, "8480-6", "Systolic")})},
              {"valueQuantity", {{"value", 120 + i}, {"unit", "mm[Hg]"}, {"system", ucum}, {"code", "mm[Hg]"}}}},
          json::object{
              {"code", Concept({Coding(loinc, "8462-4", "Diastolic")})},
              {"valueQuantity", {{"value", 80 - i}, {"unit", "mm[Hg]"}, {"system", ucum}, {"code", "mm[Hg]"}}}}};
      put("Observation", "o" + n + "-bp", bp);
      // A code without a system, a text-only code, a coded value.
      json::object sm = obs("o" + n + "-sm", Concept({Coding("", "smoke-" + n, "Smoking")}));
      sm["valueCodeableConcept"] = Concept({Coding(snomed, "266919005", "Never smoked")});
      put("Observation", "o" + n + "-sm", sm);
      json::object tx = obs("o" + n + "-tx", Concept({}, "Free text observation " + n));
      tx["valueString"] = "note\\" + n;
      put("Observation", "o" + n + "-tx", tx);
      json::object lab = obs("o" + n + "-lab", Concept({Coding(loinc, "2339-0", "Glucose")}));
      lab["valueQuantity"] = {
          {"value", json::parse("5.2" + n)}, {"unit", "mmol/L"}, {"system", ucum}, {"code", "mmol/L"}};
      put("Observation", "o" + n + "-lab", lab);
      // A probability or an open range (quantity high +Infinity).
      json::object prediction{{"outcome", Concept({}, "Stroke")}};
      if (i % 2) {
        prediction["probabilityDecimal"] = json::parse("0.2" + n);
      } else {
        prediction["probabilityRange"] = {{"low", {{"value", json::parse("0.1" + n)}}}};
      }
      put("RiskAssessment", "ra" + n,
          {{"status", "final"}, {"subject", Ref("Patient/p" + n)}, {"prediction", json::array{prediction}}});
      put("Condition", "c" + n,
          {{"clinicalStatus",
            Concept({Coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")})},
           {"code", Concept({Coding(snomed, i % 2 ? "44054006" : "38341003", "Diabetes")})},
           {"subject", Ref("Patient/p" + n)},
           {"onsetDateTime", "201" + n + "-06-01"}});
      put("DiagnosticReport", "dr" + n,
          {{"status", "final"},
           {"code", Concept({Coding(loinc, "51990-0", "Basic metabolic panel")})},
           {"subject", Ref("Patient/p" + n)},
           {"effectiveDateTime", when},
           {"result", json::array{Ref("Observation/o" + n + "-lab")}}});
      put("MedicationRequest", "mr" + n,
          {{"status", "active"},
           {"intent", "order"},
           {"medicationCodeableConcept",
            Concept({Coding("http://www.nlm.nih.gov/research/umls/rxnorm", "860975", "Metformin")})},
           {"subject", Ref("Patient/p" + n)},
           {"authoredOn", when}});
      if (round == 1 && i % 2 == 0) {
        entries.push_back(json::object{{"request", {{"method", "DELETE"}, {"url", "Immunization/im" + n}}}});
      } else {
        put("Immunization", "im" + n,
            {{"status", "completed"},
             {"vaccineCode", Concept({Coding("http://hl7.org/fhir/sid/cvx", "140", "Influenza")})},
             {"patient", Ref("Patient/p" + n)},
             {"occurrenceDateTime", when}});
      }
    }
    return entries;
  }

  static std::string BundleOf(json::array entries) {
    return json::serialize(
        json::object{{"resourceType", "Bundle"}, {"type", "transaction"}, {"entry", std::move(entries)}});
  }

  // Every row of `sql` ($1 the tenant) over both shards, as text, sorted.
  static std::vector<std::string> Rows(const std::string& sql, const std::string& tenant) {
    std::vector<std::string> out;
    for (const std::string& db : server_->config().store.bootstrap_shards) {
      pqxx::connection conn(TestServer::Dsn(db));
      pqxx::read_transaction tx(conn);
      for (const pqxx::row& row : tx.exec_params(sql, tenant)) {
        std::string line;
        for (const pqxx::field& f : row) line += (f.is_null() ? std::string("<null>") : f.as<std::string>()) + "|";
        out.push_back(line);
      }
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // The resource ids and total of a search.
  std::string SearchIds(const std::string& tenant, const std::string& query) {
    auto res = c().Get("/fhir/" + tenant + "/" + query);
    EXPECT_EQ(res.status, 200) << query << ": " << res.body;
    const json::value b = res.Json();
    std::string out = b.as_object().contains("total") ? std::to_string(b.at("total").as_int64()) + ":" : "?:";
    if (b.as_object().contains("entry")) {
      for (const json::value& e : b.at("entry").as_array()) out += Str(e.at("resource").at("id")) + ",";
    }
    return out;
  }

  static TestServer* server_;
};
TestServer* BundleWritePathTest::server_ = nullptr;

TEST_F(BundleWritePathTest, CopyAndStatementWriteTheSameRows) {
  for (int round = 0; round < 2; ++round) {
    json::array entries = Entries(round);
    ASSERT_GE(entries.size(), 100u);
    auto res = c().Post("/fhir/bycopy", BundleOf(entries));
    ASSERT_EQ(res.status, 200) << res.body;
    for (std::size_t i = 0; i < entries.size(); i += kChunk) {
      json::array part(entries.begin() + i, entries.begin() + std::min(entries.size(), i + kChunk));
      res = c().Post("/fhir/bystmt", BundleOf(part));
      ASSERT_EQ(res.status, 200) << res.body;
    }
  }

  // Whether COPY wrote the rows: all of "bycopy"'s, none of "bystmt"'s
  // (the deletions of a Bundle are a write set of their own, here 5).
  const std::string by_copy =
      "SELECT DISTINCT by_copy FROM test_outbox_seen WHERE tenant_id = $1 AND method <> 'DELETE'";
  EXPECT_EQ(Rows(by_copy, "bycopy"), std::vector<std::string>{"t|"});
  EXPECT_EQ(Rows(by_copy, "bystmt"), std::vector<std::string>{"f|"});

  const std::vector<std::string> queries = {
      "SELECT res_type, res_id, version_id, deleted FROM resources WHERE tenant_id = $1",
      "SELECT res_type, res_id, version_id, method, deleted, (body::jsonb #- '{meta,lastUpdated}')::text "
      "FROM resource_versions WHERE tenant_id = $1",
      "SELECT res_type, res_id, version_id, method FROM test_outbox_seen WHERE tenant_id = $1",
      "SELECT res_type, param, code, by_system, system, n FROM test_delta_seen WHERE tenant_id = $1",
      "SELECT res_type, res_id, param, grp, folded, exact FROM idx_string WHERE tenant_id = $1",
      "SELECT res_type, res_id, param, grp, system, code, text, type_system, type_code FROM idx_token "
      "WHERE tenant_id = $1",
      "SELECT res_type, res_id, param, grp, lo, hi FROM idx_date WHERE tenant_id = $1",
      "SELECT res_type, res_id, param, grp, target_type, target_id, url, version FROM idx_reference "
      "WHERE tenant_id = $1",
      "SELECT res_type, res_id, param, grp, low, high, system, code, unit FROM idx_quantity WHERE tenant_id = $1",
      "SELECT res_type, res_id, param, grp, uri FROM idx_uri WHERE tenant_id = $1",
      "SELECT res_type, res_id, content, narrative FROM idx_text WHERE tenant_id = $1",
      "SELECT res_type, res_id, token_param, date_param, system, code, lo, hi, single, span FROM idx_token_date "
      "WHERE tenant_id = $1",
  };
  for (const std::string& q : queries) {
    const std::vector<std::string> copied = Rows(q, "bycopy");
    EXPECT_FALSE(copied.empty()) << q;
    EXPECT_EQ(copied, Rows(q, "bystmt")) << q;
  }
  // Both kinds of rows the statement path writes with NULLs and infinities.
  EXPECT_FALSE(Rows("SELECT 1 FROM idx_token WHERE tenant_id = $1 AND system IS NULL", "bycopy").empty());
  EXPECT_FALSE(Rows("SELECT 1 FROM idx_quantity WHERE tenant_id = $1 AND high = 'Infinity'", "bycopy").empty());
  EXPECT_FALSE(Rows("SELECT 1 FROM test_delta_seen WHERE tenant_id = $1 AND n < 0", "bycopy").empty());
  EXPECT_FALSE(Rows("SELECT 1 FROM idx_string WHERE tenant_id = $1 AND exact LIKE '%\\\\%'", "bycopy").empty());
  // The timestamps COPY writes are the version's, to the microsecond.
  for (const char* tenant : {"bycopy", "bystmt"}) {
    EXPECT_EQ(Rows("SELECT v.res_type, v.res_id, v.version_id FROM resource_versions v JOIN test_outbox_seen o "
                   "USING (tenant_id, res_type, res_id, version_id) JOIN resources r ON r.tenant_id = v.tenant_id AND "
                   "r.res_type = v.res_type AND r.res_id = v.res_id "
                   "WHERE v.tenant_id = $1 AND (o.changed_at <> v.last_updated OR "
                   "(r.version_id = v.version_id AND r.last_updated <> v.last_updated))",
                   tenant),
              std::vector<std::string>{});
  }

  for (const char* query : {"Patient?name=muller",
                            "Patient?name:exact=O'Brien%20%5C%220",
                            "Patient?identifier=MRN-3",
                            "Patient?birthdate=1970",
                            "Encounter?date=ge2020-03-01&date=lt2020-06-01",
                            "Encounter?type=http://snomed.info/sct|185349003",
                            "Observation?code=http://loinc.org|8867-4&date=ge2020-02-01&_total=accurate",
                            "Observation?code=29463-7&_total=accurate",
                            "Observation?code=smoke-3",
                            "Observation?code:text=free%20text",
                            "Observation?value-quantity=gt70|http://unitsofmeasure.org|kg",
                            "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt125",
                            "Observation?performer=http://example.org/fhir/Practitioner/pr4",
                            "Observation?subject=Patient/p2&_sort=_id",
                            "Observation?_content=note",
                            "Condition?code=44054006&onset-date=ge2015",
                            "DiagnosticReport?result=Observation/o4-lab",
                            "MedicationRequest?code=860975&authoredon=lt2020-03",
                            "Immunization?vaccine-code=140",
                            "ValueSet?url=http://example.org/fhir/ValueSet/a",
                            "RiskAssessment?probability=gt0.5"}) {
    EXPECT_EQ(SearchIds("bycopy", query), SearchIds("bystmt", query)) << query;
  }
}

}  // namespace
}  // namespace medgrid::testing
