// FHIR search over HTTP against real PostgreSQL: every parameter type,
// modifier and prefix, chains, _has, includes, sorting, paging, totals,
// subsetting, system and compartment search, POST _search, lenient
// handling, conditional create/update/delete, and tenant isolation.
//
// Tenant t1's data is small and hand-made so that every expected result can
// be checked by reading it. Tenants t4 and t5 hold seeded or generated sets
// large enough to reach the plans that depend on set sizes (hashing, probes,
// walks, the code-and-date index); their expected results follow from how
// they were made, or from the general query. The differential test compares
// generated data with Medplum.
#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "integration/harness.h"
#include "pqxx/pqxx"

namespace medgrid::testing {
namespace {

namespace json = boost::json;
using Ids = std::set<std::string>;

const char* const kResources[] = {
    R"({"resourceType":"Organization","id":"o1","name":"Acme Health"})",
    R"({"resourceType":"Practitioner","id":"pr1","name":[{"family":"Welby","given":["Marcus"]}]})",
    R"({"resourceType":"Patient","id":"p1","meta":{"tag":[{"system":"http://tags","code":"vip"}]},)"
    R"("text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter narrative &amp; more</div>"},)"
    R"("identifier":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]},)"
    R"("system":"http://hospital/mrn","value":"MRN1"}],"active":true,)"
    R"("name":[{"family":"Chalmers","given":["Peter","James"]}],"gender":"male","birthDate":"1974-12-25",)"
    R"("address":[{"city":"Zürich"}],"managingOrganization":{"reference":"Organization/o1"}})",
    R"({"resourceType":"Patient","id":"p2","identifier":[{"system":"http://hospital/mrn","value":"MRN2"}],)"
    R"("active":false,"name":[{"family":"Müller","given":["Anna"]}],"gender":"female","birthDate":"1980-05"})",
    R"({"resourceType":"Patient","id":"p3","name":[{"family":"Chalmerson","given":["Zed"]}],"gender":"other",)"
    R"("birthDate":"2001-01-01","generalPractitioner":[{"reference":"Practitioner/pr1"}]})",
    R"({"resourceType":"Observation","id":"ob1","status":"final",)"
    R"("category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],)"
    R"("code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic blood pressure"}]},)"
    R"("subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-03-15T10:00:00Z",)"
    R"("performer":[{"reference":"Practitioner/pr1"}],)"
    R"("valueQuantity":{"value":120,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}})",
    R"({"resourceType":"Observation","id":"ob2","status":"final",)"
    R"("code":{"coding":[{"system":"http://loinc.org","code":"4548-4"}],"text":"HbA1c"},)"
    R"("subject":{"reference":"Patient/p1"},"effectivePeriod":{"start":"2021-01-01","end":"2021-01-31"},)"
    R"("valueQuantity":{"value":6.5,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}})",
    R"({"resourceType":"Observation","id":"ob3","status":"preliminary",)"
    R"("code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},)"
    R"("subject":{"reference":"Patient/p2"},"effectiveDateTime":"2022-07-01",)"
    R"("valueQuantity":{"value":140,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}})",
    R"({"resourceType":"Observation","id":"ob4","status":"final",)"
    R"("code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},)"
    R"("subject":{"reference":"Patient/p3"},"effectiveDateTime":"2023",)"
    R"("component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},)"
    R"("valueQuantity":{"value":130,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},)"
    R"({"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},)"
    R"("valueQuantity":{"value":85,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]})",
    R"({"resourceType":"Encounter","id":"e1","status":"finished",)"
    R"("class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},)"
    R"("subject":{"reference":"Patient/p1"},"participant":[{"individual":{"reference":"Practitioner/pr1"}}],)"
    R"("period":{"start":"2020-03-15T09:00:00Z","end":"2020-03-15T11:00:00Z"}})",
    R"({"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},)"
    R"("code":{"coding":[{"system":"http://snomed.info/sct","code":"44054006","display":"Diabetes"}]},)"
    R"("onsetDateTime":"2019"})",
    R"({"resourceType":"ValueSet","id":"vs1","url":"http://example.org/fhir/ValueSet/vitals","status":"active"})",
};

// Tenant t2 reuses ids of t1 on purpose.
const char* const kOtherTenant[] = {
    R"({"resourceType":"Patient","id":"p1","name":[{"family":"Other"}],"gender":"female"})",
    R"({"resourceType":"Observation","id":"ob9","status":"final",)"
    R"("code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"subject":{"reference":"Patient/p1"}})",
};

class SearchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer("search", {"t1", "t2", "t3", "t4", "t5", "t6"});
    auto put_all = [](const std::string& tenant, auto& list) {
      for (const char* r : list) {
        json::value v = json::parse(r);
        std::string target = "/fhir/" + tenant + "/" + std::string(v.at("resourceType").as_string()) + "/" +
                             std::string(v.at("id").as_string());
        auto res = server_->client().Put(target, r);
        ASSERT_TRUE(res.status == 201 || res.status == 200) << target << ": " << res.body;
      }
    };
    put_all("t1", kResources);
    put_all("t2", kOtherTenant);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  HttpClient& c() { return server_->client(); }
  std::string Base(const std::string& tenant = "t1") {
    return "http://127.0.0.1:" + std::to_string(server_->port()) + "/fhir/" + tenant;
  }

  // Runs a search and returns the Bundle; fails the test on a non-200.
  json::value Search(const std::string& target, const std::map<std::string, std::string>& headers = {}) {
    auto res = c().Get(target, headers);
    EXPECT_EQ(res.status, 200) << target << ": " << res.body;
    return res.Json();
  }
  static Ids Entries(const json::value& bundle, std::string_view mode) {
    Ids ids;
    if (const json::value* entries = bundle.as_object().if_contains("entry")) {
      for (const json::value& e : entries->as_array()) {
        if (e.at("search").at("mode").as_string() != mode) continue;
        const json::object& r = e.at("resource").as_object();
        ids.insert(std::string(r.at("resourceType").as_string()) + "/" + std::string(r.at("id").as_string()));
      }
    }
    return ids;
  }
  // The "Type/id" of every match of `target` in tenant t1 (or the target's own path).
  Ids Matches(const std::string& target, const std::map<std::string, std::string>& headers = {}) {
    return Entries(Search(target.rfind("/fhir/", 0) == 0 ? target : "/fhir/t1/" + target, headers), "match");
  }
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
  // The ids of a page's matches, in order.
  static std::vector<std::string> PageIds(const json::value& bundle) {
    std::vector<std::string> ids;
    if (const json::value* entries = bundle.as_object().if_contains("entry")) {
      for (const json::value& e : entries->as_array()) {
        if (e.at("search").at("mode").as_string() == "match") ids.emplace_back(e.at("resource").at("id").as_string());
      }
    }
    return ids;
  }
  // The pages from `first` on, following the next links: each page's target,
  // and the ids of all of them in order.
  struct Pages {
    std::vector<std::string> targets;
    std::vector<std::string> ids;
  };
  Pages PagesForward(const std::string& first) {
    Pages pages;
    for (std::string target = first; !target.empty();) {
      pages.targets.push_back(target);
      json::value page = Search(target);
      for (std::string& id : PageIds(page)) pages.ids.push_back(std::move(id));
      std::string next = Link(page, "next");
      target = next.empty() ? "" : Target(next);
    }
    return pages;
  }
  // The ids of the pages before the one at `target`, in order, following the
  // previous links.
  std::vector<std::string> IdsBefore(const std::string& target) {
    std::vector<std::string> ids;
    json::value page = Search(target);
    for (std::string prev = Link(page, "previous"); !prev.empty(); prev = Link(page, "previous")) {
      page = Search(Target(prev));
      std::vector<std::string> before = PageIds(page);
      ids.insert(ids.begin(), before.begin(), before.end());
    }
    return ids;
  }

  static TestServer* server_;
};
TestServer* SearchTest::server_ = nullptr;

