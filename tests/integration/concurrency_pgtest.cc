// Concurrent writers to one resource: every acknowledged update gets its own
// version, the versions are gap-free, and none is lost.
#include <atomic>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {

TEST(ConcurrencyTest, ConcurrentUpdatesLoseNoVersion) {
  TestServer server("concurrency", {"t1"});
  ASSERT_EQ(server.client().Put("/fhir/t1/Patient/hot", R"({"resourceType":"Patient","id":"hot"})").status, 201);

  constexpr int kThreads = 12;
  constexpr int kUpdates = 15;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  std::mutex mu;
  std::multiset<std::string> etags;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      HttpClient client(server.port());
      for (int i = 0; i < kUpdates; ++i) {
        std::string body = R"({"resourceType":"Patient","id":"hot","name":[{"family":"T)" + std::to_string(t) +
                           "U" + std::to_string(i) + R"("}]})";
        auto res = client.Put("/fhir/t1/Patient/hot", body);
        if (res.status == 200) {
          ++ok;
          std::lock_guard lock(mu);
          etags.insert(res.Header("ETag"));
        } else {
          ADD_FAILURE() << res.status << " " << res.body;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kThreads * kUpdates);
  // Every acknowledged write got a distinct version.
  EXPECT_EQ(std::set<std::string>(etags.begin(), etags.end()).size(), etags.size());

  auto current = server.client().Get("/fhir/t1/Patient/hot").Json();
  EXPECT_EQ(current.at("meta").at("versionId").as_string(), std::to_string(1 + kThreads * kUpdates));
  auto history = server.client().Get("/fhir/t1/Patient/hot/_history?_count=1000").Json();
  const auto& entries = history.at("entry").as_array();
  ASSERT_EQ(entries.size(), static_cast<std::size_t>(1 + kThreads * kUpdates));
  for (std::size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i].at("resource").at("meta").at("versionId").as_string(),
              std::to_string(entries.size() - i));
  }
}

TEST(ConcurrencyTest, ConcurrentUpdateAsCreateOfOneIdMakesOneHistory) {
  TestServer server("concurrency_create", {"t1"});
  constexpr int kThreads = 8;
  std::atomic<int> created{0};
  std::atomic<int> updated{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      HttpClient client(server.port());
      auto res = client.Put("/fhir/t1/Patient/race", R"({"resourceType":"Patient","id":"race"})");
      if (res.status == 201) ++created;
      else if (res.status == 200) ++updated;
      else ADD_FAILURE() << res.status << " " << res.body;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(updated.load(), kThreads - 1);
  auto history = server.client().Get("/fhir/t1/Patient/race/_history").Json();
  EXPECT_EQ(history.at("entry").as_array().size(), static_cast<std::size_t>(kThreads));
}

TEST(ConcurrencyTest, IfMatchRaceHasExactlyOneWinner) {
  TestServer server("concurrency_ifmatch", {"t1"});
  ASSERT_EQ(server.client().Put("/fhir/t1/Patient/cas", R"({"resourceType":"Patient","id":"cas"})").status, 201);
  constexpr int kThreads = 8;
  std::atomic<int> won{0};
  std::atomic<int> precondition_failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      HttpClient client(server.port());
      auto res = client.Put("/fhir/t1/Patient/cas", R"({"resourceType":"Patient","id":"cas","active":true})",
                            {{"If-Match", "W/\"1\""}});
      if (res.status == 200) ++won;
      else if (res.status == 412) ++precondition_failed;
      else ADD_FAILURE() << res.status << " " << res.body;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(won.load(), 1);
  EXPECT_EQ(precondition_failed.load(), kThreads - 1);
}

}  // namespace
}  // namespace medgrid::testing
