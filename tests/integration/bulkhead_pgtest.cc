// Bulkheads on the running server.
//
// Service pools: with the instance's capacity taken by critical writes that
// wait on a row lock, standard work (type history) and ai work are shed
// with 503, Retry-After and an OperationOutcome, while critical reads and
// writes are still served; the refusals are counted in /metrics, and once
// the load is gone the same requests succeed.
//
// Each tenant's database connections per shard (the seed's 20): beyond its
// cap a tenant waits for its own places, then is refused, while the other
// tenants of its shard are served.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/gateway/gateway.h"
#include "pqxx/pqxx"

namespace medgrid::testing {
namespace {

// The value of the metric line starting with `series`, or -1.
double Metric(HttpClient& client, const std::string& series) {
  HttpResponse res = client.Get("/metrics");
  size_t at = res.body.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  at += series.size() + 2;
  return std::stod(res.body.substr(at, res.body.find('\n', at) - at));
}

// Holds the row lock of `type`/`id` of `tenant` on whichever shard has it,
// so that updates of it wait inside the server holding their connection.
class RowLock {
 public:
  RowLock(const app::AppConfig& c, const std::string& tenant, const std::string& type, const std::string& id) {
    int locked = 0;
    for (const std::string& shard : c.store.bootstrap_shards) {
      conns_.push_back(std::make_unique<pqxx::connection>(TestServer::Dsn(shard)));
      locks_.push_back(std::make_unique<pqxx::work>(*conns_.back()));
      locked += static_cast<int>(locks_.back()
                                     ->exec_params("SELECT 1 FROM resources WHERE tenant_id = $1 AND res_type = $2 "
                                                   "AND res_id = $3 FOR UPDATE",
                                                   tenant, type, id)
                                     .size());
    }
    EXPECT_EQ(locked, 1);
  }
  void Release() {
    for (auto& lock : locks_) lock->commit();
    locks_.clear();
  }
  // Starts `n` clients updating the locked Patient of t1 with `body`: they
  // wait on the lock, each holding a database connection; their statuses
  // land in `statuses` when the lock is gone and the threads are joined.
  static std::vector<std::thread> UpdateLocked(const TestServer& server, int n, const std::string& body,
                                               std::vector<int>& statuses) {
    statuses.assign(n, 0);
    std::vector<std::thread> writers;
    for (int i = 0; i < n; ++i) {
      writers.emplace_back([port = server.port(), &body, &statuses, i] {
        HttpClient own(port);
        statuses[i] = own.Put("/fhir/t1/Patient/held", body).status;
      });
    }
    return writers;
  }

