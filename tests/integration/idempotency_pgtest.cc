// Idempotency keys over HTTP against real PostgreSQL: replays of create,
// update, patch, conditional create and Bundles (same status, body,
// Location, ETag and Last-Modified, nothing written twice), 422 for a key
// reused with another request, 409 while a key is in flight (the shard's
// advisory lock, held from another connection; and 32 concurrent clients
// over two instances), tenant isolation, expiry and the background purge, a
// failed request not poisoning its key, bad keys, and keys under auth.
#include <atomic>
#include <iostream>
#include <latch>
#include <thread>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "pqxx/pqxx"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

using Headers = std::map<std::string, std::string>;

Headers Key(const std::string& key, Headers more = {}) {
  more["Idempotency-Key"] = key;
  return more;
}

std::string PatientBody(const std::string& marker) {
  return R"({"resourceType":"Patient","identifier":[{"system":"urn:idem","value":")" + marker +
         R"("}],"name":[{"family":"Replay"}]})";
}

// The same response again: status, body bytes, and the headers a client acts on.
void ExpectSameResponse(const HttpResponse& first, const HttpResponse& again) {
  EXPECT_EQ(again.status, first.status);
  EXPECT_EQ(again.body, first.body);
  for (const char* h : {"location", "content-location", "etag", "last-modified", "content-type"}) {
    EXPECT_EQ(again.Header(h), first.Header(h)) << h;
  }
  EXPECT_EQ(again.Header("idempotent-replayed"), "true");
  EXPECT_EQ(first.Header("idempotent-replayed"), "");
}

class IdempotencyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    app::AppConfig config = TestServer::BaseConfig("idem");
    server_ = new TestServer("idem", {"t1", "t2"}, config);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  HttpClient& c() { return server_->client(); }

  // Live Patients of `tenant` with identifier urn:idem|marker.
  int64_t Count(const std::string& tenant, const std::string& marker) {
    auto res = c().Get("/fhir/" + tenant + "/Patient?identifier=urn:idem|" + marker + "&_total=accurate");
    EXPECT_EQ(res.status, 200) << res.body;
    return res.Json().at("total").as_int64();
  }
  std::size_t Versions(const std::string& tenant, const std::string& ref) {
    auto res = c().Get("/fhir/" + tenant + "/" + ref + "/_history");
    EXPECT_EQ(res.status, 200) << res.body;
    return res.Json().at("entry").as_array().size();
  }
  double Metric(const std::string& outcome) {
    const std::string body = c().Get("/metrics").body;
    const std::string name = "medgrid_idempotency_requests_total{outcome=\"" + outcome + "\"} ";
    std::size_t at = body.find(name);
    if (at == std::string::npos) return -1;
    return std::stod(body.substr(at + name.size()));
  }

  static TestServer* server_;
};
TestServer* IdempotencyTest::server_ = nullptr;

// The DSN of the shard `tenant` lives on.
std::string ShardDsn(const TestServer& server, const std::string& tenant) {
  pqxx::connection control(TestServer::Dsn(server.config().store.control_db));
  pqxx::nontransaction tx(control);
  return tx
      .exec_params1("SELECT s.primary_dsn FROM tenants t JOIN shards s USING (shard_id) WHERE t.tenant_id = $1",
                    tenant)[0]
      .as<std::string>();
}

TEST_F(IdempotencyTest, CreateReplaysTheFirstResponseAndCreatesOnce) {
  const double replays_before = Metric("replayed");
  HttpResponse first = c().Post("/fhir/t1/Patient", PatientBody("create"), Key("create-1"));
  ASSERT_EQ(first.status, 201) << first.body;
  ASSERT_FALSE(first.Header("location").empty());
  for (int i = 0; i < 3; ++i) {
    HttpResponse again = c().Post("/fhir/t1/Patient", PatientBody("create"), Key("create-1"));
    ExpectSameResponse(first, again);
  }
  EXPECT_EQ(Count("t1", "create"), 1);
  const std::string id = std::string(first.Json().at("id").as_string());
  EXPECT_EQ(Versions("t1", "Patient/" + id), 1u);
  EXPECT_EQ(Metric("replayed"), replays_before + 3);
  // The key is per request: a new key creates another.
  EXPECT_EQ(c().Post("/fhir/t1/Patient", PatientBody("create"), Key("create-2")).status, 201);
  EXPECT_EQ(Count("t1", "create"), 2);
  // Prefer: return=minimal shapes the stored response's replay too (it is part of the request).
  HttpResponse minimal =
      c().Post("/fhir/t1/Patient", PatientBody("create-min"), Key("create-3", {{"Prefer", "return=minimal"}}));
  ASSERT_EQ(minimal.status, 201);
  EXPECT_TRUE(minimal.body.empty());
  ExpectSameResponse(minimal, c().Post("/fhir/t1/Patient", PatientBody("create-min"),
                                       Key("create-3", {{"Prefer", "return=minimal"}})));
}

