// Bulk data $export over HTTP against real PostgreSQL: kick-off, polling,
// manifest and NDJSON downloads checked line by line against the database,
// _type, _since, _typeFilter, Patient and Group level, cancel, tenant
// isolation, request errors, and a server stopped mid-export whose job
// finishes on the next server with byte-identical files.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

constexpr uint64_t kMaxFileBytes = 16 * 1024;

std::string PathOf(const std::string& url) {
  const std::size_t at = url.find("/fhir/");
  return at == std::string::npos ? url : url.substr(at);
}

// A transaction Bundle of `patients` Patients, each with 3 Observations
// (two codes, alternating) and 2 Conditions, and `practitioners`
// Practitioners.
std::string LoadBundle(int first, int patients, int practitioners) {
  json::array entries;
  auto add = [&](const std::string& type, json::object resource, const std::string& full_url) {
    resource["resourceType"] = type;
    entries.push_back(json::object{{"fullUrl", full_url},
                                   {"resource", resource},
                                   {"request", json::object{{"method", "POST"}, {"url", type}}}});
  };
  for (int i = first; i < first + patients; ++i) {
    const std::string p = "urn:uuid:00000000-0000-4000-8000-" + std::to_string(100000000000 + i);
    add("Patient",
        json::object{{"name", json::array{json::object{{"family", "Export" + std::to_string(i)}, {"given", json::array{"Pat"}}}}},
                     {"gender", i % 2 ? "male" : "female"},
                     {"birthDate", "1980-01-0" + std::to_string(1 + i % 9)}},
        p);
    for (int k = 0; k < 3; ++k) {
      const char* code = (i + k) % 2 ? "8867-4" : "29463-7";
      add("Observation",
          json::object{{"status", "final"},
                       {"code", json::object{{"coding", json::array{json::object{{"system", "http://loinc.org"}, {"code", code}}}}}},
                       {"subject", json::object{{"reference", p}}},
                       {"valueQuantity", json::object{{"value", 60 + k}, {"unit", "/min"}}}},
          "urn:uuid:" + std::to_string(i) + "-o" + std::to_string(k));
    }
    for (int k = 0; k < 2; ++k) {
      add("Condition",
          json::object{{"code", json::object{{"text", "condition " + std::to_string(k)}}},
                       {"subject", json::object{{"reference", p}}}},
          "urn:uuid:" + std::to_string(i) + "-c" + std::to_string(k));
    }
  }
  for (int i = 0; i < practitioners; ++i) {
    add("Practitioner", json::object{{"name", json::array{json::object{{"family", "Doc" + std::to_string(first + i)}}}}},
        "urn:uuid:pr" + std::to_string(first + i));
  }
  return json::serialize(json::object{{"resourceType", "Bundle"}, {"type", "transaction"}, {"entry", entries}});
}

app::AppConfig ExportConfigFor(const std::string& name, std::chrono::milliseconds pause, int page_rows) {
  app::AppConfig c = TestServer::BaseConfig(name);
  c.export_dir = (std::filesystem::temp_directory_path() / ("mg_" + name + "_" + std::to_string(::getpid()))).string();
  c.exports.max_file_bytes = kMaxFileBytes;
  c.exports.page_rows = page_rows;
  c.exports.page_pause = pause;
  c.exports.idle_poll = 50ms;
  c.exports.lease = std::chrono::seconds(5);
  return c;
}

struct Download {
  std::map<std::string, std::vector<std::string>> lines;  // by type
  std::vector<std::pair<std::string, std::string>> files;  // (url path, bytes), in manifest order
  json::object manifest;
};

