// The Merkle tree against a reference written straight from RFC 6962 section
// 2.1 (recursive, O(n) per hash, hashing with OpenSSL itself), for every size
// from 0 to 1,000; the Certificate Transparency test vectors; the verifiers'
// negative cases; the `medgridctl ledger` commands; and archive files
// (written, read back, and checked after tampering with each part).
#include <openssl/sha.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "medgrid/ledger/archive.h"
#include "medgrid/ledger/cli.h"
#include "medgrid/ledger/merkle.h"
#include "medgrid/ledger/signer.h"

namespace medgrid::ledger {
namespace {

// ---- The reference: RFC 6962 section 2.1, as written. ----
using Leaves = std::vector<std::string>;

Hash RefSha(const std::string& bytes) {
  Hash h;
  ::SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), h.data());
  return h;
}
std::string Bytes(const Hash& h) { return std::string(h.begin(), h.end()); }
std::size_t K(std::size_t n) {  // the largest power of two smaller than n
  std::size_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}
Leaves Slice(const Leaves& d, std::size_t b, std::size_t e) { return Leaves(d.begin() + b, d.begin() + e); }

Hash RefMth(const Leaves& d) {
  if (d.empty()) return RefSha("");
  if (d.size() == 1) return RefSha(std::string(1, '\0').append(d[0]));
  const std::size_t k = K(d.size());
  return RefSha(std::string(1, '\1').append(Bytes(RefMth(Slice(d, 0, k)))).append(Bytes(RefMth(Slice(d, k, d.size())))));
}

std::vector<Hash> RefPath(std::size_t m, const Leaves& d) {
  if (d.size() <= 1) return {};
  const std::size_t k = K(d.size());
  std::vector<Hash> out;
  if (m < k) {
    out = RefPath(m, Slice(d, 0, k));
    out.push_back(RefMth(Slice(d, k, d.size())));
  } else {
    out = RefPath(m - k, Slice(d, k, d.size()));
    out.push_back(RefMth(Slice(d, 0, k)));
  }
  return out;
}

std::vector<Hash> RefSubproof(std::size_t m, const Leaves& d, bool b) {
  if (m == d.size()) return b ? std::vector<Hash>{} : std::vector<Hash>{RefMth(d)};
  const std::size_t k = K(d.size());
  std::vector<Hash> out;
  if (m <= k) {
    out = RefSubproof(m, Slice(d, 0, k), b);
    out.push_back(RefMth(Slice(d, k, d.size())));
  } else {
    out = RefSubproof(m - k, Slice(d, k, d.size()), false);
    out.push_back(RefMth(Slice(d, 0, k)));
  }
  return out;
}

std::vector<Hash> RefProof(std::size_t m, const Leaves& d) {
  if (m == 0 || m == d.size()) return {};
  return RefSubproof(m, d, true);
}

// Leaf i: i % 7 bytes, varied, so that empty and equal leaves occur too.
Leaves MakeLeaves(std::size_t n) {
  Leaves d;
  for (std::size_t i = 0; i < n; ++i) {
    std::string leaf;
    for (std::size_t j = 0; j < i % 7; ++j) leaf.push_back(static_cast<char>((i * 31 + j * 7) & 0xff));
    d.push_back(leaf);
  }
  return d;
}

// The indices or old sizes to check for size n: all of them up to 64, else
// the ends, the middle, the powers of two and a few drawn at random.
std::vector<std::size_t> Samples(std::size_t n, std::size_t below, std::mt19937& rng) {
  std::vector<std::size_t> out;
  if (n <= 64) {
    for (std::size_t i = 0; i < below; ++i) out.push_back(i);
    return out;
  }
  out = {0, 1, below - 1, below / 2};
  for (std::size_t p = 2; p < below; p *= 2) out.push_back(p);
  for (int i = 0; i < 3; ++i) out.push_back(std::uniform_int_distribution<std::size_t>(0, below - 1)(rng));
  return out;
}

