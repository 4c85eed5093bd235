// The audit trail end to end: a server with auditing on records exactly one
// AuditEvent per FHIR interaction in the tenant's ledger (and none in
// another tenant's), successful or not, and its spool keeps events while the
// ledger consumer is stopped, with reads still served, until it catches up.
#include <unistd.h>

#include <filesystem>
#include <pqxx/pqxx>

#include <gtest/gtest.h>

#include "integration/harness.h"
#include "medgrid/app/app.h"
#include "medgrid/audit/pipeline.h"
#include "medgrid/ledger/archive.h"
#include "medgrid/ledger/ledger_store.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

class AuditTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    db_ = "mg_audit_ledger_" + std::to_string(::getpid());
    spool_ = std::filesystem::temp_directory_path() / ("medgrid-audit-" + std::to_string(::getpid()));
    std::filesystem::remove_all(spool_);
    {
      pqxx::connection admin(TestServer::Dsn("postgres"));
      pqxx::nontransaction tx(admin);
      tx.exec("DROP DATABASE IF EXISTS " + db_);
      tx.exec("CREATE DATABASE " + db_);
    }
    app::AppConfig config = TestServer::BaseConfig("audit");
    config.audit.spool_dir = spool_.string();
    config.audit.dsn = TestServer::Dsn(db_);
    server_ = new TestServer("audit", {"a1", "a2"}, config);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    pqxx::connection admin(TestServer::Dsn("postgres"));
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    std::filesystem::remove_all(spool_);
  }
  HttpClient& c() { return server_->client(); }
  audit::AuditPipeline& pipeline() { return *server_->app().audit(); }

  // The AuditEvents in `tenant`'s ledger, in order, once everything spooled is there.
  std::vector<json::value> Events(const std::string& tenant) {
    EXPECT_TRUE(pipeline().Drain(std::chrono::seconds(20)));
    pqxx::connection conn(TestServer::Dsn(db_));
    pqxx::read_transaction tx(conn);
    std::vector<json::value> out;
    for (const pqxx::row& row : tx.exec_params(
             "SELECT convert_from(entry, 'UTF8') FROM ledger_entries WHERE tenant_id = $1 ORDER BY seq", tenant)) {
      out.push_back(json::parse(row[0].as<std::string>()));
    }
    return out;
  }
  static std::vector<std::string> References(const json::value& event) {
    std::vector<std::string> out;
    if (const json::value* entities = event.as_object().if_contains("entity")) {
      for (const json::value& e : entities->as_array()) {
        if (const json::value* what = e.as_object().if_contains("what")) out.emplace_back(what->at("reference").as_string());
      }
    }
    return out;
  }
  static bool Has(const std::vector<std::string>& refs, const std::string& ref) {
    return std::find(refs.begin(), refs.end(), ref) != refs.end();
  }

  static std::string db_;
  static std::filesystem::path spool_;
  static TestServer* server_;
};
std::string AuditTest::db_;
std::filesystem::path AuditTest::spool_;
TestServer* AuditTest::server_ = nullptr;

