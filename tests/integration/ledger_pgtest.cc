// The audit ledger on a real PostgreSQL: batched appends with signed tree
// heads, roots and proofs that match an in-memory tree of the same leaves,
// two stores appending to one tenant, tenants kept apart, the append-only
// triggers, and verification that names what a database administrator
// changed behind them. Also `medgridctl audit verify` on the same database.
#include <unistd.h>

#include <cstdio>
#include <pqxx/pqxx>
#include <thread>

#include <gtest/gtest.h>

#include "medgrid/ledger/cli.h"
#include "medgrid/ledger/ledger_store.h"

namespace medgrid::ledger {
namespace {

std::string AdminDsn() {
  const char* base = std::getenv("MEDGRID_TEST_PG_DSN");
  return base == nullptr ? "" : std::string(base) + " dbname=postgres";
}

class LedgerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (AdminDsn().empty()) return;
    db_ = "mg_ledger_" + std::to_string(::getpid());
    pqxx::connection admin(AdminDsn());
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + db_);
    tx.exec("CREATE DATABASE " + db_);
  }
  static void TearDownTestSuite() {
    if (db_.empty()) return;
    pqxx::connection admin(AdminDsn());
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
  }
  void SetUp() override {
    if (AdminDsn().empty()) GTEST_SKIP() << "MEDGRID_TEST_PG_DSN is not set; run the tests through tests/run.sh";
    signer_ = std::shared_ptr<Signer>(*Signer::Generate());
    auto store = LedgerStore::Open(Dsn(), signer_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  static std::string Dsn() { return std::string(std::getenv("MEDGRID_TEST_PG_DSN")) + " dbname=" + db_; }
  // Runs SQL as the database's owner would, past the append-only triggers.
  static void AsAdministrator(const std::string& sql) {
    pqxx::connection conn(Dsn());
    pqxx::work tx(conn);
    tx.exec("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only");
    tx.exec("ALTER TABLE ledger_heads DISABLE TRIGGER ledger_heads_append_only");
    tx.exec(sql);
    tx.exec("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only");
    tx.exec("ALTER TABLE ledger_heads ENABLE TRIGGER ledger_heads_append_only");
    tx.commit();
  }
  // Appends `n` entries in batches of `batch`, mirroring them in `mirror`.
  void AppendMany(const std::string& tenant, int n, int batch, MerkleTree& mirror) {
    for (int done = 0; done < n;) {
      std::vector<std::string> entries;
      for (; done < n && static_cast<int>(entries.size()) < batch; ++done) {
        entries.push_back(R"({"resourceType":"AuditEvent","n":)" + std::to_string(done) + "}");
        mirror.Append(entries.back());
      }
      auto appended = store_->Append(tenant, entries);
      ASSERT_TRUE(appended.ok()) << appended.status();
      EXPECT_EQ(appended->head.size, mirror.size());
      EXPECT_EQ(appended->head.root, mirror.Root());
      EXPECT_TRUE(VerifySignature(appended->head, signer_->public_key()));
    }
  }

  static std::string db_;
  std::shared_ptr<Signer> signer_;
  std::unique_ptr<LedgerStore> store_;
};
std::string LedgerTest::db_;

TEST_F(LedgerTest, BatchesMakeSignedHeadsWhoseRootsAndProofsMatchTheTree) {
  MerkleTree mirror;
  AppendMany("a1", 1, 1, mirror);
  AppendMany("a1", 40, 7, mirror);
  AppendMany("a1", 1000, 250, mirror);
  ASSERT_EQ(mirror.size(), 1041u);
  auto head = store_->Head("a1");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->size, 1041u);
  EXPECT_EQ(head->root, mirror.Root());
  for (uint64_t i : {0u, 1u, 40u, 41u, 777u, 1040u}) {
    auto path = store_->InclusionProof("a1", i, 1041);
    ASSERT_TRUE(path.ok());
    EXPECT_TRUE(VerifyInclusion(i, 1041, mirror.leaf_hash(i), *path, head->root));
  }
  auto proof = store_->ConsistencyProof("a1", 41, 1041);
  ASSERT_TRUE(proof.ok());
  EXPECT_TRUE(VerifyConsistency(41, 1041, mirror.Root(41), head->root, *proof));
  EXPECT_EQ(store_->InclusionProof("a1", 1041, 1041).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ConsistencyProof("a1", 5, 2000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Append("a1", {}).status().code(), absl::StatusCode::kInvalidArgument);

  auto report = store_->Verify("a1");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << (report->problems.empty() ? "" : report->problems[0]);
  EXPECT_EQ(report->entries, 1041u);
  EXPECT_EQ(report->heads, 1u + 6u + 4u);

  // Tenants have trees of their own.
  auto empty = store_->Head("a2");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size, 0u);
  EXPECT_EQ(empty->root, EmptyRoot());
  MerkleTree other;
  AppendMany("a2", 3, 3, other);
  EXPECT_EQ(store_->Head("a2")->root, other.Root());
  EXPECT_EQ(store_->Head("a1")->size, 1041u);
}

