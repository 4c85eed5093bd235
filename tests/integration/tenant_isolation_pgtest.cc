// Tenant isolation: ids of tenant A are invisible to tenant B through read,
// vread, history (instance, type, system), update, patch and delete, even
// when both tenants live on the same shard.
#include "gtest/gtest.h"
#include "integration/harness.h"

namespace medgrid::testing {
namespace {


// Three tenants over two shards: "a" and "c" share a shard (least-loaded
// placement puts the third tenant next to the first); "b" is on the other.
TEST(TenantIsolation, AcrossAndWithinShards) {
  TestServer server("isolation", {"a", "b", "c"});
  HttpClient& c = server.client();
  auto tenants = c.Get("/admin/tenants").Json();
  std::map<std::string, std::string> shard_of;
  for (const auto& t : tenants.at("tenants").as_array()) {
    shard_of[std::string(t.at("id").as_string())] = std::string(t.at("shard").as_string());
  }
  ASSERT_EQ(shard_of["a"], shard_of["c"]);
  ASSERT_NE(shard_of["a"], shard_of["b"]);

  auto created = c.Post("/fhir/a/Patient", R"({"resourceType":"Patient","gender":"female"})");
  ASSERT_EQ(created.status, 201);
  const std::string id(created.Json().at("id").as_string());
  ASSERT_EQ(c.Put("/fhir/a/Patient/shared-id", R"({"resourceType":"Patient","id":"shared-id","gender":"male"})").status,
            201);

  for (const std::string other : {"b", "c"}) {
    SCOPED_TRACE("tenant " + other);
    const std::string base = "/fhir/" + other + "/Patient/";
    EXPECT_EQ(c.Get(base + id).status, 404);
    EXPECT_EQ(c.Get(base + id + "/_history/1").status, 404);
    EXPECT_EQ(c.Get(base + id + "/_history").status, 404);
    EXPECT_EQ(c.Send("PATCH", base + id, R"([{"op":"replace","path":"/gender","value":"male"}])",
                     {{"Content-Type", "application/json-patch+json"}})
                  .status,
              404);
    EXPECT_EQ(c.Delete(base + id).status, 404);
    EXPECT_EQ(c.Put(base + id, R"({"resourceType":"Patient","id":")" + id + R"("})", {{"If-Match", "W/\"1\""}}).status,
              412);
    // Type and system history of the other tenant never show A's resources.
    for (const std::string& path : {"/fhir/" + other + "/Patient/_history", "/fhir/" + other + "/_history"}) {
      auto h = c.Get(path + "?_count=1000");
      ASSERT_EQ(h.status, 200);
      EXPECT_EQ(h.body.find(id), std::string::npos) << path;
      EXPECT_EQ(h.body.find("shared-id"), std::string::npos) << path;
    }
    // The same id in another tenant is that tenant's own resource.
    auto own = c.Put(base + "shared-id", R"({"resourceType":"Patient","id":"shared-id","gender":"unknown"})");
    EXPECT_EQ(own.status, 201) << "B's update of A's id must create B's own resource, not version A's";
    EXPECT_EQ(own.Header("ETag"), "W/\"1\"");
  }
  // A's data is untouched by everything above.
  auto a_res = c.Get("/fhir/a/Patient/" + id);
  ASSERT_EQ(a_res.status, 200);
  EXPECT_EQ(a_res.Json().at("meta").at("versionId").as_string(), "1");
  auto shared = c.Get("/fhir/a/Patient/shared-id").Json();
  EXPECT_EQ(shared.at("gender").as_string(), "male");
  EXPECT_EQ(shared.at("meta").at("versionId").as_string(), "1");
  EXPECT_EQ(c.Get("/fhir/a/Patient/shared-id/_history").Json().at("entry").as_array().size(), 1u);
}

TEST(TenantIsolation, UnknownTenantIs404) {
  TestServer server("isolation_unknown", {"a"});
  auto res = server.client().Get("/fhir/zzz/Patient/1");
  EXPECT_EQ(res.status, 404);
  EXPECT_NE(res.Diagnostics().find("tenant"), std::string::npos);
  EXPECT_EQ(server.client().Post("/fhir/zzz/Patient", R"({"resourceType":"Patient"})").status, 404);
  EXPECT_EQ(server.client().Get("/fhir/zzz/_history").status, 404);
  // A tenant created after a miss becomes visible (the negative cache is short).
  auto created = server.client().Send("POST", "/admin/tenants", R"({"id":"zzz"})", {{"Content-Type", "application/json"}});
  EXPECT_EQ(created.status, 201);
  EXPECT_EQ(server.client().Post("/fhir/zzz/Patient", R"({"resourceType":"Patient"})").status, 201);
  auto dup = server.client().Send("POST", "/admin/tenants", R"({"id":"zzz"})", {{"Content-Type", "application/json"}});
  EXPECT_EQ(dup.status, 409);
}

}  // namespace
}  // namespace medgrid::testing