class ExportClient {
 public:
  explicit ExportClient(HttpClient& c) : c_(c) {}
  // Kicks off and returns the status path.
  std::string KickOff(const std::string& target) {
    HttpResponse res = c_.Get(target, {{"Prefer", "respond-async"}, {"Accept", "application/fhir+json"}});
    EXPECT_EQ(res.status, 202) << target << " " << res.body;
    EXPECT_NE(res.Header("content-location").find("/$export-status/"), std::string::npos);
    return PathOf(res.Header("content-location"));
  }
  // Polls until the job is done; returns the manifest response.
  HttpResponse Wait(const std::string& status) {
    for (int i = 0; i < 2400; ++i) {
      HttpResponse res = c_.Get(status);
      if (res.status != 202) return res;
      EXPECT_FALSE(res.Header("x-progress").empty());
      EXPECT_EQ(res.Header("retry-after"), "2");
      std::this_thread::sleep_for(25ms);
    }
    ADD_FAILURE() << "export did not finish";
    return {};
  }
  Download Fetch(const HttpResponse& manifest_res) {
    Download d;
    EXPECT_EQ(manifest_res.status, 200) << manifest_res.body;
    if (manifest_res.status != 200) return d;
    json::value manifest = manifest_res.Json();
    d.manifest = manifest.as_object();
    json::array output = d.manifest.at("output").as_array();
    for (const json::value& f : output) {
      const std::string type(f.at("type").as_string());
      const std::string path = PathOf(std::string(f.at("url").as_string()));
      HttpResponse file = c_.Get(path);
      EXPECT_EQ(file.status, 200) << path << " " << file.body;
      EXPECT_EQ(file.Header("content-type"), "application/fhir+ndjson");
      EXPECT_LE(file.body.size(), kMaxFileBytes);
      int64_t count = 0;
      std::size_t start = 0;
      while (start < file.body.size()) {
        std::size_t end = file.body.find('\n', start);
        EXPECT_NE(end, std::string::npos) << "the last line must end with a newline";
        if (end == std::string::npos) break;
        std::string line = file.body.substr(start, end - start);
        json::value r = json::parse(line);
        EXPECT_EQ(r.at("resourceType").as_string(), type);
        d.lines[type].push_back(std::move(line));
        ++count;
        start = end + 1;
      }
      EXPECT_EQ(count, f.at("count").as_int64()) << path;
      d.files.emplace_back(path, std::move(file.body));
    }
    return d;
  }
  Download Run(const std::string& target) { return Fetch(Wait(KickOff(target))); }

 private:
  HttpClient& c_;
};

class ExportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config_ = new app::AppConfig(ExportConfigFor("export", 0ms, 50));
    server_ = new TestServer("export", {"t1", "t2"}, *config_);
    HttpClient& c = server_->client();
    for (int batch = 0; batch < 4; ++batch) {
      HttpResponse res = c.Post("/fhir/t1", LoadBundle(batch * 10, 10, 5), {{"Prefer", "return=minimal"}});
      ASSERT_EQ(res.status, 200) << res.body;
    }
    // A Group of the first five patients.
    HttpResponse patients = c.Get("/fhir/t1/Patient?_count=5");
    json::value bundle = patients.Json();
    json::array members;
    for (const json::value& e : bundle.at("entry").as_array()) {
      const std::string id(e.at("resource").at("id").as_string());
      group_members_.push_back(id);
      members.push_back(json::object{{"entity", json::object{{"reference", "Patient/" + id}}}});
    }
    HttpResponse group = c.Post("/fhir/t1/Group", json::serialize(json::object{
                                                      {"resourceType", "Group"}, {"type", "person"},
                                                      {"actual", true}, {"member", members}}));
    ASSERT_EQ(group.status, 201) << group.body;
    group_id_ = std::string(group.Json().at("id").as_string());
  }
  static void TearDownTestSuite() {
    delete server_;
    std::filesystem::remove_all(config_->export_dir);
    delete config_;
  }
  HttpClient& c() { return server_->client(); }
  int64_t Count(const std::string& tenant, const std::string& query) {
    HttpResponse res = c().Get("/fhir/" + tenant + "/" + query + (query.find('?') == std::string::npos ? "?" : "&") +
                               "_summary=count");
    EXPECT_EQ(res.status, 200) << res.body;
    return res.Json().at("total").as_int64();
  }

  static app::AppConfig* config_;
  static TestServer* server_;
  static std::vector<std::string> group_members_;
  static std::string group_id_;
};
app::AppConfig* ExportTest::config_ = nullptr;
TestServer* ExportTest::server_ = nullptr;
std::vector<std::string> ExportTest::group_members_;
std::string ExportTest::group_id_;

