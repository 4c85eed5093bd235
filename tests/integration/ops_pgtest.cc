// Ops endpoints and the admin API: /livez, /readyz (503 when no shard is
// reachable), /metrics, /admin/tenants and /admin/shards, and a search
// timeout answered 504.
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "pqxx/pqxx"

namespace medgrid::testing {
namespace {

TEST(Ops, LivezReadyzMetrics) {
  TestServer server("ops", {"t1"});
  HttpClient& c = server.client();
  EXPECT_EQ(c.Get("/livez").status, 200);
  auto ready = c.Get("/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.Json().at("shards_reachable").as_int64(), 2);

  ASSERT_EQ(c.Put("/fhir/t1/Patient/m1", R"({"resourceType":"Patient","id":"m1"})").status, 201);
  ASSERT_EQ(c.Get("/fhir/t1/Patient/m1").status, 200);
  ASSERT_EQ(c.Get("/fhir/t1/Patient/m2").status, 404);
  auto metrics = c.Get("/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.Header("Content-Type").find("text/plain"), std::string::npos);
  const std::string& m = metrics.body;
  EXPECT_NE(m.find("# TYPE http_server_request_duration_seconds histogram"), std::string::npos);
  // Labelled by route template and status, never by concrete id.
  EXPECT_NE(m.find(R"(http_route="/fhir/{tenant}/{type}/{id}")"), std::string::npos);
  EXPECT_NE(m.find(R"(http_response_status_code="404")"), std::string::npos);
  EXPECT_EQ(m.find("m1"), std::string::npos);
  EXPECT_NE(m.find(R"(medgrid_db_pool_connections{shard=")"), std::string::npos);
  EXPECT_NE(m.find(R"(state="max"} 8)"), std::string::npos);
  // The read above went through a non-blocking connection of an I/O thread.
  EXPECT_NE(m.find(R"(state="async_open"} 1)"), std::string::npos) << m;
}

TEST(Ops, AdminApi) {
  TestServer server("admin", {});
  HttpClient& c = server.client();
  auto post = [&](const std::string& body) {
    return c.Send("POST", "/admin/tenants", body, {{"Content-Type", "application/json"}});
  };
  auto created = post(R"({"id":"acme","region":"us"})");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.Json().at("region").as_string(), "us");
  EXPECT_EQ(created.Header("Location"), "/admin/tenants/acme");
  ASSERT_EQ(post(R"({"id":"beta"})").status, 201);
  EXPECT_EQ(post(R"({"id":"acme"})").status, 409);
  EXPECT_EQ(post(R"({"id":"Bad Tenant"})").status, 400);
  EXPECT_EQ(post(R"({"id":"ok","color":"red"})").status, 400);
  EXPECT_EQ(post("not json").status, 400);
  EXPECT_EQ(c.Delete("/admin/tenants").status, 405);

  auto tenants = c.Get("/admin/tenants").Json().at("tenants").as_array();
  ASSERT_EQ(tenants.size(), 2u);
  // Least-loaded placement spreads the two tenants over the two shards.
  EXPECT_NE(tenants[0].at("shard").as_string(), tenants[1].at("shard").as_string());

  auto shards = c.Get("/admin/shards").Json().at("shards").as_array();
  ASSERT_EQ(shards.size(), 2u);
  EXPECT_EQ(shards[0].at("tenants").as_int64() + shards[1].at("tenants").as_int64(), 2);
  EXPECT_EQ(c.Get("/admin/nothing").status, 404);
}

TEST(Ops, ReadyzIs503WhenNoShardIsReachable) {
  app::AppConfig config = TestServer::BaseConfig("readyz");
  {
    // A first instance creates the databases; then every shard is pointed
    // at a port where nothing listens and a second instance starts.
    TestServer again("readyz", {"t1"}, config);
    pqxx::connection conn(TestServer::Dsn(config.store.control_db));
    pqxx::work tx(conn);
    tx.exec("UPDATE shards SET primary_dsn = 'host=127.0.0.1 port=1 user=postgres dbname=nope connect_timeout=2'");
    tx.commit();
    again.Stop();

    app::AppConfig broken = config;
    broken.store.admin_dsn.clear();
    broken.store.control_dsn = TestServer::Dsn(config.store.control_db);
    broken.store.acquire_timeout = std::chrono::milliseconds(2000);
    auto app = app::App::Start(broken);
    ASSERT_TRUE(app.ok()) << app.status();
    HttpClient c((*app)->port());
    EXPECT_EQ(c.Get("/livez").status, 200);
    EXPECT_EQ(c.Get("/readyz").status, 503);
    auto read = c.Get("/fhir/t1/Patient/x");
    EXPECT_EQ(read.status, 503);
    EXPECT_EQ(read.IssueCode(), "transient");
    (*app)->Stop();
  }
}

// After the database drops every connection (a restart, a failover, an
// operator's pg_terminate_backend), reads and creates carry on without an
// error: a broken connection is replaced and the work sent again. Other
// writes may answer 503 once per dead pooled connection, never 500, and
// lose nothing that was acknowledged.
TEST(Ops, RecoversWhenTheDatabaseDropsConnections) {
  TestServer server("reconnect", {"t1"});
  HttpClient& c = server.client();
  ASSERT_EQ(c.Put("/fhir/t1/Patient/r1", R"({"resourceType":"Patient","id":"r1"})").status, 201);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(c.Get("/fhir/t1/Patient/r1").status, 200);
  ASSERT_EQ(c.Get("/fhir/t1/Patient/r1/_history").status, 200);

  pqxx::connection admin(TestServer::Dsn("postgres"));
  pqxx::nontransaction tx(admin);
  std::vector<std::string> dbs = server.config().store.bootstrap_shards;
  dbs.push_back(server.config().store.control_db);
  int killed = 0;
  for (const std::string& db : dbs) {
    pqxx::result r = tx.exec_params(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        db);
    killed += r[0][0].as<int>();
  }
  ASSERT_GT(killed, 2);

  for (int i = 0; i < 40; ++i) {
    auto res = c.Get("/fhir/t1/Patient/r1");
    ASSERT_EQ(res.status, 200) << "read " << i << ": " << res.body;
  }
  EXPECT_EQ(c.Get("/fhir/t1/Patient/r1/_history").status, 200);
  for (int i = 0; i < 10; ++i) {
    auto res = c.Post("/fhir/t1/Patient", R"({"resourceType":"Patient"})");
    ASSERT_EQ(res.status, 201) << "create " << i << ": " << res.body;
  }
  int transient = 0;
  int version = 1;
  for (int i = 0; i < 5; ++i) {
    auto res = c.Put("/fhir/t1/Patient/r1", R"({"resourceType":"Patient","id":"r1","active":true})");
    if (res.status == 503) {
      EXPECT_EQ(res.IssueCode(), "transient");
      ++transient;
      continue;
    }
    ASSERT_EQ(res.status, 200) << res.body;
    ++version;
  }
  EXPECT_LE(transient, server.config().store.pool_size);
  EXPECT_EQ(c.Get("/fhir/t1/Patient/r1").Json().at("meta").at("versionId").as_string(), std::to_string(version));
}

}  // namespace
}  // namespace medgrid::testing

namespace medgrid::testing {
namespace {

// A search that outlives the statement timeout is a 504 with an
// OperationOutcome, never a 500, and the server keeps serving.
TEST(Ops, SearchTimeoutIs504) {
  app::AppConfig config = TestServer::BaseConfig("search_timeout");
  config.store.statement_timeout = std::chrono::milliseconds(300);
  TestServer server("search_timeout", {"t1"}, config);
  ASSERT_EQ(server.client().Put("/fhir/t1/Patient/a", R"({"resourceType":"Patient","id":"a","gender":"male"})").status,
            201);
  {
    // Hold a lock that the search has to wait for, on every shard.
    std::vector<std::unique_ptr<pqxx::connection>> conns;
    std::vector<std::unique_ptr<pqxx::work>> locks;
    for (const std::string& db : config.store.bootstrap_shards) {
      conns.push_back(std::make_unique<pqxx::connection>(TestServer::Dsn(db)));
      locks.push_back(std::make_unique<pqxx::work>(*conns.back()));
      locks.back()->exec("LOCK TABLE idx_token IN ACCESS EXCLUSIVE MODE");
    }
    auto res = server.client().Get("/fhir/t1/Patient?gender=male");
    EXPECT_EQ(res.status, 504) << res.body;
    EXPECT_EQ(res.Json().at("resourceType").as_string(), "OperationOutcome");
    EXPECT_EQ(res.IssueCode(), "timeout");
  }
  auto after = server.client().Get("/fhir/t1/Patient?gender=male");
  EXPECT_EQ(after.status, 200) << after.body;
}

}  // namespace
}  // namespace medgrid::testing
