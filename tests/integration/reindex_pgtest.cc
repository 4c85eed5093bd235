// Custom SearchParameter resources and the online $reindex: a tenant's own
// parameter is searchable as soon as it is stored, new writes are indexed
// with it, $reindex indexes what was stored before, progress is reported,
// a job survives a restart, and other tenants never see the parameter.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/store/migrations.h"
#include "pqxx/pqxx"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

constexpr const char* kEyeColor =
    R"({"resourceType":"SearchParameter","url":"http://example.org/sp/eye-color","name":"EyeColor",)"
    R"("status":"active","description":"Eye colour","code":"eye-color","base":["Patient"],"type":"token",)"
    R"("expression":"Patient.extension('http://example.org/eye-color').value"})";

std::string PatientWithEyes(int i, const std::string& color) {
  return R"({"resourceType":"Patient","id":"p)" + std::to_string(i) +
         R"(","extension":[{"url":"http://example.org/eye-color","valueCode":")" + color +
         R"("}],"name":[{"family":"Eyes)" + std::to_string(i) + R"("}]})";
}

int64_t Part(const json::value& job, std::string_view name) {
  for (const json::value& p : job.at("part").as_array()) {
    if (p.at("name").as_string() != name) continue;
    const json::object& o = p.as_object();
    for (const char* key : {"valueInteger", "valueDecimal"}) {
      if (const json::value* v = o.if_contains(key)) return v->to_number<int64_t>();
    }
  }
  return -1;
}

std::string Status(const json::value& job) {
  for (const json::value& p : job.at("part").as_array()) {
    if (p.at("name").as_string() == "status") return std::string(p.at("valueCode").as_string());
  }
  return "";
}

// The newest job of the tenant, polled until `until` holds or 60 s pass.
json::value WaitForJob(HttpClient& c, const std::string& tenant, const std::function<bool(const json::value&)>& until) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  json::value job;
  while (std::chrono::steady_clock::now() < deadline) {
    auto res = c.Get("/fhir/" + tenant + "/$reindex");
    EXPECT_EQ(res.status, 200) << res.body;
    job = res.Json().at("parameter").at(0);
    if (until(job)) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ADD_FAILURE() << "reindex job did not reach the expected state: " << json::serialize(job);
  return job;
}

std::size_t Count(HttpClient& c, const std::string& target) {
  auto res = c.Get(target);
  EXPECT_EQ(res.status, 200) << target << ": " << res.body;
  return static_cast<std::size_t>(res.Json().at("total").as_int64());
}

TEST(Reindex, CustomParameterIsSearchableAndReindexBringsOldResourcesIn) {
  TestServer server("reindex", {"t1", "t2"});
  HttpClient& c = server.client();
  for (int i = 0; i < 30; ++i) ASSERT_EQ(c.Put("/fhir/t1/Patient/p" + std::to_string(i), PatientWithEyes(i, i % 3 == 0 ? "blue" : "brown")).status, 201);
  ASSERT_EQ(c.Put("/fhir/t2/Patient/p0", PatientWithEyes(0, "blue")).status, 201);

  // Unknown until defined.
  EXPECT_EQ(c.Get("/fhir/t1/Patient?eye-color=blue").status, 400);
  auto sp = c.Post("/fhir/t1/SearchParameter", kEyeColor);
  ASSERT_EQ(sp.status, 201) << sp.body;
  // Known at once; resources stored before are not indexed yet.
  EXPECT_EQ(Count(c, "/fhir/t1/Patient?eye-color=blue&_total=accurate"), 0u);
  // New writes are indexed with it.
  ASSERT_EQ(c.Put("/fhir/t1/Patient/p100", PatientWithEyes(100, "blue")).status, 201);
  EXPECT_EQ(Count(c, "/fhir/t1/Patient?eye-color=blue&_total=accurate"), 1u);

  auto started = c.Post("/fhir/t1/$reindex", "");
  ASSERT_EQ(started.status, 202) << started.body;
  // Every live resource: 31 Patients and the SearchParameter.
  EXPECT_EQ(Part(started.Json().at("parameter").at(0), "total"), 32);
  json::value done = WaitForJob(c, "t1", [](const json::value& j) { return Status(j) == "done"; });
  EXPECT_EQ(Part(done, "processed"), 32);
  EXPECT_EQ(Count(c, "/fhir/t1/Patient?eye-color=blue&_total=accurate"), 11u);
  EXPECT_EQ(Count(c, "/fhir/t1/Patient?eye-color=brown&_total=accurate"), 20u);
  // Reindexing left the standard parameters as they were.
  EXPECT_EQ(Count(c, "/fhir/t1/Patient?family=eyes1&_total=accurate"), 12u);  // Eyes1, Eyes10..19, Eyes100

  // Another tenant does not have the parameter.
  auto other = c.Get("/fhir/t2/Patient?eye-color=blue");
  EXPECT_EQ(other.status, 400);
  EXPECT_NE(other.Diagnostics().find("eye-color"), std::string::npos) << other.body;
  EXPECT_EQ(c.Get("/fhir/t2/$reindex").Json().as_object().if_contains("parameter")->as_array().size(), 0u);

  // Retiring it makes it unknown again.
  json::value retired = json::parse(sp.body);
  retired.as_object()["status"] = "retired";
  const std::string id(retired.at("id").as_string());
  ASSERT_EQ(c.Put("/fhir/t1/SearchParameter/" + id, json::serialize(retired)).status, 200);
  EXPECT_EQ(c.Get("/fhir/t1/Patient?eye-color=blue").status, 400);
}

