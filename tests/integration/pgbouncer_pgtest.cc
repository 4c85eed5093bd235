// The server behind PgBouncer in transaction pooling mode (--db-pgbouncer=on):
// a PgBouncer of the test's own (/usr/sbin/pgbouncer, pool_mode=transaction,
// a default_pool_size far below the server's connections) in front of the
// test PostgreSQL, the control database and every shard reached through it.
// CRUD, search, history, conditional and transaction Bundles, the outbox
// relay and concurrent clients work with zero errors: no named prepared
// statement, session setting or session advisory lock is left on a server
// connection that PgBouncer hands to someone else. The statement timeout
// still ends a transaction's statement (SET LOCAL): 504.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "boost/asio/ip/tcp.hpp"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"
#include "pqxx/pqxx"

namespace medgrid::testing {
namespace {

uint16_t FreePort() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// The test PostgreSQL's port, from its DSN.
std::string UpstreamPort() {
  std::smatch m;
  const std::string dsn = TestServer::Dsn("postgres");
  static const std::regex kPort(R"(port=(\d+))");
  return std::regex_search(dsn, m, kPort) ? m[1].str() : "5432";
}

// A PgBouncer of this test, in transaction pooling mode.
class OwnPgBouncer {
 public:
  explicit OwnPgBouncer(int pool_size) : port_(FreePort()) {
    char tmpl[] = "/tmp/medgrid-pgbouncer.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
    std::ofstream(dir_ + "/userlist.txt") << "\"postgres\" \"\"\n";
    std::ofstream(dir_ + "/pgbouncer.ini")
        << "[databases]\n* = host=127.0.0.1 port=" << UpstreamPort() << "\n"
        << "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " << port_ << "\nunix_socket_dir =\n"
        << "auth_type = trust\nauth_file = " << dir_ << "/userlist.txt\n"
        << "pool_mode = transaction\ndefault_pool_size = " << pool_size << "\nreserve_pool_size = 0\n"
        << "max_client_conn = 500\n"
        << "pidfile = " << dir_ << "/pgbouncer.pid\nlogfile = " << dir_ << "/pgbouncer.log\n";
    // PgBouncer refuses to run as root.
    const std::string user = ::geteuid() == 0 ? "-u postgres " : "";
    const std::string cmd = core::StrCat("/usr/sbin/pgbouncer -d ", user, dir_, "/pgbouncer.ini >", dir_,
                                         "/start.log 2>&1");
    started_ = std::system(cmd.c_str()) == 0;
    for (int i = 0; started_ && i < 100; ++i) {
      try {
        pqxx::connection probe(Dsn("postgres"));
        return;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    started_ = false;
  }

  ~OwnPgBouncer() {
    std::ifstream pid_file(dir_ + "/pgbouncer.pid");
    pid_t pid = 0;
    if (pid_file >> pid && pid > 0) {
      ::kill(pid, SIGINT);
      for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  bool started() const { return started_; }
  std::string Dsn(const std::string& db) const {
    return core::StrCat("host=127.0.0.1 port=", port_, " user=postgres dbname=", db);
  }
  std::string Log() const { return ReadFile(dir_ + "/pgbouncer.log"); }

 private:
  uint16_t port_;
  std::string dir_;
  bool started_ = false;
};

// Drops the test's databases at the end (directly, not through PgBouncer).
struct DropDatabases {
  const app::AppConfig& config;
  ~DropDatabases() {
    try {
      pqxx::connection admin(config.store.admin_dsn);
      pqxx::nontransaction tx(admin);
      std::vector<std::string> dbs = config.store.bootstrap_shards;
      dbs.push_back(config.store.control_db);
      for (const std::string& db : dbs) tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(db) + " WITH (FORCE)");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "dropping test databases: " << e.what();
    }
  }
};

int64_t Prepared(const std::string& metrics) {
  static const std::regex kLine(R"re(medgrid_db_queries_total\{[^}]*kind="prepare"[^}]*\} ([0-9.e+]+))re");
  int64_t n = 0;
  for (std::sregex_iterator it(metrics.begin(), metrics.end(), kLine), end; it != end; ++it) {
    n += static_cast<int64_t>(std::stod((*it)[1]));
  }
  return n;
}

std::string TransactionBundle(int n, const std::string& tag) {
  std::string entries;
  for (int i = 0; i < n; ++i) {
    core::StrAppend(entries, i == 0 ? "" : ",",
                    R"({"fullUrl":"urn:uuid:00000000-0000-0000-0000-)", 100000000000 + i,
                    R"(","resource":{"resourceType":"Patient","identifier":[{"system":"urn:t","value":")", tag,
                    i, R"("}]},"request":{"method":"POST","url":"Patient"}})");
  }
  return core::StrCat(R"({"resourceType":"Bundle","type":"transaction","entry":[)", entries, "]}");
}

TEST(PgBouncer, EverythingWorksInTransactionPoolingMode) {
  if (!std::filesystem::exists("/usr/sbin/pgbouncer")) {
    GTEST_SKIP() << "pgbouncer is not installed (deploy/local/install-deps.sh installs it)";
  }
  OwnPgBouncer bouncer(/*pool_size=*/3);
  ASSERT_TRUE(bouncer.started()) << bouncer.Log();

  // A first server creates the databases and tenants directly and goes
  // (with it its connections, and the outbox relay's session lock); then
  // every shard is registered behind PgBouncer and a second server runs
  // through it, control database included.
  app::AppConfig config = TestServer::BaseConfig("pgbouncer");
  core::InitLogging(config.log_level);
  DropDatabases drop{config};
  {
    auto setup = app::App::Start(config);
    ASSERT_TRUE(setup.ok()) << setup.status();
    HttpClient admin((*setup)->port());
    for (const char* tenant : {"t1", "t2"}) {
      ASSERT_EQ(admin.Send("POST", "/admin/tenants", core::StrCat(R"({"id":")", tenant, R"("})"),
                           {{"Content-Type", "application/json"}})
                    .status,
                201);
    }
  }
  {
    pqxx::connection control(TestServer::Dsn(config.store.control_db));
    pqxx::work tx(control);
    for (const std::string& shard : config.store.bootstrap_shards) {
      tx.exec_params("UPDATE shards SET primary_dsn = $1 WHERE shard_id = $2", bouncer.Dsn(shard), shard);
    }
    tx.commit();
  }
  app::AppConfig behind = config;
  behind.store.admin_dsn.clear();
  behind.store.control_dsn = bouncer.Dsn(config.store.control_db);
  behind.store.pgbouncer = true;
  auto started = app::App::Start(behind);
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<app::App> app = std::move(*started);
  HttpClient c(app->port());

  // CRUD.
  ASSERT_EQ(c.Put("/fhir/t1/Patient/a", R"({"resourceType":"Patient","id":"a","name":[{"family":"Okafor"}]})").status,
            201);
  ASSERT_EQ(c.Get("/fhir/t1/Patient/a").status, 200);
  auto created = c.Post("/fhir/t1/Patient", R"({"resourceType":"Patient","name":[{"family":"Okafor"}]})");
  ASSERT_EQ(created.status, 201) << created.body;
  ASSERT_EQ(
      c.Put("/fhir/t1/Patient/a", R"({"resourceType":"Patient","id":"a","name":[{"family":"Okafor"}],"active":true})")
          .status,
      200);
  auto patched = c.Send("PATCH", "/fhir/t1/Patient/a", R"([{"op":"replace","path":"/active","value":false}])",
                        {{"Content-Type", "application/json-patch+json"}});
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(c.Get("/fhir/t1/Patient/a/_history/2").status, 200);
  EXPECT_EQ(c.Get("/fhir/t1/Patient/a").Json().at("meta").at("versionId").as_string(), "3");
  ASSERT_EQ(c.Put("/fhir/t1/Observation/o1",
                  R"({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},)"
                  R"("subject":{"reference":"Patient/a"}})")
                .status,
            201);

  // Search: a plain one, one in a transaction (counts and _include), chains.
  auto found = c.Get("/fhir/t1/Patient?family=Okafor");
  ASSERT_EQ(found.status, 200) << found.body;
  EXPECT_EQ(found.Json().at("entry").as_array().size(), 2u);
  auto included = c.Get("/fhir/t1/Observation?subject=Patient/a&_include=Observation:subject&_total=accurate");
  ASSERT_EQ(included.status, 200) << included.body;
  EXPECT_EQ(included.Json().at("total").as_int64(), 1);
  EXPECT_EQ(included.Json().at("entry").as_array().size(), 2u);
  EXPECT_EQ(c.Get("/fhir/t1/Observation?subject.family=Okafor").Json().at("entry").as_array().size(), 1u);

  // History of the resource, the type and the tenant.
  EXPECT_EQ(c.Get("/fhir/t1/Patient/a/_history").Json().at("entry").as_array().size(), 3u);
  EXPECT_EQ(c.Get("/fhir/t1/Patient/_history").status, 200);
  EXPECT_EQ(c.Get("/fhir/t1/_history").status, 200);

  // Conditional create (a transaction-scoped advisory lock), twice.
  const std::map<std::string, std::string> if_none = {{"If-None-Exist", "identifier=urn:t|cond"}};
  const std::string cond = R"({"resourceType":"Patient","identifier":[{"system":"urn:t","value":"cond"}]})";
  EXPECT_EQ(c.Post("/fhir/t1/Patient", cond, if_none).status, 201);
  EXPECT_EQ(c.Post("/fhir/t1/Patient", cond, if_none).status, 200);

  // Transaction Bundles: a small one (one statement for all versions) and
  // one written with COPY.
  auto small = c.Post("/fhir/t1", TransactionBundle(5, "s"));
  ASSERT_EQ(small.status, 200) << small.body;
  auto large = c.Post("/fhir/t1", TransactionBundle(80, "l"));
  ASSERT_EQ(large.status, 200) << large.body;
  EXPECT_EQ(c.Get("/fhir/t1/Patient?identifier=urn:t|l79").Json().at("entry").as_array().size(), 1u);

  // DELETE, then the read answers 410.
  EXPECT_EQ(c.Delete("/fhir/t1/Patient/a").status, 204);
  EXPECT_EQ(c.Get("/fhir/t1/Patient/a").status, 410);

  // Concurrent clients of two tenants, far more than PgBouncer's pool.
  constexpr int kClients = 12;
  constexpr int kRounds = 15;
  std::atomic<int> errors{0};
  std::vector<std::string> failures(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      HttpClient mine(app->port());
      const std::string tenant = i % 2 == 0 ? "t1" : "t2";
      auto check = [&](const HttpResponse& r, int want, const char* what) {
        if (r.status == want) return;
        ++errors;
        if (failures[i].empty()) failures[i] = core::StrCat(what, " ", r.status, " ", r.body);
      };
      for (int j = 0; j < kRounds; ++j) {
        const std::string id = core::StrCat("c", i, "-", j);
        const std::string path = core::StrCat("/fhir/", tenant, "/Patient/", id);
        check(mine.Put(path, core::StrCat(R"({"resourceType":"Patient","id":")", id,
                                          R"(","name":[{"family":"Conc"}]})")),
              201, "put");
        check(mine.Get(path), 200, "read");
        check(mine.Put(path, core::StrCat(R"({"resourceType":"Patient","id":")", id, R"(","active":true})")), 200,
              "update");
        check(mine.Get(core::StrCat("/fhir/", tenant, "/Patient?_id=", id, "&_total=accurate")), 200, "search");
        check(mine.Get(path + "/_history"), 200, "history");
        check(mine.Post(core::StrCat("/fhir/", tenant), TransactionBundle(2, id)), 200, "bundle");
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  for (const std::string& f : failures) EXPECT_EQ(f, "");
  EXPECT_EQ(c.Get("/fhir/t2/Patient?active=true&_summary=count").Json().at("total").as_int64(),
            kClients / 2 * kRounds);

  // Nothing was prepared by name on any shard connection.
  auto metrics = c.Get("/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("medgrid_db_queries_total"), std::string::npos);
  EXPECT_EQ(Prepared(metrics.body), 0) << metrics.body;

  // The outbox relay, leading shard by shard through transaction-scoped
  // locks, empties both outboxes.
  int64_t backlog = -1;
  for (int i = 0; i < 200 && backlog != 0; ++i) {
    backlog = 0;
    for (const std::string& shard : config.store.bootstrap_shards) {
      pqxx::connection direct(TestServer::Dsn(shard));
      pqxx::nontransaction tx(direct);
      backlog += tx.exec1("SELECT count(*) FROM outbox")[0].as<int64_t>();
    }
    if (backlog != 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(backlog, 0);
  app->Stop();
  app.reset();

  // The statement timeout reaches transactions through SET LOCAL: a search
  // in a transaction (_total=accurate) that waits for a lock answers 504.
  behind.store.statement_timeout = std::chrono::milliseconds(300);
  auto timed = app::App::Start(behind);
  ASSERT_TRUE(timed.ok()) << timed.status();
  HttpClient t((*timed)->port());
  ASSERT_EQ(t.Put("/fhir/t1/Patient/m", R"({"resourceType":"Patient","id":"m","gender":"male"})").status, 201);
  {
    std::vector<std::unique_ptr<pqxx::connection>> conns;
    std::vector<std::unique_ptr<pqxx::work>> locks;
    for (const std::string& db : config.store.bootstrap_shards) {
      conns.push_back(std::make_unique<pqxx::connection>(TestServer::Dsn(db)));
      locks.push_back(std::make_unique<pqxx::work>(*conns.back()));
      locks.back()->exec("LOCK TABLE idx_token IN ACCESS EXCLUSIVE MODE");
    }
    auto res = t.Get("/fhir/t1/Patient?gender=male&_total=accurate");
    EXPECT_EQ(res.status, 504) << res.body;
    EXPECT_EQ(res.IssueCode(), "timeout");
  }
  auto after = t.Get("/fhir/t1/Patient?gender=male&_total=accurate");
  EXPECT_EQ(after.status, 200) << after.body;
  (*timed)->Stop();
}

}  // namespace
}  // namespace medgrid::testing