TEST_F(IdempotencyTest, UpdatePatchAndConditionalCreateReplay) {
  const std::string body = R"({"resourceType":"Patient","id":"u1","active":true})";
  HttpResponse created = c().Put("/fhir/t1/Patient/u1", body, Key("put-1"));
  ASSERT_EQ(created.status, 201) << created.body;
  ExpectSameResponse(created, c().Put("/fhir/t1/Patient/u1", body, Key("put-1")));
  HttpResponse updated = c().Put("/fhir/t1/Patient/u1", body, Key("put-2"));
  ASSERT_EQ(updated.status, 200);
  EXPECT_EQ(updated.Header("etag"), "W/\"2\"");
  ExpectSameResponse(updated, c().Put("/fhir/t1/Patient/u1", body, Key("put-2")));
  EXPECT_EQ(Versions("t1", "Patient/u1"), 2u);

  const std::string patch = R"([{"op":"replace","path":"/active","value":false}])";
  const Headers patch_headers = Key("patch-1", {{"Content-Type", "application/json-patch+json"}});
  HttpResponse patched = c().Send("PATCH", "/fhir/t1/Patient/u1", patch, patch_headers);
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(patched.Header("etag"), "W/\"3\"");
  // A write by someone else in between: the replay still answers version 3.
  ASSERT_EQ(c().Put("/fhir/t1/Patient/u1", body).status, 200);
  ExpectSameResponse(patched, c().Send("PATCH", "/fhir/t1/Patient/u1", patch, patch_headers));
  EXPECT_EQ(Versions("t1", "Patient/u1"), 4u);

  const Headers conditional = Key("ccreate-1", {{"If-None-Exist", "identifier=urn:idem|ccreate"}});
  HttpResponse cc = c().Post("/fhir/t1/Patient", PatientBody("ccreate"), conditional);
  ASSERT_EQ(cc.status, 201) << cc.body;
  ExpectSameResponse(cc, c().Post("/fhir/t1/Patient", PatientBody("ccreate"), conditional));
  EXPECT_EQ(Count("t1", "ccreate"), 1);

  // Conditional update: the criteria's order does not make it another request.
  const std::string cu_body = PatientBody("cupdate");
  HttpResponse cu = c().Put("/fhir/t1/Patient?identifier=urn:idem|cupdate&active:missing=true", cu_body, Key("cu-1"));
  ASSERT_EQ(cu.status, 201) << cu.body;
  ExpectSameResponse(cu,
                     c().Put("/fhir/t1/Patient?active:missing=true&identifier=urn:idem|cupdate", cu_body, Key("cu-1")));
  EXPECT_EQ(Count("t1", "cupdate"), 1);
}

TEST_F(IdempotencyTest, TransactionAndBatchBundlesReplayIdentically) {
  const std::string transaction = R"({"resourceType":"Bundle","type":"transaction","entry":[
    {"fullUrl":"urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
     "resource":{"resourceType":"Patient","identifier":[{"system":"urn:idem","value":"tx"}]},
     "request":{"method":"POST","url":"Patient"}},
    {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},
                 "subject":{"reference":"urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
     "request":{"method":"POST","url":"Observation"}}]})";
  HttpResponse first = c().Post("/fhir/t1", transaction, Key("tx-1"));
  ASSERT_EQ(first.status, 200) << first.body;
  ExpectSameResponse(first, c().Post("/fhir/t1", transaction, Key("tx-1")));
  EXPECT_EQ(Count("t1", "tx"), 1);

  // A batch: the bad entry fails alone, in the first answer and the replay.
  const std::string batch = R"({"resourceType":"Bundle","type":"batch","entry":[
    {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:idem","value":"batch"}]},
     "request":{"method":"POST","url":"Patient"}},
    {"resource":{"resourceType":"Patient","bogus":1},"request":{"method":"POST","url":"Patient"}},
    {"request":{"method":"PUT","url":"Patient/nope"}}]})";
  HttpResponse b1 = c().Post("/fhir/t1", batch, Key("batch-1"));
  ASSERT_EQ(b1.status, 200) << b1.body;
  const json::value response = b1.Json();
  const json::array& entries = response.at("entry").as_array();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(std::string(entries[0].at("response").at("status").as_string()).substr(0, 3), "201");
  EXPECT_EQ(std::string(entries[1].at("response").at("status").as_string()).substr(0, 3), "400");
  EXPECT_EQ(std::string(entries[2].at("response").at("status").as_string()).substr(0, 3), "400");
  ExpectSameResponse(b1, c().Post("/fhir/t1", batch, Key("batch-1")));
  EXPECT_EQ(Count("t1", "batch"), 1);
}

