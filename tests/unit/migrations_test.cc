#include "medgrid/store/migrations.h"

#include "medgrid/store/config.h"

#include "gtest/gtest.h"

namespace medgrid::store {
namespace {

std::vector<int> Versions(const std::vector<const Migration*>& plan) {
  std::vector<int> out;
  for (const Migration* m : plan) out.push_back(m->version);
  return out;
}

TEST(Migrations, PlansPendingInOrder) {
  std::vector<Migration> all = {{1, "a", ""}, {2, "b", ""}, {5, "c", ""}};
  EXPECT_EQ(Versions(*PlanMigrations(all, {})), (std::vector<int>{1, 2, 5}));
  EXPECT_EQ(Versions(*PlanMigrations(all, {1})), (std::vector<int>{2, 5}));
  EXPECT_EQ(Versions(*PlanMigrations(all, {1, 2, 5})), (std::vector<int>{}));
  // A gap left by an out-of-order deploy is filled.
  EXPECT_EQ(Versions(*PlanMigrations(all, {1, 5})), (std::vector<int>{2}));
}

TEST(Migrations, RejectsUnorderedDefinitions) {
  auto dup = PlanMigrations({{1, "a", ""}, {1, "b", ""}}, {});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kFailedPrecondition);
  auto down = PlanMigrations({{2, "a", ""}, {1, "b", ""}}, {});
  EXPECT_EQ(down.status().code(), absl::StatusCode::kFailedPrecondition);
  auto zero = PlanMigrations({{0, "a", ""}}, {});
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Migrations, RefusesDatabaseNewerThanBinary) {
  auto st = PlanMigrations({{1, "a", ""}}, {1, 2});
  EXPECT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Migrations, ShippedListsAreWellFormed) {
  for (const auto* list : {&ControlMigrations(), &ShardMigrations()}) {
    ASSERT_FALSE(list->empty());
    EXPECT_EQ(list->front().version, 1);
    EXPECT_TRUE(PlanMigrations(*list, {}).ok());
    for (const Migration& m : *list) {
      EXPECT_FALSE(m.name.empty());
      EXPECT_FALSE(m.sql.empty());
    }
  }
  // Every shard table carries tenant_id first in its primary key.
  const std::string& sql = ShardMigrations().front().sql;
  EXPECT_NE(sql.find("PRIMARY KEY (tenant_id, res_type, res_id)"), std::string::npos);
  EXPECT_NE(sql.find("PRIMARY KEY (tenant_id, res_type, res_id, version_id)"), std::string::npos);
}

TEST(Dsn, WithDbNameReplacesOrAppends) {
  EXPECT_EQ(WithDbName("host=h port=5 user=u dbname=postgres", "s0"), "host=h port=5 user=u dbname=s0");
  EXPECT_EQ(WithDbName("dbname = 'my db' host=h", "s1"), "dbname=s1 host=h");
  EXPECT_EQ(WithDbName("host=h", "s2"), "host=h dbname=s2");
  EXPECT_EQ(WithDbName("", "s3"), "dbname=s3");
  EXPECT_EQ(WithDbName("host=h xdbname=keep", "s4"), "host=h xdbname=keep dbname=s4");
}

// A primary DSN naming several hosts must land on the writable one.
TEST(Dsn, MultiHostDsnsGetReadWrite) {
  EXPECT_FALSE(IsMultiHost("host=h port=5 dbname=d"));
  EXPECT_TRUE(IsMultiHost("host=a,b port=5,6 dbname=d"));
  EXPECT_TRUE(IsMultiHost("hostaddr=10.0.0.1,10.0.0.2 dbname=d"));
  EXPECT_TRUE(IsMultiHost("postgresql://a:5,b:6/d"));
  EXPECT_EQ(EnsureReadWrite("host=h port=5 dbname=d"), "host=h port=5 dbname=d");
  EXPECT_EQ(EnsureReadWrite("host=a,b port=5,6 dbname=d"), "host=a,b port=5,6 dbname=d target_session_attrs=read-write");
  EXPECT_EQ(EnsureReadWrite("postgresql://a:5,b:6/d"), "postgresql://a:5,b:6/d?target_session_attrs=read-write");
  EXPECT_EQ(EnsureReadWrite("postgresql://a:5,b:6/d?sslmode=off"),
            "postgresql://a:5,b:6/d?sslmode=off&target_session_attrs=read-write");
  // The operator's choice stands.
  EXPECT_EQ(EnsureReadWrite("host=a,b target_session_attrs=primary"), "host=a,b target_session_attrs=primary");
  EXPECT_EQ(EnsureReadWrite(""), "");
}

}  // namespace
}  // namespace medgrid::store