 private:
  std::vector<std::unique_ptr<pqxx::connection>> conns_;
  std::vector<std::unique_ptr<pqxx::work>> locks_;
};

TEST(Bulkhead, StandardAndAiWorkIsShedFirstAndCriticalReadsAreServed) {
  app::AppConfig c = TestServer::BaseConfig("bulkhead");
  c.service_pools.capacity = 10;
  c.service_pools.shed_fraction = 0.5;  // shed standard and ai work from 5 in flight
  c.http.worker_threads = 8;
  TestServer server("bulkhead", {"t1"}, c);
  HttpClient& client = server.client();
  const std::string patient = R"({"resourceType":"Patient","id":"held","active":true})";
  ASSERT_EQ(client.Put("/fhir/t1/Patient/held", patient).status, 201);
  ASSERT_EQ(client.Put("/fhir/t1/Patient/free", R"({"resourceType":"Patient","id":"free"})").status, 201);
  ASSERT_EQ(client.Get("/fhir/t1/Patient/_history").status, 200);

  RowLock lock(c, "t1", "Patient", "held");

  constexpr int kHeld = 5;
  std::vector<int> statuses;
  std::vector<std::thread> writers = RowLock::UpdateLocked(server, kHeld, patient, statuses);
  for (int i = 0; i < 500 && Metric(client, R"(medgrid_bulkhead_in_flight{pool="critical"})") < kHeld; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(Metric(client, R"(medgrid_bulkhead_in_flight{pool="critical"})"), kHeld);

  HttpResponse history = client.Get("/fhir/t1/Patient/_history");
  EXPECT_EQ(history.status, 503) << history.body;
  EXPECT_EQ(history.Header("Retry-After"), "1");
  EXPECT_EQ(history.IssueCode(), "transient");
  EXPECT_NE(history.Diagnostics().find("standard"), std::string::npos) << history.Diagnostics();
  HttpResponse ai = client.Post("/fhir/t1/$ai-summary", "{}");
  EXPECT_EQ(ai.status, 503) << ai.body;
  EXPECT_EQ(ai.IssueCode(), "transient");
  // Critical reads (by id, search) and writes still get through.
  EXPECT_EQ(client.Get("/fhir/t1/Patient/free").status, 200);
  EXPECT_EQ(client.Get("/fhir/t1/Patient?_id=free").status, 200);
  EXPECT_EQ(client.Post("/fhir/t1/Patient", R"({"resourceType":"Patient"})").status, 201);
  // The ops endpoints and the admin API are never shed.
  EXPECT_EQ(client.Get("/livez").status, 200);
  EXPECT_EQ(client.Get("/admin/tenants").status, 200);

  lock.Release();
  for (auto& t : writers) t.join();
  for (int s : statuses) EXPECT_EQ(s, 200);

  EXPECT_EQ(Metric(client, R"(medgrid_bulkhead_rejections_total{pool="standard"})"), 1);
  EXPECT_EQ(Metric(client, R"(medgrid_bulkhead_rejections_total{pool="ai"})"), 1);
  EXPECT_EQ(Metric(client, R"(medgrid_bulkhead_in_flight{pool="critical"})"), 0);
  // With the load gone, standard work is served again.
  EXPECT_EQ(client.Get("/fhir/t1/Patient/_history").status, 200);
}

// A tenant's requests hold at most the cap of its shard's connections: with
// two of them waiting on a row lock, its other work on that shard, on both
// the blocking path (an update, a search) and the non-blocking one (a read
// by id, a create), is refused with 503, Retry-After and an
// OperationOutcome, while another tenant of the same shard is served; the
// refusals are counted, and once the lock is gone the tenant is served
// again.
TEST(Bulkhead, ATenantAtItsDatabaseCapIsRefusedWhileAnotherTenantOfItsShardIsServed) {
  app::AppConfig c = TestServer::BaseConfig("dbtenant");
  c.cache_enabled = false;  // every read reaches the database
  c.store.tenant_connections = 2;
  c.store.tenant_connection_wait = std::chrono::milliseconds(0);
  c.http.worker_threads = 8;
  TestServer server("dbtenant", {"t1", "t2", "t3"}, c);
  HttpClient& client = server.client();
  const std::string shard = ShardOf(client, "t1");
  ASSERT_EQ(ShardOf(client, "t3"), shard);
  const std::string patient = R"({"resourceType":"Patient","id":"held","active":true})";
  ASSERT_EQ(client.Put("/fhir/t1/Patient/held", patient).status, 201);
  ASSERT_EQ(client.Put("/fhir/t1/Patient/free", R"({"resourceType":"Patient","id":"free"})").status, 201);
  ASSERT_EQ(client.Put("/fhir/t3/Patient/other", R"({"resourceType":"Patient","id":"other"})").status, 201);
  ASSERT_EQ(client.Get("/fhir/t1/Patient/free").status, 200);
  const std::string tenant_max = R"(medgrid_db_pool_connections{shard=")" + shard + R"(",state="tenant_max"})";
  const std::string rejections = R"(medgrid_bulkhead_rejections_total{pool="db_tenant"})";
  EXPECT_EQ(Metric(client, tenant_max), 0);
  EXPECT_EQ(Metric(client, R"(medgrid_db_pool_connections{shard=")" + shard + R"(",state="tenant_limit"})"), 2);
  EXPECT_EQ(Metric(client, rejections), 0);

  RowLock lock(c, "t1", "Patient", "held");
  constexpr int kHeld = 2;
  std::vector<int> statuses;
  std::vector<std::thread> writers = RowLock::UpdateLocked(server, kHeld, patient, statuses);
  for (int i = 0; i < 500 && Metric(client, tenant_max) < kHeld; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(Metric(client, tenant_max), kHeld);

  auto expect_refused = [](const HttpResponse& res, const std::string& what) {
    EXPECT_EQ(res.status, 503) << what << ": " << res.body;
    EXPECT_EQ(res.Header("Retry-After"), "1") << what;
    EXPECT_EQ(res.IssueCode(), "transient") << what;
    EXPECT_NE(res.Diagnostics().find("per-tenant limit"), std::string::npos) << what << ": " << res.Diagnostics();
  };
  expect_refused(client.Put("/fhir/t1/Patient/free", R"({"resourceType":"Patient","id":"free","active":true})"),
                 "update");
  expect_refused(client.Get("/fhir/t1/Patient?_id=free"), "search");
  expect_refused(client.Get("/fhir/t1/Patient/free"), "read by id");
  expect_refused(client.Post("/fhir/t1/Patient", R"({"resourceType":"Patient"})"), "create");
  EXPECT_EQ(Metric(client, rejections), 4);

  // Another tenant of the same shard, and a tenant of the other shard.
  EXPECT_EQ(client.Get("/fhir/t3/Patient/other").status, 200);
  EXPECT_EQ(client.Get("/fhir/t3/Patient?_id=other").status, 200);
  EXPECT_EQ(client.Put("/fhir/t3/Patient/other", R"({"resourceType":"Patient","id":"other","active":true})").status,
            200);
  EXPECT_EQ(client.Post("/fhir/t2/Patient", R"({"resourceType":"Patient"})").status, 201);
  EXPECT_EQ(Metric(client, rejections), 4);

  lock.Release();
  for (auto& t : writers) t.join();
  for (int s : statuses) EXPECT_EQ(s, 200);
  EXPECT_EQ(Metric(client, tenant_max), 0);
  EXPECT_EQ(client.Get("/fhir/t1/Patient/free").status, 200);
  EXPECT_EQ(client.Put("/fhir/t1/Patient/free", R"({"resourceType":"Patient","id":"free","active":true})").status,
            200);
}

// Within the cap's wait, a tenant's surplus work waits for one of its own
// places, on both paths, and is served once one frees up.
TEST(Bulkhead, ATenantsSurplusDatabaseWorkWaitsForItsPlaces) {
  app::AppConfig c = TestServer::BaseConfig("dbtenantwait");
  c.cache_enabled = false;
  c.store.tenant_connections = 1;
  c.store.tenant_connection_wait = std::chrono::milliseconds(60000);
  c.http.worker_threads = 8;
  TestServer server("dbtenantwait", {"t1", "t2"}, c);
  HttpClient& client = server.client();
  const std::string shard = ShardOf(client, "t1");
  const std::string patient = R"({"resourceType":"Patient","id":"held","active":true})";
  ASSERT_EQ(client.Put("/fhir/t1/Patient/held", patient).status, 201);
  ASSERT_EQ(client.Put("/fhir/t1/Patient/free", R"({"resourceType":"Patient","id":"free"})").status, 201);
  ASSERT_EQ(client.Get("/fhir/t1/Patient/free").status, 200);
  const std::string waiting = R"(medgrid_db_pool_connections{shard=")" + shard + R"(",state="tenant_waiting"})";

  RowLock lock(c, "t1", "Patient", "held");
  int held = 0;
  int read = 0;
  int updated = 0;
  std::thread writer([&] { held = HttpClient(server.port()).Put("/fhir/t1/Patient/held", patient).status; });
  for (int i = 0; i < 500 && Metric(client, R"(medgrid_db_pool_connections{shard=")" + shard +
                                                R"(",state="tenant_max"})") < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::thread reader([&] { read = HttpClient(server.port()).Get("/fhir/t1/Patient/free").status; });
  std::thread updater([&] {
    updated = HttpClient(server.port())
                  .Put("/fhir/t1/Patient/free", R"({"resourceType":"Patient","id":"free","active":true})")
                  .status;
  });
  for (int i = 0; i < 500 && Metric(client, waiting) < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Metric(client, waiting), 2);  // the read (non-blocking path) and the update (blocking)
  EXPECT_EQ(read, 0);
  EXPECT_EQ(updated, 0);
  lock.Release();
  writer.join();
  reader.join();
  updater.join();
  EXPECT_EQ(held, 200);
  EXPECT_EQ(read, 200);
  EXPECT_EQ(updated, 200);
  EXPECT_EQ(Metric(client, waiting), 0);
  EXPECT_EQ(Metric(client, R"(medgrid_bulkhead_rejections_total{pool="db_tenant"})"), 0);
}

TEST(Bulkhead, ClassifiesRequestsIntoTheServicePools) {
  using resilience::ServiceClass;
  struct Case {
    const char* method;
    const char* target;
    std::optional<gateway::RequestClass> want;
  };
  const Case cases[] = {
      {"GET", "/livez", std::nullopt},
      {"GET", "/metrics", std::nullopt},
      {"POST", "/admin/tenants", std::nullopt},
      {"GET", "/fhir/t1/Patient/1", gateway::RequestClass{ServiceClass::kCritical, true}},
      {"HEAD", "/fhir/t1/Patient/1/_history/2", gateway::RequestClass{ServiceClass::kCritical, true}},
      {"GET", "/fhir/t1/Observation?code=x", gateway::RequestClass{ServiceClass::kCritical, true}},
      {"POST", "/fhir/t1/Observation/_search", gateway::RequestClass{ServiceClass::kCritical, true}},
      {"GET", "/fhir/t1/Patient/1/_history", gateway::RequestClass{ServiceClass::kCritical, true}},
      {"PUT", "/fhir/t1/Patient/1", gateway::RequestClass{ServiceClass::kCritical, false}},
      {"POST", "/fhir/t1", gateway::RequestClass{ServiceClass::kCritical, false}},
      {"GET", "/fhir/t1/metadata", gateway::RequestClass{ServiceClass::kCritical, true}},
      {"GET", "/fhir/t1/_history", gateway::RequestClass{ServiceClass::kStandard, true}},
      {"GET", "/fhir/t1/Patient/_history?_count=5", gateway::RequestClass{ServiceClass::kStandard, true}},
      {"GET", "/fhir/t1/$export", gateway::RequestClass{ServiceClass::kStandard, true}},
      {"GET", "/fhir/t1/$export-status/abc", gateway::RequestClass{ServiceClass::kStandard, true}},
      {"DELETE", "/fhir/t1/%24export-status/abc", gateway::RequestClass{ServiceClass::kStandard, false}},
      {"POST", "/fhir/t1/$reindex", gateway::RequestClass{ServiceClass::kStandard, false}},
      {"GET", "/fhir/t1/Patient/1/$everything", gateway::RequestClass{ServiceClass::kStandard, false}},
      {"POST", "/fhir/t1/Patient/$ai-risk", gateway::RequestClass{ServiceClass::kAi, false}},
      {"POST", "/fhir/t1/Patient/$validate", gateway::RequestClass{ServiceClass::kCritical, false}},
  };
  for (const Case& tc : cases) {
    const std::optional<gateway::RequestClass> got = gateway::ClassifyRequest(tc.method, tc.target);
    ASSERT_EQ(got.has_value(), tc.want.has_value()) << tc.method << " " << tc.target;
    if (!got) continue;
    EXPECT_EQ(got->pool, tc.want->pool) << tc.method << " " << tc.target;
    EXPECT_EQ(got->read, tc.want->read) << tc.method << " " << tc.target;
  }
}

}  // namespace
}  // namespace medgrid::testing
