// Service bulkheads on the running server: with the instance's capacity
// taken by critical writes that wait on a row lock, standard work (type
// history) and ai work are shed with 503, Retry-After and an
// OperationOutcome, while critical reads and writes are still served; the
// refusals are counted in /metrics, and once the load is gone the same
// requests succeed.
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

  // Hold the row lock of Patient/held on whichever shard has it, so that
  // updates of it wait inside the server.
  std::vector<std::unique_ptr<pqxx::connection>> conns;
  std::vector<std::unique_ptr<pqxx::work>> locks;
  int locked = 0;
  for (const std::string& shard : c.store.bootstrap_shards) {
    conns.push_back(std::make_unique<pqxx::connection>(TestServer::Dsn(shard)));
    locks.push_back(std::make_unique<pqxx::work>(*conns.back()));
    locked += static_cast<int>(
        locks.back()
            ->exec("SELECT 1 FROM resources WHERE tenant_id = 't1' AND res_type = 'Patient' AND res_id = 'held' "
                   "FOR UPDATE")
            .size());
  }
  ASSERT_EQ(locked, 1);

  constexpr int kHeld = 5;
  std::vector<int> statuses(kHeld, 0);
  std::vector<std::thread> writers;
  for (int i = 0; i < kHeld; ++i) {
    writers.emplace_back([&, i] {
      HttpClient own(server.port());
      statuses[i] = own.Put("/fhir/t1/Patient/held", patient).status;
    });
  }
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

  for (auto& lock : locks) lock->commit();
  for (auto& t : writers) t.join();
  for (int s : statuses) EXPECT_EQ(s, 200);

  EXPECT_EQ(Metric(client, R"(medgrid_bulkhead_rejections_total{pool="standard"})"), 1);
  EXPECT_EQ(Metric(client, R"(medgrid_bulkhead_rejections_total{pool="ai"})"), 1);
  EXPECT_EQ(Metric(client, R"(medgrid_bulkhead_in_flight{pool="critical"})"), 0);
  // With the load gone, standard work is served again.
  EXPECT_EQ(client.Get("/fhir/t1/Patient/_history").status, 200);
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