TEST_F(IdempotencyTest, AnotherRequestWithTheKeyIs422AndWritesNothing) {
  const double before = Metric("mismatch");
  ASSERT_EQ(c().Post("/fhir/t1/Patient", PatientBody("mm-a"), Key("mm")).status, 201);
  HttpResponse body = c().Post("/fhir/t1/Patient", PatientBody("mm-b"), Key("mm"));
  EXPECT_EQ(body.status, 422) << body.body;
  EXPECT_EQ(body.Json().at("resourceType").as_string(), "OperationOutcome");
  EXPECT_EQ(body.IssueCode(), "business-rule");
  EXPECT_EQ(c().Put("/fhir/t1/Patient/mm", R"({"resourceType":"Patient","id":"mm"})", Key("mm")).status, 422);
  EXPECT_EQ(c().Post("/fhir/t1/Patient", PatientBody("mm-a"), Key("mm", {{"Prefer", "return=minimal"}})).status, 422);
  EXPECT_EQ(Count("t1", "mm-b"), 0);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/mm").status, 404);
  EXPECT_EQ(Metric("mismatch"), before + 3);
  // The first request still replays.
  HttpResponse again = c().Post("/fhir/t1/Patient", PatientBody("mm-a"), Key("mm"));
  EXPECT_EQ(again.status, 201);
  EXPECT_EQ(again.Header("idempotent-replayed"), "true");
}

TEST_F(IdempotencyTest, TenantsHaveTheirOwnKeys) {
  HttpResponse a = c().Post("/fhir/t1/Patient", PatientBody("iso"), Key("shared-key"));
  ASSERT_EQ(a.status, 201);
  HttpResponse b = c().Post("/fhir/t2/Patient", PatientBody("iso"), Key("shared-key"));
  ASSERT_EQ(b.status, 201) << b.body;
  EXPECT_EQ(b.Header("idempotent-replayed"), "");
  EXPECT_NE(b.Json().at("id"), a.Json().at("id"));
  EXPECT_EQ(b.Header("location").find("/fhir/t1/"), std::string::npos);
  EXPECT_EQ(c().Get("/fhir/t2/Patient/" + std::string(a.Json().at("id").as_string())).status, 404);
  ExpectSameResponse(a, c().Post("/fhir/t1/Patient", PatientBody("iso"), Key("shared-key")));
  ExpectSameResponse(b, c().Post("/fhir/t2/Patient", PatientBody("iso"), Key("shared-key")));
  // t2's own different request under the key is t2's mismatch, whatever t1 did.
  EXPECT_EQ(c().Post("/fhir/t2/Patient", PatientBody("iso-2"), Key("shared-key")).status, 422);
  EXPECT_EQ(Count("t1", "iso"), 1);
  EXPECT_EQ(Count("t2", "iso"), 1);
}

TEST_F(IdempotencyTest, AFailedRequestDoesNotPoisonItsKey) {
  // Refused before the transaction (validation): nothing recorded.
  HttpResponse invalid = c().Post("/fhir/t1/Patient", R"({"resourceType":"Patient","bogus":true})", Key("fail-1"));
  ASSERT_EQ(invalid.status, 400);
  HttpResponse ok = c().Post("/fhir/t1/Patient", PatientBody("fail-1"), Key("fail-1"));
  EXPECT_EQ(ok.status, 201) << ok.body;
  EXPECT_EQ(ok.Header("idempotent-replayed"), "");

  // Refused inside the transaction (If-Match): rolled back with the write.
  const std::string body = R"({"resourceType":"Patient","id":"f2"})";
  ASSERT_EQ(c().Put("/fhir/t1/Patient/f2", body).status, 201);
  const Headers conditional = Key("fail-2", {{"If-Match", "W/\"2\""}});
  EXPECT_EQ(c().Put("/fhir/t1/Patient/f2", body, conditional).status, 412);
  EXPECT_EQ(c().Put("/fhir/t1/Patient/f2", body, conditional).status, 412);  // ran again, not replayed
  ASSERT_EQ(c().Put("/fhir/t1/Patient/f2", body).status, 200);               // now at version 2
  HttpResponse retried = c().Put("/fhir/t1/Patient/f2", body, conditional);
  EXPECT_EQ(retried.status, 200) << retried.body;
  EXPECT_EQ(retried.Header("etag"), "W/\"3\"");
  EXPECT_EQ(retried.Header("idempotent-replayed"), "");
}

