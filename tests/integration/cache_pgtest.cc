// The FHIR read cache on running servers, against real PostgreSQL and Redis:
// two instances on one Redis see each other's updates and deletions through
// the change stream and pub/sub; a client that knows a newer version never
// gets an older one from another instance's cache; tenants never share an
// entry (L1 or L2); a hot patient hammered by 64 clients costs about one
// database read per cache period; Redis killed mid-load never fails a read,
// opens the L2 breaker, and L2 is used again once Redis is back.
#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/core/strings.h"

namespace medgrid::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const char* TestRedis() {
  const char* redis = std::getenv("MEDGRID_TEST_REDIS");
  return redis != nullptr && *redis != '\0' ? redis : nullptr;
}

// The value of a series of /metrics ("name{labels}"), 0 when absent.
double Metric(HttpClient& http, const std::string& series) {
  const std::string body = "\n" + http.Get("/metrics").body;
  const std::size_t at = body.find("\n" + series + " ");
  return at == std::string::npos ? 0 : std::stod(body.substr(at + series.size() + 2));
}

// The sum of every series of `name` whose labels contain `label`.
double MetricSum(HttpClient& http, const std::string& name, const std::string& label) {
  double sum = 0;
  const std::string body = http.Get("/metrics").body;
  for (std::string_view line : core::StrSplit(body, '\n')) {
    if (!line.starts_with(name + "{") || line.find(label) == std::string_view::npos) continue;
    sum += std::stod(std::string(line.substr(line.rfind(' ') + 1)));
  }
  return sum;
}

const std::string kL1Hits = R"(medgrid_cache_requests_total{level="l1",result="hit"})";
const std::string kL2Hits = R"(medgrid_cache_requests_total{level="l2",result="hit"})";
const std::string kBackendReads = "medgrid_cache_backend_reads_total";
const std::string kBreaker = R"(medgrid_circuit_breaker_state{dependency="redis_cache"})";

std::string PatientJson(const std::string& id, const std::string& family) {
  return core::StrCat(R"({"resourceType":"Patient","id":")", id, R"(","name":[{"family":")", family, R"("}]})");
}

std::string Family(const HttpResponse& res) {
  return std::string(res.Json().at("name").at(0).at("family").as_string());
}

// Stops and joins test threads however the test ends.
struct Threads {
  std::atomic<bool>& stop;
  std::vector<std::thread> threads;
  ~Threads() {
    stop = true;
    for (auto& t : threads) {
      if (t.joinable()) t.join();
    }
  }
};

