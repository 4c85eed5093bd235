#include "medgrid/fhir/rest_path.h"

#include "gtest/gtest.h"
#include "medgrid/core/status.h"

namespace medgrid::fhir {
namespace {

using K = RestPath::Kind;

TEST(RestPath, ParsesEveryInteractionShape) {
  struct Case {
    std::string path;
    K kind;
    std::string type, id, version;
  };
  for (const Case& c : std::vector<Case>{
           {"/fhir/demo", K::kSystem, "", "", ""},
           {"/fhir/demo/", K::kSystem, "", "", ""},
           {"/fhir/demo/metadata", K::kMetadata, "", "", ""},
           {"/fhir/demo/_history", K::kSystemHistory, "", "", ""},
           {"/fhir/demo/Patient", K::kType, "Patient", "", ""},
           {"/fhir/demo/Patient/_history", K::kTypeHistory, "Patient", "", ""},
           {"/fhir/demo/Patient/p-1.2", K::kInstance, "Patient", "p-1.2", ""},
           {"/fhir/demo/Patient/p1/_history", K::kInstanceHistory, "Patient", "p1", ""},
           {"/fhir/demo/Patient/p1/_history/12", K::kVersion, "Patient", "p1", "12"},
           {"/fhir/demo/Patient/p%31", K::kInstance, "Patient", "p1", ""},
       }) {
    SCOPED_TRACE(c.path);
    auto p = ParseRestPath(c.path);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->kind, c.kind);
    EXPECT_EQ(p->tenant, "demo");
    EXPECT_EQ(p->type, c.type);
    EXPECT_EQ(p->id, c.id);
    EXPECT_EQ(p->version, c.version);
  }
}

TEST(RestPath, RejectsMalformedSegmentsWith400) {
  for (const std::string path : {"/fhir/Demo/Patient", "/fhir/-x/Patient", "/fhir/demo/Patient/a%2Fb",
                                 "/fhir/demo/Patient/..", "/fhir/demo/Patient/.", "/fhir/demo/Patient/a%00",
                                 "/fhir/demo/Patient/a%zz", "/fhir/demo/Patient/a%2",
                                 "/fhir/demo/Patient/x/_history/0", "/fhir/demo/Patient/x/_history/01",
                                 "/fhir/demo/Patient/x/_history/-1", "/fhir/demo/Patient/x/_history/1x",
                                 "/fhir/demo/Patient/x/_history/99999999999999999999999"}) {
    SCOPED_TRACE(path);
    auto p = ParseRestPath(path);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(core::HttpStatusOf(p.status()), 400);
  }
  EXPECT_EQ(core::HttpStatusOf(ParseRestPath("/fhir/demo/Patient/" + std::string(65, 'a')).status()), 400);
}

TEST(RestPath, UnknownShapesAre404NotSupported) {
  for (const std::string path : {"/fhir/", "/fhir", "/other/demo", "/fhir/demo/patient", "/fhir/demo/Patient/1/$everything/x",
                                 "/fhir/demo/Patient/1/observation", "/fhir/demo/Patient/1/_history/2/x",
                                 "/fhir/demo/Patient/_search/x", "/fhir/demo/Patient/_history/x",
                                 "/fhir/demo/Patient/1/Observation/x"}) {
    SCOPED_TRACE(path);
    auto p = ParseRestPath(path);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(core::IssueCodeOf(p.status()), "not-supported");
  }
}

TEST(RestPath, SearchAndCompartmentShapes) {
  auto p = ParseRestPath("/fhir/demo/_search");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RestPath::Kind::kSystemSearch);
  p = ParseRestPath("/fhir/demo/Observation/_search");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RestPath::Kind::kTypeSearch);
  EXPECT_EQ(p->type, "Observation");
  p = ParseRestPath("/fhir/demo/Patient/p1/Observation");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RestPath::Kind::kCompartment);
  EXPECT_EQ(p->type, "Patient");
  EXPECT_EQ(p->id, "p1");
  EXPECT_EQ(p->target, "Observation");
  p = ParseRestPath("/fhir/demo/Patient/p1/*");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->target, "*");
  p = ParseRestPath("/fhir/demo/$reindex");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RestPath::Kind::kSystemOperation);
  EXPECT_EQ(p->operation, "reindex");
  p = ParseRestPath("/fhir/demo/Patient/$reindex");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RestPath::Kind::kTypeOperation);
  EXPECT_EQ(p->type, "Patient");
  EXPECT_EQ(p->operation, "reindex");
  p = ParseRestPath("/fhir/demo/Patient/p1/$everything");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RestPath::Kind::kInstanceOperation);
  EXPECT_EQ(p->type, "Patient");
  EXPECT_EQ(p->id, "p1");
  EXPECT_EQ(p->operation, "everything");
  // An encoded "$" is an operation too; a bare "$" or one with a slash is not.
  p = ParseRestPath("/fhir/demo/Patient/p1/%24everything");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kind, RestPath::Kind::kInstanceOperation);
  EXPECT_EQ(ParseRestPath("/fhir/demo/Patient/p1/$").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseRestPath("/fhir/demo/Patient/p1/$everything/x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseRestPath("/fhir/demo/Patient/p%2F1/$everything").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseRestPath("/fhir/demo/$re/index").ok());
  EXPECT_FALSE(ParseRestPath("/fhir/demo/$").ok());
}

TEST(RestPath, TenantIds) {
  EXPECT_TRUE(IsValidTenantId("demo"));
  EXPECT_TRUE(IsValidTenantId("a-1"));
  EXPECT_TRUE(IsValidTenantId(std::string(63, 'a')));
  EXPECT_FALSE(IsValidTenantId(std::string(64, 'a')));
  EXPECT_FALSE(IsValidTenantId(""));
  EXPECT_FALSE(IsValidTenantId("-a"));
  EXPECT_FALSE(IsValidTenantId("A"));
  EXPECT_FALSE(IsValidTenantId("a_b"));
  EXPECT_FALSE(IsValidTenantId("a.b"));
}

TEST(ETag, ParseAndFormat) {
  EXPECT_EQ(FormatETag(3), "W/\"3\"");
  EXPECT_EQ(ParseETagVersion("W/\"3\""), 3);
  EXPECT_EQ(ParseETagVersion("\"42\""), 42);
  EXPECT_EQ(ParseETagVersion("7"), 7);
  EXPECT_EQ(ParseETagVersion(FormatETag(123456789)), 123456789);
  EXPECT_EQ(ParseETagVersion("W/\"0\""), std::nullopt);
  EXPECT_EQ(ParseETagVersion("W/\"\""), std::nullopt);
  EXPECT_EQ(ParseETagVersion("W/\"1a\""), std::nullopt);
  EXPECT_EQ(ParseETagVersion("*"), std::nullopt);
  EXPECT_EQ(ParseETagVersion(""), std::nullopt);
}

}  // namespace
}  // namespace medgrid::fhir
