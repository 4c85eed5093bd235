// The audit ledger on a real PostgreSQL: batched appends with signed tree
// heads, roots and proofs that match an in-memory tree of the same leaves,
// two stores appending to one tenant, tenants kept apart, the append-only
// triggers, and verification that names what a database administrator
// changed behind them; retention and archives (on a simulated clock).
// Also `medgridctl audit` on the same database.
#include <openssl/sha.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <thread>

#include <gtest/gtest.h>

#include "medgrid/core/clock.h"
#include "medgrid/ledger/archive.h"
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
    // The archive directories of ArchiveDir.
    const std::string prefix = "ledger_pgtest_" + std::to_string(::getpid()) + "_";
    for (const auto& dir : std::filesystem::directory_iterator(::testing::TempDir())) {
      if (dir.path().filename().string().rfind(prefix, 0) == 0) std::filesystem::remove_all(dir.path());
    }
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
    tx.exec("ALTER TABLE ledger_entries DISABLE TRIGGER USER");
    tx.exec("ALTER TABLE ledger_heads DISABLE TRIGGER USER");
    tx.exec(sql);
    tx.exec("ALTER TABLE ledger_entries ENABLE TRIGGER USER");
    tx.exec("ALTER TABLE ledger_heads ENABLE TRIGGER USER");
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

  // Runs `sql` in a transaction of its own: the SQLSTATE it fails with, or
  // "" when it succeeds (and is committed).
  static std::string SqlState(const std::string& sql) {
    pqxx::connection conn(Dsn());
    pqxx::work tx(conn);
    try {
      tx.exec(sql);
      tx.commit();
      return "";
    } catch (const pqxx::sql_error& e) {
      return e.sqlstate();
    }
  }
  std::map<std::string, std::string> Keys() const { return {{signer_->key_id(), signer_->public_key()}}; }

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
  for (const char* sql : {"UPDATE ledger_entries SET entry = 'x' WHERE tenant_id = 'c1'",
                          "DELETE FROM ledger_entries WHERE tenant_id = 'c1'", "TRUNCATE ledger_heads",
                          "UPDATE ledger_heads SET root = root WHERE tenant_id = 'c1'"}) {
    EXPECT_EQ(SqlState(sql), "MG002") << sql;
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

// Runs `medgridctl audit ARGS` in-process: exit status and output.
std::pair<int, std::string> Audit(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  const int status = RunAuditCommand(args, out, err);
  return {status, out.str() + err.str()};
}
std::pair<int, std::string> AuditVerify(std::vector<std::string> args) {
  args.insert(args.begin(), "verify");
  return Audit(args);
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

// ---- Retention and archives ----

constexpr int64_t kDay0 = 1700000000000000;  // 2023-11-14T22:13:20Z
constexpr std::chrono::hours kDay(24);

std::string Event(int n) { return R"({"resourceType":"AuditEvent","n":)" + std::to_string(n) + "}"; }

// A fresh directory for archive files.
std::string ArchiveDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("ledger_pgtest_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

Hash FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  Hash h;
  ::SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), h.data());
  return h;
}

std::vector<std::unique_ptr<ArchiveReader>> Readers(const std::vector<std::string>& paths) {
  std::vector<std::unique_ptr<ArchiveReader>> out;
  for (const std::string& p : paths) {
    auto reader = ArchiveReader::Open(p);
    EXPECT_TRUE(reader.ok()) << reader.status();
    if (reader.ok()) out.push_back(std::move(*reader));
  }
  return out;
}

// A copy of the archive at `path` (as `dir`/tampered.ndjson.gz) with one
// byte of entry `seq` flipped.
std::string TamperedCopy(const std::string& path, const std::string& dir, uint64_t seq) {
  auto reader = ArchiveReader::Open(path);
  auto sink = DirectorySinks(dir)("tampered.ndjson.gz");
  auto writer = ArchiveWriter::Create(std::move(*sink), (*reader)->header());
  for (auto e = (*reader)->Next(); e.ok() && e->has_value(); e = (*reader)->Next()) {
    if ((*e)->seq == seq) (*e)->entry[1] ^= 1;
    EXPECT_TRUE((*writer)->Add(**e).ok());
  }
  EXPECT_TRUE((*writer)->Finish().ok());
  return dir + "/tampered.ndjson.gz";
}