TEST_F(IdempotencyTest, KeyHeldByAnotherTransactionIs409WithRetryAfter) {
  const double before = Metric("in_flight");
  {
    // Another instance's request in flight: it holds the key's lock in its
    // transaction.
    pqxx::connection conn(ShardDsn(*server_, "t1"));
    pqxx::work holder(conn);
    holder.exec_params("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "t1\nidempotency\nheld");
    HttpResponse busy = c().Post("/fhir/t1/Patient", PatientBody("held"), Key("held"));
    EXPECT_EQ(busy.status, 409) << busy.body;
    EXPECT_EQ(busy.Json().at("resourceType").as_string(), "OperationOutcome");
    EXPECT_EQ(busy.IssueCode(), "conflict");
    EXPECT_EQ(busy.Header("retry-after"), "1");
    // Another tenant's key of the same text is not held.
    EXPECT_EQ(c().Post("/fhir/t2/Patient", PatientBody("held"), Key("held")).status, 201);
    // The holder dies without committing: its lock goes with it.
  }
  EXPECT_EQ(Count("t1", "held"), 0);
  HttpResponse after = c().Post("/fhir/t1/Patient", PatientBody("held"), Key("held"));
  EXPECT_EQ(after.status, 201) << after.body;
  EXPECT_EQ(after.Header("idempotent-replayed"), "");
  EXPECT_EQ(Metric("in_flight"), before + 1);
}

// A keyed update is held inside its transaction (another connection holds
// the resource's row lock): a duplicate here answers 409 at once; then the
// write's database session dies mid-transaction. Neither the version nor
// the key's record survives (they are one transaction), no claim is left
// behind, and the retry writes once.
TEST_F(IdempotencyTest, AWriteThatDiesMidTransactionLeavesNeitherVersionNorRecord) {
  const std::string body = R"({"resourceType":"Patient","id":"crash","active":true})";
  ASSERT_EQ(c().Put("/fhir/t1/Patient/crash", body).status, 201);
  pqxx::connection conn(ShardDsn(*server_, "t1"));
  const std::string db = conn.dbname();
  auto holder = std::make_unique<pqxx::work>(conn);
  holder->exec(
      "SELECT 1 FROM resources WHERE tenant_id = 't1' AND res_type = 'Patient' AND res_id = 'crash' FOR UPDATE");

  HttpResponse first;
  std::thread writer([&] {
    HttpClient client(server_->port());
    first = client.Put("/fhir/t1/Patient/crash", body, Key("crash-key"));
  });
  // Wait until the keyed write is blocked on the row lock, inside its transaction.
  pqxx::connection watcher(ShardDsn(*server_, "t1"));
  int blocked_pid = 0;
  for (int i = 0; i < 200 && blocked_pid == 0; ++i) {
    pqxx::nontransaction tx(watcher);
    pqxx::result r =
        tx.exec_params("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> $2",
                       db, conn.backendpid());
    if (!r.empty()) blocked_pid = r[0][0].as<int>();
    if (blocked_pid == 0) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ASSERT_NE(blocked_pid, 0);
  HttpResponse duplicate = c().Put("/fhir/t1/Patient/crash", body, Key("crash-key"));
  EXPECT_EQ(duplicate.status, 409) << duplicate.body;
  EXPECT_EQ(duplicate.Header("retry-after"), "1");
  {
    pqxx::nontransaction tx(watcher);
    tx.exec_params("SELECT pg_terminate_backend($1)", blocked_pid);
  }
  writer.join();
  EXPECT_EQ(first.status, 503) << first.body;
  holder->commit();
  holder.reset();
  EXPECT_EQ(Versions("t1", "Patient/crash"), 1u);
  {
    pqxx::nontransaction tx(watcher);
    EXPECT_EQ(tx.exec("SELECT count(*) FROM idempotency_keys WHERE tenant_id = 't1' AND idem_key = 'crash-key'")[0][0]
                  .as<int64_t>(),
              0);
  }
  HttpResponse retried = c().Put("/fhir/t1/Patient/crash", body, Key("crash-key"));
  EXPECT_EQ(retried.status, 200) << retried.body;
  EXPECT_EQ(retried.Header("etag"), "W/\"2\"");
  EXPECT_EQ(retried.Header("idempotent-replayed"), "");
  ExpectSameResponse(retried, c().Put("/fhir/t1/Patient/crash", body, Key("crash-key")));
  EXPECT_EQ(Versions("t1", "Patient/crash"), 2u);
}

TEST_F(IdempotencyTest, BadKeysAre400AndReadsIgnoreKeys) {
  for (const std::string& bad :
       {std::string(""), std::string(256, 'k'), std::string("a\tb"), std::string("caf\xc3\xa9")}) {
    HttpResponse res = c().Post("/fhir/t1/Patient", PatientBody("bad"), Key(bad));
    EXPECT_EQ(res.status, 400) << res.body;
    EXPECT_EQ(res.Json().at("resourceType").as_string(), "OperationOutcome");
  }
  EXPECT_EQ(c().Post("/fhir/t1/Patient", PatientBody("ok255"), Key(std::string(255, 'k'))).status, 201);
  // Two Idempotency-Key headers.
  HttpResponse twice = c().SendRaw(
      "POST /fhir/t1/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
      "Idempotency-Key: a\r\nIdempotency-Key: b\r\nContent-Length: 26\r\n\r\n{\"resourceType\":\"Patient\"}");
  EXPECT_EQ(twice.status, 400) << twice.body;
  EXPECT_EQ(Count("t1", "bad"), 0);
  // GET, DELETE and POST _search are idempotent or write nothing: the key is ignored.
  ASSERT_EQ(c().Put("/fhir/t1/Patient/g1", R"({"resourceType":"Patient","id":"g1"})").status, 201);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/g1", Key("")).status, 200);
  EXPECT_EQ(c().Send("POST", "/fhir/t1/Patient/_search", "_id=g1",
                     Key("", {{"Content-Type", "application/x-www-form-urlencoded"}}))
                .status,
            200);
  EXPECT_EQ(c().Delete("/fhir/t1/Patient/g1", Key("del")).status, 204);
}

// 32 clients send one key and body at once, half to each of two instances
// on the same databases: one resource is created; every answer is that
// response (the first or a replay of it) or 409; afterwards all replay.
TEST(IdempotencyConcurrency, ThirtyTwoClientsOneKeyOneResource) {
  // One public base for both, as behind one load balancer (Location is
  // built from it).
  app::AppConfig config = TestServer::BaseConfig("idemconc");
  config.gateway.public_base_url = "https://fhir.example.org";
  TestServer server("idemconc", {"t1"}, config);
  auto second = app::App::Start(server.config());
  ASSERT_TRUE(second.ok()) << second.status();
  const uint16_t ports[2] = {server.port(), (*second)->port()};
  constexpr int kClients = 32;
  const std::string body = PatientBody("conc");
  std::vector<HttpResponse> responses(kClients);
  std::latch start(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      HttpClient client(ports[i % 2]);
      start.arrive_and_wait();
      responses[i] = client.Post("/fhir/t1/Patient", body, Key("conc-key"));
    });
  }
  for (std::thread& t : threads) t.join();

  const HttpResponse* original = nullptr;
  int conflicts = 0;
  for (const HttpResponse& r : responses) {
    if (r.status == 201 && r.Header("idempotent-replayed").empty()) {
      EXPECT_EQ(original, nullptr) << "two requests ran";
      original = &r;
    } else if (r.status == 409) {
      ++conflicts;
      EXPECT_EQ(r.Header("retry-after"), "1");
    } else {
      EXPECT_EQ(r.status, 201) << r.body;
      EXPECT_EQ(r.Header("idempotent-replayed"), "true");
    }
  }
  ASSERT_NE(original, nullptr);
  for (const HttpResponse& r : responses) {
    if (r.status == 201 && &r != original) ExpectSameResponse(*original, r);
  }
  // Once it completed, concurrent retries all replay: a replay holds no
  // claim the others must wait for.
  std::vector<HttpResponse> retries(kClients);
  std::latch again(kClients);
  threads.clear();
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      HttpClient client(ports[i % 2]);
      again.arrive_and_wait();
      retries[i] = client.Post("/fhir/t1/Patient", body, Key("conc-key"));
    });
  }
  for (std::thread& t : threads) t.join();
  for (const HttpResponse& r : retries) ExpectSameResponse(*original, r);

  HttpResponse search = server.client().Get("/fhir/t1/Patient?identifier=urn:idem|conc&_total=accurate");
  EXPECT_EQ(search.Json().at("total").as_int64(), 1);
  std::cout << "concurrent duplicates: " << conflicts << " answered 409, " << (kClients - 1 - conflicts)
            << " replayed\n";
  (*second)->Stop();
}

