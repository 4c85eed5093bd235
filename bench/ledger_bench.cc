// Ledger benchmark.
//
// In memory: appending leaves to the RFC 6962 Merkle tree against hashing the
// same leaves alone (the baseline, in the same run), and the cost of audit
// paths and consistency proofs at 10^3, 10^5 and 10^6 leaves, against the
// cost of one node hash, to show they grow as log n.
//
// With --dsn (bench/ledger.sh starts a private PostgreSQL): batched appends
// through LedgerStore (entries, leaf hashes, a signed tree head per batch, in
// one transaction each) against the same rows inserted by the same statement
// into a plain table, batch by batch (the baseline).
//
//   build/release/bench/ledger_bench [--leaves N] [--leaf-bytes B] [--seed S]
//                                    [--dsn DSN --pg-leaves N --batch B]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "medgrid/ledger/ledger_store.h"
#include "medgrid/ledger/merkle.h"

namespace {

using Clock = std::chrono::steady_clock;
using medgrid::ledger::Hash;
using medgrid::ledger::MerkleTree;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

}  // namespace

int main(int argc, char** argv) {
  uint64_t leaves = 1'000'000;
  std::size_t leaf_bytes = 400;  // about an AuditEvent's ledger entry
  unsigned seed = 6962;
  std::string dsn;
  uint64_t pg_leaves = 200'000;
  std::size_t batch = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--leaves") leaves = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--dsn") dsn = argv[i + 1];
    else if (flag == "--pg-leaves") pg_leaves = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--batch") batch = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--leaf-bytes") leaf_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--seed") seed = static_cast<unsigned>(std::strtoul(argv[i + 1], nullptr, 10));
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  std::mt19937_64 rng(seed);
  // The leaves: one buffer, each leaf a window of it at a random offset.
  std::string pool(leaf_bytes + 4096, '\0');
  for (char& c : pool) c = static_cast<char>(rng());
  std::vector<uint32_t> offsets(leaves);
  for (uint32_t& o : offsets) o = static_cast<uint32_t>(rng() % 4096);
  auto leaf = [&](uint64_t i) { return std::string_view(pool).substr(offsets[i], leaf_bytes); };

  // Baseline: the leaf hashes alone.
  Clock::time_point t0 = Clock::now();
  Hash sink{};
  for (uint64_t i = 0; i < leaves; ++i) sink[i % 32] ^= medgrid::ledger::LeafHash(leaf(i))[0];
  const double hash_s = Seconds(t0);

  MerkleTree tree;
  t0 = Clock::now();
  for (uint64_t i = 0; i < leaves; ++i) tree.Append(leaf(i));
  const double append_s = Seconds(t0);
  const Hash root = tree.Root();

  // One node hash, for the proof costs' unit.
  t0 = Clock::now();
  Hash h = root;
  constexpr int kNodeHashes = 200'000;
  for (int i = 0; i < kNodeHashes; ++i) h = medgrid::ledger::NodeHash(h, root);
  const double node_us = Seconds(t0) * 1e6 / kNodeHashes;
  sink[0] ^= h[0];

  std::printf("ledger append, in memory: %llu leaves of %zu bytes (seed %u)\n",
              static_cast<unsigned long long>(leaves), leaf_bytes, seed);
  std::printf("| measurement | leaves/s | ratio |\n|---|---:|---:|\n");
  std::printf("| leaf hashes alone (baseline) | %.0f | 1.00 |\n", leaves / hash_s);
  std::printf("| append to the tree | %.0f | %.2f |\n\n", leaves / append_s, hash_s / append_s);

  std::printf("proofs (mean of 2,000 random each; one node hash = %.3f us)\n", node_us);
  std::printf("| tree size | audit path us | hashes | us / node hash | consistency us | hashes | us / node hash |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  for (uint64_t n : {uint64_t{1000}, uint64_t{100'000}, uint64_t{1'000'000}}) {
    if (n > leaves) break;
    constexpr int kProofs = 2000;
    std::vector<uint64_t> picks(kProofs);
    for (uint64_t& p : picks) p = rng() % n;
    std::size_t path_hashes = 0;
    t0 = Clock::now();
    for (uint64_t i : picks) path_hashes += tree.InclusionProof(i, n).size();
    const double path_us = Seconds(t0) * 1e6 / kProofs;
    std::size_t proof_hashes = 0;
    t0 = Clock::now();
    for (uint64_t m : picks) proof_hashes += tree.ConsistencyProof(m + 1 == n ? m : m + 1, n).size();
    const double proof_us = Seconds(t0) * 1e6 / kProofs;
    std::printf("| %llu | %.2f | %.1f | %.1f | %.2f | %.1f | %.1f |\n", static_cast<unsigned long long>(n), path_us,
                static_cast<double>(path_hashes) / kProofs, path_us / node_us, proof_us,
                static_cast<double>(proof_hashes) / kProofs, proof_us / node_us);
  }
  if (!dsn.empty()) {
    pg_leaves = std::min(pg_leaves, leaves);
    auto signer = medgrid::ledger::Signer::Generate();
    auto store = medgrid::ledger::LedgerStore::Open(dsn, std::shared_ptr<medgrid::ledger::Signer>(std::move(*signer)));
    if (!store.ok()) {
      std::fprintf(stderr, "ledger store: %s\n", std::string(store.status().message()).c_str());
      return 1;
    }
    pqxx::connection conn(dsn);
    {
      pqxx::work tx(conn);
      tx.exec("DROP TABLE IF EXISTS ledger_bench_plain");
      tx.exec("CREATE TABLE ledger_bench_plain (tenant_id text NOT NULL, seq bigint NOT NULL, recorded timestamptz "
              "NOT NULL, entry bytea NOT NULL, leaf_hash bytea NOT NULL, PRIMARY KEY (tenant_id, seq))");
      tx.commit();
    }
    const std::string dummy_hash = "x" + medgrid::ledger::ToHex(root);
    // The baseline: the same statement LedgerStore uses, into a plain table.
    t0 = Clock::now();
    for (uint64_t done = 0; done < pg_leaves;) {
      std::string entries;
      std::string hashes;
      const uint64_t first = done;
      for (; done < pg_leaves && done - first < batch; ++done) {
        entries += (entries.empty() ? "x" : ",x") + medgrid::ledger::ToHex(leaf(done));
        hashes += (hashes.empty() ? "" : ",") + dummy_hash;
      }
      pqxx::work tx(conn);
      tx.exec_params(
          "INSERT INTO ledger_bench_plain (tenant_id, seq, recorded, entry, leaf_hash) "
          "SELECT 'plain', $1 + t.i - 1, now(), decode(substr(t.e, 2), 'hex'), decode(substr(t.h, 2), 'hex') "
          "FROM unnest(string_to_array($2, ','), string_to_array($3, ',')) WITH ORDINALITY AS t(e, h, i)",
          first, entries, hashes);
      tx.commit();
    }
    const double plain_s = Seconds(t0);
    const std::string tenant = "bench-" + std::to_string(seed) + "-" + std::to_string(std::time(nullptr));
    t0 = Clock::now();
    for (uint64_t done = 0; done < pg_leaves;) {
      std::vector<std::string> entries;
      for (; done < pg_leaves && entries.size() < batch; ++done) entries.emplace_back(leaf(done));
      auto appended = (*store)->Append(tenant, entries);
      if (!appended.ok()) {
        std::fprintf(stderr, "append: %s\n", std::string(appended.status().message()).c_str());
        return 1;
      }
    }
    const double ledger_s = Seconds(t0);
    t0 = Clock::now();
    auto report = (*store)->Verify(tenant);
    const double verify_s = Seconds(t0);
    if (!report.ok() || !report->ok) {
      std::fprintf(stderr, "the appended ledger does not verify\n");
      return 1;
    }
    std::printf("\nledger append, PostgreSQL: %llu leaves of %zu bytes in batches of %zu, one transaction and one "
                "signed tree head per batch\n",
                static_cast<unsigned long long>(pg_leaves), leaf_bytes, batch);
    std::printf("| measurement | leaves/s | ratio |\n|---|---:|---:|\n");
    std::printf("| the same rows into a plain table (baseline) | %.0f | 1.00 |\n", pg_leaves / plain_s);
    std::printf("| LedgerStore::Append | %.0f | %.2f |\n", pg_leaves / ledger_s, plain_s / ledger_s);
    std::printf("| LedgerStore::Verify (read, rehash, check %llu heads) | %.0f | |\n",
                static_cast<unsigned long long>(report->heads), pg_leaves / verify_s);
    pqxx::work tx(conn);
    tx.exec("DROP TABLE ledger_bench_plain");
    tx.commit();
  }

  // The sink keeps the hashes from being optimized away.
  std::printf("\n(checksum %02x)\n", sink[0]);
  return 0;
}