TEST(Merkle, CertificateTransparencyTestVectors) {
  // The leaves as hex: "", "00", "10", "2021", ...
  Leaves d;
  for (const char* hex : {"", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                          "606162636465666768696a6b6c6d6e6f"}) {
    d.push_back(*FromHex(hex));
  }
  const char* const roots[] = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
  };
  MerkleTree tree;
  EXPECT_EQ(ToHex(tree.Root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  for (std::size_t i = 0; i < d.size(); ++i) {
    tree.Append(d[i]);
    EXPECT_EQ(ToHex(tree.Root()), roots[i]) << "size " << i + 1;
    EXPECT_EQ(ToHex(RefMth(Slice(d, 0, i + 1))), roots[i]) << "reference, size " << i + 1;
  }
  std::vector<std::string> path;
  for (const Hash& h : tree.InclusionProof(0, 8)) path.push_back(ToHex(h));
  EXPECT_EQ(path, (std::vector<std::string>{"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                                            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                                            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}));
  std::vector<std::string> proof;
  for (const Hash& h : tree.ConsistencyProof(6, 8)) proof.push_back(ToHex(h));
  EXPECT_EQ(proof, (std::vector<std::string>{"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                                             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                                             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}));
}

TEST(Merkle, RootsAndProofsMatchTheReferenceForSizesUpTo1000) {
  const Leaves d = MakeLeaves(1000);
  std::mt19937 rng(6962);
  MerkleTree tree;
  EXPECT_EQ(tree.Root(), RefMth({}));
  for (std::size_t n = 1; n <= d.size(); ++n) {
    tree.Append(d[n - 1]);
    const Leaves prefix = Slice(d, 0, n);
    const Hash root = RefMth(prefix);
    ASSERT_EQ(tree.Root(), root) << "size " << n;
    ASSERT_EQ(tree.leaf_hash(n - 1), LeafHash(d[n - 1]));
    // Sizes past 300 check fewer proofs: the reference is O(n) per proof.
    if (n > 300 && n % 7 != 0) continue;
    for (std::size_t i : Samples(n, n, rng)) {
      const std::vector<Hash> path = tree.InclusionProof(i, n);
      ASSERT_EQ(path, RefPath(i, prefix)) << "leaf " << i << " of " << n;
      EXPECT_TRUE(VerifyInclusion(i, n, LeafHash(d[i]), path, root)) << "leaf " << i << " of " << n;
    }
    for (std::size_t m : Samples(n, n + 1, rng)) {
      const std::vector<Hash> proof = tree.ConsistencyProof(m, n);
      ASSERT_EQ(proof, RefProof(m, prefix)) << m << " -> " << n;
      EXPECT_EQ(tree.Root(m), RefMth(Slice(d, 0, m)));
      EXPECT_TRUE(VerifyConsistency(m, n, tree.Root(m), root, proof)) << m << " -> " << n;
    }
  }
}

TEST(Merkle, VerifiersRejectWhatIsNotAProof) {
  const Leaves d = MakeLeaves(300);
  MerkleTree tree;
  for (const std::string& leaf : d) tree.Append(leaf);
  Hash other = LeafHash("not a leaf");
  for (uint64_t n : {1u, 2u, 3u, 7u, 8u, 9u, 100u, 255u, 256u, 300u}) {
    const Hash root = tree.Root(n);
    for (uint64_t i : {uint64_t{0}, n / 2, n - 1}) {
      const Hash leaf = tree.leaf_hash(i);
      const std::vector<Hash> path = tree.InclusionProof(i, n);
      ASSERT_TRUE(VerifyInclusion(i, n, leaf, path, root));
      EXPECT_FALSE(VerifyInclusion(i, n, other, path, root)) << "another leaf";
      EXPECT_FALSE(VerifyInclusion(i, n, leaf, path, tree.Root(n - 1))) << "another root";
      EXPECT_FALSE(VerifyInclusion(n, n, leaf, path, root)) << "index at the size";
      if (n > 1) {
        EXPECT_FALSE(VerifyInclusion((i + 1) % n, n, leaf, path, root)) << "wrong index " << i << " of " << n;
        std::vector<Hash> truncated(path.begin(), path.end() - 1);
        EXPECT_FALSE(VerifyInclusion(i, n, leaf, truncated, root)) << "truncated";
        std::vector<Hash> tampered = path;
        tampered[0][0] ^= 1;
        EXPECT_FALSE(VerifyInclusion(i, n, leaf, tampered, root)) << "tampered";
      }
      std::vector<Hash> extended = path;
      extended.push_back(other);
      EXPECT_FALSE(VerifyInclusion(i, n, leaf, extended, root)) << "extended";
    }
    for (uint64_t m : {uint64_t{1}, n / 2, n - 1}) {
      if (m == 0 || m >= n) continue;
      const std::vector<Hash> proof = tree.ConsistencyProof(m, n);
      const Hash old_root = tree.Root(m);
      ASSERT_TRUE(VerifyConsistency(m, n, old_root, root, proof));
      EXPECT_FALSE(VerifyConsistency(m, n, root, old_root, proof)) << "swapped roots";
      EXPECT_FALSE(VerifyConsistency(n, m, old_root, root, proof)) << "sizes out of order";
      EXPECT_FALSE(VerifyConsistency(m, n, old_root, root, {})) << "empty proof";
      std::vector<Hash> truncated(proof.begin(), proof.end() - 1);
      EXPECT_FALSE(VerifyConsistency(m, n, old_root, root, truncated)) << "truncated " << m << " -> " << n;
      std::vector<Hash> tampered = proof;
      tampered.back()[31] ^= 0x80;
      EXPECT_FALSE(VerifyConsistency(m, n, old_root, root, tampered)) << "tampered";
      if (m + 1 < n) {
        EXPECT_FALSE(VerifyConsistency(m + 1, n, tree.Root(m + 1), root, proof)) << "wrong old size";
      }
    }
    EXPECT_TRUE(VerifyConsistency(n, n, root, root, {}));
    EXPECT_FALSE(VerifyConsistency(n, n, root, other, {}));
    EXPECT_TRUE(VerifyConsistency(0, n, EmptyRoot(), root, {}));
  }
}

TEST(Merkle, Hex) {
  EXPECT_EQ(FromHex("00ff10Ab"), std::string("\x00\xff\x10\xab", 4));
  EXPECT_EQ(FromHex(""), std::string());
  EXPECT_EQ(FromHex("abc"), std::nullopt);
  EXPECT_EQ(FromHex("zz"), std::nullopt);
  EXPECT_EQ(ToHex(std::string_view("\x01\xfe", 2)), "01fe");
  EXPECT_EQ(HashFromHex("00"), std::nullopt);
}

// Runs `medgridctl ledger ARGS` on `input`: exit status, stdout, stderr.
struct Outcome {
  int status;
  std::string out;
  std::string err;
};
Outcome Ledger(const std::vector<std::string>& args, const std::string& input) {
  std::istringstream in(input);
  std::ostringstream out;
  std::ostringstream err;
  const int status = RunLedgerCommand(args, in, out, err);
  return {status, out.str(), err.str()};
}

TEST(LedgerCommand, RootInclusionAndConsistency) {
  const std::string ct = "\n00\n10\n2021\n3031\n40414243\n5051525354555657\n606162636465666768696a6b6c6d6e6f\n";
  EXPECT_EQ(Ledger({"root"}, ct).out, "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328\n");
  EXPECT_EQ(Ledger({"root"}, "").out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n");
  EXPECT_EQ(Ledger({"root"}, "\n").out, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d\n");
  // No newline after the last line, and CRLF line ends, read the same.
  EXPECT_EQ(Ledger({"root"}, "\r\n00").out, "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125\n");
  const Outcome inclusion = Ledger({"inclusion", "--index", "0", "--size", "8"}, ct);
  EXPECT_EQ(inclusion.status, 0);
  EXPECT_EQ(inclusion.out,
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7\n"
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\n"
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4\n");
  EXPECT_EQ(Ledger({"inclusion", "--index=0", "--size=1"}, ct).out, "");  // a one-leaf tree: the empty path
  const Outcome consistency = Ledger({"consistency", "--old", "6", "--new", "8"}, ct);
  EXPECT_EQ(consistency.status, 0);
  EXPECT_EQ(consistency.out,
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a\n"
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\n"
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7\n");
  EXPECT_EQ(Ledger({"consistency", "--old", "3", "--new", "3"}, ct).out, "");
  EXPECT_EQ(Ledger({"consistency", "--old", "0", "--new", "5"}, ct).out, "");
}

TEST(LedgerCommand, ImpossibleArgumentsAndBadInputFail) {
  const std::string three = "00\n01\n02\n";
  for (const auto& [args, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"inclusion", "--index", "3", "--size", "3"}, "--index 3 is not below --size 3"},
           {{"inclusion", "--index", "0", "--size", "4"}, "--size 4 is past the 3 leaves given"},
           {{"inclusion", "--index", "0", "--size", "0"}, "--index 0 is not below --size 0"},
           {{"consistency", "--old", "3", "--new", "2"}, "--old 3 is past --new 2"},
           {{"consistency", "--old", "1", "--new", "4"}, "--new 4 is past the 3 leaves given"},
           {{"inclusion", "--index", "-1", "--size", "2"}, "needs a non-negative integer"},
           {{"inclusion", "--size", "2"}, "missing --index"},
           {{"root", "--size", "2"}, "unknown flag --size"},
           {{"inclusion", "--index", "0", "--index", "1", "--size", "2"}, "given twice"},
           {{"proof"}, "unknown subcommand 'proof'"},
           {{}, "missing subcommand"},
       }) {
    const Outcome r = Ledger(args, three);
    EXPECT_EQ(r.status, 2) << message;
    EXPECT_EQ(r.out, "") << message;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
  const Outcome bad = Ledger({"root"}, "00\n0g\n");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("line 2 is not an even number of hex digits"), std::string::npos) << bad.err;
  EXPECT_EQ(Ledger({"root"}, "000\n").status, 2);
}

// ---- Archive files ----

// A tree of 40 entries signed at its full size, and a fresh directory.
class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::path(::testing::TempDir()) / ("ledger_archive_" + std::to_string(::getpid()) + "_" +
                                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    signer_ = *Signer::Generate();
    for (const std::string& leaf : MakeLeaves(40)) tree_.Append(leaf);
    header_.tenant = "t1";
    header_.first = 5;
    header_.end = 30;
    header_.head.tenant = "t1";
    header_.head.size = 40;
    header_.head.root = tree_.Root();
    header_.head.timestamp_us = 1700000000000000;
    ASSERT_TRUE(signer_->Sign(header_.head).ok());
    header_.public_key = signer_->public_key();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  ArchiveEntry Entry(uint64_t seq) const {
    ArchiveEntry e;
    e.seq = seq;
    e.recorded_us = 1600000000000000 + static_cast<int64_t>(seq);
    if (seq % 3 != 0) e.event_id = "ev-" + std::to_string(seq);
    e.entry = MakeLeaves(40)[seq];
    e.leaf_hash = tree_.leaf_hash(seq);
    e.proof = tree_.InclusionProof(seq, 40);
    return e;
  }
  // Changes an entry before it is written; false leaves it out.
  using EditEntry = std::function<bool(ArchiveEntry&)>;
  using EditHeader = std::function<void(ArchiveHeader&)>;
  // Writes the archive of header_ as `name`, edited; returns the file's path.
  std::string Write(const std::string& name, const EditEntry& edit_entry = nullptr,
                    const EditHeader& edit_header = nullptr) {
    ArchiveHeader header = header_;
    if (edit_header) edit_header(header);
    auto sink = DirectorySinks(dir_.string())(name);
    EXPECT_TRUE(sink.ok()) << sink.status();
    auto writer = ArchiveWriter::Create(std::move(*sink), header);
    EXPECT_TRUE(writer.ok()) << writer.status();
    for (uint64_t seq = header.first; seq < header.end; ++seq) {
      ArchiveEntry e = Entry(seq);
      if (!edit_entry || edit_entry(e)) {
        EXPECT_TRUE((*writer)->Add(e).ok());
      }
    }
    auto sha = (*writer)->Finish();
    EXPECT_TRUE(sha.ok()) << sha.status();
    return (dir_ / name).string();
  }
  ArchiveReport Check(const std::string& path, bool trust = true) {
    auto reader = ArchiveReader::Open(path);
    EXPECT_TRUE(reader.ok()) << reader.status();
    std::map<std::string, std::string> keys = {{signer_->key_id(), signer_->public_key()}};
    return VerifyArchive(**reader, trust ? &keys : nullptr);
  }

  std::filesystem::path dir_;
  std::unique_ptr<Signer> signer_;
  MerkleTree tree_;
  ArchiveHeader header_;
};

TEST_F(ArchiveTest, WrittenAndReadBack) {
  const std::string path = Write("a.ndjson.gz");
  EXPECT_EQ(std::filesystem::directory_iterator(dir_)->path(), path) << "only the file, no temporary beside it";
  auto reader = ArchiveReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const ArchiveHeader& h = (*reader)->header();
  EXPECT_EQ(h.tenant, "t1");
  EXPECT_EQ(h.first, 5u);
  EXPECT_EQ(h.end, 30u);
  EXPECT_EQ(h.head.size, 40u);
  EXPECT_EQ(h.head.root, tree_.Root());
  EXPECT_EQ(h.head.signature, header_.head.signature);
  EXPECT_EQ(h.public_key, signer_->public_key());
  for (uint64_t seq = 5; seq < 30; ++seq) {
    auto e = (*reader)->Next();
    ASSERT_TRUE(e.ok() && e->has_value()) << seq;
    const ArchiveEntry want = Entry(seq);
    EXPECT_EQ((*e)->seq, seq);
    EXPECT_EQ((*e)->recorded_us, want.recorded_us);
    EXPECT_EQ((*e)->event_id, want.event_id);
    EXPECT_EQ((*e)->entry, want.entry);
    EXPECT_EQ((*e)->leaf_hash, want.leaf_hash);
    EXPECT_EQ((*e)->proof, want.proof);
  }
  auto end = (*reader)->Next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());

  const ArchiveReport trusted = Check(path);
  EXPECT_TRUE(trusted.ok) << (trusted.problems.empty() ? "" : trusted.problems[0]);
  EXPECT_EQ(trusted.entries, 25u);
  EXPECT_FALSE(trusted.key_from_file);
  const ArchiveReport own_key = Check(path, /*trust=*/false);
  EXPECT_TRUE(own_key.ok);
  EXPECT_TRUE(own_key.key_from_file);

  // It is plain gzip: zlib reads the header line back.
  gzFile f = gzopen(path.c_str(), "rb");
  char line[64] = {};
  ASSERT_NE(gzgets(f, line, sizeof line), nullptr);
  gzclose(f);
  EXPECT_EQ(std::string(line).rfind(R"({"format":"medgrid-ledger-archive-v1")", 0), 0u) << line;
}

TEST_F(ArchiveTest, EachTamperingNamesTheEntry) {
  struct Case {
    const char* what;
    EditEntry edit_entry;
    EditHeader edit_header;
    std::optional<uint64_t> first_bad;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {"a byte of an entry",
       [](ArchiveEntry& e) {
         if (e.seq == 17) e.entry[0] ^= 1;
         return true;
       },
       nullptr, 17, "entry 17 does not hash to its leaf hash"},
      {"an entry with its leaf hash",
       [](ArchiveEntry& e) {
         if (e.seq == 9) {
           e.entry += "x";
           e.leaf_hash = LeafHash(e.entry);
         }
         return true;
       },
       nullptr, 9, "the proof of entry 9 does not lead to the head's root"},
      {"a byte of a proof",
       [](ArchiveEntry& e) {
         if (e.seq == 22) e.proof[1][5] ^= 0x10;
         return true;
       },
       nullptr, 22, "the proof of entry 22 does not lead to the head's root"},
      {"a byte of the head's signature", nullptr, [](ArchiveHeader& h) { h.head.signature[3] ^= 1; }, std::nullopt,
       "the head at size 40 has a signature that does not verify"},
      {"an entry left out", [](ArchiveEntry& e) { return e.seq != 12; }, nullptr, 12,
       "entry 13 is where entry 12 should be"},
      {"the last entry left out", [](ArchiveEntry& e) { return e.seq != 29; }, nullptr, 29,
       "the file ends before entry 29"},
  };
  for (const Case& c : cases) {
    const ArchiveReport r = Check(Write("t.ndjson.gz", c.edit_entry, c.edit_header));
    EXPECT_FALSE(r.ok) << c.what;
    EXPECT_EQ(r.first_bad, c.first_bad) << c.what;
    ASSERT_FALSE(r.problems.empty()) << c.what;
    EXPECT_EQ(r.problems[0], c.problem) << c.what;
  }
  // The head's root changed: every proof fails; the report keeps ten and counts the rest.
  const ArchiveReport root = Check(Write("r.ndjson.gz", nullptr, [](ArchiveHeader& h) { h.head.root[0] ^= 1; }));
  EXPECT_EQ(root.first_bad, 5u);
  EXPECT_EQ(root.problems.size(), 10u);
  EXPECT_EQ(root.more_problems, 16u);  // the signature, then 25 proofs
  // A key that is not trusted, and a file whose key is not the head's.
  auto other = Signer::Generate();
  const std::string path = Write("k.ndjson.gz");
  auto reader = ArchiveReader::Open(path);
  std::map<std::string, std::string> keys = {{(*other)->key_id(), (*other)->public_key()}};
  const ArchiveReport untrusted = VerifyArchive(**reader, &keys);
  EXPECT_FALSE(untrusted.ok);
  EXPECT_EQ(untrusted.problems.at(0), "the head is signed by key " + signer_->key_id() + ", which is not trusted");
  const std::string swapped =
      Write("s.ndjson.gz", nullptr, [&](ArchiveHeader& h) { h.public_key = (*other)->public_key(); });
  EXPECT_EQ(Check(swapped, /*trust=*/false).problems.at(0),
            "the file's public key is not key " + signer_->key_id() + ", which signed the head");
}

TEST_F(ArchiveTest, DamagedAndForeignFiles) {
  const std::string path = Write("a.ndjson.gz");
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream((dir_ / name).string(), std::ios::binary) << content;
    return (dir_ / name).string();
  };
  // Cut short: the entries read up to there check, the next is named.
  auto cut = ArchiveReader::Open(write("cut.gz", bytes.substr(0, bytes.size() * 2 / 3)));
  ASSERT_TRUE(cut.ok()) << cut.status();
  const ArchiveReport r = VerifyArchive(**cut, nullptr);
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(r.first_bad.has_value());
  EXPECT_GT(*r.first_bad, 5u);
  EXPECT_EQ(*r.first_bad, 5 + r.entries);

  EXPECT_EQ(ArchiveReader::Open((dir_ / "missing.gz").string()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ArchiveReader::Open(write("plain", "{\"format\":\"medgrid-ledger-archive-v1\"}\n")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ArchiveReader::Open(write("empty", "")).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ArchiveReader::Open(write("header", bytes.substr(0, 12))).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(ArchiveTest, NothingShowsUntilCommit) {
  auto sink = DirectorySinks(dir_.string())("x.gz");
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Write("partial").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "x.gz"));
  sink->reset();  // a crash before the commit, as far as the directory goes
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
  EXPECT_EQ(DirectorySinks(dir_.string())("../x.gz").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DirectorySinks((dir_ / "none").string())("x.gz").status().code(), absl::StatusCode::kUnavailable);
}

// Runs `medgridctl audit ARGS` in-process.
Outcome Audit(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  const int status = RunAuditCommand(args, out, err);
  return {status, out.str(), err.str()};
}

TEST_F(ArchiveTest, VerifyArchiveCommand) {
  const std::string good = Write("good.ndjson.gz");
  const std::string key = "--public-key=" + ToHex(signer_->public_key());
  const Outcome trusted = Audit({"verify-archive", good, key});
  EXPECT_EQ(trusted.status, 0) << trusted.out << trusted.err;
  EXPECT_NE(trusted.out.find("tenant t1, entries 5 to 29, head at size 40 signed by key " + signer_->key_id()),
            std::string::npos)
      << trusted.out;
  EXPECT_NE(trusted.out.find("25 entries read\nverified\n"), std::string::npos) << trusted.out;
  EXPECT_EQ(trusted.out.find("no --public-key"), std::string::npos);
  const Outcome own = Audit({"verify-archive", good});
  EXPECT_EQ(own.status, 0);
  EXPECT_NE(own.out.find("checked with the key the file carries"), std::string::npos) << own.out;

  const std::string bad = Write("bad.ndjson.gz", [](ArchiveEntry& e) {
    if (e.seq == 11) e.proof.back()[0] ^= 1;
    return true;
  });
  const Outcome failed = Audit({"verify-archive", bad, key});
  EXPECT_EQ(failed.status, 1);
  EXPECT_NE(failed.out.find("NOT VERIFIED: first bad entry 11\n  the proof of entry 11"), std::string::npos)
      << failed.out;

  EXPECT_EQ(Audit({"verify-archive", (dir_ / "none.gz").string()}).status, 2);
  EXPECT_EQ(Audit({"verify-archive"}).status, 2);
  EXPECT_EQ(Audit({"verify-archive", good, good}).status, 2);
  EXPECT_EQ(Audit({"verify-archive", good, "--public-key", "abcd"}).status, 2);
}

TEST(AuditCommand, BadCommandsNeedNoDatabase) {
  for (const auto& [args, message] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{}, "missing subcommand"},
           {{"purge"}, "unknown subcommand 'purge'"},
           {{"verify", "--dsn", "x"}, "missing --tenant"},
           {{"verify", "--tenant", "a", "--tenant", "b"}, "flag --tenant given twice"},
           {{"verify", "--tenant", "a", "--out", "d"}, "unknown flag --out for 'verify'"},
           {{"archive", "--tenant", "a", "--dsn", "x"}, "missing --out"},
           {{"archive", "--tenant", "a", "--out", "d", "--before", "2024-13-01"}, "--before needs an RFC 3339 time"},
           {{"archive", "--tenant", "a", "--out", "d", "--before", "2024-01-01T10:00Z"}, "--before needs"},
           {{"retention", "--tenant", "a", "--hot-days", "0"}, "--hot-days needs a whole number of days, at least 1"},
           {{"retention", "--tenant", "a", "--hot-days", "9x"}, "--hot-days needs"},
           {{"retention", "--tenant", "a", "stray"}, "unexpected argument 'stray'"},
           {{"retention", "--tenant"}, "flag --tenant needs a value"},
       }) {
    const Outcome r = Audit(args);
    EXPECT_EQ(r.status, 2) << message;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace medgrid::ledger