TEST_F(LedgerTest, ArchivesWhatIsOlderThanTheHotWindow) {
  core::SimulatedClock clock(core::FromUnixMicros(kDay0));
  auto opened = LedgerStore::Open(Dsn(), signer_, clock);
  ASSERT_TRUE(opened.ok()) << opened.status();
  LedgerStore& ledger = **opened;
  EXPECT_EQ(ledger.GetRetention("r1")->hot_days, kDefaultHotDays);
  EXPECT_TRUE(ledger.GetRetention("r1")->is_default);
  ASSERT_TRUE(ledger.SetRetention("r1", 30).ok());
  EXPECT_EQ(ledger.SetRetention("r1", 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger.GetRetention("r1")->hot_days, 30);
  EXPECT_FALSE(ledger.GetRetention("r1")->is_default);

  // Events 0-9 on day 0, 10-19 on day 20, 20-24 on day 40; two of them in the search index.
  MerkleTree mirror;
  auto append = [&](int from, int to) {
    std::vector<std::string> entries;
    std::vector<std::string> ids;
    for (int i = from; i < to; ++i) {
      entries.push_back(Event(i));
      ids.push_back("ev-" + std::to_string(i));
      mirror.Append(entries.back());
    }
    ASSERT_TRUE(ledger.Append("r1", entries, &ids).ok());
  };
  append(0, 10);
  clock.Advance(20 * kDay);
  append(10, 20);
  clock.Advance(20 * kDay);
  append(20, 25);
  ASSERT_EQ(SqlState("INSERT INTO audit_event_index VALUES ('r1', 'ev-3', 0, 'R', '0', 'read', '-', '{}'), "
                     "('r1', 'ev-15', 0, 'R', '0', 'read', '-', '{}')"),
            "");

  // Day 40, a 30-day window: entries 0 to 9 go.
  const std::string dir = ArchiveDir("r1");
  auto first = ledger.Archive("r1", std::nullopt, DirectorySinks(dir));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->first, 0u);
  EXPECT_EQ(first->end, 10u);
  EXPECT_EQ(first->head_size, 25u);
  EXPECT_EQ(first->file_name, "ledger-r1-000000000000-000000000010.ndjson.gz");
  const std::string file1 = dir + "/" + first->file_name;
  EXPECT_EQ(first->file_sha256, FileSha256(file1));
  {
    pqxx::connection conn(Dsn());
    pqxx::read_transaction tx(conn);
    pqxx::result rows = tx.exec(
        "SELECT seq, archived, length(entry), leaf_hash, event_id FROM ledger_entries WHERE tenant_id = 'r1' ORDER BY "
        "seq");
    ASSERT_EQ(rows.size(), 25u);
    for (const pqxx::row& row : rows) {
      const uint64_t seq = row[0].as<uint64_t>();
      EXPECT_EQ(row[1].as<bool>(), seq < 10) << seq;
      EXPECT_EQ(row[2].as<int>() == 0, seq < 10) << seq;
      EXPECT_EQ(pqxx::binarystring(row[3]).str(),
                std::string(mirror.leaf_hash(seq).begin(), mirror.leaf_hash(seq).end()));
      EXPECT_EQ(row[4].as<std::string>(), "ev-" + std::to_string(seq));
    }
    pqxx::result archives = tx.exec(
        "SELECT first_seq, end_seq, file_name, file_sha256, head_size FROM ledger_archives "
        "WHERE tenant_id = 'r1'");
    ASSERT_EQ(archives.size(), 1u);
    EXPECT_EQ(archives[0][0].as<uint64_t>(), 0u);
    EXPECT_EQ(archives[0][1].as<uint64_t>(), 10u);
    EXPECT_EQ(archives[0][2].as<std::string>(), first->file_name);
    EXPECT_EQ(pqxx::binarystring(archives[0][3]).str(),
              std::string(first->file_sha256.begin(), first->file_sha256.end()));
    EXPECT_EQ(archives[0][4].as<uint64_t>(), 25u);
    pqxx::result indexed = tx.exec("SELECT event_id FROM audit_event_index WHERE tenant_id = 'r1'");
    ASSERT_EQ(indexed.size(), 1u);
    EXPECT_EQ(indexed[0][0].as<std::string>(), "ev-15");
  }

  // The tree, its heads and proofs are as they were.
  const std::map<std::string, std::string> keys = Keys();
  EXPECT_EQ(ledger.Head("r1")->root, mirror.Root());
  auto path = ledger.InclusionProof("r1", 3, 25);
  ASSERT_TRUE(path.ok());
  EXPECT_TRUE(VerifyInclusion(3, 25, mirror.leaf_hash(3), *path, mirror.Root()));
  auto stored_only = ledger.Verify("r1", &keys);
  ASSERT_TRUE(stored_only.ok());
  EXPECT_TRUE(stored_only->ok) << stored_only->problems.at(0);
  EXPECT_EQ(stored_only->archived, 10u);
  EXPECT_EQ(stored_only->archived_unchecked, 10u);
  auto with_file = ledger.Verify("r1", &keys, Readers({file1}));
  ASSERT_TRUE(with_file.ok());
  EXPECT_TRUE(with_file->ok) << with_file->problems.at(0);
  EXPECT_EQ(with_file->archived_unchecked, 0u);
  auto reader = ArchiveReader::Open(file1);
  ASSERT_TRUE(reader.ok());
  const ArchiveReport alone = VerifyArchive(**reader, &keys);
  EXPECT_TRUE(alone.ok);
  EXPECT_EQ(alone.entries, 10u);

  // The triggers let through only the archiving of a recorded range.
  for (const char* sql : {"UPDATE ledger_entries SET entry = '' WHERE tenant_id = 'r1' AND seq = 12",
                          "UPDATE ledger_entries SET entry = '', archived = true WHERE tenant_id = 'r1' AND seq = 12",
                          "UPDATE ledger_entries SET archived = false WHERE tenant_id = 'r1' AND seq = 3",
                          "UPDATE ledger_entries SET entry = 'back' WHERE tenant_id = 'r1' AND seq = 3",
                          "UPDATE ledger_entries SET entry = '', archived = true, leaf_hash = leaf_hash "
                          "WHERE tenant_id = 'r1' AND seq = 3",
                          "DELETE FROM ledger_entries WHERE tenant_id = 'r1' AND seq = 3",
                          "DELETE FROM ledger_archives WHERE tenant_id = 'r1'",
                          "UPDATE ledger_archives SET end_seq = 20 WHERE tenant_id = 'r1'"}) {
    EXPECT_EQ(SqlState(sql), "MG002") << sql;
  }

  // An event sent again after its entry was archived is still skipped.
  const std::vector<std::string> again_ids = {"ev-3", "ev-25"};
  auto again = ledger.Append("r1", {Event(3), Event(25)}, &again_ids);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->first_index, 25u);
  EXPECT_EQ(again->head.size, 26u);
  mirror.Append(Event(25));

  // Nothing more until the window moves; then 10 to 19 (day 20), and with an
  // explicit time the rest.
  auto none = ledger.Archive("r1", std::nullopt, DirectorySinks(dir));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->first, 10u);
  EXPECT_EQ(none->end, 10u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
  clock.Advance(30 * kDay);
  auto second = ledger.Archive("r1", std::nullopt, DirectorySinks(dir));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->first, 10u);
  EXPECT_EQ(second->end, 20u);
  auto third = ledger.Archive("r1", core::FromUnixMicros(kDay0) + 41 * kDay, DirectorySinks(dir));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->first, 20u);
  EXPECT_EQ(third->end, 26u);
  EXPECT_EQ(third->head_size, 26u);
  const std::string file2 = dir + "/" + second->file_name;
  const std::string file3 = dir + "/" + third->file_name;
  auto all = ledger.Verify("r1", &keys, Readers({file3, file1, file2}));
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->ok) << all->problems.at(0);
  EXPECT_EQ(all->archived, 26u);
  EXPECT_EQ(all->archived_unchecked, 0u);
  EXPECT_EQ(all->heads, 4u);
  auto some = ledger.Verify("r1", &keys, Readers({file2}));
  ASSERT_TRUE(some.ok());
  EXPECT_TRUE(some->ok);
  EXPECT_EQ(some->archived_unchecked, 16u);
  EXPECT_EQ(ledger.Head("r1")->root, mirror.Root());
}

