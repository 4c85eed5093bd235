// Patient/$everything over HTTP against real PostgreSQL: completeness (the
// compartment, what it references, the patient itself), isolation between
// patients and tenants, _type, _since, _count with paging, errors, and the
// type level behind the tenant's everythingTypeLevel flag.
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {

namespace json = boost::json;

using Keys = std::set<std::string>;

class EverythingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer("everything", {"t1", "t2"});
    HttpClient& c = server_->client();
    auto put = [&](const std::string& tenant, const std::string& ref, const std::string& body) {
      auto res = c.Put("/fhir/" + tenant + "/" + ref, body);
      ASSERT_TRUE(res.status == 200 || res.status == 201) << ref << ": " << res.body;
    };
    for (const std::string t : {"t1", "t2"}) {
      const std::string family = t == "t1" ? "One" : "Two";
      put(t, "Practitioner/gp1", R"({"resourceType":"Practitioner","id":"gp1"})");
      put(t, "Practitioner/dr1", R"({"resourceType":"Practitioner","id":"dr1"})");
      put(t, "Practitioner/dr2", R"({"resourceType":"Practitioner","id":"dr2"})");
      put(t, "Organization/org1", R"({"resourceType":"Organization","id":"org1"})");
      put(t, "Patient/p1",
          R"({"resourceType":"Patient","id":"p1","name":[{"family":")" + family +
              R"("}],"generalPractitioner":[{"reference":"Practitioner/gp1"}],)"
              R"("managingOrganization":{"reference":"Organization/org1"}})");
      put(t, "Observation/o1",
          R"({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"hr"},)"
          R"("subject":{"reference":"Patient/p1"},"performer":[{"reference":"Practitioner/dr1"}]})");
    }
    // Only t1's p1 has more; t2 has one resource t1 lacks.
    put("t1", "Encounter/e1",
        R"({"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"AMB"},)"
        R"("subject":{"reference":"Patient/p1"},"participant":[{"individual":{"reference":"Practitioner/dr1"}}]})");
    put("t1", "Condition/c1",
        R"({"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},)"
        R"("encounter":{"reference":"Encounter/e1"}})");
    put("t1", "Observation/o2",
        R"({"resourceType":"Observation","id":"o2","status":"final","code":{"text":"bp"},)"
        R"("subject":{"reference":"Patient/p1"},"encounter":{"reference":"Encounter/e1"}})");
    put("t1", "Patient/p2", R"({"resourceType":"Patient","id":"p2"})");
    put("t1", "Observation/o3",
        R"({"resourceType":"Observation","id":"o3","status":"final","code":{"text":"hr"},)"
        R"("subject":{"reference":"Patient/p2"}})");
    put("t1", "Encounter/e2",
        R"({"resourceType":"Encounter","id":"e2","status":"finished","class":{"code":"AMB"},)"
        R"("subject":{"reference":"Patient/p2"},"participant":[{"individual":{"reference":"Practitioner/dr2"}}]})");
    put("t2", "Observation/o9",
        R"({"resourceType":"Observation","id":"o9","status":"final","code":{"text":"hr"},)"
        R"("subject":{"reference":"Patient/p1"}})");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  HttpClient& c() { return server_->client(); }

  static std::string Link(const json::value& bundle, std::string_view relation) {
    for (const json::value& l : bundle.at("link").as_array()) {
      if (l.at("relation").as_string() == relation) return std::string(l.at("url").as_string());
    }
    return "";
  }
  // The path and query of an absolute link.
  std::string Target(const std::string& link) {
    std::string prefix = "http://127.0.0.1:" + std::to_string(server_->port());
    EXPECT_EQ(link.rfind(prefix, 0), 0u) << link;
    return link.substr(prefix.size());
  }
  // "Type/id" of every entry of a searchset; fails on a duplicate.
  static Keys EntryKeys(const json::value& bundle) {
    Keys keys;
    EXPECT_EQ(bundle.at("type").as_string(), "searchset");
    if (const json::value* entries = bundle.as_object().if_contains("entry")) {
      for (const json::value& e : entries->as_array()) {
        const json::value& r = e.at("resource");
        std::string key = std::string(r.at("resourceType").as_string()) + "/" + std::string(r.at("id").as_string());
        EXPECT_TRUE(keys.insert(key).second) << "duplicate entry " << key;
      }
    }
    return keys;
  }
  // Every page from `target` on, following next links: the union of their
  // entries and the number of pages.
  std::pair<Keys, int> AllPages(std::string target) {
    Keys all;
    int pages = 0;
    while (!target.empty() && pages < 100) {
      auto res = c().Get(target);
      EXPECT_EQ(res.status, 200) << target << ": " << res.body;
      if (res.status != 200) break;
      const json::value bundle = res.Json();
      ++pages;
      for (const std::string& k : EntryKeys(bundle)) all.insert(k);
      std::string next = Link(bundle, "next");
      if (!next.empty()) {
        // Next links come back to $everything, never to the compartment search.
        EXPECT_NE(next.find("/$everything?"), std::string::npos) << next;
        EXPECT_NE(next.find("_cursor="), std::string::npos) << next;
      }
      target = next.empty() ? "" : Target(next);
    }
    return {all, pages};
  }

  static TestServer* server_;
};
TestServer* EverythingTest::server_ = nullptr;

