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
// Retention: each tenant has a hot window (SetRetention, 90 days by
// default). Archive moves the entries recorded before it, a prefix of the
// tree, into a compressed archive file with their proofs (archive.h) and
// then empties their bytes in the database; the one UPDATE the triggers let
// through is that, for rows inside a range recorded in ledger_archives. An
// archived entry keeps its row, seq, leaf hash and event id, so the tree,
// the signed heads, proofs and skipping events sent again all work as
// before, and Verify checks archived entries against their files when given.
// Archived events leave audit_event_index: AuditEvent search answers the
// hot window only.
//
//   auto store = LedgerStore::Open(dsn, signer);
//   (*store)->Append("t1", {event_json}, &event_ids);
//   (*store)->Archive("t1", std::nullopt, DirectorySinks("/var/lib/medgrid/archive"));
//
// Elsewhere: the pipeline that feeds Append and AuditEvent read and search
// (libs/audit). Not yet: archives in object storage (an ArchiveSink for it).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"
#include "medgrid/ledger/archive.h"
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
  uint64_t archived = 0;              // entries whose bytes are in archive files
  uint64_t archived_unchecked = 0;    // of those, checked by their stored leaf hash only (no file given)
};

inline constexpr int kDefaultHotDays = 90;

struct Retention {
  int hot_days = kDefaultHotDays;
  bool is_default = true;  // none was set for the tenant
};

// What Archive did: entries first to end - 1 went into `file_name`.
struct Archived {
  uint64_t first = 0;
  uint64_t end = 0;  // == first: nothing was old enough
  std::string file_name;
  Hash file_sha256{};
  uint64_t head_size = 0;  // of the head in the file
};

class LedgerStore {
 public:
  // Applies the ledger migrations on `dsn` and connects. `signer` signs the
  // tree heads and is recorded in ledger_keys; without one the store only
  // reads and archives (Append fails). `clock` (which must outlive the
  // store) stamps entries and heads and places the hot window; the system
  // clock without one.
  static absl::StatusOr<std::unique_ptr<LedgerStore>> Open(const std::string& dsn, std::shared_ptr<Signer> signer);
  static absl::StatusOr<std::unique_ptr<LedgerStore>> Open(const std::string& dsn, std::shared_ptr<Signer> signer,
                                                           const core::Clock& clock);
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
  // An archived entry is checked against its copy in `archives` when one
  // covers it (the copy must hash to the stored leaf hash and pass
  // CheckArchiveEntry; each file's head passes CheckArchiveHead), else by
  // its stored leaf hash alone (counted in archived_unchecked).
  absl::StatusOr<VerifyReport> Verify(const std::string& tenant,
                                      const std::map<std::string, std::string>* trusted_keys = nullptr,
                                      std::vector<std::unique_ptr<ArchiveReader>> archives = {});

  // The tenant's hot window, and setting it (`hot_days` >= 1; InvalidArgument
  // otherwise). Unavailable when the database is.
  absl::StatusOr<Retention> GetRetention(const std::string& tenant);
  absl::Status SetRetention(const std::string& tenant, int hot_days);

  // Archives the tenant's entries recorded before `before` (default: the
  // clock's now less the hot window): from the first entry not archived yet
  // up to, not including, the first entry recorded at or after it (so a
  // younger entry is never archived, even when clocks disagreed). Writes one
  // archive file through `sinks` (named ledger-<tenant>-<first>-<end>.ndjson.gz,
  // zero-padded), with the tenant's latest signed head, then records it in
  // ledger_archives, empties the entries' bytes and drops their
  // audit_event_index rows in one transaction: after a crash either nothing
  // is archived or the file and its record both are (a file written but not
  // recorded is left over and not used). Archives of one tenant run one at a
  // time (an advisory lock), beside appends, on a connection of their own.
  // Errors: InvalidArgument for a tenant that cannot name a file;
  // FailedPrecondition when an entry to archive does not hash to its leaf
  // hash or the tree does not give the head's root (run Verify); the sink's
  // errors; Unavailable for the database.
  absl::StatusOr<Archived> Archive(const std::string& tenant, std::optional<core::TimePoint> before,
                                   const ArchiveSinkFactory& sinks);

 private:
  struct Impl;
  explicit LedgerStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::ledger