TEST_F(AuditTest, EveryInteractionIsOneAuditEventInItsTenantsLedger) {
  const std::size_t before = Events("a1").size();
  struct Expected {
    std::string subtype;
    std::string action;
    std::string outcome;
    std::vector<std::string> references;  // among the entities
  };
  std::vector<Expected> expected;
  ASSERT_EQ(c().Put("/fhir/a1/Patient/p1", R"({"resourceType":"Patient","id":"p1","gender":"female"})").status, 201);
  expected.push_back({"update", "C", "0", {"Patient/p1"}});
  auto created = c().Post("/fhir/a1/Observation",
                          R"({"resourceType":"Observation","status":"final","code":{"text":"weight"},)"
                          R"("subject":{"reference":"Patient/p1"}})");
  ASSERT_EQ(created.status, 201);
  const std::string obs = std::string(created.Json().at("id").as_string());
  expected.push_back({"create", "C", "0", {"Patient/p1", "Observation/" + obs}});
  ASSERT_EQ(c().Get("/fhir/a1/Patient/p1").status, 200);
  expected.push_back({"read", "R", "0", {"Patient/p1"}});
  ASSERT_EQ(c().Get("/fhir/a1/Patient/p1/_history/1").status, 200);
  expected.push_back({"vread", "R", "0", {"Patient/p1"}});
  ASSERT_EQ(c().Put("/fhir/a1/Patient/p1", R"({"resourceType":"Patient","id":"p1","gender":"male"})").status, 200);
  expected.push_back({"update", "U", "0", {"Patient/p1"}});
  ASSERT_EQ(c().Send("PATCH", "/fhir/a1/Observation/" + obs, R"([{"op":"replace","path":"/status","value":"amended"}])",
                     {{"Content-Type", "application/json-patch+json"}})
                .status,
            200);
  expected.push_back({"patch", "U", "0", {"Patient/p1", "Observation/" + obs}});
  ASSERT_EQ(c().Get("/fhir/a1/Observation?subject=Patient/p1").status, 200);
  expected.push_back({"search-type", "E", "0", {"Patient/p1", "Observation/" + obs}});
  ASSERT_EQ(c().Get("/fhir/a1/Patient/p1/_history").status, 200);
  expected.push_back({"history-instance", "R", "0", {"Patient/p1"}});
  ASSERT_EQ(c().Get("/fhir/a1/Patient/nobody").status, 404);
  expected.push_back({"read", "R", "4", {"Patient/nobody"}});
  ASSERT_EQ(c().Get("/fhir/a1/Patient?bogus=1").status, 400);
  expected.push_back({"search-type", "E", "4", {}});
  ASSERT_EQ(c().Post("/fhir/a1/Patient", R"({"resourceType":"Patient","gender":"other"})",
                     {{"If-None-Exist", "gender=male"}})
                .status,
            200);  // p1 matches: it is returned, not created
  expected.push_back({"create", "R", "0", {"Patient/p1"}});
  ASSERT_EQ(c().Delete("/fhir/a1/Observation/" + obs).status / 100, 2);
  expected.push_back({"delete", "D", "0", {"Observation/" + obs}});
  ASSERT_EQ(c().Get("/fhir/a1/metadata").status, 200);
  expected.push_back({"capabilities", "R", "0", {}});

  const std::vector<json::value> events = Events("a1");
  ASSERT_EQ(events.size(), before + expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const json::value& e = events[before + i];
    const Expected& want = expected[i];
    EXPECT_EQ(e.at("subtype").at(0).at("code").as_string(), want.subtype) << i;
    EXPECT_EQ(e.at("action").as_string(), want.action) << i << " " << want.subtype;
    EXPECT_EQ(e.at("outcome").as_string(), want.outcome) << i << " " << want.subtype;
    EXPECT_EQ(e.at("agent").at(0).at("network").at("address").as_string(), "127.0.0.1") << i;
    const std::vector<std::string> refs = References(e);
    for (const std::string& r : want.references) EXPECT_TRUE(Has(refs, r)) << i << " " << want.subtype << " lacks " << r;
  }
  // The other tenant's ledger holds none of them; its own read goes there.
  const std::size_t other = Events("a2").size();
  ASSERT_EQ(c().Get("/fhir/a2/Patient/p1").status, 404);
  EXPECT_EQ(Events("a2").size(), other + 1);
  EXPECT_EQ(Events("a1").size(), before + expected.size());
  // The ledger verifies.
  auto ledger = ledger::LedgerStore::Open(TestServer::Dsn(db_), nullptr);
  ASSERT_TRUE(ledger.ok());
  auto report = (*ledger)->Verify("a1");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << (report->problems.empty() ? "" : report->problems[0]);
}

TEST_F(AuditTest, AdminActionsAreRecorded) {
  // Creating a tenant goes to that tenant's ledger; listing shards concerns
  // no tenant and goes to the admin ledger; an explain goes to its tenant's,
  // once (the FHIR API call behind it is not recorded again).
  const std::size_t admin = Events("_admin").size();
  const std::size_t a1 = Events("a1").size();
  ASSERT_EQ(c().Post("/admin/tenants", R"({"id":"a3","region":"local"})").status, 201);
  ASSERT_EQ(c().Get("/admin/shards").status, 200);
  ASSERT_EQ(c().Post("/admin/tenants", R"({"id":"Bad Id"})").status, 400);
  ASSERT_EQ(c().Get("/admin/explain/a1/Patient?gender=female").status, 200);
  const std::vector<json::value> created = Events("a3");
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].at("subtype").at(0).at("code").as_string(), "operation");
  EXPECT_EQ(created[0].at("action").as_string(), "E");
  const std::vector<json::value> system = Events("_admin");
  ASSERT_EQ(system.size(), admin + 2);
  EXPECT_EQ(system[admin].at("action").as_string(), "R");
  EXPECT_EQ(system[admin + 1].at("outcome").as_string(), "4");  // the refused tenant
  const std::vector<json::value> explained = Events("a1");
  ASSERT_EQ(explained.size(), a1 + 1);
  EXPECT_EQ(explained.back().at("subtype").at(0).at("code").as_string(), "operation");
}

