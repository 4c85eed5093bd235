// Official-examples round trip: every clinical and administrative example in
// hl7.fhir.r4.examples is PUT into a tenant and read back equal to what was
// published, apart from meta (which the server owns: versionId,
// lastUpdated). Equality is exact, decimals included ("1.50" stays "1.50").
#include <atomic>
#include <mutex>
#include <thread>

#include "common/official_examples.h"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/fhir/json.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

json::value WithoutMeta(json::value v) {
  if (v.is_object()) v.get_object().erase("meta");
  return v;
}

TEST(OfficialExamples, PutAndReadBackEqual) {
  TestServer server("examples", {"ex"});
  std::vector<ExampleFile> examples = ClinicalAndAdministrativeExamples(TestServer::FhirPackageDir());
  ASSERT_GT(examples.size(), 600u) << "the package seems incomplete";

  std::mutex mu;
  std::map<std::string, std::string> rejected;  // file -> status and diagnostics
  std::vector<std::string> mismatched;
  std::atomic<std::size_t> next{0};
  std::atomic<int> round_tripped{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      HttpClient client(server.port());
      for (std::size_t i = next++; i < examples.size(); i = next++) {
        const ExampleFile& ex = examples[i];
        const std::string url = "/fhir/ex/" + ex.type + "/" + ex.id;
        auto put = client.Put(url, ex.text);
        if (put.status != 201 && put.status != 200) {
          std::lock_guard lock(mu);
          rejected[ex.file] = std::to_string(put.status) + " " + put.Diagnostics();
          continue;
        }
        // The version this PUT wrote: the server may write later ones itself
        // (a requested Subscription is made active).
        auto got = client.Get(url + "/_history/" + std::string(put.Json().at("meta").at("versionId").as_string()));
        auto original = fhir::ParseJson(ex.text);
        auto stored = fhir::ParseJson(got.body);
        if (got.status != 200 || !original.ok() || !stored.ok() ||
            !fhir::JsonEqual(WithoutMeta(*original), WithoutMeta(*stored))) {
          std::lock_guard lock(mu);
          mismatched.push_back(ex.file);
          continue;
        }
        ++round_tripped;
      }
    });
  }
  for (auto& th : threads) th.join();

  for (const auto& [file, why] : rejected) {
    auto known = KnownInvalidExamples().find(file);
    EXPECT_NE(known, KnownInvalidExamples().end()) << "rejected: " << file << ": " << why;
  }
  for (const auto& [file, reason] : KnownInvalidExamples()) {
    EXPECT_TRUE(rejected.contains(file)) << file << " is listed as invalid but was accepted; remove it from the list";
  }
  EXPECT_TRUE(mismatched.empty()) << "read back differently: " << ::testing::PrintToString(mismatched);
  std::cout << "round-tripped " << round_tripped.load() << " of " << examples.size() << " examples ("
            << rejected.size() << " known-invalid)\n";
  EXPECT_EQ(static_cast<std::size_t>(round_tripped.load()) + rejected.size(), examples.size());
}

}  // namespace
}  // namespace medgrid::testing