// A short TTL: after it, the key is free again (the expired record is
// replaced), and records nobody uses again are purged in the background.
TEST(IdempotencyExpiry, ExpiredKeysRunAgainAndArePurged) {
  app::AppConfig config = TestServer::BaseConfig("idemttl");
  config.engine.idempotency_ttl = std::chrono::milliseconds(2500);
  config.reindex.statistics_every = std::chrono::seconds(1);
  TestServer server("idemttl", {"t1"}, config);
  HttpClient& c = server.client();
  HttpResponse first = c.Post("/fhir/t1/Patient", PatientBody("ttl"), Key("ttl-key"));
  ASSERT_EQ(first.status, 201);
  ASSERT_EQ(c.Post("/fhir/t1/Patient", PatientBody("ttl-other"), Key("ttl-purged")).status, 201);
  // Waiting out the TTL is the point of this test (the server's clock is real).
  std::this_thread::sleep_for(std::chrono::milliseconds(2700));
  HttpResponse later = c.Post("/fhir/t1/Patient", PatientBody("ttl"), Key("ttl-key"));
  ASSERT_EQ(later.status, 201) << later.body;
  EXPECT_EQ(later.Header("idempotent-replayed"), "");
  EXPECT_NE(later.Json().at("id"), first.Json().at("id"));
  // The new record replays now.
  ExpectSameResponse(later, c.Post("/fhir/t1/Patient", PatientBody("ttl"), Key("ttl-key")));

  pqxx::connection conn(ShardDsn(server, "t1"));
  auto rows = [&](const std::string& key) {
    pqxx::nontransaction tx(conn);
    return tx.exec_params1("SELECT count(*) FROM idempotency_keys WHERE tenant_id = 't1' AND idem_key = $1", key)[0]
        .as<int64_t>();
  };
  EXPECT_EQ(rows("ttl-key"), 1);
  // The background worker purges the expired one (it runs every second here).
  for (int i = 0; i < 100 && rows("ttl-purged") > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(rows("ttl-purged"), 0);
}

// With auth on, the key reaches the engine through the auditing and access
// layers; the caller is part of the request, so another user's identical
// request under the key is a 422, never the first user's response.
TEST(IdempotencyAuth, KeysWorkThroughAuthAndAreTheCallers) {
  TestTokens tokens;
  app::AppConfig config = TestServer::BaseConfig("idemauth");
  tokens.Configure(config);
  TestServer server("idemauth", {"t1"}, config, &tokens);
  HttpClient& c = server.client();
  const std::string alice = tokens.User("t1", "user/*.cruds", {{"fhirUser", "Practitioner/alice"}});
  const std::string bob = tokens.User("t1", "user/*.cruds", {{"fhirUser", "Practitioner/bob"}});
  const std::string body = R"({"resourceType":"Practitioner","name":[{"family":"Keyed"}]})";
  Headers as_alice = TestTokens::Bearer(alice);
  as_alice["Idempotency-Key"] = "auth-key";
  Headers as_bob = TestTokens::Bearer(bob);
  as_bob["Idempotency-Key"] = "auth-key";
  HttpResponse first = c.Post("/fhir/t1/Practitioner", body, as_alice);
  ASSERT_EQ(first.status, 201) << first.body;
  ExpectSameResponse(first, c.Post("/fhir/t1/Practitioner", body, as_alice));
  HttpResponse other = c.Post("/fhir/t1/Practitioner", body, as_bob);
  EXPECT_EQ(other.status, 422) << other.body;
  EXPECT_EQ(other.body.find(std::string(first.Json().at("id").as_string())), std::string::npos);
  // Without a token nothing runs, key or not.
  Headers anonymous = {{"Idempotency-Key", "auth-key"}};
  EXPECT_EQ(c.Post("/fhir/t1/Practitioner", body, anonymous).status, 401);
}

}  // namespace
}  // namespace medgrid::testing
