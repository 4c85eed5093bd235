// The differential search test: medgrid and an independent implementation
// (Medplum's in-memory fhir-router, see tests/differential/README.md) load
// the same seeded data and answer the same 498 generated queries; every
// difference in the matched ids must be one recorded, with the spec section
// that says who is right, in tests/differential/known_divergences.json.
// Run once with the default page size and once with _count=7, so paging
// is compared too.
#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {

int Shell(const std::string& command) {
  int rc = std::system(command.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(Differential, DivergencesFromMedplumAreAllKnown) {
  if (std::getenv("MEDGRID_DIFFERENTIAL_DIR") == nullptr) {
    GTEST_SKIP() << "MEDGRID_DIFFERENTIAL_DIR is not set; tests/run.sh sets it from tests/differential/install.sh";
  }
  const std::string src = MEDGRID_SOURCE_DIR;
  const std::string node = std::string(std::getenv("MEDGRID_DIFFERENTIAL_DIR")) + "/bin/node";
  TestServer server("differential", {"difftest"});
  char dir_template[] = "/tmp/medgrid-diff.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string data = dir + "/data.ndjson";
  const std::string queries = dir + "/queries.txt";
  ASSERT_EQ(Shell("python3 " + src + "/bench/searchdata/generate.py --patients 30 --seed 7 > " + data), 0);
  ASSERT_EQ(Shell("python3 " + src + "/tests/differential/gen_queries.py --data " + data + " --seed 7 > " + queries), 0);
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port()) + "/fhir/difftest";
  const std::string compare = "python3 " + src + "/tests/differential/compare.py --base " + base + " --data " + data +
                              " --queries " + queries + " --medplum-results " + dir + "/medplum.jsonl --node " + node;
  // The first run loads the data and saves Medplum's answers for the second.
  const std::string medplum = node + " " + src + "/tests/differential/medplum_search.mjs --data " + data +
                              " --queries " + queries + " > " + dir + "/medplum.jsonl";
  ASSERT_EQ(Shell(medplum), 0);
  EXPECT_EQ(Shell(compare), 0);
  EXPECT_EQ(Shell(compare + " --skip-load --count 7"), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace medgrid::testing