TEST_F(ExportTest, SystemExportHasEveryResourceOnceAndTheManifestTheIgDescribes) {
  ExportClient ex(c());
  Download d = ex.Run("/fhir/t1/$export");
  for (const std::string type : {"Patient", "Observation", "Condition", "Practitioner", "Group"}) {
    EXPECT_EQ(static_cast<int64_t>(d.lines[type].size()), Count("t1", type)) << type;
  }
  EXPECT_EQ(d.lines["Patient"].size(), 40u);
  EXPECT_EQ(d.lines["Observation"].size(), 120u);
  EXPECT_EQ(d.lines.size(), 5u);  // no other type has rows
  // Each resource once: ids are unique per type.
  for (const auto& [type, lines] : d.lines) {
    std::set<std::string> ids;
    for (const std::string& l : lines) ids.insert(std::string(json::parse(l).at("id").as_string()));
    EXPECT_EQ(ids.size(), lines.size()) << type;
  }
  // Observations (about 300 bytes each) are split into several parts.
  int observation_files = 0;
  for (const auto& [path, bytes] : d.files) observation_files += path.find("/Observation-") != std::string::npos;
  EXPECT_GT(observation_files, 1);
  EXPECT_TRUE(d.manifest.at("transactionTime").is_string());
  EXPECT_NE(std::string(d.manifest.at("request").as_string()).find("/fhir/t1/$export"), std::string::npos);
  EXPECT_FALSE(d.manifest.at("requiresAccessToken").as_bool());
  EXPECT_TRUE(d.manifest.at("error").as_array().empty());
}

TEST_F(ExportTest, TypeSinceAndOutputFormat) {
  ExportClient ex(c());
  Download only = ex.Run("/fhir/t1/$export?_type=Practitioner,Patient&_outputFormat=application%2Ffhir%2Bndjson");
  EXPECT_EQ(only.lines.size(), 2u);
  EXPECT_EQ(only.lines["Practitioner"].size(), 20u);
  EXPECT_EQ(only.lines["Patient"].size(), 40u);

  auto create = [&] {
    HttpResponse res = c().Post("/fhir/t2/Patient", R"({"resourceType":"Patient"})");
    EXPECT_EQ(res.status, 201);
    return res.Json();
  };
  std::set<std::string> before, after;
  for (int i = 0; i < 3; ++i) before.insert(std::string(create().at("id").as_string()));
  std::this_thread::sleep_for(5ms);
  // lastUpdated is shown to the millisecond and stored to the microsecond,
  // so this resource itself may or may not count as updated after it.
  const std::string since(create().at("meta").at("lastUpdated").as_string());
  std::this_thread::sleep_for(5ms);
  for (int i = 0; i < 2; ++i) after.insert(std::string(create().at("id").as_string()));
  Download later = ex.Run("/fhir/t2/$export?_type=Patient&_outputFormat=ndjson&_since=" + since);
  std::set<std::string> got;
  for (const std::string& l : later.lines["Patient"]) got.insert(std::string(json::parse(l).at("id").as_string()));
  for (const std::string& id : after) EXPECT_TRUE(got.contains(id));
  for (const std::string& id : before) EXPECT_FALSE(got.contains(id));
  EXPECT_LE(got.size(), 3u);
}

TEST_F(ExportTest, TypeFilterSelectsWithSearchCriteria) {
  ExportClient ex(c());
  Download d = ex.Run("/fhir/t1/$export?_type=Observation,Patient&_typeFilter=Observation%3Fcode%3Dhttp%3A%2F%2Floinc.org%7C8867-4");
  const int64_t expected = Count("t1", "Observation?code=http://loinc.org%7C8867-4");
  EXPECT_GT(expected, 0);
  EXPECT_LT(expected, 120);
  EXPECT_EQ(static_cast<int64_t>(d.lines["Observation"].size()), expected);
  for (const std::string& l : d.lines["Observation"]) EXPECT_NE(l.find("8867-4"), std::string::npos);
  EXPECT_EQ(d.lines["Patient"].size(), 40u);

  HttpResponse bad = c().Get("/fhir/t1/$export?_typeFilter=Observation%3Fnonsense%3D1", {{"Prefer", "respond-async"}});
  EXPECT_EQ(bad.status, 400) << bad.body;
}