const Keys kP1 = {"Patient/p1",        "Observation/o1",    "Observation/o2",    "Encounter/e1", "Condition/c1",
                  "Practitioner/dr1",  "Practitioner/gp1",  "Organization/org1"};

TEST_F(EverythingTest, ReturnsTheCompartmentWhatItReferencesAndThePatient) {
  auto res = c().Get("/fhir/t1/Patient/p1/$everything");
  ASSERT_EQ(res.status, 200) << res.body;
  const json::value bundle = res.Json();
  // Nothing of p2 (o3, e2, dr2 only e2 references) and nothing of t2 (o9).
  EXPECT_EQ(EntryKeys(bundle), kP1);
  // The patient comes first, as t1's.
  const json::value& first = bundle.at("entry").as_array()[0];
  EXPECT_EQ(first.at("resource").at("id").as_string(), "p1");
  EXPECT_EQ(first.at("resource").at("name").as_array()[0].at("family").as_string(), "One");
  EXPECT_EQ(first.at("search").at("mode").as_string(), "match");
  EXPECT_NE(Link(bundle, "self").find("/fhir/t1/Patient/p1/$everything"), std::string::npos);
  EXPECT_EQ(Link(bundle, "next"), "");
}

TEST_F(EverythingTest, TenantsAreIsolated) {
  auto res = c().Get("/fhir/t2/Patient/p1/$everything");
  ASSERT_EQ(res.status, 200) << res.body;
  const json::value bundle = res.Json();
  EXPECT_EQ(EntryKeys(bundle), (Keys{"Patient/p1", "Observation/o1", "Observation/o9", "Practitioner/dr1",
                                     "Practitioner/gp1", "Organization/org1"}));
  EXPECT_EQ(bundle.at("entry").as_array()[0].at("resource").at("name").as_array()[0].at("family").as_string(), "Two");
  res = c().Get("/fhir/t1/Patient/p2/$everything");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(EntryKeys(res.Json()), (Keys{"Patient/p2", "Observation/o3", "Encounter/e2", "Practitioner/dr2"}));
}

TEST_F(EverythingTest, TypeRestrictsEveryEntryIncludingThePatient) {
  auto res = c().Get("/fhir/t1/Patient/p1/$everything?_type=Observation,Practitioner");
  ASSERT_EQ(res.status, 200) << res.body;
  // dr1 through o1's performer and gp1 through the patient's
  // generalPractitioner: referenced resources are kept by their own type,
  // even where the referrer (the patient) is not asked for.
  EXPECT_EQ(EntryKeys(res.Json()),
            (Keys{"Observation/o1", "Observation/o2", "Practitioner/dr1", "Practitioner/gp1"}));
  res = c().Get("/fhir/t1/Patient/p1/$everything?_type=Patient");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(EntryKeys(res.Json()), (Keys{"Patient/p1"}));
  res = c().Get("/fhir/t1/Patient/p1/$everything?_type=Nope");
  EXPECT_EQ(res.status, 400) << res.body;
}