// A sink that fails where it is told to.
class FailingSink final : public ArchiveSink {
 public:
  explicit FailingSink(bool fail_write) : fail_write_(fail_write) {}
  absl::Status Write(std::string_view) override {
    return fail_write_ ? absl::UnavailableError("disk full") : absl::OkStatus();
  }
  absl::Status Commit() override { return absl::UnavailableError("rename failed"); }

 private:
  bool fail_write_;
};

TEST_F(LedgerTest, AnArchiveThatFailsLeavesTheLedgerAsItWas) {
  core::SimulatedClock clock(core::FromUnixMicros(kDay0));
  auto ledger = LedgerStore::Open(Dsn(), signer_, clock);
  ASSERT_TRUE(ledger.ok());
  ASSERT_TRUE((*ledger)->Append("r4", {Event(0), Event(1), Event(2)}).ok());
  clock.Advance(100 * kDay);
  for (bool fail_write : {true, false}) {
    auto failed =
        (*ledger)->Archive("r4", std::nullopt, [&](const std::string&) -> absl::StatusOr<std::unique_ptr<ArchiveSink>> {
          return std::make_unique<FailingSink>(fail_write);
        });
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << fail_write;
  }
  auto refused =
      (*ledger)->Archive("r4", std::nullopt, [](const std::string&) -> absl::StatusOr<std::unique_ptr<ArchiveSink>> {
        return absl::PermissionDeniedError("no bucket");
      });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*ledger)->Archive("../r4", std::nullopt, DirectorySinks("/tmp")).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto report = (*ledger)->Verify("r4");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok);
  EXPECT_EQ(report->archived, 0u);
  EXPECT_EQ(SqlState("SELECT 1/count(*) FROM ledger_archives WHERE tenant_id = 'r4'"), "22012")
      << "no archive recorded";
  // An entry altered in place is not archived (it would leave the database with the file).
  AsAdministrator("UPDATE ledger_entries SET entry = 'forged' WHERE tenant_id = 'r4' AND seq = 1");
  EXPECT_EQ((*ledger)->Archive("r4", std::nullopt, DirectorySinks(ArchiveDir("r4"))).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(LedgerTest, AuditCommandsArchiveAndVerifyNamingWhatWasChanged) {
  core::SimulatedClock clock(core::FromUnixMicros(kDay0));
  auto ledger = LedgerStore::Open(Dsn(), signer_, clock);
  ASSERT_TRUE(ledger.ok());
  for (int batch = 0; batch < 4; ++batch) {
    std::vector<std::string> entries;
    for (int i = 0; i < 5; ++i) entries.push_back(Event(batch * 5 + i));
    ASSERT_TRUE((*ledger)->Append("r2", entries).ok());
  }
  const std::string dsn = "--dsn=" + Dsn();
  const std::string key = "--public-key=" + ToHex(signer_->public_key());
  auto [shown, shown_out] = Audit({"retention", "--tenant", "r2", dsn});
  EXPECT_EQ(shown, 0);
  EXPECT_EQ(shown_out, "tenant r2: hot window 90 days (the default)\n");
  EXPECT_EQ(Audit({"retention", "--tenant", "r2", "--hot-days", "7", dsn}).second, "tenant r2: hot window 7 days\n");

  const std::string dir = ArchiveDir("r2");
  auto [archived, archived_out] =
      Audit({"archive", "--tenant", "r2", "--out", dir, "--before", "2023-12-31T19:00:00-05:00", dsn});
  EXPECT_EQ(archived, 0) << archived_out;
  const std::string file = dir + "/ledger-r2-000000000000-000000000020.ndjson.gz";
  EXPECT_NE(archived_out.find("tenant r2: archived entries 0 to 19 into " + file), std::string::npos) << archived_out;
  auto [nothing, nothing_out] = Audit({"archive", "--tenant", "r2", "--out", dir, "--before", "2024-01-01", dsn});
  EXPECT_EQ(nothing, 0);
  EXPECT_NE(nothing_out.find("nothing to archive"), std::string::npos) << nothing_out;

  auto [with_file, with_file_out] = AuditVerify({"--tenant", "r2", dsn, key, "--archive", file});
  EXPECT_EQ(with_file, 0) << with_file_out;
  EXPECT_NE(with_file_out.find("20 archived entries: 20 checked against archive files, 0 by their stored leaf hash"),
            std::string::npos)
      << with_file_out;
  auto [stored, stored_out] = AuditVerify({"--tenant", "r2", dsn, key});
  EXPECT_EQ(stored, 0) << stored_out;
  EXPECT_NE(stored_out.find("0 checked against archive files, 20 by their stored leaf hash only"), std::string::npos)
      << stored_out;
  EXPECT_EQ(Audit({"verify-archive", file, key}).first, 0);
  EXPECT_EQ(AuditVerify({"--tenant", "r2", dsn, "--archive", dir + "/none.gz"}).first, 2);

  // One byte of entry 4 in a copy of the file.
  const std::string tampered = TamperedCopy(file, ArchiveDir("r2-tampered"), 4);
  auto [bad_file, bad_file_out] = AuditVerify({"--tenant", "r2", dsn, key, "--archive", tampered});
  EXPECT_EQ(bad_file, 1);
  EXPECT_NE(bad_file_out.find("NOT VERIFIED: first altered entry 4\n  entry 4 in " + tampered +
                              " does not hash to the leaf hash the ledger recorded"),
            std::string::npos)
      << bad_file_out;
  auto [bad_alone, bad_alone_out] = Audit({"verify-archive", tampered, key});
  EXPECT_EQ(bad_alone, 1);
  EXPECT_NE(bad_alone_out.find("first bad entry 4"), std::string::npos) << bad_alone_out;

  // The stored leaf hash of an archived entry changed: the file names it;
  // without the file, the head over its batch does.
  AsAdministrator("UPDATE ledger_entries SET leaf_hash = sha256('x') WHERE tenant_id = 'r2' AND seq = 7");
  const std::map<std::string, std::string> keys = Keys();
  auto named = (*ledger)->Verify("r2", &keys, Readers({file}));
  ASSERT_TRUE(named.ok());
  EXPECT_FALSE(named->ok);
  EXPECT_EQ(named->first_altered, 7u);
  EXPECT_EQ(named->problems.at(0), "entry 7 in " + file + " does not hash to the leaf hash the ledger recorded");
  auto bounded = (*ledger)->Verify("r2", &keys);
  ASSERT_TRUE(bounded.ok());
  EXPECT_FALSE(bounded->ok);
  EXPECT_EQ(bounded->first_altered, 5u);  // the head at 10 covers entries 5 to 9

  // An entry emptied behind the triggers, with no archive recorded for it.
  ASSERT_TRUE((*ledger)->Append("r3", {Event(0), Event(1), Event(2)}).ok());
  AsAdministrator("UPDATE ledger_entries SET entry = '', archived = true WHERE tenant_id = 'r3' AND seq = 1");
  auto hidden = (*ledger)->Verify("r3", &keys);
  ASSERT_TRUE(hidden.ok());
  EXPECT_FALSE(hidden->ok);
  EXPECT_EQ(hidden->first_altered, 1u);
  EXPECT_EQ(hidden->problems.at(0), "entry 1 is marked archived, but no archive is recorded for it");
  // A file of another tenant is not taken for this one's.
  auto foreign = (*ledger)->Verify("r3", &keys, Readers({file}));
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ(foreign->problems.at(0), file + " holds entries of tenant r2, not r3");
}

}  // namespace
}  // namespace medgrid::ledger