TEST_F(ExportTest, PatientLevelExportsThePatientCompartment) {
  ExportClient ex(c());
  Download d = ex.Run("/fhir/t1/Patient/$export");
  EXPECT_EQ(d.lines["Patient"].size(), 40u);
  EXPECT_EQ(d.lines["Observation"].size(), 120u);
  EXPECT_EQ(d.lines["Condition"].size(), 80u);
  EXPECT_EQ(d.lines.count("Practitioner"), 0u);  // not in the Patient compartment

  HttpResponse bad = c().Get("/fhir/t1/Patient/$export?_type=Practitioner", {{"Prefer", "respond-async"}});
  EXPECT_EQ(bad.status, 400) << bad.body;
}

TEST_F(ExportTest, GroupLevelExportsItsMembersCompartments) {
  ExportClient ex(c());
  Download d = ex.Run("/fhir/t1/Group/" + group_id_ + "/$export?_type=Patient,Observation,Condition");
  ASSERT_EQ(d.lines["Patient"].size(), 5u);
  std::set<std::string> members(group_members_.begin(), group_members_.end());
  for (const std::string& l : d.lines["Patient"]) EXPECT_TRUE(members.contains(std::string(json::parse(l).at("id").as_string())));
  EXPECT_EQ(d.lines["Observation"].size(), 15u);
  EXPECT_EQ(d.lines["Condition"].size(), 10u);
  for (const std::string& l : d.lines["Observation"]) {
    std::string ref(json::parse(l).at("subject").at("reference").as_string());
    EXPECT_TRUE(members.contains(ref.substr(8))) << ref;
  }
  HttpResponse unknown = c().Get("/fhir/t1/Group/nope/$export", {{"Prefer", "respond-async"}});
  EXPECT_EQ(unknown.status, 404) << unknown.body;
}

TEST_F(ExportTest, CancelRemovesTheJobAndItsFiles) {
  ExportClient ex(c());
  const std::string status = ex.KickOff("/fhir/t1/$export?_type=Observation");
  const std::string job = status.substr(status.rfind('/') + 1);
  HttpResponse cancel = c().Delete(status);
  EXPECT_EQ(cancel.status, 202) << cancel.body;
  EXPECT_EQ(c().Get(status).status, 404);
  EXPECT_EQ(c().Delete(status).status, 404);
  const std::filesystem::path dir = std::filesystem::path(config_->export_dir) / "t1" / job;
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = !std::filesystem::exists(dir);
    if (!gone) std::this_thread::sleep_for(25ms);
  }
  EXPECT_TRUE(gone) << dir;

  // A finished job too: its files go with it.
  const std::string done = ex.KickOff("/fhir/t1/$export?_type=Practitioner");
  Download d = ex.Fetch(ex.Wait(done));
  ASSERT_FALSE(d.files.empty());
  EXPECT_EQ(c().Delete(done).status, 202);
  EXPECT_EQ(c().Get(d.files[0].first).status, 404);
}

TEST_F(ExportTest, AnotherTenantSeesNeitherStatusNorFiles) {
  ExportClient ex(c());
  const std::string status = ex.KickOff("/fhir/t1/$export?_type=Practitioner");
  Download d = ex.Fetch(ex.Wait(status));
  ASSERT_FALSE(d.files.empty());
  auto as_t2 = [](std::string path) { return path.replace(path.find("/fhir/t1/"), 9, "/fhir/t2/"); };
  EXPECT_EQ(c().Get(as_t2(status)).status, 404);
  EXPECT_EQ(c().Get(as_t2(d.files[0].first)).status, 404);
  EXPECT_EQ(c().Delete(as_t2(status)).status, 404);
  EXPECT_EQ(c().Get(status).status, 200);  // still there for its own tenant
  EXPECT_EQ(c().Get("/fhir/nosuchtenant/$export", {{"Prefer", "respond-async"}}).status, 404);
}

