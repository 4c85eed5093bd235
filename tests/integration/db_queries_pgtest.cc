// medgrid_db_queries_total{shard,kind}: every statement sent to a shard
// database, counted exactly, read back through /metrics.
#include <atomic>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {

// shard -> kind -> count, from the Prometheus text of /metrics.
using Counts = std::map<std::string, std::map<std::string, int64_t>>;

Counts Scrape(HttpClient& c) {
  HttpResponse res = c.Get("/metrics");
  EXPECT_EQ(res.status, 200);
  static const std::regex kLine(R"re(^medgrid_db_queries_total\{([^}]*)\} ([0-9.e+]+)$)re");
  static const std::regex kShard(R"re(shard="([^"]*)")re");
  static const std::regex kKind(R"re(kind="([^"]*)")re");
  Counts out;
  std::istringstream in(res.body);
  for (std::string line; std::getline(in, line);) {
    std::smatch m, shard, kind;
    if (!std::regex_match(line, m, kLine)) continue;
    const std::string labels = m[1];
    if (!std::regex_search(labels, shard, kShard) || !std::regex_search(labels, kind, kKind)) continue;
    out[shard[1]][kind[1]] = static_cast<int64_t>(std::stod(m[2]));
  }
  return out;
}

// after - before for one shard, every kind that moved.
std::map<std::string, int64_t> Delta(const Counts& before, const Counts& after, const std::string& shard) {
  std::map<std::string, int64_t> out;
  for (const auto& [kind, n] : after.at(shard)) {
    int64_t was = 0;
    if (auto s = before.find(shard); s != before.end()) {
      if (auto k = s->second.find(kind); k != s->second.end()) was = k->second;
    }
    if (n != was) out[kind] = n - was;
  }
  return out;
}

// The statements of the requests themselves. Background work (outbox relay,
// reindexer, subscriptions) counts as "other"; "prepare" depends on which
// pooled connection served a request (each prepares a statement on its
// first use, and background work uses the pool too).
std::map<std::string, int64_t> RequestKinds(std::map<std::string, int64_t> delta) {
  delta.erase("other");
  delta.erase("prepare");
  return delta;
}

using Kinds = std::map<std::string, int64_t>;

// These tests count what each interaction sends to PostgreSQL, so the read
// cache (which answers repeated reads from memory) is off.
app::AppConfig Uncached(const std::string& name) {
  app::AppConfig c = TestServer::BaseConfig(name);
  c.cache_enabled = false;
  return c;
}

TEST(DbQueries, EachInteractionCountsItsStatementsOnItsTenantsShard) {
  TestServer server("dbq", {"t1", "t2"}, Uncached("dbq"));
  HttpClient& c = server.client();
  const std::string s1 = ShardOf(c, "t1");
  const std::string s2 = ShardOf(c, "t2");
  ASSERT_NE(s1, s2);

  // Every kind is exported from the start, zeros included.
  Counts start = Scrape(c);
  for (const std::string& shard : {s1, s2}) {
    ASSERT_TRUE(start.contains(shard));
    for (const char* kind : {"read", "search", "write", "history", "tx", "prepare", "other"}) {
      EXPECT_TRUE(start[shard].contains(kind)) << shard << " " << kind;
    }
  }

  // Warm up: the first use of each statement on a connection prepares it.
  ASSERT_EQ(c.Put("/fhir/t1/Patient/p1", R"({"resourceType":"Patient","id":"p1","name":[{"family":"Ng"}]})").status,
            201);
  ASSERT_EQ(c.Get("/fhir/t1/Patient/p1").status, 200);
  ASSERT_EQ(c.Get("/fhir/t1/Patient?family=Ng").status, 200);
  ASSERT_EQ(c.Post("/fhir/t1/Patient", R"({"resourceType":"Patient"})").status, 201);
  ASSERT_EQ(c.Get("/fhir/t1/Patient/p1/_history").status, 200);

  // A read by id (the non-blocking path): exactly one statement.
  Counts before = Scrape(c);
  // The warm-up prepared statements on the connections it used.
  EXPECT_GE(Delta(start, before, s1)["prepare"], 5);
  ASSERT_EQ(c.Get("/fhir/t1/Patient/p1").status, 200);
  Counts after = Scrape(c);
  EXPECT_EQ(RequestKinds(Delta(before, after, s1)), (Kinds{{"read", 1}}));
  EXPECT_EQ(RequestKinds(Delta(before, after, s2)), Kinds{});

  // An unknown id is a statement too.
  before = after;
  ASSERT_EQ(c.Get("/fhir/t1/Patient/nope").status, 404);
  after = Scrape(c);
  EXPECT_EQ(RequestKinds(Delta(before, after, s1)), (Kinds{{"read", 1}}));

  // A plain search: one statement, no transaction.
  before = after;
  auto found = c.Get("/fhir/t1/Patient?family=Ng");
  ASSERT_EQ(found.status, 200);
  EXPECT_EQ(found.Json().at("entry").as_array().size(), 1u);
  after = Scrape(c);
  EXPECT_EQ(RequestKinds(Delta(before, after, s1)), (Kinds{{"search", 1}}));

  // A create: one statement writes the resource, its index and outbox rows.
  before = after;
  ASSERT_EQ(c.Post("/fhir/t1/Patient", R"({"resourceType":"Patient"})").status, 201);
  after = Scrape(c);
  EXPECT_EQ(RequestKinds(Delta(before, after, s1)), (Kinds{{"write", 1}}));

  // An update: BEGIN, lock the current version, write, COMMIT.
  before = after;
  ASSERT_EQ(c.Put("/fhir/t1/Patient/p1", R"({"resourceType":"Patient","id":"p1","active":true})").status, 200);
  after = Scrape(c);
  EXPECT_EQ(RequestKinds(Delta(before, after, s1)), (Kinds{{"tx", 2}, {"write", 2}}));

  // History of one resource: one statement.
  before = after;
  ASSERT_EQ(c.Get("/fhir/t1/Patient/p1/_history").status, 200);
  after = Scrape(c);
  EXPECT_EQ(RequestKinds(Delta(before, after, s1)), (Kinds{{"history", 1}}));

  // The other tenant's read moves the other shard only.
  before = after;
  ASSERT_EQ(c.Get("/fhir/t2/Patient/p1").status, 404);
  after = Scrape(c);
  EXPECT_EQ(RequestKinds(Delta(before, after, s1)), Kinds{});
  EXPECT_EQ(Delta(before, after, s2).at("read"), 1);
}

TEST(DbQueries, ConcurrentReadsCountOneStatementEach) {
  TestServer server("dbqc", {"t1"}, Uncached("dbqc"));
  HttpClient& c = server.client();
  const std::string shard = ShardOf(c, "t1");
  ASSERT_EQ(c.Put("/fhir/t1/Patient/hot", R"({"resourceType":"Patient","id":"hot"})").status, 201);
  const Counts before = Scrape(c);
  constexpr int kThreads = 8;
  constexpr int kReads = 10;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      HttpClient mine(server.port());
      for (int j = 0; j < kReads; ++j) ok += mine.Get("/fhir/t1/Patient/hot").status == 200 ? 1 : 0;
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(ok.load(), kThreads * kReads);
  const std::map<std::string, int64_t> delta = RequestKinds(Delta(before, Scrape(c), shard));
  EXPECT_EQ(delta, (Kinds{{"read", kThreads * kReads}}));
}

}  // namespace
}  // namespace medgrid::testing