TEST_F(LedgerTest, TwoStoresAppendToOneTenantInTurn) {
  auto second = LedgerStore::Open(Dsn(), signer_);
  ASSERT_TRUE(second.ok());
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (LedgerStore* s : {store_.get(), second->get()}) {
    writers.emplace_back([s, &failures] {
      for (int i = 0; i < 50; ++i) {
        if (!s->Append("b1", {"entry-" + std::to_string(i), "more"}).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : writers) t.join();
  EXPECT_EQ(failures.load(), 0);
  // Each store's tree caught up with the other's appends.
  auto head = store_->Head("b1");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->size, 200u);
  auto path = (*second)->InclusionProof("b1", 0, 200);
  ASSERT_TRUE(path.ok());
  EXPECT_TRUE(VerifyInclusion(0, 200, LeafHash("entry-0"), *path, head->root));
  auto report = store_->Verify("b1");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << (report->problems.empty() ? "" : report->problems[0]);
  EXPECT_EQ(report->heads, 100u);
}

TEST_F(LedgerTest, EntriesAndHeadsAreAppendOnly) {
  MerkleTree mirror;
  AppendMany("c1", 3, 3, mirror);
  pqxx::connection conn(Dsn());
  for (const char* sql : {"UPDATE ledger_entries SET entry = 'x' WHERE tenant_id = 'c1'",
                          "DELETE FROM ledger_entries WHERE tenant_id = 'c1'", "TRUNCATE ledger_heads",
                          "UPDATE ledger_heads SET root = root WHERE tenant_id = 'c1'"}) {
    pqxx::work tx(conn);
    try {
      tx.exec(sql);
      ADD_FAILURE() << sql << " was allowed";
    } catch (const pqxx::sql_error& e) {
      EXPECT_EQ(e.sqlstate(), "MG002") << sql;
    }
  }
  EXPECT_TRUE(store_->Verify("c1")->ok);
}

TEST_F(LedgerTest, EventsSentAgainAreAppendedOnce) {
  const std::vector<std::string> entries = {"event a", "event b", "event c"};
  const std::vector<std::string> ids = {"id-a", "id-b", "id-c"};
  auto first = store_->Append("g1", entries, &ids);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->head.size, 3u);
  // The same batch again (a consumer that crashed before marking it handled): nothing new.
  auto again = store_->Append("g1", entries, &ids);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->head.size, 3u);
  EXPECT_EQ(again->head.root, first->head.root);
  // Partly new, with a repeat inside the batch: only the new one.
  const std::vector<std::string> more = {"event c", "event d", "event d"};
  const std::vector<std::string> more_ids = {"id-c", "id-d", "id-d"};
  auto third = store_->Append("g1", more, &more_ids);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->head.size, 4u);
  EXPECT_EQ(third->first_index, 3u);
  // Ids are per tenant.
  EXPECT_EQ(store_->Append("g2", entries, &ids)->head.size, 3u);
  EXPECT_EQ(store_->Append("g1", {"x"}, &more_ids).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store_->Verify("g1")->ok);
}

// Runs `medgridctl audit verify` in-process: exit status and output.
std::pair<int, std::string> AuditVerify(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  std::vector<std::string> all = {"verify"};
  all.insert(all.end(), args.begin(), args.end());
  const int status = RunAuditCommand(all, out, err);
  return {status, out.str() + err.str()};
}