TEST_F(AuditTest, AuditEventsAreReadAndSearchedFromTheLedgerAndNeverWritten) {
  ASSERT_EQ(c().Put("/fhir/a1/Patient/q1", R"({"resourceType":"Patient","id":"q1"})").status, 201);
  ASSERT_EQ(c().Get("/fhir/a1/Patient/q1").status, 200);
  ASSERT_EQ(c().Get("/fhir/a1/Patient/q1").status, 200);
  ASSERT_EQ(c().Get("/fhir/a1/Patient/q-missing").status, 404);
  Events("a1");  // all in the ledger
  auto ids = [&](const std::string& target) {
    auto res = c().Get(target);
    EXPECT_EQ(res.status, 200) << target << ": " << res.body;
    std::vector<std::string> out;
    if (res.status != 200) return out;
    const json::value b = res.Json();
    if (const json::value* entries = b.as_object().if_contains("entry")) {
      for (const json::value& e : entries->as_array()) {
        out.emplace_back(e.at("resource").at("id").as_string());
        EXPECT_EQ(e.at("resource").at("resourceType").as_string(), "AuditEvent");
      }
    }
    return out;
  };
  const std::vector<std::string> about_q1 = ids("/fhir/a1/AuditEvent?patient=Patient/q1");
  ASSERT_EQ(about_q1.size(), 3u);  // the create and two reads
  EXPECT_EQ(ids("/fhir/a1/AuditEvent?patient=q1&action=R").size(), 2u);
  EXPECT_EQ(ids("/fhir/a1/AuditEvent?patient=q1&action=C").size(), 1u);
  EXPECT_EQ(ids("/fhir/a1/AuditEvent?patient=q1&action=C,R").size(), 3u);
  EXPECT_EQ(ids("/fhir/a1/AuditEvent?patient=q-missing&outcome=4&subtype=read").size(), 1u);
  // (The searches above are about q1 too, and audited; leave them out of
  // the counts that follow, as they may or may not be indexed yet.)
  EXPECT_EQ(ids("/fhir/a1/AuditEvent?patient=q1&date=ge2020-01-01&date=lt2999&subtype=update,read").size(), 3u);
  EXPECT_EQ(ids("/fhir/a1/AuditEvent?patient=q1&date=lt2000").size(), 0u);
  EXPECT_EQ(ids("/fhir/a1/AuditEvent?address=127.0.0.1&patient=q1&subtype=update,read").size(), 3u);
  EXPECT_EQ(ids("/fhir/a1/Patient/q1/AuditEvent?subtype=update,read").size(), 3u);  // the patient's compartment
  EXPECT_EQ(ids("/fhir/a2/AuditEvent?patient=q1").size(), 0u);  // another tenant's ledger
  // Paging, one at a time, through the next links. (Each page is a search
  // about q1 that is audited too and may reach the index while paging, so
  // page through the update-as-create and the reads only.)
  std::vector<std::string> paged;
  std::string target = "/fhir/a1/AuditEvent?patient=q1&subtype=update,read&_count=1";
  for (int guard = 0; !target.empty() && guard < 10; ++guard) {
    const json::value b = c().Get(target).Json();
    for (const json::value& e : b.at("entry").as_array()) paged.emplace_back(e.at("resource").at("id").as_string());
    target.clear();
    for (const json::value& l : b.at("link").as_array()) {
      if (l.at("relation") == "next") {
        const std::string url(l.at("url").as_string());
        target = url.substr(url.find("/fhir/"));
      }
    }
  }
  EXPECT_EQ(paged, about_q1);
  // Read by id; not in another tenant; one version.
  const auto read = c().Get("/fhir/a1/AuditEvent/" + about_q1[0]);
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(read.Json().at("id").as_string(), about_q1[0]);
  EXPECT_EQ(c().Get("/fhir/a2/AuditEvent/" + about_q1[0]).status, 404);
  EXPECT_EQ(c().Get("/fhir/a1/AuditEvent/" + about_q1[0] + "/_history/2").status, 404);
  // Never written through the API.
  const std::string event = R"({"resourceType":"AuditEvent","id":"x","type":{"code":"rest"},"recorded":"2020-01-01T00:00:00Z",)"
                            R"("agent":[{"requestor":true}],"source":{"observer":{"display":"x"}}})";
  EXPECT_EQ(c().Post("/fhir/a1/AuditEvent", event).status, 405);
  EXPECT_EQ(c().Put("/fhir/a1/AuditEvent/" + about_q1[0], event).status, 405);
  EXPECT_EQ(c().Delete("/fhir/a1/AuditEvent/" + about_q1[0]).status, 405);
  EXPECT_EQ(c().Get("/fhir/a1/AuditEvent/" + about_q1[0]).status, 200);
  // Parameters it does not serve are named.
  auto refused = c().Get("/fhir/a1/AuditEvent?entity-name=x");
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("entity-name"), std::string::npos) << refused.body;
  EXPECT_EQ(c().Get("/fhir/a1/AuditEvent?bogus=1").status, 400);
  EXPECT_EQ(c().Get("/fhir/a1/AuditEvent?date=ap2020").status, 400);
  // The CapabilityStatement says so.
  const json::value cap = c().Get("/fhir/a1/metadata").Json();
  for (const json::value& r : cap.at("rest").at(0).at("resource").as_array()) {
    if (r.at("type") != "AuditEvent") continue;
    EXPECT_EQ(r.at("interaction").as_array().size(), 3u);
    EXPECT_EQ(r.at("searchParam").as_array().size(), 8u);
  }
}