TEST(Reindex, UnusableSearchParametersAreRefused) {
  TestServer server("reindex_bad", {"t1"});
  HttpClient& c = server.client();
  auto with = [](std::string_view field, std::string_view value) {
    json::value sp = json::parse(kEyeColor);
    sp.as_object()[field] = json::parse(value);
    return json::serialize(sp);
  };
  struct Case {
    std::string body;
    std::string says;
  };
  for (const Case& bad : {Case{with("expression", R"("Patient.extension(")"), "SearchParameter"},
                          Case{with("type", R"("special")"), "special"},
                          Case{with("code", R"("name")"), "already has"},
                          Case{with("base", R"(["Spaceship"])"), "Spaceship"},
                          Case{with("code", R"("_secret")"), "_secret"}}) {
    auto res = c.Post("/fhir/t1/SearchParameter", bad.body);
    EXPECT_EQ(res.status, 400) << bad.body;
    EXPECT_NE(res.Diagnostics().find(bad.says), std::string::npos) << res.body;
  }
  // A retired one is stored as it is: it is not used.
  EXPECT_EQ(c.Post("/fhir/t1/SearchParameter", with("type", R"("special")").replace(
                                                   with("type", R"("special")").find("active"), 6, "retired"))
                .status,
            201);
}

TEST(Reindex, JobSurvivesARestart) {
  app::AppConfig config = TestServer::BaseConfig("reindex_restart");
  config.reindex.batch = 1;
  config.reindex.lease = std::chrono::seconds(1);
  config.reindex.idle_poll = std::chrono::milliseconds(50);
  TestServer first("reindex_restart", {"t1"}, config);
  constexpr int kPatients = 400;
  for (int i = 0; i < kPatients; ++i) {
    ASSERT_EQ(first.client().Put("/fhir/t1/Patient/p" + std::to_string(i), PatientWithEyes(i, "green")).status, 201);
  }
  ASSERT_EQ(first.client().Post("/fhir/t1/SearchParameter", kEyeColor).status, 201);
  ASSERT_EQ(first.client().Post("/fhir/t1/$reindex", "").status, 202);
  json::value partway = WaitForJob(first.client(), "t1", [](const json::value& j) { return Part(j, "processed") > 0; });
  first.Stop();
  ASSERT_EQ(Status(partway), "running") << "the job finished before the restart; make it longer";

  // A new instance on the same databases takes the job over once the
  // first one's lease has run out, and finishes it.
  auto second = app::App::Start(config);
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient c((*second)->port());
  json::value stopped_at = WaitForJob(c, "t1", [](const json::value&) { return true; });
  EXPECT_LT(Part(stopped_at, "processed"), kPatients);
  json::value done = WaitForJob(c, "t1", [](const json::value& j) { return Status(j) == "done"; });
  EXPECT_EQ(Part(done, "processed"), kPatients + 1);  // and the SearchParameter
  EXPECT_EQ(Count(c, "/fhir/t1/Patient?eye-color=green&_total=accurate"), static_cast<std::size_t>(kPatients));
  (*second)->Stop();
}

// Resources stored by a version without search indexes are indexed after
// the upgrade, without anyone asking: the migration that adds reindex jobs
// starts one for every tenant that has resources.
TEST(Reindex, UpgradeIndexesWhatWasStoredBefore) {
  app::AppConfig config = TestServer::BaseConfig("reindex_upgrade");
  {
    pqxx::connection admin(TestServer::Dsn("postgres"));
    pqxx::nontransaction tx(admin);
    // Both shards, since the tenant lands on either.
    for (const std::string& db : config.store.bootstrap_shards) {
      tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(db) + " WITH (FORCE)");
      tx.exec("CREATE DATABASE " + tx.quote_name(db));
      pqxx::connection shard(TestServer::Dsn(db));
      pqxx::work w(shard);
      w.exec(
          "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL, "
          "applied_at timestamptz NOT NULL DEFAULT now())");
      w.exec(store::ShardMigrations().front().sql);
      w.exec("INSERT INTO schema_migrations (version, name) VALUES (1, 'resources and versions')");
      for (int i = 0; i < 3; ++i) {
        const std::string id = "old" + std::to_string(i);
        w.exec_params("INSERT INTO resources VALUES ('t1', 'Patient', $1, 1, false, now())", id);
        w.exec_params(
            "INSERT INTO resource_versions (tenant_id, res_type, res_id, version_id, method, deleted, last_updated, "
            "body) VALUES ('t1', 'Patient', $1, 1, 'PUT', false, now(), $2)",
            id, R"({"resourceType":"Patient","id":")" + id + R"(","gender":"female"})");
      }
      w.commit();
    }
  }
  TestServer server("reindex_upgrade", {"t1"}, config);
  json::value done = WaitForJob(server.client(), "t1", [](const json::value& j) { return Status(j) == "done"; });
  EXPECT_EQ(Part(done, "processed"), 3);
  EXPECT_EQ(Count(server.client(), "/fhir/t1/Patient?gender=female&_total=accurate"), 3u);
}

}  // namespace
}  // namespace medgrid::testing