// Polls `check` every 20 ms until it is true or `limit` has passed.
template <typename Fn>
bool Eventually(Fn&& check, milliseconds limit = milliseconds(10000)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (check()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return check();
}

app::AppConfig RedisConfig(const std::string& name) {
  app::AppConfig c = TestServer::BaseConfig(name);
  c.redis = TestRedis();
  c.redis_prefix = c.store.control_db;  // this run's keys and channel only
  return c;
}

TEST(Cache, AnUpdateOrDeleteOnOneInstanceReachesTheOthersCache) {
  if (TestRedis() == nullptr) GTEST_SKIP() << "MEDGRID_TEST_REDIS is not set";
  TestServer a("cachexi", {"t1"}, RedisConfig("cachexi"));
  auto second = app::App::Start(a.config());
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient b((*second)->port());

  ASSERT_EQ(a.client().Put("/fhir/t1/Patient/p1", PatientJson("p1", "One")).status, 201);
  // B reads it twice: the second from its L1.
  ASSERT_EQ(b.Get("/fhir/t1/Patient/p1").status, 200);
  const double hits = Metric(b, kL1Hits);
  HttpResponse cached = b.Get("/fhir/t1/Patient/p1");
  ASSERT_EQ(cached.status, 200);
  EXPECT_EQ(Family(cached), "One");
  EXPECT_GT(Metric(b, kL1Hits), hits);

  ASSERT_EQ(a.client().Put("/fhir/t1/Patient/p1", PatientJson("p1", "Two")).status, 200);
  EXPECT_TRUE(Eventually([&] {
    HttpResponse res = b.Get("/fhir/t1/Patient/p1");
    return res.status == 200 && res.Header("ETag") == "W/\"2\"" && Family(res) == "Two";
  })) << "B still serves version 1";

  ASSERT_EQ(a.client().Delete("/fhir/t1/Patient/p1").status, 204);
  EXPECT_TRUE(Eventually([&] { return b.Get("/fhir/t1/Patient/p1").status == 410; })) << "B still serves it";
  // And it stays deleted on both (a tombstone, not an older body, is cached).
  EXPECT_EQ(b.Get("/fhir/t1/Patient/p1").status, 410);
  EXPECT_EQ(a.client().Get("/fhir/t1/Patient/p1").status, 410);
}

// A transaction Bundle's writes reach the cache before its response does,
// not only when the change stream gets to them.
TEST(Cache, ATransactionsWritesAreReadBackAtOnce) {
  TestServer a("cachebundle", {"t1"});
  HttpClient& http = a.client();
  ASSERT_EQ(http.Put("/fhir/t1/Patient/b1", PatientJson("b1", "Before")).status, 201);
  ASSERT_EQ(http.Put("/fhir/t1/Patient/b2", PatientJson("b2", "Doomed")).status, 201);
  ASSERT_EQ(Family(http.Get("/fhir/t1/Patient/b1")), "Before");  // cached
  ASSERT_EQ(http.Get("/fhir/t1/Patient/b2").status, 200);        // cached
  const std::string bundle = core::StrCat(
      R"({"resourceType":"Bundle","type":"transaction","entry":[)",
      R"({"resource":)", PatientJson("b1", "After"), R"(,"request":{"method":"PUT","url":"Patient/b1"}},)",
      R"({"request":{"method":"DELETE","url":"Patient/b2"}}]})");
  HttpResponse done = http.Post("/fhir/t1", bundle, {{"Prefer", "return=minimal"}});
  ASSERT_EQ(done.status, 200) << done.body;
  HttpResponse b1 = http.Get("/fhir/t1/Patient/b1");
  EXPECT_EQ(b1.Header("ETag"), "W/\"2\"");
  EXPECT_EQ(Family(b1), "After");
  EXPECT_EQ(http.Get("/fhir/t1/Patient/b2").status, 410);
}

TEST(Cache, AClientThatKnowsANewerVersionNeverGetsAnOlderOne) {
  if (TestRedis() == nullptr) GTEST_SKIP() << "MEDGRID_TEST_REDIS is not set";
  TestServer a("cacheryw", {"t1"}, RedisConfig("cacheryw"));
  // B shares the database but hears nothing from A: another Redis prefix
  // (no shared L2, no invalidations) and A's relays deliver the changes. Its
  // L1 keeps what it read for 60 s.
  app::AppConfig bc = a.config();
  bc.redis_prefix = bc.store.control_db + "-b";
  auto second = app::App::Start(bc);
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient b((*second)->port());

  ASSERT_EQ(a.client().Put("/fhir/t1/Patient/p1", PatientJson("p1", "v1")).status, 201);
  ASSERT_EQ(b.Get("/fhir/t1/Patient/p1").status, 200);  // B caches version 1
  for (int version = 2; version <= 6; ++version) {
    HttpResponse wrote = a.client().Put("/fhir/t1/Patient/p1", PatientJson("p1", core::StrCat("v", version)));
    ASSERT_EQ(wrote.status, 200);
    const std::string etag = wrote.Header("ETag");
    ASSERT_EQ(etag, core::StrCat("W/\"", version, "\""));
    // The client presents the version it wrote: B must not answer with its
    // cached older body (200, ETag W/"1"), only "not modified" (304).
    HttpResponse read = b.Get("/fhir/t1/Patient/p1", {{"If-None-Match", etag}});
    EXPECT_EQ(read.status, 304) << "version " << version << ": " << read.Header("ETag");
    EXPECT_EQ(read.Header("ETag"), etag);
  }
  // Without the version, B may still answer from its cache; with an older
  // one it answers the current version.
  HttpResponse older = b.Get("/fhir/t1/Patient/p1", {{"If-None-Match", "W/\"5\""}});
  if (older.status == 200) {
    EXPECT_EQ(older.Header("ETag"), "W/\"6\"");
  }
}

TEST(Cache, TenantsNeverShareAnEntry) {
  if (TestRedis() == nullptr) GTEST_SKIP() << "MEDGRID_TEST_REDIS is not set";
  TestServer a("cachetenant", {"t1", "t2"}, RedisConfig("cachetenant"));
  HttpClient& http = a.client();
  ASSERT_EQ(http.Put("/fhir/t1/Patient/same", PatientJson("same", "TenantOne")).status, 201);
  ASSERT_EQ(http.Put("/fhir/t1/Patient/only1", PatientJson("only1", "TenantOne")).status, 201);
  ASSERT_EQ(http.Put("/fhir/t2/Patient/same", PatientJson("same", "TenantTwo")).status, 201);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Family(http.Get("/fhir/t1/Patient/same")), "TenantOne");
    ASSERT_EQ(http.Get("/fhir/t1/Patient/only1").status, 200);
  }
  EXPECT_EQ(Family(http.Get("/fhir/t2/Patient/same")), "TenantTwo");
  EXPECT_EQ(http.Get("/fhir/t2/Patient/only1").status, 404);
  EXPECT_EQ(http.Get("/fhir/t2/Patient/only1/_history/1").status, 404);
  EXPECT_EQ(Family(http.Get("/fhir/t1/Patient/same")), "TenantOne");

  // A second instance with an empty L1 reads through the shared L2.
  auto second = app::App::Start(a.config());
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient b((*second)->port());
  EXPECT_EQ(Family(b.Get("/fhir/t1/Patient/same")), "TenantOne");
  EXPECT_GT(Metric(b, kL2Hits), 0);
  EXPECT_EQ(Family(b.Get("/fhir/t2/Patient/same")), "TenantTwo");
  EXPECT_EQ(b.Get("/fhir/t2/Patient/only1").status, 404);
  EXPECT_EQ(Family(b.Get("/fhir/t1/Patient/same/_history/1")), "TenantOne");
  EXPECT_EQ(Family(b.Get("/fhir/t2/Patient/same/_history/1")), "TenantTwo");
}