TEST_F(ExportTest, RequestErrorsAreOperationOutcomes) {
  HttpResponse no_prefer = c().Get("/fhir/t1/$export");
  EXPECT_EQ(no_prefer.status, 400);
  EXPECT_EQ(no_prefer.Json().at("resourceType").as_string(), "OperationOutcome");
  EXPECT_NE(no_prefer.Diagnostics().find("respond-async"), std::string::npos) << no_prefer.body;
  const std::map<std::string, std::string> async = {{"Prefer", "respond-async"}};
  EXPECT_EQ(c().Get("/fhir/t1/$export?_outputFormat=text%2Fcsv", async).status, 400);
  EXPECT_EQ(c().Get("/fhir/t1/$export?foo=bar", async).status, 400);
  EXPECT_EQ(c().Get("/fhir/t1/$export?_type=NotAType", async).status, 400);
  EXPECT_EQ(c().Get("/fhir/t1/$export?_since=yesterday", async).status, 400);
  EXPECT_EQ(c().Get("/fhir/t1/$export-status/doesnotexist").status, 404);
  EXPECT_EQ(c().Send("POST", "/fhir/t1/$export-status/doesnotexist", "").status, 405);
}

TEST_F(ExportTest, CapabilityStatementListsTheExportOperations) {
  HttpResponse res = c().Get("/fhir/t1/metadata");
  ASSERT_EQ(res.status, 200);
  EXPECT_NE(res.body.find("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"), std::string::npos);
  EXPECT_NE(res.body.find("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"), std::string::npos);
  EXPECT_NE(res.body.find("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"), std::string::npos);
}

// A server stopped mid-export: the next one resumes the job from its
// checkpoint, and the files equal those of an uninterrupted export.
TEST(ExportRestartTest, ResumedJobWritesByteIdenticalFiles) {
  app::AppConfig config = ExportConfigFor("exportrestart", 20ms, 10);
  auto server = std::make_unique<TestServer>("exportrestart", std::vector<std::string>{"t1"}, config);
  for (int batch = 0; batch < 3; ++batch) {
    ASSERT_EQ(server->client().Post("/fhir/t1", LoadBundle(batch * 10, 10, 3)).status, 200);
  }
  const std::string target = "/fhir/t1/$export?_type=Condition,Observation,Patient,Practitioner";
  Download reference;
  {
    ExportClient ex(server->client());
    reference = ex.Run(target);
  }
  ASSERT_EQ(reference.lines["Observation"].size(), 90u);

  std::string status;
  {
    ExportClient ex(server->client());
    status = ex.KickOff(target);
    // Stop once some parts are committed and more are to come.
    for (int i = 0; i < 2000; ++i) {
      HttpResponse res = server->client().Get(status);
      ASSERT_EQ(res.status, 202) << "finished before the stop; slow the worker down";
      if (res.Header("x-progress").find(" 0 resources") == std::string::npos &&
          res.Header("x-progress").rfind("1 of", 0) == 0) {
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  server->Stop();

  absl::StatusOr<std::unique_ptr<app::App>> again = app::App::Start(config);
  ASSERT_TRUE(again.ok()) << again.status();
  {
    HttpClient client((*again)->port());
    ExportClient ex(client);
    HttpResponse manifest = ex.Wait(status);
    Download resumed = ex.Fetch(manifest);
    ASSERT_EQ(resumed.files.size(), reference.files.size());
    for (std::size_t i = 0; i < resumed.files.size(); ++i) {
      const std::string& a = reference.files[i].first;
      const std::string& b = resumed.files[i].first;
      EXPECT_EQ(a.substr(a.rfind('/')), b.substr(b.rfind('/')));
      EXPECT_TRUE(resumed.files[i].second == reference.files[i].second) << "file " << b << " differs";
    }
  }
  (*again)->Stop();
  again->reset();
  server.reset();
  std::filesystem::remove_all(config.export_dir);
}

}  // namespace
}  // namespace medgrid::testing