TEST_F(EverythingTest, SinceReturnsOnlyWhatChangedSince) {
  auto put = c().Put("/fhir/t1/Observation/o2",
                     R"({"resourceType":"Observation","id":"o2","status":"amended","code":{"text":"bp"},)"
                     R"("subject":{"reference":"Patient/p1"},"encounter":{"reference":"Encounter/e1"}})");
  ASSERT_EQ(put.status, 200) << put.body;
  const std::string since = std::string(put.Json().at("meta").at("lastUpdated").as_string());

  // What changed at or after `since`, from the full result.
  auto full = c().Get("/fhir/t1/Patient/p1/$everything");
  ASSERT_EQ(full.status, 200) << full.body;
  const json::value all = full.Json();
  Keys expected;
  for (const json::value& e : all.at("entry").as_array()) {
    const json::value& r = e.at("resource");
    if (std::string(r.at("meta").at("lastUpdated").as_string()) >= since) {
      expected.insert(std::string(r.at("resourceType").as_string()) + "/" + std::string(r.at("id").as_string()));
    }
  }
  ASSERT_TRUE(expected.contains("Observation/o2"));
  ASSERT_FALSE(expected.contains("Patient/p1"));

  auto res = c().Get("/fhir/t1/Patient/p1/$everything?_since=" + since);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(EntryKeys(res.Json()), expected);
  res = c().Get("/fhir/t1/Patient/p1/$everything?_since=yesterday");
  EXPECT_EQ(res.status, 400) << res.body;
  // A date without a time is not an instant.
  res = c().Get("/fhir/t1/Patient/p1/$everything?_since=2020-01-01");
  EXPECT_EQ(res.status, 400) << res.body;
  // Far in the past: everything.
  res = c().Get("/fhir/t1/Patient/p1/$everything?_since=2000-01-01T00:00:00Z");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(EntryKeys(res.Json()), kP1);
}

TEST_F(EverythingTest, PagesTogetherHoldWhatOneBigPageHolds) {
  auto big = c().Get("/fhir/t1/Patient/p1/$everything?_count=1000");
  ASSERT_EQ(big.status, 200) << big.body;
  EXPECT_EQ(EntryKeys(big.Json()), kP1);
  for (int count : {1, 2, 3}) {
    SCOPED_TRACE(count);
    auto [keys, pages] = AllPages("/fhir/t1/Patient/p1/$everything?_count=" + std::to_string(count));
    EXPECT_EQ(keys, kP1);
    // Four compartment resources (o1, o2, e1, c1) at `count` a page (the
    // last page may be empty: a full page does not look past its types).
    EXPECT_GE(pages, (4 + count - 1) / count);
    EXPECT_LE(pages, (4 + count - 1) / count + 1);
  }
  // _type travels with the next links; dr1, which o1 references, is not asked for.
  auto [keys, pages] = AllPages("/fhir/t1/Patient/p1/$everything?_count=1&_type=Observation");
  EXPECT_EQ(keys, (Keys{"Observation/o1", "Observation/o2"}));
  EXPECT_GE(pages, 2);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/p1/$everything?_count=0").status, 400);
}

TEST_F(EverythingTest, Errors) {
  auto res = c().Get("/fhir/t1/Patient/nobody/$everything");
  EXPECT_EQ(res.status, 404) << res.body;
  EXPECT_EQ(res.Json().at("resourceType").as_string(), "OperationOutcome");
  // p1 of t1 is not a patient of a tenant that does not exist.
  EXPECT_EQ(c().Get("/fhir/t9/Patient/p1/$everything").status, 404);

  ASSERT_EQ(c().Put("/fhir/t1/Patient/gone", R"({"resourceType":"Patient","id":"gone"})").status, 201);
  ASSERT_EQ(c().Delete("/fhir/t1/Patient/gone").status, 204);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/gone/$everything").status, 410);

  res = c().Get("/fhir/t1/Patient/p1/$everything?start=2020-01-01");
  EXPECT_EQ(res.status, 400) << res.body;
  EXPECT_EQ(res.IssueCode(), "not-supported");
  EXPECT_NE(res.Diagnostics().find("start"), std::string::npos) << res.body;
  res = c().Get("/fhir/t1/Patient/p1/$everything?_include=*");
  EXPECT_EQ(res.status, 400) << res.body;
  EXPECT_NE(res.Diagnostics().find("_include"), std::string::npos) << res.body;
  EXPECT_EQ(c().Get("/fhir/t1/Patient/p1/$everything?foo=1").status, 400);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/p1/$everything?_format=json").status, 200);
  // Only Patient has $everything here.
  EXPECT_EQ(c().Get("/fhir/t1/Observation/o1/$everything").status, 404);
  EXPECT_EQ(c().Get("/fhir/t1/Patient/p1/$nope").status, 404);
  EXPECT_EQ(c().Send("DELETE", "/fhir/t1/Patient/p1/$everything").status, 405);
}