TEST_F(AuditTest, ArchivedEventsAreGoneFromTheHotReadAndSearch) {
  ASSERT_EQ(c().Send("POST", "/admin/tenants", R"({"id":"a4"})", {{"Content-Type", "application/json"}}).status, 201);
  ASSERT_EQ(c().Put("/fhir/a4/Patient/old", R"({"resourceType":"Patient","id":"old"})").status, 201);
  Events("a4");
  auto search = c().Get("/fhir/a4/AuditEvent?patient=old");
  ASSERT_EQ(search.Json().at("entry").as_array().size(), 1u);
  const std::string id(search.Json().at("entry").at(0).at("resource").at("id").as_string());
  ASSERT_EQ(c().Get("/fhir/a4/AuditEvent/" + id).status, 200);

  const std::filesystem::path dir = spool_ / "archive";
  std::filesystem::create_directories(dir);
  auto ledger = ledger::LedgerStore::Open(TestServer::Dsn(db_), nullptr);
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  auto archived = (*ledger)->Archive("a4", std::chrono::system_clock::now() + std::chrono::seconds(1),
                                     ledger::DirectorySinks(dir.string()));
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_EQ(c().Get("/fhir/a4/AuditEvent/" + id).status, 410);
  search = c().Get("/fhir/a4/AuditEvent?patient=old");
  ASSERT_EQ(search.status, 200);
  EXPECT_FALSE(search.Json().as_object().contains("entry")) << search.body;
}

TEST_F(AuditTest, EventsRecordedWithAnAgentAreFoundByAgent) {
  // How the auth layer records an access (a denied one here): through the
  // pipeline's Record, with the verified agent.
  audit::Interaction in;
  in.tenant = "a2";
  in.interaction = "read";
  in.http_status = 403;
  in.type = "Patient";
  in.id = "secret";
  in.patients = {"Patient/secret"};
  in.agent = "Practitioner/dr-1";
  in.recorded = std::chrono::system_clock::now();
  ASSERT_TRUE(pipeline().Record(in));
  in.agent = "Practitioner/dr-2";
  ASSERT_TRUE(pipeline().Record(in));
  Events("a2");
  auto count = [&](const std::string& query) {
    auto res = c().Get("/fhir/a2/AuditEvent?" + query);
    EXPECT_EQ(res.status, 200) << query << ": " << res.body;
    const json::value b = res.Json();
    const json::value* entries = b.as_object().if_contains("entry");
    return entries ? entries->as_array().size() : 0u;
  };
  EXPECT_EQ(count("agent=Practitioner/dr-1"), 1u);
  EXPECT_EQ(count("agent=dr-2&outcome=4"), 1u);
  EXPECT_EQ(count("agent=Practitioner/dr-1,Practitioner/dr-2&patient=secret"), 2u);
  EXPECT_EQ(count("agent=Patient/dr-1"), 0u);
  EXPECT_EQ(c().Get("/fhir/a2/AuditEvent?agent=not%20an%20id").status, 400);
}