TEST_F(LedgerTest, VerifyNamesWhatWasChangedBehindTheTriggers) {
  MerkleTree d1;
  MerkleTree d2;
  AppendMany("d1", 100, 10, d1);
  AppendMany("d2", 100, 10, d2);
  const std::string key = "--public-key=" + ToHex(signer_->public_key());
  auto [ok_status, ok_out] = AuditVerify({"--tenant", "d1", "--dsn", Dsn(), key});
  EXPECT_EQ(ok_status, 0) << ok_out;
  EXPECT_NE(ok_out.find("100 entries, 10 signed tree heads"), std::string::npos) << ok_out;

  // An entry's bytes rewritten: named exactly.
  AsAdministrator("UPDATE ledger_entries SET entry = convert_to('{\"resourceType\":\"AuditEvent\",\"n\":0}', 'UTF8') "
                  "WHERE tenant_id = 'd1' AND seq = 37");
  auto report = store_->Verify("d1");
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->ok);
  EXPECT_EQ(report->first_altered, 37u);
  auto [bad_status, bad_out] = AuditVerify({"--tenant", "d1", "--dsn", Dsn(), key});
  EXPECT_EQ(bad_status, 1);
  EXPECT_NE(bad_out.find("first altered entry 37"), std::string::npos) << bad_out;
  EXPECT_NE(bad_out.find("entry 37 was altered"), std::string::npos) << bad_out;
  // Another tenant's ledger is untouched.
  EXPECT_TRUE(store_->Verify("d2")->ok);

  // An entry rewritten with a matching leaf hash: the heads show it.
  AsAdministrator("UPDATE ledger_entries SET entry = 'forged', leaf_hash = sha256('\\x00'::bytea || 'forged'::bytea) "
                  "WHERE tenant_id = 'd2' AND seq = 64");
  report = store_->Verify("d2");
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->ok);
  EXPECT_EQ(report->first_altered, 60u);  // the head at 70 covers entries 60 to 69
  EXPECT_NE(report->problems[0].find("head at size 70 does not match the entries: one of entries 60 to 69"),
            std::string::npos)
      << report->problems[0];

  // The last entries removed, with the state rolled back to match.
  MerkleTree e;
  AppendMany("e1", 20, 5, e);
  AsAdministrator("DELETE FROM ledger_entries WHERE tenant_id = 'e1' AND seq >= 18");
  report = store_->Verify("e1");
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->ok);
  EXPECT_EQ(report->first_altered, 18u);

  // A head re-signed by a key that is not trusted, and a head's root changed.
  MerkleTree f;
  AppendMany("f1", 10, 5, f);
  auto rogue = Signer::Generate();
  ASSERT_TRUE(rogue.ok());
  TreeHead forged;
  forged.tenant = "f1";
  forged.size = 10;
  forged.root = f.Root();
  forged.timestamp_us = 1;
  ASSERT_TRUE((*rogue)->Sign(forged).ok());
  AsAdministrator("UPDATE ledger_heads SET key_id = '" + forged.key_id + "', signature = decode('" +
                  ToHex(forged.signature) + "', 'hex'), signed_at_us = 1 WHERE tenant_id = 'f1' AND tree_size = 10");
  auto [rogue_status, rogue_out] = AuditVerify({"--tenant", "f1", "--dsn", Dsn(), key});
  EXPECT_EQ(rogue_status, 1);
  EXPECT_NE(rogue_out.find("head at size 10 is signed by key " + forged.key_id + ", which is not trusted"),
            std::string::npos)
      << rogue_out;
  AsAdministrator("UPDATE ledger_heads SET root = sha256('x') WHERE tenant_id = 'f1' AND tree_size = 5");
  report = store_->Verify("f1", nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_NE(std::find_if(report->problems.begin(), report->problems.end(),
                         [](const std::string& p) { return p == "head at size 5 has a signature that does not verify"; }),
            report->problems.end());

  // Bad commands.
  EXPECT_EQ(AuditVerify({"--dsn", Dsn()}).first, 2);
  EXPECT_EQ(AuditVerify({"--tenant", "d1", "--dsn", Dsn(), "--public-key", "abcd"}).first, 2);
  EXPECT_EQ(AuditVerify({"--tenant", "d1", "--dsn", "host=127.0.0.1 port=1 dbname=none connect_timeout=2"}).first, 2);
}

}  // namespace
}  // namespace medgrid::ledger
