// The audit ledger in PostgreSQL: per tenant, an append-only list of entries
// (the leaves of an RFC 6962 Merkle tree) and the signed tree heads made as
// batches are appended. Its tables are in their own database (ledger
// migrations below), which the audit service owns.
//
// Append takes a batch, writes its entries and one signed tree head in one
// transaction, serialized per tenant across processes by a row lock on the
// tenant's ledger_state row. Each store keeps every tenant's tree in memory
// (64 bytes per leaf, with its complete subtrees), catching up from the
// database when another process has appended, so roots and proofs cost
// O(log n). Entries and heads are append-only: triggers reject UPDATE and
// DELETE, and Verify finds what a database administrator did past them.
//
// Not yet here: the audit-event pipeline that feeds Append (spool, Kafka),
// retention and archives, and AuditEvent search.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/ledger/merkle.h"
#include "medgrid/ledger/signer.h"
#include "medgrid/store/migrations.h"

namespace medgrid::ledger {

const std::vector<store::Migration>& LedgerMigrations();

// What Verify found. `ok` when every entry hashes to its leaf hash, the
// entries are numbered 0..n-1 without gaps, every head's root is the root of
// the entries at its size and its signature holds, successive heads are
// consistent, and the tenant's state names the last head.
struct VerifyReport {
  bool ok = true;
  uint64_t entries = 0;
  uint64_t heads = 0;
  // The first entry found altered or missing; when only a head's root shows
  // the change (an entry rewritten with its leaf hash), the first entry that
  // head covers beyond the previous one.
  std::optional<uint64_t> first_altered;
  std::vector<std::string> problems;  // in the order found, each naming what it is about
};

class LedgerStore {
 public:
  // Applies the ledger migrations on `dsn` and connects. `signer` signs the
  // tree heads and is recorded in ledger_keys; without one the store only
  // reads (Append fails).
  static absl::StatusOr<std::unique_ptr<LedgerStore>> Open(const std::string& dsn, std::shared_ptr<Signer> signer);
  ~LedgerStore();

  struct Appended {
    uint64_t first_index = 0;  // of the batch's first entry
    TreeHead head;             // the signed head after the batch
  };
  // Appends `entries` (each a leaf's bytes) for `tenant` and signs the new
  // tree head. An empty batch is an error. With `event_ids` (one per entry),
  // an entry whose id the tenant's ledger already holds is skipped, so a
  // batch sent again after a crash is appended once; when all are skipped
  // nothing is written and `head` is the current one.
  absl::StatusOr<Appended> Append(const std::string& tenant, const std::vector<std::string>& entries,
                                  const std::vector<std::string>* event_ids = nullptr);

  // The latest signed head (size 0 and the empty root before any append,
  // unsigned).
  absl::StatusOr<TreeHead> Head(const std::string& tenant);
  // Audit path of entry `index` in the tree of size `size`, and the
  // consistency proof from `old_size` to `new_size`; sizes up to the
  // tenant's current size.
  absl::StatusOr<std::vector<Hash>> InclusionProof(const std::string& tenant, uint64_t index, uint64_t size);
  absl::StatusOr<std::vector<Hash>> ConsistencyProof(const std::string& tenant, uint64_t old_size, uint64_t new_size);

  // Recomputes the tenant's tree from the stored entries and checks every
  // head. Heads are checked against `trusted_keys` (key id -> raw public
  // key) when given, else against the keys recorded in the database.
  absl::StatusOr<VerifyReport> Verify(const std::string& tenant,
                                      const std::map<std::string, std::string>* trusted_keys = nullptr);

 private:
  struct Impl;
  explicit LedgerStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::ledger