TEST_F(AuditTest, TheSpoolKeepsEventsWhileTheConsumerIsStopped) {
  ASSERT_EQ(c().Put("/fhir/a1/Patient/s1", R"({"resourceType":"Patient","id":"s1"})").status / 100, 2);
  const std::size_t before = Events("a1").size();
  pipeline().Stop();
  for (int i = 0; i < 50; ++i) ASSERT_EQ(c().Get("/fhir/a1/Patient/s1").status, 200);
  EXPECT_GT(pipeline().stats().pending_bytes, 0u);
  {
    pqxx::connection conn(TestServer::Dsn(db_));
    pqxx::read_transaction tx(conn);
    EXPECT_EQ(tx.exec("SELECT count(*) FROM ledger_entries WHERE tenant_id = 'a1'")[0][0].as<std::size_t>(),
              before);
  }
  const std::string metrics = c().Get("/metrics").body;
  EXPECT_NE(metrics.find("medgrid_audit_spool_pending_bytes"), std::string::npos);
  EXPECT_NE(metrics.find("medgrid_audit_events{state=\"recorded\"}"), std::string::npos);
  pipeline().Start();
  const std::vector<json::value> events = Events("a1");
  ASSERT_EQ(events.size(), before + 50);
  for (std::size_t i = before; i < events.size(); ++i) {
    EXPECT_EQ(events[i].at("subtype").at(0).at("code").as_string(), "read");
    EXPECT_TRUE(Has(References(events[i]), "Patient/s1"));
  }
  EXPECT_EQ(pipeline().stats().pending_bytes, 0u);
  EXPECT_EQ(pipeline().stats().spool_failures, 0u);
}

TEST_F(AuditTest, EventsSpooledBeforeAStopReachTheLedgerAfterARestart) {
  // A server of its own, with its own spool, on the same ledger database: its
  // consumer is stopped, it serves 20 reads, and it stops. The next server on
  // that spool moves them into the ledger, once each.
  const std::string spool = spool_.string() + "-restart";
  app::AppConfig config = TestServer::BaseConfig("auditrestart");
  config.audit.spool_dir = spool;
  config.audit.dsn = TestServer::Dsn(db_);
  auto in_ledger = [&] {
    pqxx::connection conn(TestServer::Dsn(db_));
    pqxx::read_transaction tx(conn);
    return tx.exec("SELECT count(*) FROM ledger_entries WHERE tenant_id = 'r1'")[0][0].as<std::size_t>();
  };
  std::size_t before = 0;
  {
    TestServer first("auditrestart", {"r1"}, config);
    ASSERT_EQ(first.client().Put("/fhir/r1/Patient/x", R"({"resourceType":"Patient","id":"x"})").status, 201);
    ASSERT_TRUE(first.app().audit()->Drain(std::chrono::seconds(20)));
    before = in_ledger();  // the tenant's creation and the PUT
    EXPECT_EQ(before, 2u);
    first.app().audit()->Stop();
    for (int i = 0; i < 20; ++i) ASSERT_EQ(first.client().Get("/fhir/r1/Patient/x").status, 200);
  }
  EXPECT_EQ(in_ledger(), before);  // spooled, not appended
  TestServer second("auditrestart", {"r1"}, config);
  ASSERT_TRUE(second.app().audit()->Drain(std::chrono::seconds(20)));
  EXPECT_EQ(in_ledger(), before + 20 + 1);  // and the second server's creation of r1
  auto ledger = ledger::LedgerStore::Open(TestServer::Dsn(db_), nullptr);
  ASSERT_TRUE(ledger.ok());
  EXPECT_TRUE((*ledger)->Verify("r1")->ok);
  second.Stop();
  std::filesystem::remove_all(spool);
}

}  // namespace
}  // namespace medgrid::testing