TEST_F(EverythingTest, CapabilityStatementDeclaresIt) {
  auto res = c().Get("/fhir/t1/metadata");
  ASSERT_EQ(res.status, 200);
  const json::value caps = res.Json();
  bool found = false;
  for (const json::value& r : caps.at("rest").as_array()[0].at("resource").as_array()) {
    if (r.at("type").as_string() != "Patient") continue;
    for (const json::value& op : r.at("operation").as_array()) {
      found = found || (op.at("name").as_string() == "everything" &&
                        op.at("definition").as_string() == "http://hl7.org/fhir/OperationDefinition/Patient-everything");
    }
  }
  EXPECT_TRUE(found) << res.body;
}

TEST_F(EverythingTest, TypeLevelOnlyForTenantsAllowedIt) {
  auto res = c().Get("/fhir/t1/Patient/$everything");
  EXPECT_EQ(res.status, 403) << res.body;
  EXPECT_EQ(res.Json().at("resourceType").as_string(), "OperationOutcome");

  res = c().Post("/admin/tenants", R"({"id":"tall","everythingTypeLevel":true})");
  ASSERT_EQ(res.status, 201) << res.body;
  EXPECT_TRUE(res.Json().at("everythingTypeLevel").as_bool());
  res = c().Post("/admin/tenants", R"({"id":"tbad","everythingTypeLevel":"yes"})");
  EXPECT_EQ(res.status, 400) << res.body;
  res = c().Get("/admin/tenants");
  ASSERT_EQ(res.status, 200);
  const json::value listed = res.Json();
  for (const json::value& t : listed.at("tenants").as_array()) {
    EXPECT_EQ(t.at("everythingTypeLevel").as_bool(), t.at("id").as_string() == "tall") << t;
  }

  for (const std::string p : {"a1", "a2", "a3"}) {
    ASSERT_EQ(c().Put("/fhir/tall/Patient/" + p, R"({"resourceType":"Patient","id":")" + p + R"("})").status, 201);
    ASSERT_EQ(c().Put("/fhir/tall/Observation/obs-" + p,
                      R"({"resourceType":"Observation","id":"obs-)" + p +
                          R"(","status":"final","code":{"text":"hr"},"subject":{"reference":"Patient/)" + p + R"("}})")
                  .status,
              201);
  }
  const Keys all = {"Patient/a1", "Patient/a2", "Patient/a3", "Observation/obs-a1", "Observation/obs-a2",
                    "Observation/obs-a3"};
  res = c().Get("/fhir/tall/Patient/$everything");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(EntryKeys(res.Json()), all);
  // One patient a page, each with its compartment.
  res = c().Get("/fhir/tall/Patient/$everything?_count=1");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(EntryKeys(res.Json()), (Keys{"Patient/a1", "Observation/obs-a1"}));
  auto [keys, pages] = AllPages("/fhir/tall/Patient/$everything?_count=1");
  EXPECT_EQ(keys, all);
  EXPECT_GE(pages, 3);
  res = c().Get("/fhir/tall/Patient/$everything?_type=Observation");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(EntryKeys(res.Json()), (Keys{"Observation/obs-a1", "Observation/obs-a2", "Observation/obs-a3"}));
  EXPECT_EQ(c().Get("/fhir/tall/Patient/$everything?end=2020").status, 400);
}

}  // namespace
}  // namespace medgrid::testing
