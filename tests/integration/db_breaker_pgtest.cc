// The shard breaker end to end: the shard's PostgreSQL (a server of the
// test's own, started and stopped with deploy/local/lib.sh) stops under a
// running server and comes back.
//
// While it is down requests get 503, reads after being tried again
// (DatabaseReadPolicy within the shard's read retry budget, counted in
// medgrid_db_read_retries_total); once the shard's breaker has seen its
// threshold of connection failures it opens (medgrid_circuit_breaker_state
// {dependency="db:<shard>"} 1) and requests are refused at once with 503,
// Retry-After and a transient OperationOutcome. When the server is back and
// the open time has passed, a probe succeeds, the breaker closes (gauge 0)
// and reads and writes work again.
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "integration/receiver.h"
#include "medgrid/core/strings.h"

namespace medgrid::testing {
namespace {

std::string PatientJson(const std::string& id) {
  return core::StrCat(R"({"resourceType":"Patient","id":")", id, R"("})");
}

// The value of `series` ("name{labels}") in /metrics; -1 when absent.
double Series(HttpClient& http, const std::string& name_and_labels) {
  const std::string series = core::StrCat(name_and_labels, " ");
  const std::string body = http.Get("/metrics").body;
  const std::size_t at = body.find(series);
  return at == std::string::npos ? -1 : std::stod(body.substr(at + series.size()));
}

// The value of the shard's breaker gauge in /metrics; -1 when absent.
double BreakerGauge(HttpClient& http, const std::string& shard) {
  return Series(http, core::StrCat(R"(medgrid_circuit_breaker_state{dependency="db:)", shard, R"("})"));
}

void ExpectRefused(const HttpResponse& r, const std::string& shard) {
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.IssueCode(), "transient") << r.body;
  EXPECT_NE(r.Diagnostics().find(core::StrCat("Database shard ", shard, " is unavailable")), std::string::npos)
      << r.body;
  ASSERT_TRUE(r.headers.contains("retry-after")) << r.body;
  EXPECT_GE(std::stoi(r.headers.at("retry-after")), 1);
}

TEST(DbBreaker, StoppedShardOpensItsBreakerAndRestartedShardClosesIt) {
  OwnPostgres pg;
  app::AppConfig c = TestServer::BaseConfig("dbbreaker");
  c.store.admin_dsn = pg.Dsn();
  const std::string shard = c.store.bootstrap_shards.front();
  c.store.bootstrap_shards = {shard};
  c.store.shard_breaker.failure_threshold = 3;
  c.store.shard_breaker.open_timeout = std::chrono::seconds(1);
  c.store.shard_breaker.success_threshold = 1;
  TestServer server("dbbreaker", {"t1"}, c);
  HttpClient& http = server.client();
  ASSERT_EQ(http.Put("/fhir/t1/Patient/a", PatientJson("a")).status, 201);
  ASSERT_EQ(http.Get("/fhir/t1/Patient/a").status, 200);
  // A read of nothing is an answer from the server: it leaves it closed.
  for (int i = 0; i < 5; ++i) ASSERT_EQ(http.Get("/fhir/t1/Patient/missing").status, 404);
  EXPECT_EQ(BreakerGauge(http, shard), 0);
  const std::string retries = core::StrCat(R"(medgrid_db_read_retries_total{shard=")", shard, R"("})");
  EXPECT_EQ(Series(http, retries), 0);

  ASSERT_TRUE(pg.Run("pg_stop"));
  // Reads below ask for ids never read before: a read served from the
  // process's read cache would not reach the database.
  HttpResponse first = http.Get("/fhir/t1/Patient/r0");
  EXPECT_EQ(first.status, 503) << first.body;
  EXPECT_EQ(first.IssueCode(), "transient") << first.body;
  // The read by id (the non-blocking path) was sent again before the 503:
  // the breaker (threshold 3) was still closed after its first failure.
  EXPECT_GE(Series(http, retries), 1);
  // Each failed request counts at least once toward the threshold of 3.
  for (int i = 0; i < 3 && BreakerGauge(http, shard) != 1; ++i) {
    EXPECT_EQ(http.Get(core::StrCat("/fhir/t1/Patient?_id=x", i)).status, 503);
  }
  ASSERT_EQ(BreakerGauge(http, shard), 1);
  // Open: reads by id (the non-blocking path), searches and writes (the
  // blocking pool) are refused at once.
  ExpectRefused(http.Get("/fhir/t1/Patient/r1"), shard);
  ExpectRefused(http.Get("/fhir/t1/Patient?_id=a"), shard);
  ExpectRefused(http.Put("/fhir/t1/Patient/b", PatientJson("b")), shard);

  ASSERT_TRUE(pg.Run("pg_start"));
  // After the open time a request is the probe; success closes the breaker.
  EXPECT_TRUE(WaitFor([&] { return http.Get("/fhir/t1/Patient?_id=a").status == 200; }, std::chrono::seconds(30)));
  EXPECT_EQ(BreakerGauge(http, shard), 0);
  EXPECT_EQ(http.Put("/fhir/t1/Patient/b", PatientJson("b")).status, 201);
  EXPECT_EQ(http.Get("/fhir/t1/Patient/b").status, 200);
  EXPECT_EQ(http.Get("/fhir/t1/Patient/r1").status, 404);
}

}  // namespace
}  // namespace medgrid::testing