// 64 clients read one patient as fast as they can while another instance
// updates it `kPeriods` times: each update ends a cache period (A's relay
// hands A the change, which marks the entry stale in L1 and L2, so the 64
// miss together and L2 cannot answer them). The writer uses a Redis prefix
// of its own, so its write-through never refills A's L2.
TEST(Cache, AHotPatientCostsAboutOneDatabaseReadPerCachePeriod) {
  if (TestRedis() == nullptr) GTEST_SKIP() << "MEDGRID_TEST_REDIS is not set";
  app::AppConfig c = RedisConfig("cachehot");
  c.hot_spots.detector.patient_qps = 20;
  c.hot_spots.detector.window.window = seconds(6);
  c.hot_spots.evaluate_every = milliseconds(50);
  c.hot_spots.patient_rps = 0;  // this test is about reads, not the limit
  TestServer a("cachehot", {"t1"}, c);
  app::AppConfig wc = a.config();
  wc.redis_prefix = wc.store.control_db + "-w";
  auto second = app::App::Start(wc);
  ASSERT_TRUE(second.ok()) << second.status();
  HttpClient writer((*second)->port());
  ASSERT_EQ(writer.Put("/fhir/t1/Patient/hot", PatientJson("hot", "v1")).status, 201);

  constexpr int kClients = 64;
  constexpr int kPeriods = 10;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<int64_t> reads{0};
  Threads clients{stop, {}};
  for (int i = 0; i < kClients; ++i) {
    clients.threads.emplace_back([&] {
      HttpClient http(a.port());
      while (!stop.load()) {
        if (http.Get("/fhir/t1/Patient/hot").status != 200) failures.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  }
  // Hot-spot mode first (the detector sees > 20 QPS).
  HttpClient& admin = a.client();
  const bool hot = Eventually([&] { return Metric(admin, R"(medgrid_hotspot_active{kind="patient"})") >= 1; });
  const double before = Metric(admin, kBackendReads);
  const double statements_before = MetricSum(admin, "medgrid_db_queries_total", R"(kind="read")");
  const int64_t reads_before = reads.load();
  bool periods_ended = true;
  for (int v = 2; v < 2 + kPeriods && hot && periods_ended; ++v) {
    HttpResponse put = writer.Put("/fhir/t1/Patient/hot", PatientJson("hot", core::StrCat("v", v)));
    EXPECT_EQ(put.status, 200) << put.body;
    // The period lasts until A serves the new version.
    periods_ended = Eventually(
        [&] { return admin.Get("/fhir/t1/Patient/hot").Header("ETag") == core::StrCat("W/\"", v, "\""); });
    EXPECT_TRUE(periods_ended) << "A never served version " << v;
    std::this_thread::sleep_for(milliseconds(50));
  }
  const double after = Metric(admin, kBackendReads);
  const double statements = MetricSum(admin, "medgrid_db_queries_total", R"(kind="read")") - statements_before;
  const int64_t served = reads.load() - reads_before;
  stop = true;
  for (auto& t : clients.threads) t.join();
  ASSERT_TRUE(hot) << "the patient never became hot";
  EXPECT_EQ(failures.load(), 0);
  // One read per period, and a few more where a request missed just after
  // the shared read finished filling; without coalescing each of the 64
  // clients that missed would read the database.
  EXPECT_LE(after - before, 3 * kPeriods) << "database reads for " << served << " requests";
  // What PostgreSQL was sent, counted by the store: those reads and the
  // few the store itself counts as reads beside them (more on a loaded
  // machine); without coalescing this is about 50 per period.
  EXPECT_LE(statements, 6 * kPeriods) << "read statements for " << served << " requests";
  EXPECT_GE(statements, after - before);
  EXPECT_GT(Metric(admin, "medgrid_cache_coalesced_total"), 0);
  const boost::json::value hotspots = admin.Get("/admin/hotspots").Json();
  ASSERT_EQ(hotspots.at("patients").as_array().size(), 1u);
  EXPECT_EQ(hotspots.at("patients").at(0).at("id").as_string(), "hot");
  EXPECT_EQ(hotspots.at("patients").at(0).at("tenant").as_string(), "t1");
}

TEST(Cache, AHotPatientOverItsLimitGets429WithRetryAfter) {
  app::AppConfig c = TestServer::BaseConfig("cachelimit");
  c.hot_spots.detector.patient_qps = 5;
  c.hot_spots.detector.window.window = seconds(6);
  c.hot_spots.evaluate_every = milliseconds(50);
  c.hot_spots.patient_rps = 1;
  c.hot_spots.patient_burst = 3;
  TestServer a("cachelimit", {"t1"}, c);
  HttpClient& http = a.client();
  ASSERT_EQ(http.Put("/fhir/t1/Patient/star", PatientJson("star", "Star")).status, 201);
  ASSERT_EQ(http.Put("/fhir/t1/Patient/other", PatientJson("other", "Other")).status, 201);
  HttpResponse refused;
  ASSERT_TRUE(Eventually([&] {
    refused = http.Get("/fhir/t1/Patient/star");
    return refused.status == 429;
  })) << "never limited";
  EXPECT_EQ(refused.IssueCode(), "throttled");
  EXPECT_GE(std::stoi(refused.Header("Retry-After")), 1);
  // The patient's compartment is limited too; another patient is not.
  EXPECT_EQ(http.Get("/fhir/t1/Patient/star/Observation").status, 429);
  EXPECT_EQ(http.Get("/fhir/t1/Patient/other").status, 200);
  EXPECT_GE(Metric(http, "medgrid_hotspot_throttled_total"), 2);
}

TEST(Cache, RedisKilledMidLoadFailsNoReadAndL2ComesBack) {
  OwnRedis redis;
  app::AppConfig c = TestServer::BaseConfig("cacheredisdown");
  c.redis = redis.Address();
  c.cache.l1.ttl = milliseconds(1);  // every read goes past L1
  c.cache.l2_breaker.open_timeout = milliseconds(500);
  c.hot_spots.detector.patient_qps = 1e9;  // no hot-spot TTLs: every read reaches L2
  TestServer a("cacheredisdown", {"t1"}, c);
  HttpClient& http = a.client();
  for (int i = 0; i < 5; ++i) {
    const std::string id = core::StrCat("p", i);
    ASSERT_EQ(http.Put("/fhir/t1/Patient/" + id, PatientJson(id, id)).status, 201);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<int64_t> reads{0};
  Threads readers{stop, {}};
  for (int r = 0; r < 4; ++r) {
    readers.threads.emplace_back([&, r] {
      HttpClient client(a.port());
      for (int i = r; !stop.load(); ++i) {
        const std::string id = core::StrCat("p", i % 5);
        HttpResponse res = client.Get("/fhir/t1/Patient/" + id);
        if (res.status != 200 || Family(res) != id) failures.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  }
  EXPECT_TRUE(Eventually([&] { return Metric(http, kL2Hits) > 20; })) << "L2 is not used";
  EXPECT_EQ(Metric(http, kBreaker), 0);

  ASSERT_TRUE(redis.Run("redis_stop"));
  const int64_t at_kill = reads.load();
  EXPECT_TRUE(Eventually([&] { return Metric(http, kBreaker) == 1; })) << "the L2 breaker did not open";
  EXPECT_TRUE(Eventually([&] { return reads.load() > at_kill + 200; }));
  const double backend_while_down = Metric(http, kBackendReads);

  ASSERT_TRUE(redis.Run("redis_start"));
  EXPECT_TRUE(Eventually([&] { return Metric(http, kBreaker) == 0; }, milliseconds(15000)))
      << "the L2 breaker did not close";
  const double l2_hits = Metric(http, kL2Hits);
  EXPECT_TRUE(Eventually([&] { return Metric(http, kL2Hits) > l2_hits + 20; })) << "L2 is not used again";
  stop = true;
  for (auto& t : readers.threads) t.join();
  EXPECT_EQ(failures.load(), 0) << "of " << reads.load() << " reads";
  EXPECT_GT(backend_while_down, 0);
}

}  // namespace
}  // namespace medgrid::testing