TEST_F(SearchTest, StringDefaultIsCaseAndAccentInsensitivePrefix) {
  EXPECT_EQ(Matches("Patient?name=chal"), (Ids{"Patient/p1", "Patient/p3"}));
  EXPECT_EQ(Matches("Patient?name=PETER"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?family=muller"), (Ids{"Patient/p2"}));
  EXPECT_EQ(Matches("Patient?address-city=zurich"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?name=nobody"), Ids{});
}

TEST_F(SearchTest, StringModifiers) {
  EXPECT_EQ(Matches("Patient?family:exact=M%C3%BCller"), (Ids{"Patient/p2"}));
  EXPECT_EQ(Matches("Patient?family:exact=muller"), Ids{});
  EXPECT_EQ(Matches("Patient?family:exact=Chalmers"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?name:contains=ALM"), (Ids{"Patient/p1", "Patient/p3"}));
  EXPECT_EQ(Matches("Patient?address-city:missing=true"), (Ids{"Patient/p2", "Patient/p3"}));
  EXPECT_EQ(Matches("Patient?address-city:missing=false"), (Ids{"Patient/p1"}));
}

TEST_F(SearchTest, AndOrAndEscapes) {
  EXPECT_EQ(Matches("Patient?gender=male,female"), (Ids{"Patient/p1", "Patient/p2"}));
  EXPECT_EQ(Matches("Patient?name=chal&gender=other"), (Ids{"Patient/p3"}));
  EXPECT_EQ(Matches("Patient?name=chal&name=zed"), (Ids{"Patient/p3"}));
  // An escaped comma is part of the value, not an OR.
  EXPECT_EQ(Matches("Patient?name=chal%5C,zed"), Ids{});
}

TEST_F(SearchTest, Tokens) {
  EXPECT_EQ(Matches("Patient?gender=male"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?gender:not=male"), (Ids{"Patient/p2", "Patient/p3"}));
  EXPECT_EQ(Matches("Patient?identifier=http://hospital/mrn%7CMRN1"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?identifier=MRN2"), (Ids{"Patient/p2"}));
  EXPECT_EQ(Matches("Patient?identifier=http://hospital/mrn%7C"), (Ids{"Patient/p1", "Patient/p2"}));
  EXPECT_EQ(Matches("Patient?identifier=http://other%7CMRN1"), Ids{});
  EXPECT_EQ(Matches("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203%7CMR%7CMRN1"),
            (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?active=true"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?active=false"), (Ids{"Patient/p2"}));
  EXPECT_EQ(Matches("Observation?code=http://loinc.org%7C8480-6"), (Ids{"Observation/ob1", "Observation/ob3"}));
  EXPECT_EQ(Matches("Observation?code=8480-6,4548-4"),
            (Ids{"Observation/ob1", "Observation/ob2", "Observation/ob3"}));
  EXPECT_EQ(Matches("Observation?code=%7C8480-6"), Ids{});  // "|code": codes without a system
  EXPECT_EQ(Matches("Observation?code:text=hba1"), (Ids{"Observation/ob2"}));
  EXPECT_EQ(Matches("Observation?code:text=systolic"), (Ids{"Observation/ob1"}));
  EXPECT_EQ(Matches("Observation?combo-code=8480-6"),
            (Ids{"Observation/ob1", "Observation/ob3", "Observation/ob4"}));
}

TEST_F(SearchTest, DatesArePrecisionRanges) {
  EXPECT_EQ(Matches("Patient?birthdate=1974"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?birthdate=1980"), (Ids{"Patient/p2"}));
  EXPECT_EQ(Matches("Patient?birthdate=1980-05"), (Ids{"Patient/p2"}));
  EXPECT_EQ(Matches("Patient?birthdate=1980-05-10"), Ids{});  // a month is not within a day
  EXPECT_EQ(Matches("Patient?birthdate=ne1974"), (Ids{"Patient/p2", "Patient/p3"}));
  EXPECT_EQ(Matches("Patient?birthdate=lt1980"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?birthdate=gt2000"), (Ids{"Patient/p3"}));
  EXPECT_EQ(Matches("Patient?birthdate=ge1980-05"), (Ids{"Patient/p2", "Patient/p3"}));
  EXPECT_EQ(Matches("Patient?birthdate=le1980-05"), (Ids{"Patient/p1", "Patient/p2"}));
  EXPECT_EQ(Matches("Patient?birthdate=sa1980"), (Ids{"Patient/p3"}));
  EXPECT_EQ(Matches("Patient?birthdate=eb1980"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?birthdate=ap1974-12-24"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?birthdate=ge1970&birthdate=lt1990"), (Ids{"Patient/p1", "Patient/p2"}));
  // A period is a range: January 2021 contains it, the 15th does not.
  EXPECT_EQ(Matches("Observation?date=2021-01"), (Ids{"Observation/ob2"}));
  EXPECT_EQ(Matches("Observation?date=2021-01-15"), Ids{});
  EXPECT_EQ(Matches("Observation?date=ge2021"), (Ids{"Observation/ob2", "Observation/ob3", "Observation/ob4"}));
  EXPECT_EQ(Matches("Observation?date=lt2021"), (Ids{"Observation/ob1"}));
  EXPECT_EQ(Matches("Encounter?date=2020-03-15"), (Ids{"Encounter/e1"}));
  EXPECT_EQ(Matches("Encounter?date=2020-03-15T10:00:00Z"), Ids{});
  EXPECT_EQ(Matches("Encounter?date=gt2020-03-15T10:00:00Z"), (Ids{"Encounter/e1"}));
}

TEST_F(SearchTest, QuantitiesAndNumbers) {
  EXPECT_EQ(Matches("Observation?value-quantity=120"), (Ids{"Observation/ob1"}));
  EXPECT_EQ(Matches("Observation?value-quantity=120.4"), Ids{});  // [120.35, 120.45)
  EXPECT_EQ(Matches("Observation?value-quantity=1.2e2"), (Ids{"Observation/ob1"}));
  EXPECT_EQ(Matches("Observation?value-quantity=gt125"), (Ids{"Observation/ob3"}));
  EXPECT_EQ(Matches("Observation?value-quantity=le120"), (Ids{"Observation/ob1", "Observation/ob2"}));
  EXPECT_EQ(Matches("Observation?value-quantity=lt10%7Chttp://unitsofmeasure.org%7C%25"), (Ids{"Observation/ob2"}));
  EXPECT_EQ(Matches("Observation?value-quantity=120%7C%7Cmm%5BHg%5D"), (Ids{"Observation/ob1"}));
  EXPECT_EQ(Matches("Observation?value-quantity=120%7Chttp://unitsofmeasure.org%7C%25"), Ids{});
  EXPECT_EQ(Matches("Observation?value-quantity=ap130"), (Ids{"Observation/ob1", "Observation/ob3"}));
}

TEST_F(SearchTest, Composites) {
  EXPECT_EQ(Matches("Observation?code-value-quantity=http://loinc.org%7C8480-6$120"), (Ids{"Observation/ob1"}));
  EXPECT_EQ(Matches("Observation?component-code-value-quantity=http://loinc.org%7C8480-6$gt125"),
            (Ids{"Observation/ob4"}));
  // The components must come from the same component: 8462-4 is 85, not 130.
  EXPECT_EQ(Matches("Observation?component-code-value-quantity=http://loinc.org%7C8462-4$gt125"), Ids{});
}

TEST_F(SearchTest, References) {
  const Ids p1_obs = {"Observation/ob1", "Observation/ob2"};
  EXPECT_EQ(Matches("Observation?subject=Patient/p1"), p1_obs);
  EXPECT_EQ(Matches("Observation?subject=p1"), p1_obs);
  EXPECT_EQ(Matches("Observation?subject:Patient=p1"), p1_obs);
  EXPECT_EQ(Matches("Observation?patient=p1"), p1_obs);
  EXPECT_EQ(Matches("Observation?subject=" + Base() + "/Patient/p1"), p1_obs);
  EXPECT_EQ(Matches("Observation?subject=Patient/p1,Patient/p2"),
            (Ids{"Observation/ob1", "Observation/ob2", "Observation/ob3"}));
  EXPECT_EQ(Matches("Observation?performer:missing=true"),
            (Ids{"Observation/ob2", "Observation/ob3", "Observation/ob4"}));
}

TEST_F(SearchTest, Uris) {
  EXPECT_EQ(Matches("ValueSet?url=http://example.org/fhir/ValueSet/vitals"), (Ids{"ValueSet/vs1"}));
  EXPECT_EQ(Matches("ValueSet?url=http://example.org/fhir"), Ids{});
  EXPECT_EQ(Matches("ValueSet?url:below=http://example.org/fhir"), (Ids{"ValueSet/vs1"}));
  EXPECT_EQ(Matches("ValueSet?url:above=http://example.org/fhir/ValueSet/vitals/v2"), (Ids{"ValueSet/vs1"}));
}

TEST_F(SearchTest, SpecialAndResourceParameters) {
  EXPECT_EQ(Matches("Patient?_id=p1,p2"), (Ids{"Patient/p1", "Patient/p2"}));
  EXPECT_EQ(Matches("Patient?_tag=http://tags%7Cvip"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?_lastUpdated=gt2000-01-01"), (Ids{"Patient/p1", "Patient/p2", "Patient/p3"}));
  EXPECT_EQ(Matches("Patient?_lastUpdated=lt2000-01-01"), Ids{});
  EXPECT_EQ(Matches("Patient?_text=narrative"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?_content=Chalmers"), (Ids{"Patient/p1"}));
}

TEST_F(SearchTest, Chains) {
  EXPECT_EQ(Matches("Observation?subject:Patient.name=chalmers"),
            (Ids{"Observation/ob1", "Observation/ob2", "Observation/ob4"}));
  EXPECT_EQ(Matches("Observation?subject.gender=female"), (Ids{"Observation/ob3"}));
  EXPECT_EQ(Matches("Observation?subject:Patient.organization.name=acme"), (Ids{"Observation/ob1", "Observation/ob2"}));
  EXPECT_EQ(Matches("Encounter?participant:Practitioner.name=welby"), (Ids{"Encounter/e1"}));
}

TEST_F(SearchTest, ReverseChains) {
  EXPECT_EQ(Matches("Patient?_has:Observation:patient:code=4548-4"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("Patient?_has:Observation:subject:code=8480-6"), (Ids{"Patient/p1", "Patient/p2"}));
  EXPECT_EQ(Matches("Organization?_has:Patient:organization:_has:Observation:patient:code=4548-4"),
            (Ids{"Organization/o1"}));
  EXPECT_EQ(Matches("Practitioner?_has:Observation:performer:subject:Patient.gender=male"),
            (Ids{"Practitioner/pr1"}));
}

TEST_F(SearchTest, IncludesAndRevIncludes) {
  json::value b = Search("/fhir/t1/Observation?code=4548-4&_include=Observation:patient");
  EXPECT_EQ(Entries(b, "match"), (Ids{"Observation/ob2"}));
  EXPECT_EQ(Entries(b, "include"), (Ids{"Patient/p1"}));

  b = Search("/fhir/t1/Patient?_id=p1&_revinclude=Observation:subject");
  EXPECT_EQ(Entries(b, "match"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Entries(b, "include"), (Ids{"Observation/ob1", "Observation/ob2"}));

  b = Search("/fhir/t1/Observation?_id=ob2&_include=Observation:patient&_include:iterate=Patient:organization");
  EXPECT_EQ(Entries(b, "include"), (Ids{"Patient/p1", "Organization/o1"}));

  // Without :iterate an include must start at the searched type.
  auto res = c().Get("/fhir/t1/Observation?_id=ob2&_include=Observation:patient&_include=Patient:organization");
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.Diagnostics().find("_include"), std::string::npos) << res.body;

  b = Search("/fhir/t1/Observation?_id=ob1&_include=*");
  EXPECT_EQ(Entries(b, "include"), (Ids{"Patient/p1", "Practitioner/pr1"}));

  b = Search("/fhir/t1/Observation?_id=ob1&_include=Observation:subject:Patient");
  EXPECT_EQ(Entries(b, "include"), (Ids{"Patient/p1"}));
}

TEST_F(SearchTest, SortOnSeveralKeys) {
  auto order = [&](const std::string& target) {
    std::vector<std::string> ids;
    const json::value bundle = Search("/fhir/t1/" + target);
    for (const json::value& e : bundle.at("entry").as_array()) {
      ids.emplace_back(e.at("resource").at("id").as_string());
    }
    return ids;
  };
  EXPECT_EQ(order("Patient?_sort=-birthdate"), (std::vector<std::string>{"p3", "p2", "p1"}));
  EXPECT_EQ(order("Patient?_sort=birthdate"), (std::vector<std::string>{"p1", "p2", "p3"}));
  EXPECT_EQ(order("Patient?_sort=gender,-family"), (std::vector<std::string>{"p2", "p1", "p3"}));
  EXPECT_EQ(order("Observation?_sort=status,-date"), (std::vector<std::string>{"ob4", "ob2", "ob1", "ob3"}));
  EXPECT_EQ(order("Patient?_sort=-_id"), (std::vector<std::string>{"p3", "p2", "p1"}));
  // Resources without the value come last, either way.
  EXPECT_EQ(order("Patient?_sort=address-city")[0], "p1");
  EXPECT_EQ(order("Patient?_sort=-address-city")[0], "p1");
}

TEST_F(SearchTest, CursorPagingIsStableUnderWrites) {
  // Page through with _count=2 while a new Observation is written between
  // pages: every original resource is seen exactly once.
  std::vector<std::string> seen;
  std::string target = "/fhir/t1/Observation?_sort=date&_count=2";
  json::value page = Search(target);
  EXPECT_EQ(Link(page, "previous"), "");
  EXPECT_EQ(Target(Link(page, "first")), target);
  bool wrote = false;
  int pages = 0;
  std::string second_page;
  while (true) {
    ++pages;
    for (const json::value& e : page.at("entry").as_array()) seen.emplace_back(e.at("resource").at("id").as_string());
    if (!wrote) {
      auto res = c().Put("/fhir/t1/Observation/ob-late",
                         R"({"resourceType":"Observation","id":"ob-late","status":"final","code":{"text":"x"},)"
                         R"("effectiveDateTime":"1999-01-01"})");
      ASSERT_EQ(res.status, 201) << res.body;
      wrote = true;
    }
    std::string next = Link(page, "next");
    if (next.empty()) break;
    if (second_page.empty()) second_page = Target(next);
    page = Search(Target(next));
    EXPECT_NE(Link(page, "previous"), "");
  }
  EXPECT_EQ(pages, 2);
  EXPECT_EQ(seen, (std::vector<std::string>{"ob1", "ob2", "ob3", "ob4"}));
  // Going back from the second page gives the first again.
  json::value second = Search(second_page);
  json::value back = Search(Target(Link(second, "previous")));
  std::vector<std::string> first_again;
  for (const json::value& e : back.at("entry").as_array()) first_again.emplace_back(e.at("resource").at("id").as_string());
  // ob-late (1999) now sorts first, so the page before ob3 is ob1, ob2.
  EXPECT_EQ(first_again, (std::vector<std::string>{"ob1", "ob2"}));
  ASSERT_EQ(c().Delete("/fhir/t1/Observation/ob-late").status, 204);
}

TEST_F(SearchTest, Totals) {
  json::value b = Search("/fhir/t1/Observation?_count=1&_total=accurate");
  EXPECT_EQ(b.at("total").as_int64(), 4);
  EXPECT_EQ(b.at("entry").as_array().size(), 1u);
  b = Search("/fhir/t1/Observation?_count=1&_total=none");
  EXPECT_EQ(b.as_object().if_contains("total"), nullptr);
  b = Search("/fhir/t1/Observation?_count=1&_total=estimate");
  EXPECT_GE(b.at("total").as_int64(), 0);
  b = Search("/fhir/t1/Observation?code=8480-6&_summary=count");
  EXPECT_EQ(b.at("total").as_int64(), 2);
  EXPECT_EQ(b.as_object().if_contains("entry") ? b.at("entry").as_array().size() : 0u, 0u);
  // A result that fits one page reports its size.
  EXPECT_EQ(Search("/fhir/t1/Patient?gender=male").at("total").as_int64(), 1);
  // p1 matches through two of its names: counted once.
  EXPECT_EQ(Search("/fhir/t1/Patient?given=peter,james&_count=1&_total=accurate").at("total").as_int64(), 1);
}

TEST_F(SearchTest, SummaryAndElementsSubset) {
  const json::value b = Search("/fhir/t1/Patient?_id=p1&_elements=gender");
  const json::object& r = b.at("entry").at(0).at("resource").as_object();
  EXPECT_TRUE(r.contains("gender"));
  EXPECT_FALSE(r.contains("name"));
  EXPECT_FALSE(r.contains("birthDate"));
  bool subsetted = false;
  for (const json::value& t : r.at("meta").at("tag").as_array()) {
    subsetted = subsetted || t.at("code").as_string() == "SUBSETTED";
  }
  EXPECT_TRUE(subsetted);

  auto first = [&](const std::string& target) {
    return json::value(Search(target).at("entry").at(0).at("resource"));
  };
  const json::value s = first("/fhir/t1/Patient?_id=p1&_summary=true");
  EXPECT_TRUE(s.as_object().contains("name"));   // a summary element
  EXPECT_FALSE(s.as_object().contains("text"));  // not one
  const json::value d = first("/fhir/t1/Patient?_id=p1&_summary=data");
  EXPECT_FALSE(d.as_object().contains("text"));
  EXPECT_TRUE(d.as_object().contains("address"));
  const json::value t = first("/fhir/t1/Patient?_id=p1&_summary=text");
  EXPECT_TRUE(t.as_object().contains("text"));
  EXPECT_FALSE(t.as_object().contains("name"));
}

TEST_F(SearchTest, SystemCompartmentAndPostSearch) {
  EXPECT_EQ(Matches("/fhir/t1?_type=Patient,Organization&_id=p1,o1"), (Ids{"Patient/p1", "Organization/o1"}));
  EXPECT_EQ(Matches("/fhir/t1/Patient/p1/Observation"), (Ids{"Observation/ob1", "Observation/ob2"}));
  EXPECT_EQ(Matches("/fhir/t1/Patient/p1/Observation?code=4548-4"), (Ids{"Observation/ob2"}));
  Ids everything = Matches("/fhir/t1/Patient/p1/*");
  for (const char* id : {"Observation/ob1", "Observation/ob2", "Encounter/e1", "Condition/c1"}) {
    EXPECT_TRUE(everything.contains(id)) << id;
  }
  EXPECT_FALSE(everything.contains("Observation/ob3"));
  auto res = c().Send("POST", "/fhir/t1/Observation/_search", "code=4548-4&subject=Patient%2Fp1",
                      {{"Content-Type", "application/x-www-form-urlencoded"}});
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(Entries(res.Json(), "match"), (Ids{"Observation/ob2"}));
  // System search pages across types.
  json::value page = Search("/fhir/t1?_type=Patient,Organization&_count=2");
  std::set<std::string> all;
  while (true) {
    for (const auto& id : Entries(page, "match")) EXPECT_TRUE(all.insert(id).second) << id;
    std::string next = Link(page, "next");
    if (next.empty()) break;
    page = Search(Target(next));
  }
  EXPECT_EQ(all, (Ids{"Organization/o1", "Patient/p1", "Patient/p2", "Patient/p3"}));
}

TEST_F(SearchTest, UnknownParametersAndModifiersAreErrorsUnlessLenient) {
  auto res = c().Get("/fhir/t1/Patient?foo=bar");
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.Diagnostics().find("foo"), std::string::npos) << res.body;
  res = c().Get("/fhir/t1/Patient?name:fuzzy=x");
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.Diagnostics().find("fuzzy"), std::string::npos) << res.body;
  res = c().Get("/fhir/t1/Patient?birthdate=notadate");
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.Diagnostics().find("birthdate"), std::string::npos) << res.body;
  res = c().Get("/fhir/t1/Patient?_cursor=garbage");
  EXPECT_EQ(res.status, 400) << res.body;

  json::value b = Search("/fhir/t1/Patient?foo=bar&gender=male", {{"Prefer", "handling=lenient"}});
  EXPECT_EQ(Entries(b, "match"), (Ids{"Patient/p1"}));
  bool reported = false;
  for (const json::value& e : b.at("entry").as_array()) {
    if (e.at("search").at("mode").as_string() != "outcome") continue;
    EXPECT_EQ(e.at("resource").at("resourceType").as_string(), "OperationOutcome");
    reported = json::serialize(e).find("foo") != std::string::npos;
  }
  EXPECT_TRUE(reported) << json::serialize(b);
}

TEST_F(SearchTest, WritesUpdateTheIndex) {
  ASSERT_EQ(c().Put("/fhir/t3/Patient/w1", R"({"resourceType":"Patient","id":"w1","name":[{"family":"Before"}]})").status,
            201);
  EXPECT_EQ(Matches("/fhir/t3/Patient?family=before"), (Ids{"Patient/w1"}));
  ASSERT_EQ(c().Put("/fhir/t3/Patient/w1", R"({"resourceType":"Patient","id":"w1","name":[{"family":"After"}]})").status,
            200);
  EXPECT_EQ(Matches("/fhir/t3/Patient?family=before"), Ids{});
  EXPECT_EQ(Matches("/fhir/t3/Patient?family=after"), (Ids{"Patient/w1"}));
  auto patched = c().Send("PATCH", "/fhir/t3/Patient/w1", R"([{"op":"replace","path":"/name/0/family","value":"Patched"}])",
                          {{"Content-Type", "application/json-patch+json"}});
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(Matches("/fhir/t3/Patient?family=patched"), (Ids{"Patient/w1"}));
  ASSERT_EQ(c().Delete("/fhir/t3/Patient/w1").status, 204);
  EXPECT_EQ(Matches("/fhir/t3/Patient?family=patched"), Ids{});
  auto created = c().Post("/fhir/t3/Patient", R"({"resourceType":"Patient","name":[{"family":"Posted"}]})");
  ASSERT_EQ(created.status, 201);
  EXPECT_EQ(Matches("/fhir/t3/Patient?family=posted").size(), 1u);
}

TEST_F(SearchTest, AccurateTotalsCountOnlyLiveResources) {
  // _has names the referenced ids; one of them is deleted, one never existed.
  ASSERT_EQ(c().Put("/fhir/t3/Patient/h1", R"({"resourceType":"Patient","id":"h1"})").status, 201);
  ASSERT_EQ(c().Put("/fhir/t3/Patient/h2", R"({"resourceType":"Patient","id":"h2"})").status, 201);
  for (const char* subject : {"h1", "h2", "h-missing"}) {
    auto res = c().Post("/fhir/t3/Observation",
                        std::string(R"({"resourceType":"Observation","status":"final","code":{"coding":[{"code":"hx"}]},)") +
                            R"("subject":{"reference":"Patient/)" + subject + R"("}})");
    ASSERT_EQ(res.status, 201) << res.body;
  }
  ASSERT_EQ(c().Delete("/fhir/t3/Patient/h2").status, 204);
  json::value b = Search("/fhir/t3/Patient?_has:Observation:subject:code=hx&_total=accurate");
  EXPECT_EQ(b.at("total").as_int64(), 1);
  EXPECT_EQ(Entries(b, "match"), (Ids{"Patient/h1"}));
  // Several criteria: the count is the intersection.
  b = Search("/fhir/t3/Observation?code=hx&subject=Patient/h1,Patient/h2&_total=accurate&_count=1");
  EXPECT_EQ(b.at("total").as_int64(), 2);
}

TEST_F(SearchTest, AccurateTotalsOfOneCodeAreKeptCounts) {
  // _total=accurate of one code reads the counts kept per code (the folded
  // count plus deltas). Each must equal the general count (a list of the
  // code twice is counted over the index rows), before and after the
  // background worker folds the deltas, through creates, updates that
  // change or keep the codes, and deletes. Tenant t3, codes kc1/kc2.
  auto put = [&](int i, const char* code, bool bare, bool other) {
    json::array coding{json::object{{"system", "http://loinc.org"}, {"code", code}}};
    if (bare) coding.push_back(json::object{{"code", code}});
    if (other) coding.push_back(json::object{{"system", "http://other"}, {"code", code}});
    std::string id = "kc";
    id.append(std::to_string(i));
    json::object o{{"resourceType", "Observation"}, {"id", id}, {"status", "final"}};
    o["code"] = json::object{{"coding", coding}};
    auto res = c().Put("/fhir/t3/Observation/" + id, json::serialize(o));
    ASSERT_TRUE(res.status == 201 || res.status == 200) << res.body;
  };
  auto total = [&](const std::string& query) {
    return Search("/fhir/t3/Observation?" + query + "&_total=accurate&_count=1").at("total").as_int64();
  };
  auto check = [&](const char* code, int64_t all, int64_t loinc, int64_t bare, int64_t other) {
    const std::string c = code;
    EXPECT_EQ(total("code=" + c), all) << c;
    EXPECT_EQ(total("code=http://loinc.org|" + c), loinc) << c;
    EXPECT_EQ(total("code=|" + c), bare) << c;
    EXPECT_EQ(total("code=http://other|" + c), other) << c;
    EXPECT_EQ(total("code=" + c + "," + c), all) << c;
    EXPECT_EQ(total("code=http://loinc.org|" + c + ",http://loinc.org|" + c), loinc) << c;
    EXPECT_EQ(Search("/fhir/t3/Observation?code=" + c + "&_summary=count").at("total").as_int64(), all) << c;
  };
  auto folded = [&] {
    // The worker folds every 2 s; wait until no delta of t3 is left.
    for (int i = 0; i < 100; ++i) {
      int64_t left = 0;
      for (const std::string& db : server_->config().store.bootstrap_shards) {
        pqxx::connection shard(TestServer::Dsn(db));
        pqxx::nontransaction tx(shard);
        left += tx.exec("SELECT count(*) FROM idx_token_count_delta WHERE tenant_id = 't3'")[0][0].as<int64_t>();
      }
      if (left == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  for (int i = 0; i < 30; ++i) put(i, "kc1", i % 3 == 0, i % 5 == 0);
  check("kc1", 30, 30, 10, 6);
  check("kc2", 0, 0, 0, 0);
  ASSERT_TRUE(folded());
  check("kc1", 30, 30, 10, 6);
  for (int i = 0; i < 5; ++i) put(i, "kc2", true, false);              // kc0-kc4 change code
  for (int i = 5; i < 10; ++i) put(i, "kc1", i % 3 == 0, i % 5 == 0);  // kc5-kc9 keep theirs
  for (const char* gone : {"kc10", "kc11", "kc12"})
    ASSERT_EQ(c().Delete(std::string("/fhir/t3/Observation/") + gone).status, 204);
  // kc1 left: 25 - 3 deleted; bare: kc6, kc9, kc15, kc18, ... (i % 3 == 0, i >= 5, not 12).
  check("kc1", 22, 22, 7, 4);
  check("kc2", 5, 5, 5, 0);
  ASSERT_TRUE(folded());
  check("kc1", 22, 22, 7, 4);
  check("kc2", 5, 5, 5, 0);
  EXPECT_EQ(Search("/fhir/t1/Observation?code=kc1&_total=accurate").at("total").as_int64(), 0);
}

TEST_F(SearchTest, ConditionalCreateUpdateDelete) {
  const std::string body = R"({"resourceType":"Patient","identifier":[{"system":"http://x","value":"C1"}]})";
  auto first = c().Post("/fhir/t3/Patient", body, {{"If-None-Exist", "identifier=http://x|C1"}});
  ASSERT_EQ(first.status, 201) << first.body;
  std::string id(first.Json().at("id").as_string());
  auto again = c().Post("/fhir/t3/Patient", body, {{"If-None-Exist", "identifier=http://x|C1"}});
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.Json().at("id").as_string(), id);
  EXPECT_EQ(Matches("/fhir/t3/Patient?identifier=C1").size(), 1u);

  // Conditional update: one match updates it, none creates.
  auto upd = c().Put("/fhir/t3/Patient?identifier=http://x%7CC1",
                     R"({"resourceType":"Patient","identifier":[{"system":"http://x","value":"C1"}],"gender":"male"})");
  ASSERT_EQ(upd.status, 200) << upd.body;
  EXPECT_EQ(upd.Json().at("id").as_string(), id);
  EXPECT_EQ(upd.Json().at("meta").at("versionId").as_string(), "2");
  auto made = c().Put("/fhir/t3/Patient?identifier=http://x%7CC2",
                      R"({"resourceType":"Patient","identifier":[{"system":"http://x","value":"C2"}]})");
  ASSERT_EQ(made.status, 201) << made.body;

  // Several matches: 412 for create, update and delete.
  EXPECT_EQ(c().Post("/fhir/t3/Patient", body, {{"If-None-Exist", "identifier=http://x|"}}).status, 412);
  EXPECT_EQ(c().Put("/fhir/t3/Patient?identifier=http://x%7C", body).status, 412);
  EXPECT_EQ(c().Delete("/fhir/t3/Patient?identifier=http://x%7C").status, 412);

  // Conditional delete of the one match; a second time matches nothing.
  EXPECT_EQ(c().Delete("/fhir/t3/Patient?identifier=http://x%7CC2").status, 204);
  EXPECT_EQ(Matches("/fhir/t3/Patient?identifier=C2"), Ids{});
  EXPECT_EQ(c().Delete("/fhir/t3/Patient?identifier=http://x%7CC2").status, 204);
  // Criteria are validated like any search.
  EXPECT_EQ(c().Delete("/fhir/t3/Patient?nonsense=1").status, 400);
}

TEST_F(SearchTest, LargeAndSmallSetsIntersectAndPage) {
  // More matches than a set the page query may read whole and hash (1,000):
  // 1,050 female Patients named Common, 5 female and 3 male named Rare.
  // Intersections of a large and a small set, of two large ones, and of a
  // complement, paged forward and back, in tenant t4 alone.
  // Common ones are born in 1900 + i % 100, Rare ones in 2000.
  auto put = [&](const char* prefix, int n, const char* gender, const char* family) {
    std::string id = prefix;
    id.append(std::to_string(n));
    std::string born = std::to_string(prefix[0] == 'c' ? 1900 + n % 100 : 2000);
    born.append("-06-15");
    json::object patient{{"resourceType", "Patient"}, {"id", id}, {"gender", gender}, {"active", true},
                         {"birthDate", born}};
    patient["name"] = json::array{json::object{{"family", family}}};
    auto res = c().Put("/fhir/t4/Patient/" + id, json::serialize(patient));
    ASSERT_TRUE(res.status == 201 || res.status == 200) << res.body;
  };
  for (int i = 0; i < 1050; ++i) put("c", i, "female", "Common");
  for (int i = 0; i < 5; ++i) put("rf", i, "female", "Rare");
  for (int i = 0; i < 3; ++i) put("rm", i, "male", "Rare");

  const Ids rare_women = {"Patient/rf0", "Patient/rf1", "Patient/rf2", "Patient/rf3", "Patient/rf4"};
  EXPECT_EQ(Matches("/fhir/t4/Patient?gender=female&family=rare"), rare_women);
  EXPECT_EQ(Matches("/fhir/t4/Patient?family=rare&gender=female&active=true"), rare_women);
  EXPECT_EQ(Matches("/fhir/t4/Patient?gender:not=male&family=rare"), rare_women);
  EXPECT_EQ(Matches("/fhir/t4/Patient?gender=male&family=common"), Ids{});
  EXPECT_EQ(Search("/fhir/t4/Patient?gender=female&active=true&_total=accurate&_count=1").at("total").as_int64(), 1055);

  // Two large sets, paged forward by 400, then back from the last page.
  const Pages common = PagesForward("/fhir/t4/Patient?gender=female&family=common&_count=400");
  const std::vector<std::string>& forward = common.ids;
  ASSERT_EQ(common.targets.size(), 3u);
  ASSERT_EQ(forward.size(), 1050u);
  EXPECT_TRUE(std::is_sorted(forward.begin(), forward.end()));
  EXPECT_EQ(std::set<std::string>(forward.begin(), forward.end()).size(), 1050u);
  EXPECT_EQ(IdsBefore(common.targets.back()), std::vector<std::string>(forward.begin(), forward.begin() + 800));
  // A prefix of two characters is read in res_id order from its own index.
  EXPECT_EQ(PagesForward("/fhir/t4/Patient?family=CO&_count=400").ids, forward);
  EXPECT_EQ(PagesForward("/fhir/t4/Patient?gender=female&family=c%C3%B3&_count=400").ids, forward);
  EXPECT_NE(c().Get("/admin/explain/t4/Patient?family=co").body.find("idx_string_prefix"), std::string::npos);

  // A large set in res_id order drives; two date criteria are probed per id.
  Ids fifties;
  for (int i = 0; i < 1050; ++i) {
    if (i % 100 >= 50 && i % 100 < 60) fifties.insert("Patient/c" + std::to_string(i));
  }
  Ids found;
  for (const std::string& id :
       PagesForward("/fhir/t4/Patient?gender=female&birthdate=ge1950&birthdate=lt1960-01-01&_count=40").ids) {
    found.insert(std::string("Patient/").append(id));
  }
  EXPECT_EQ(found.size(), 100u);
  EXPECT_EQ(found, fifties);

  // A name prefix with 120 Patients (small, not in res_id order) and the
  // large gender set (in res_id order): the page comes from walking the
  // gender set with the names hashed, or, for the last page, from the
  // general query. Paged by 10 both ways.
  std::vector<std::string> middle;
  for (int i = 0; i < 120; ++i) {
    std::string id = i < 10 ? "m00" : i < 100 ? "m0" : "m";
    id.append(std::to_string(i));
    json::object patient{{"resourceType", "Patient"}, {"id", id}, {"gender", i % 2 == 0 ? "female" : "male"}};
    patient["name"] = json::array{json::object{{"family", "Middleton"}}};
    ASSERT_EQ(c().Put("/fhir/t4/Patient/" + id, json::serialize(patient)).status, 201);
    if (i % 2 == 0) middle.push_back(id);
  }
  const Pages walked = PagesForward("/fhir/t4/Patient?gender=female&family=middle&_count=10");
  EXPECT_EQ(walked.ids, middle);
  EXPECT_EQ(walked.targets.size(), 6u);
  EXPECT_EQ(IdsBefore(walked.targets.back()), std::vector<std::string>(middle.begin(), middle.end() - 10));
  EXPECT_NE(c().Get("/admin/explain/t4/Patient?gender=female&family=middle").body.find("CTE wi"), std::string::npos);
}

TEST_F(SearchTest, RememberedSetSizesNeverCutAnAnswer) {
  // 999 Patients named Grow, 990 of them female: both sets of
  // gender=female&family=grow are small, so the page query hashes the family
  // set under its LIMIT (1,000). The first page counts the sets and the store
  // remembers their sizes; the next pages are planned from them. Two more
  // female Patients, named Growzz, then make the family set large: planned
  // from the remembered sizes, the page would be cut from 1,000 of its 1,001
  // ids. The page query's check stops it, and the store plans it again from
  // fresh counts. Tenant t6 alone.
  auto counter = [&](const std::string& plan) {
    const std::string body = c().Get("/metrics").body;
    double sum = 0;
    for (std::size_t at = body.find("\nmedgrid_search_set_sizes_total{"); at != std::string::npos;
         at = body.find("\nmedgrid_search_set_sizes_total{", at + 1)) {
      const std::size_t end = body.find('\n', at + 1);
      const std::string line = body.substr(at + 1, end - at - 1);
      if (line.find("plan=\"" + plan + "\"") != std::string::npos) sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return sum;
  };
  auto put = [&](const std::string& id, const char* family, bool female) {
    json::object patient{{"resourceType", "Patient"}, {"id", id}, {"gender", female ? "female" : "male"}};
    patient["name"] = json::array{json::object{{"family", family}}};
    auto res = c().Put("/fhir/t6/Patient/" + id, json::serialize(patient));
    ASSERT_TRUE(res.status == 201 || res.status == 200) << res.body;
  };
  std::vector<std::string> expected;
  for (int i = 0; i < 999; ++i) {
    std::string id = std::to_string(1000 + i).replace(0, 1, "g");
    put(id, "Grow", i % 100 != 99);
    if (i % 100 != 99) expected.push_back(id);
  }
  const double counted = counter("counted");
  const double remembered = counter("remembered");
  const double changed = counter("changed");
  const std::string query = "/fhir/t6/Patient?gender=female&family=grow&_count=400";
  EXPECT_EQ(PagesForward(query).ids, expected);
  EXPECT_EQ(counter("counted"), counted + 1);
  EXPECT_EQ(counter("remembered"), remembered + 2);

  put("growzz1", "Growzz", true);
  put("growzz2", "Growzz", true);
  expected.push_back("growzz1");
  expected.push_back("growzz2");
  EXPECT_EQ(PagesForward(query).ids, expected);
  EXPECT_EQ(counter("changed"), changed + 1);
  EXPECT_EQ(counter("counted"), counted + 2);
  // Sizes are remembered per tenant.
  EXPECT_EQ(Matches("/fhir/t1/Patient?gender=female&family=grow"), Ids{});
}

TEST_F(SearchTest, CodeWithDatesAgreesWithTheGeneralPath) {
  // A code with date criteria is answered from idx_token_date (the code and
  // the date indexed together); a list of two codes is not, and takes the
  // general path (a code set, each date criterion a set). Over seeded
  // Observations with every shape of Observation.effective (instants, days,
  // months, years, short, long and open periods, Timings with several
  // events, none), both must find the same Observations, in tenant t5 alone.
  std::mt19937 rng(20261127);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto two = [](int n) { return std::string(n < 10 ? "0" : "") + std::to_string(n); };
  const char* const codes[] = {"111-1", "222-2", "333-3"};
  int with_dates = 0;
  for (int i = 0; i < 240; ++i) {
    const std::string year = std::to_string(2019 + pick(5));
    const std::string day = year + "-" + two(1 + pick(12)) + "-" + two(1 + pick(28));
    json::object o{{"resourceType", "Observation"}, {"id", "cd" + std::to_string(i)}, {"status", "final"}};
    json::array coding{json::object{{"system", "http://loinc.org"}, {"code", codes[pick(3)]}}};
    if (i % 7 == 0) coding.push_back(json::object{{"code", codes[pick(3)]}});  // a second coding, no system
    o["code"] = json::object{{"coding", coding}};
    switch (i % 10) {
      case 0:
        o["effectiveDateTime"] = day + "T" + two(pick(24)) + ":15:00Z";
        break;
      case 1:
        o["effectiveDateTime"] = day;
        break;
      case 2:
        o["effectiveDateTime"] = day.substr(0, 7);
        break;
      case 3:
        o["effectiveDateTime"] = year;
        break;
      case 4:
        o["effectivePeriod"] = json::object{{"start", day + "T08:00:00Z"}, {"end", day + "T20:00:00Z"}};
        break;
      case 5:
        o["effectivePeriod"] = json::object{{"start", day}, {"end", std::to_string(2020 + pick(5)) + "-06-30"}};
        break;
      case 6:
        o["effectivePeriod"] = json::object{{"start", day}};
        break;
      case 7:
        o["effectiveTiming"] = json::object{{"event", json::array{day, year + "-12-31", "2018-02-02"}}};
        break;
      case 8:
        o["effectiveInstant"] = day + "T23:59:59.500+05:00";
        break;
      case 9:
        break;  // no date
    }
    if (i % 10 != 9) ++with_dates;
    auto res = c().Put("/fhir/t5/Observation/cd" + std::to_string(i), json::serialize(o));
    ASSERT_TRUE(res.status == 201 || res.status == 200) << res.body;
  }
  ASSERT_GT(with_dates, 200);

  const std::vector<std::string> dates = {"date=ge2021-03-01&date=lt2021-04-01",
                                          "date=ge2021&date=le2021",
                                          "date=2021",
                                          "date=2020-05",
                                          "date=eq2022-07-14",
                                          "date=ne2021",
                                          "date=gt2022-06-30T12:00:00Z",
                                          "date=lt2019-08",
                                          "date=sa2021-11",
                                          "date=eb2020",
                                          "date=ap2021-06-15",
                                          "date=le2018-02-02",
                                          "date=ge2023-12-31",
                                          "date=lt2020,gt2022-09",
                                          "date=ge2019-06&date=lt2019-06-20&date=ne2019-06-10",
                                          "date=ge2020-01-01T00:00:00Z&date=lt2020-01-02"};
  std::size_t found = 0;
  std::size_t empty = 0;
  for (const char* code : codes) {
    for (const std::string& d : dates) {
      for (const std::string& token :
           {std::string(code), std::string("http://loinc.org|").append(code), std::string("|").append(code)}) {
        const std::string list = token + "," + token;
        const Ids combined = Matches("/fhir/t5/Observation?_count=500&code=" + token + "&" + d);
        EXPECT_EQ(combined, Matches("/fhir/t5/Observation?_count=500&code=" + list + "&" + d)) << token << " " << d;
        EXPECT_EQ(combined, Matches("/fhir/t5/Observation?_count=500&" + d + "&code=" + token)) << token << " " << d;
        found += combined.size();
        if (combined.empty()) ++empty;
      }
    }
  }
  // The comparisons are not of empty sets: most queries find Observations.
  EXPECT_GT(found, 500u);
  EXPECT_LT(empty, dates.size() * 3);

  // The combined index answers the first form, and only it; the total and
  // the pages agree with the matches.
  auto plan = [&](const std::string& query) { return c().Get("/admin/explain/t5/Observation?" + query).body; };
  const std::string combined_plan = plan("code=222-2&date=ge2021-03-01&date=lt2021-04-01");
  EXPECT_NE(combined_plan.find(" on idx_token_date "), std::string::npos) << combined_plan;
  EXPECT_EQ(plan("code=222-2,222-2&date=ge2021-03-01&date=lt2021-04-01").find(" on idx_token_date "),
            std::string::npos);
  const Ids all = Matches("/fhir/t5/Observation?code=222-2&date=ge2019&date=lt2024&_count=500");
  ASSERT_GT(all.size(), 40u);
  EXPECT_EQ(
      static_cast<std::size_t>(
          Search("/fhir/t5/Observation?code=222-2&date=ge2019&date=lt2024&_total=accurate").at("total").as_int64()),
      all.size());
  Ids paged;
  for (const std::string& id : PagesForward("/fhir/t5/Observation?code=222-2&date=ge2019&date=lt2024&_count=7").ids) {
    paged.insert(std::string("Observation/").append(id));
  }
  EXPECT_EQ(paged, all);

  // Writes keep it current: a new date, a deleted Observation.
  ASSERT_EQ(
      c().Put("/fhir/t5/Observation/cd0",
              R"({"resourceType":"Observation","id":"cd0","status":"final",)"
              R"("code":{"coding":[{"system":"http://loinc.org","code":"333-3"}]},"effectiveDateTime":"1999-09-09"})")
          .status,
      200);
  EXPECT_EQ(Matches("/fhir/t5/Observation?code=333-3&date=1999-09"), (Ids{"Observation/cd0"}));
  ASSERT_EQ(c().Delete("/fhir/t5/Observation/cd0").status, 204);
  EXPECT_EQ(Matches("/fhir/t5/Observation?code=333-3&date=1999-09"), Ids{});
  EXPECT_EQ(Matches("/fhir/t1/Observation?code=333-3&date=1999-09"), Ids{});
}

TEST_F(SearchTest, ChainsWithManyTargetsWalkInIdOrder) {
  // A chain to 60 Patients named Walker (enough to walk the Conditions in
  // res_id order rather than read all of them): their Conditions are 0h00-09,
  // first in res_id order, and zz00-29, last, with 2,200 Conditions of other
  // Patients in between, more than one walk reads. Paged by 10 both ways,
  // each page is the walk's or, when the walk cannot finish it, the general
  // query's; both must give the same pages. Tenant t5 alone.
  auto put = [&](const std::string& type, const std::string& id, json::object r) {
    r["resourceType"] = type;
    r["id"] = id;
    auto res = c().Put("/fhir/t5/" + type + "/" + id, json::serialize(r));
    ASSERT_TRUE(res.status == 201 || res.status == 200) << res.body;
  };
  auto name = [](std::string prefix, int n) { return prefix.append(std::to_string(n)); };
  auto patient = [](const char* family) {
    return json::object{{"name", json::array{json::object{{"family", family}}}}};
  };
  auto condition = [](const std::string& subject) {
    return json::object{{"subject", json::object{{"reference", subject}}}, {"code", json::object{{"text", "finding"}}}};
  };
  for (int i = 0; i < 60; ++i) put("Patient", name("w", i), patient("Walker"));
  for (int i = 0; i < 100; ++i) put("Patient", name("o", i), patient("Other"));
  std::vector<std::string> expected;
  for (int i = 0; i < 10; ++i) {
    const std::string id = name("0h0", i);
    put("Condition", id, condition(name("Patient/w", i)));
    expected.push_back(id);
  }
  for (int i = 0; i < 2200; ++i) {
    put("Condition", name("a", 10000 + i).erase(1, 1), condition(name("Patient/o", i % 100)));
  }
  for (int i = 0; i < 30; ++i) {
    const std::string id = name(i < 10 ? "zz0" : "zz", i);
    put("Condition", id, condition(name("Patient/w", 30 + i)));
    expected.push_back(id);
  }
  EXPECT_NE(c().Get("/admin/explain/t5/Condition?subject:Patient.name=walker").body.find("CTE wi"), std::string::npos);

  const Pages pages = PagesForward("/fhir/t5/Condition?subject:Patient.name=walker&_count=10");
  EXPECT_EQ(pages.ids, expected);
  EXPECT_EQ(pages.targets.size(), 4u);
  EXPECT_EQ(IdsBefore(pages.targets.back()), std::vector<std::string>(expected.begin(), expected.end() - 10));
  // One page for all; the total; a chain to few Patients (no walk).
  Ids all;
  for (const std::string& id : expected) all.insert("Condition/" + id);
  EXPECT_EQ(Matches("/fhir/t5/Condition?subject:Patient.name=walker&_count=100"), all);
  EXPECT_EQ(Matches("/fhir/t5/Condition?patient.family=walker&_count=100"), all);
  EXPECT_EQ(Search("/fhir/t5/Condition?subject.name=walker&_total=accurate").at("total").as_int64(), 40);
  put("Patient", "solo", patient("Solo"));
  put("Condition", "solo-c", condition("Patient/solo"));
  EXPECT_EQ(Matches("/fhir/t5/Condition?subject:Patient.name=solo"), (Ids{"Condition/solo-c"}));
  EXPECT_EQ(Matches("/fhir/t1/Condition?subject:Patient.name=walker"), Ids{});
}

TEST_F(SearchTest, TenantsNeverSeeEachOther) {
  // t2 has its own Patient/p1 (female) and an Observation about it.
  EXPECT_EQ(Matches("/fhir/t2/Patient?gender=male"), Ids{});
  EXPECT_EQ(Matches("/fhir/t2/Patient"), (Ids{"Patient/p1"}));
  EXPECT_EQ(Matches("/fhir/t2/Observation?code=8480-6"), (Ids{"Observation/ob9"}));
  EXPECT_EQ(Matches("/fhir/t1/Observation?subject=Patient/p1").contains("Observation/ob9"), false);
  EXPECT_EQ(Matches("/fhir/t2/Observation?subject:Patient.name=chalmers"), Ids{});
  EXPECT_EQ(Matches("/fhir/t2/Patient?_has:Observation:patient:code=4548-4"), Ids{});

  json::value b = Search("/fhir/t2/Observation?_include=Observation:patient");
  EXPECT_EQ(Entries(b, "include"), (Ids{"Patient/p1"}));
  const std::string family(b.at("entry").at(1).at("resource").at("name").at(0).at("family").as_string());
  EXPECT_EQ(family, "Other");
  b = Search("/fhir/t2/Patient?_revinclude=Observation:subject");
  EXPECT_EQ(Entries(b, "include"), (Ids{"Observation/ob9"}));
  EXPECT_EQ(Matches("/fhir/t2/Patient/p1/Observation"), (Ids{"Observation/ob9"}));
  EXPECT_EQ(Matches("/fhir/t2?_type=Organization"), Ids{});
  // A cursor from one tenant's search gives nothing of it in another's.
  json::value t1_page = Search("/fhir/t1/Observation?_count=1");
  std::string next = Target(Link(t1_page, "next"));
  std::string t2_next = "/fhir/t2/" + next.substr(std::string("/fhir/t1/").size());
  for (const auto& id : Matches(t2_next)) EXPECT_EQ(id, "Observation/ob9");
}

}  // namespace
}  // namespace medgrid::testing
