#include "medgrid/ledger/ledger_store.h"

#include <algorithm>
#include <chrono>
#include <pqxx/pqxx>
#include <set>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::ledger {

const std::vector<store::Migration>& LedgerMigrations() {
  static const std::vector<store::Migration> kMigrations = {
      {1, "ledger entries, signed tree heads and signing keys", R"sql(
-- One row per tenant: the size and root of its latest head. Appends lock it,
-- so that one process at a time appends to a tenant's tree.
CREATE TABLE ledger_state (
  tenant_id text PRIMARY KEY,
  tree_size bigint NOT NULL,
  root bytea NOT NULL
);
-- The leaves: seq counts from 0 per tenant; leaf_hash = SHA-256(0x00 || entry).
CREATE TABLE ledger_entries (
  tenant_id text NOT NULL,
  seq bigint NOT NULL,
  recorded timestamptz NOT NULL,
  entry bytea NOT NULL,
  leaf_hash bytea NOT NULL,
  PRIMARY KEY (tenant_id, seq)
);
-- A signed tree head per appended batch (medgrid/ledger/signer.h).
CREATE TABLE ledger_heads (
  tenant_id text NOT NULL,
  tree_size bigint NOT NULL,
  root bytea NOT NULL,
  signed_at_us bigint NOT NULL,
  key_id text NOT NULL,
  signature bytea NOT NULL,
  PRIMARY KEY (tenant_id, tree_size)
);
-- The public keys that signed heads, by key id. Verification can be given
-- the trusted keys instead: whoever can write here can also re-sign.
CREATE TABLE ledger_keys (
  key_id text PRIMARY KEY,
  public_key bytea NOT NULL,
  added timestamptz NOT NULL DEFAULT now()
);
-- Append-only. A database administrator can drop these triggers; the tree
-- and the signed heads show what was changed after that.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'the audit ledger is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'MG002';
END
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_heads_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_heads
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
)sql"},
      {2, "entries carry the id of the event they record", R"sql(
-- An event sent twice (a consumer that crashed after appending, before it
-- marked the event handled) is appended once: appends skip ids present.
ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only;
ALTER TABLE ledger_entries ADD COLUMN event_id text;
ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only;
CREATE UNIQUE INDEX ledger_entries_event ON ledger_entries (tenant_id, event_id) WHERE event_id IS NOT NULL;
)sql"},
      {3, "the search columns of audit events", R"sql(
-- What AuditEvent search reads (audit::AuditIndex): one row per event of
-- the ledger, filled by the audit pipeline after each append (again when a
-- batch is sent again: the key makes that a no-op). The event itself is
-- read from ledger_entries by its id, so a search answers what the
-- tamper-evident ledger holds.
CREATE TABLE audit_event_index (
  tenant_id text NOT NULL,
  event_id text NOT NULL,
  recorded_us bigint NOT NULL,
  action text NOT NULL,
  outcome text NOT NULL,
  subtype text NOT NULL,
  address text NOT NULL,
  patients text[] NOT NULL,
  PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX audit_event_index_time ON audit_event_index (tenant_id, recorded_us, event_id);
CREATE INDEX audit_event_index_patients ON audit_event_index USING gin (patients);
)sql"},
      {4, "retention windows and archives", R"sql(
-- A tenant's hot window; 90 days for a tenant without a row.
CREATE TABLE ledger_retention (
  tenant_id text PRIMARY KEY,
  hot_days int NOT NULL CHECK (hot_days > 0)
);
-- One row per archive file (medgrid/ledger/archive.h): entries first_seq to
-- end_seq - 1, proved against the head of size head_size. A tenant's
-- archives are successive prefixes of its tree.
CREATE TABLE ledger_archives (
  tenant_id text NOT NULL,
  first_seq bigint NOT NULL,
  end_seq bigint NOT NULL,
  file_name text NOT NULL,
  file_sha256 bytea NOT NULL,
  head_size bigint NOT NULL,
  created timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, first_seq),
  CHECK (first_seq < end_seq AND end_seq <= head_size)
);
CREATE TRIGGER ledger_archives_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_archives
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
-- An archived entry keeps its row, with its bytes emptied.
ALTER TABLE ledger_entries ADD COLUMN archived boolean NOT NULL DEFAULT false;
-- The one change allowed to an entry: archiving it. Statements that name
-- any other column, DELETE and TRUNCATE are still rejected whole; an UPDATE
-- of entry and archived is checked row by row.
DROP TRIGGER ledger_entries_append_only ON ledger_entries;
CREATE TRIGGER ledger_entries_append_only
  BEFORE UPDATE OF tenant_id, seq, recorded, leaf_hash, event_id OR DELETE OR TRUNCATE ON ledger_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE FUNCTION ledger_entry_archived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.archived AND NOT OLD.archived AND length(NEW.entry) = 0
     AND (NEW.tenant_id, NEW.seq, NEW.recorded, NEW.leaf_hash) = (OLD.tenant_id, OLD.seq, OLD.recorded, OLD.leaf_hash)
     AND NEW.event_id IS NOT DISTINCT FROM OLD.event_id
     AND EXISTS (SELECT 1 FROM ledger_archives a
                 WHERE a.tenant_id = OLD.tenant_id AND a.first_seq <= OLD.seq AND OLD.seq < a.end_seq) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'the audit ledger is append-only: only archiving may empty entry % of tenant %', OLD.seq,
    OLD.tenant_id USING ERRCODE = 'MG002';
END
$$;
CREATE TRIGGER ledger_entries_archive_only BEFORE UPDATE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_entry_archived();
)sql"},
      {5, "the agent of audit events, for search", R"sql(
-- Who asked (AuditEvent.agent.who): a reference such as Practitioner/123
-- once requests carry verified identities, empty for anonymous requests.
ALTER TABLE audit_event_index ADD COLUMN agent text NOT NULL DEFAULT '';
CREATE INDEX audit_event_index_agent ON audit_event_index (tenant_id, agent, recorded_us) WHERE agent <> '';
)sql"},
  };
  return kMigrations;
}

namespace {

std::string Bytes(const Hash& h) { return std::string(h.begin(), h.end()); }

Hash HashOf(const pqxx::field& f) {
  const pqxx::binarystring b(f);
  Hash h{};
  if (b.size() == h.size()) std::copy(b.begin(), b.end(), h.begin());
  return h;
}

// SQL for the timestamptz of Unix microseconds in `param` (a bind
// parameter), exact to the microsecond, and back.
std::string TimeOfMicros(std::string_view param) {
  return core::StrCat("('epoch'::timestamptz + ", param, "::bigint * interval '1 microsecond')");
}
constexpr const char* kRecordedMicros = "(extract(epoch FROM recorded) * 1000000)::bigint";

constexpr const char* kHotDays = "SELECT hot_days FROM ledger_retention WHERE tenant_id = $1";
constexpr const char* kLatestHead =
    "SELECT tree_size, root, signed_at_us, key_id, signature FROM ledger_heads WHERE tenant_id = $1 "
    "ORDER BY tree_size DESC LIMIT 1";

// Tenants name archive files.
bool FitsAFileName(const std::string& tenant) {
  return !tenant.empty() && std::all_of(tenant.begin(), tenant.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

std::string ArchiveName(const std::string& tenant, uint64_t first, uint64_t end) {
  auto padded = [](uint64_t n) {
    std::string digits = std::to_string(n);
    return std::string(digits.size() < 12 ? 12 - digits.size() : 0, '0') + digits;
  };
  return core::StrCat("ledger-", tenant, "-", padded(first), "-", padded(end), ".ndjson.gz");
}

// The archive files given to Verify, read forward as the entries are asked
// for, in increasing seq.
class ArchiveCopies {
 public:
  explicit ArchiveCopies(std::vector<std::unique_ptr<ArchiveReader>> readers) : readers_(std::move(readers)) {
    std::stable_sort(readers_.begin(), readers_.end(),
                     [](const auto& a, const auto& b) { return a->header().first < b->header().first; });
  }

  struct Copy {
    const ArchiveReader* from;
    ArchiveEntry entry;
  };
  // The copy of entry `seq`, or nothing when no file covers it. A file that
  // cannot be read on is dropped, with an error naming it.
  absl::StatusOr<std::optional<Copy>> At(uint64_t seq) {
    for (; next_ < readers_.size(); ++next_) {
      ArchiveReader& r = *readers_[next_];
      if (seq < r.next_seq()) return std::optional<Copy>();
      if (seq >= r.header().end) continue;
      // Entries missing from the database are skipped over here (Verify reports them).
      for (;;) {
        absl::StatusOr<std::optional<ArchiveEntry>> e = r.Next();
        if (!e.ok()) {
          ++next_;
          return absl::DataLossError(core::StrCat(r.path(), ": ", std::string(e.status().message())));
        }
        if ((*e)->seq == seq) return std::optional<Copy>(Copy{&r, std::move(**e)});
      }
    }
    return std::optional<Copy>();
  }

 private:
  std::vector<std::unique_ptr<ArchiveReader>> readers_;
  std::size_t next_ = 0;  // the first reader not past the last seq asked for
};

const core::Clock& SystemClock() {
  static const core::RealClock kClock;
  return kClock;
}

TreeHead RowToHead(const std::string& tenant, const pqxx::row& row) {
  TreeHead h;
  h.tenant = tenant;
  h.size = row["tree_size"].as<uint64_t>();
  h.root = HashOf(row["root"]);
  h.timestamp_us = row["signed_at_us"].as<int64_t>();
  h.key_id = row["key_id"].as<std::string>();
  h.signature = pqxx::binarystring(row["signature"]).str();
  return h;
}

}  // namespace

struct LedgerStore::Impl {
  std::string dsn;
  std::shared_ptr<Signer> signer;
  const core::Clock* clock = nullptr;
  std::mutex conn_mu;
  std::unique_ptr<pqxx::connection> conn;  // guarded by conn_mu
  std::mutex trees_mu;
  std::map<std::string, std::shared_ptr<MerkleTree>> trees;  // guarded by trees_mu

  pqxx::connection& Conn() {
    if (!conn || !conn->is_open()) conn = std::make_unique<pqxx::connection>(dsn);
    return *conn;
  }

  // The tenant's tree brought up to `size` leaves from the database (inside
  // `tx`); rebuilt when it is ahead (an append that did not commit).
  std::shared_ptr<MerkleTree> TreeAt(pqxx::transaction_base& tx, const std::string& tenant, uint64_t size) {
    std::shared_ptr<MerkleTree>& tree = trees[tenant];
    if (!tree || tree->size() > size) tree = std::make_shared<MerkleTree>();
    if (tree->size() < size) {
      pqxx::result r = tx.exec_params(
          "SELECT leaf_hash FROM ledger_entries WHERE tenant_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq", tenant,
          tree->size(), size);
      for (const pqxx::row& row : r) tree->AppendLeafHash(HashOf(row[0]));
    }
    return tree;
  }

  // `fn(tree)` with the tenant's tree at its current size, under the locks.
  template <typename Fn>
  absl::StatusOr<std::vector<Hash>> WithCurrentTree(const std::string& tenant, Fn&& fn) {
    std::lock_guard conn_lock(conn_mu);
    std::lock_guard trees_lock(trees_mu);
    try {
      pqxx::read_transaction tx(Conn());
      return fn(*TreeAt(tx, tenant, StateSize(tx, tenant, /*lock=*/false)));
    } catch (const std::exception& e) {
      return absl::UnavailableError(core::StrCat("Reading the audit ledger failed: ", e.what()));
    }
  }

  uint64_t StateSize(pqxx::transaction_base& tx, const std::string& tenant, bool lock) {
    pqxx::result r = tx.exec_params(
        core::StrCat("SELECT tree_size FROM ledger_state WHERE tenant_id = $1", lock ? " FOR UPDATE" : ""), tenant);
    return r.empty() ? 0 : r[0][0].as<uint64_t>();
  }
};

LedgerStore::LedgerStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LedgerStore::~LedgerStore() = default;

absl::StatusOr<std::unique_ptr<LedgerStore>> LedgerStore::Open(const std::string& dsn,
                                                              std::shared_ptr<Signer> signer) {
  return Open(dsn, std::move(signer), SystemClock());
}

absl::StatusOr<std::unique_ptr<LedgerStore>> LedgerStore::Open(const std::string& dsn, std::shared_ptr<Signer> signer,
                                                               const core::Clock& clock) {
  RETURN_IF_ERROR(store::MigrateDatabase(dsn, LedgerMigrations(), "the audit ledger database"));
  auto impl = std::make_unique<Impl>();
  impl->dsn = dsn;
  impl->signer = std::move(signer);
  impl->clock = &clock;
  if (impl->signer == nullptr) return std::unique_ptr<LedgerStore>(new LedgerStore(std::move(impl)));
  try {
    pqxx::work tx(impl->Conn());
    tx.exec_params("INSERT INTO ledger_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING",
                   impl->signer->key_id(), pqxx::binarystring(impl->signer->public_key()));
    tx.commit();
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("The audit ledger database: ", e.what()));
  }
  return std::unique_ptr<LedgerStore>(new LedgerStore(std::move(impl)));
}

absl::StatusOr<LedgerStore::Appended> LedgerStore::Append(const std::string& tenant,
                                                          const std::vector<std::string>& all_entries,
                                                          const std::vector<std::string>* event_ids) {
  if (all_entries.empty()) return absl::InvalidArgumentError("An append needs at least one entry");
  if (event_ids != nullptr && event_ids->size() != all_entries.size()) {
    return absl::InvalidArgumentError("An append needs one event id per entry");
  }
  if (impl_->signer == nullptr) return absl::FailedPreconditionError("This ledger store has no signing key");
  std::lock_guard conn_lock(impl_->conn_mu);
  std::lock_guard trees_lock(impl_->trees_mu);
  try {
    pqxx::work tx(impl_->Conn());
    tx.exec_params("INSERT INTO ledger_state (tenant_id, tree_size, root) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
                   tenant, pqxx::binarystring(Bytes(EmptyRoot())));
    const uint64_t size = impl_->StateSize(tx, tenant, /*lock=*/true);
    // Under the lock: the entries whose event ids are not in the ledger yet.
    std::vector<std::string> kept_entries;
    std::string hex_ids;
    const std::vector<std::string>* entries = &all_entries;
    if (event_ids != nullptr) {
      std::string ids;
      for (const std::string& id : *event_ids) core::StrAppend(ids, ids.empty() ? "" : ",", id);
      std::set<std::string> present;
      for (const pqxx::row& row : tx.exec_params(
               "SELECT event_id FROM ledger_entries WHERE tenant_id = $1 AND event_id = ANY(string_to_array($2, ','))",
               tenant, ids)) {
        present.insert(row[0].as<std::string>());
      }
      for (std::size_t i = 0; i < all_entries.size(); ++i) {
        if (present.contains((*event_ids)[i]) || !present.insert((*event_ids)[i]).second) continue;
        kept_entries.push_back(all_entries[i]);
        core::StrAppend(hex_ids, hex_ids.empty() ? "x" : ",x", (*event_ids)[i]);
      }
      entries = &kept_entries;
    }
    std::shared_ptr<MerkleTree> tree = impl_->TreeAt(tx, tenant, size);
    if (entries->empty()) {
      tx.commit();
      Appended out;
      out.first_index = size;
      pqxx::read_transaction read(impl_->Conn());
      pqxx::result r = read.exec_params(kLatestHead, tenant);
      if (!r.empty()) out.head = RowToHead(tenant, r[0]);
      return out;
    }
    // The batch as two lists of "x"-prefixed hex (so that an empty entry is
    // an element), unnested in order.
    std::string hex_entries;
    std::string hex_hashes;
    for (const std::string& e : *entries) {
      const Hash h = LeafHash(e);
      tree->AppendLeafHash(h);
      core::StrAppend(hex_entries, hex_entries.empty() ? "x" : ",x", ToHex(e));
      core::StrAppend(hex_hashes, hex_hashes.empty() ? "x" : ",x", ToHex(h));
    }
    Appended out;
    out.first_index = size;
    TreeHead& head = out.head;
    head.tenant = tenant;
    head.size = tree->size();
    head.root = tree->Root();
    head.timestamp_us = core::ToUnixMicros(impl_->clock->Now());
    absl::Status signed_ok = impl_->signer->Sign(head);
    if (!signed_ok.ok()) {
      impl_->trees.erase(tenant);
      return signed_ok;
    }
    // Event ids ride in the same unnest, "x"-prefixed like the rest (NULL
    // without them). The entries are recorded at the head's time.
    tx.exec_params(core::StrCat("INSERT INTO ledger_entries (tenant_id, seq, recorded, entry, leaf_hash, event_id) "
                                "SELECT $1, $2 + t.i - 1, ",
                                TimeOfMicros("$6"),
                                ", decode(substr(t.e, 2), 'hex'), "
                                "decode(substr(t.h, 2), 'hex'), substr(t.v, 2) FROM unnest(string_to_array($3, ','), "
                                "string_to_array($4, ','), string_to_array($5, ',')) WITH ORDINALITY AS t(e, h, v, i)"),
                   tenant, size, hex_entries, hex_hashes, hex_ids, head.timestamp_us);
    tx.exec_params(
        "INSERT INTO ledger_heads (tenant_id, tree_size, root, signed_at_us, key_id, signature) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        tenant, head.size, pqxx::binarystring(Bytes(head.root)), head.timestamp_us, head.key_id,
        pqxx::binarystring(head.signature));
    tx.exec_params("UPDATE ledger_state SET tree_size = $2, root = $3 WHERE tenant_id = $1", tenant, head.size,
                   pqxx::binarystring(Bytes(head.root)));
    tx.commit();
    return out;
  } catch (const std::exception& e) {
    impl_->trees.erase(tenant);  // it may hold leaves that were not committed
    return absl::UnavailableError(core::StrCat("Appending to the audit ledger failed: ", e.what()));
  }
}

absl::StatusOr<TreeHead> LedgerStore::Head(const std::string& tenant) {
  std::lock_guard conn_lock(impl_->conn_mu);
  try {
    pqxx::read_transaction tx(impl_->Conn());
    pqxx::result r = tx.exec_params(kLatestHead, tenant);
    if (r.empty()) {
      TreeHead empty;
      empty.tenant = tenant;
      empty.root = EmptyRoot();
      return empty;
    }
    return RowToHead(tenant, r[0]);
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("Reading the audit ledger failed: ", e.what()));
  }
}

absl::StatusOr<std::vector<Hash>> LedgerStore::InclusionProof(const std::string& tenant, uint64_t index,
                                                              uint64_t size) {
  return impl_->WithCurrentTree(tenant, [&](const MerkleTree& tree) -> absl::StatusOr<std::vector<Hash>> {
    if (index >= size || size > tree.size()) {
      return absl::InvalidArgumentError(
          core::StrCat("No entry ", index, " in a tree of size ", size, " (the ledger holds ", tree.size(), ")"));
    }
    return tree.InclusionProof(index, size);
  });
}

absl::StatusOr<std::vector<Hash>> LedgerStore::ConsistencyProof(const std::string& tenant, uint64_t old_size,
                                                                uint64_t new_size) {
  return impl_->WithCurrentTree(tenant, [&](const MerkleTree& tree) -> absl::StatusOr<std::vector<Hash>> {
    if (old_size > new_size || new_size > tree.size()) {
      return absl::InvalidArgumentError(core::StrCat("No consistency proof from size ", old_size, " to ", new_size,
                                                     " (the ledger holds ", tree.size(), ")"));
    }
    return tree.ConsistencyProof(old_size, new_size);
  });
}

absl::StatusOr<VerifyReport> LedgerStore::Verify(const std::string& tenant,
                                                 const std::map<std::string, std::string>* trusted_keys,
                                                 std::vector<std::unique_ptr<ArchiveReader>> archives) {
  VerifyReport report;
  auto problem = [&](std::string text) {
    report.ok = false;
    report.problems.push_back(std::move(text));
  };
  // Entries known altered or missing one by one; a head that no longer
  // matches names a range only when none of these is in it.
  std::set<uint64_t> exact;
  auto altered = [&](uint64_t seq) {
    if (!report.first_altered || seq < *report.first_altered) report.first_altered = seq;
  };
  std::lock_guard conn_lock(impl_->conn_mu);
  try {
    // One snapshot for entries, heads, archives and state.
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(impl_->Conn());
    std::map<std::string, std::string> db_keys;
    for (const pqxx::row& row : tx.exec("SELECT key_id, public_key FROM ledger_keys")) {
      db_keys[row[0].as<std::string>()] = pqxx::binarystring(row[1]).str();
    }
    const std::map<std::string, std::string>& keys = trusted_keys != nullptr ? *trusted_keys : db_keys;
    for (const std::unique_ptr<ArchiveReader>& a : archives) {
      if (a->header().tenant != tenant) {
        problem(core::StrCat(a->path(), " holds entries of tenant ", a->header().tenant, ", not ", tenant));
      } else if (std::optional<std::string> bad = CheckArchiveHead(a->header(), &keys)) {
        problem(core::StrCat(a->path(), ": ", *bad));
      }
    }
    std::erase_if(archives, [&](const auto& a) { return a->header().tenant != tenant; });
    ArchiveCopies copies(std::move(archives));
    std::map<uint64_t, uint64_t> archived_ranges;  // first seq -> end
    for (const pqxx::row& row :
         tx.exec_params("SELECT first_seq, end_seq FROM ledger_archives WHERE tenant_id = $1", tenant)) {
      archived_ranges[row[0].as<uint64_t>()] = row[1].as<uint64_t>();
    }
    auto recorded_as_archived = [&](uint64_t seq) {
      auto after = archived_ranges.upper_bound(seq);
      return after != archived_ranges.begin() && seq < std::prev(after)->second;
    };
    // An entry found altered or missing, named exactly.
    auto bad_entry = [&](uint64_t seq, std::string text) {
      problem(std::move(text));
      altered(seq);
      exact.insert(seq);
    };
    // Two checks: each entry's bytes (or its archived copy) against its
    // recorded leaf hash (which names an entry whose bytes were rewritten),
    // and the tree of the recorded leaf hashes against the signed heads
    // (which shows an entry rewritten together with its leaf hash, or
    // removed).
    MerkleTree tree;
    uint64_t expected = 0;
    {
      // The entries, 10,000 at a time.
      constexpr int kChunk = 10000;
      for (;;) {
        pqxx::result r = tx.exec_params(
            "SELECT seq, entry, leaf_hash, archived FROM ledger_entries WHERE tenant_id = $1 AND seq >= $2 "
            "ORDER BY seq LIMIT $3",
            tenant, expected, kChunk);
        for (const pqxx::row& row : r) {
          const uint64_t seq = row[0].as<uint64_t>();
          if (seq != expected) {
            bad_entry(expected, core::StrCat("entries ", expected, " to ", seq - 1, " are missing"));
            // Later leaves move down: the tree no longer matches the heads past the gap.
          }
          const pqxx::binarystring entry(row[1]);
          const Hash recorded = HashOf(row[2]);
          if (!row[3].as<bool>()) {
            if (LeafHash(std::string_view(reinterpret_cast<const char*>(entry.data()), entry.size())) != recorded) {
              bad_entry(
                  seq, core::StrCat("entry ", seq, " was altered: its bytes no longer hash to its recorded leaf hash"));
            }
          } else {
            ++report.archived;
            if (!recorded_as_archived(seq)) {
              bad_entry(seq, core::StrCat("entry ", seq, " is marked archived, but no archive is recorded for it"));
            }
            absl::StatusOr<std::optional<ArchiveCopies::Copy>> copy = copies.At(seq);
            if (!copy.ok()) {
              bad_entry(seq, std::string(copy.status().message()));
            } else if (!*copy) {
              ++report.archived_unchecked;
            } else if (LeafHash((*copy)->entry.entry) != recorded) {
              bad_entry(seq, core::StrCat("entry ", seq, " in ", (*copy)->from->path(),
                                          " does not hash to the leaf hash the ledger recorded"));
            } else if (std::optional<std::string> bad = CheckArchiveEntry((*copy)->from->header(), (*copy)->entry)) {
              bad_entry(seq, core::StrCat((*copy)->from->path(), ": ", *bad));
            }
          }
          tree.AppendLeafHash(recorded);
          expected = seq + 1;
        }
        if (r.size() < static_cast<std::size_t>(kChunk)) break;
      }
    }
    report.entries = tree.size();
    std::optional<TreeHead> previous;
    uint64_t later_mismatches = 0;  // heads past the first that does not match
    bool mismatched = false;
    bool inconsistent = false;
    for (const pqxx::row& row :
         tx.exec_params("SELECT tree_size, root, signed_at_us, key_id, signature FROM ledger_heads "
                        "WHERE tenant_id = $1 ORDER BY tree_size",
                        tenant)) {
      const TreeHead head = RowToHead(tenant, row);
      ++report.heads;
      auto key = keys.find(head.key_id);
      if (key == keys.end()) {
        problem(core::StrCat("head at size ", head.size, " is signed by key ", head.key_id, ", which is not trusted"));
      } else if (!VerifySignature(head, key->second)) {
        problem(core::StrCat("head at size ", head.size, " has a signature that does not verify"));
      }
      if (head.size > tree.size()) {
        problem(core::StrCat("head at size ", head.size, " is past the ", tree.size(), " entries: entries were removed"));
        altered(tree.size());
      } else if (tree.Root(head.size) != head.root) {
        if (mismatched) {
          ++later_mismatches;
        } else {
          // The entries below this head no longer give its root; those below
          // the previous head still gave that one.
          mismatched = true;
          const uint64_t from = previous ? previous->size : 0;
          problem(core::StrCat("head at size ", head.size, " does not match the entries: one of entries ", from,
                               " to ", head.size - 1, " was altered"));
          auto known = exact.lower_bound(from);
          if (known == exact.end() || *known >= head.size) altered(from);
        }
      }
      // What an auditor holding only the heads checks: each head extends the
      // one before (RFC 6962 consistency, with the proof from the entries).
      // Implied when both roots match the entries; reported once.
      if (previous && head.size <= tree.size() && !inconsistent) {
        const std::vector<Hash> proof = tree.ConsistencyProof(previous->size, head.size);
        if (!VerifyConsistency(previous->size, head.size, previous->root, head.root, proof)) {
          inconsistent = true;
          problem(core::StrCat("heads at sizes ", previous->size, " and ", head.size, " are not consistent"));
        }
      }
      previous = head;
    }
    if (later_mismatches > 0) {
      problem(core::StrCat(later_mismatches, " later heads do not match either: they cover the same entries"));
    }
    pqxx::result state = tx.exec_params("SELECT tree_size, root FROM ledger_state WHERE tenant_id = $1", tenant);
    const uint64_t state_size = state.empty() ? 0 : state[0][0].as<uint64_t>();
    const uint64_t last = previous ? previous->size : 0;
    if (state_size != last || (previous && HashOf(state[0][1]) != previous->root)) {
      problem(core::StrCat("the ledger's state (size ", state_size, ") does not name its last head (size ", last, ")"));
    }
    if (last < tree.size()) {
      problem(core::StrCat("entries ", last, " to ", tree.size() - 1, " are under no signed head"));
      altered(last);
    }
    return report;
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("Reading the audit ledger failed: ", e.what()));
  }
}

absl::StatusOr<Retention> LedgerStore::GetRetention(const std::string& tenant) {
  std::lock_guard conn_lock(impl_->conn_mu);
  try {
    pqxx::read_transaction tx(impl_->Conn());
    pqxx::result r = tx.exec_params(kHotDays, tenant);
    if (r.empty()) return Retention{};
    return Retention{r[0][0].as<int>(), false};
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("Reading the audit ledger failed: ", e.what()));
  }
}

absl::Status LedgerStore::SetRetention(const std::string& tenant, int hot_days) {
  if (hot_days < 1) return absl::InvalidArgumentError(core::StrCat("A hot window of ", hot_days, " days is too short"));
  std::lock_guard conn_lock(impl_->conn_mu);
  try {
    pqxx::work tx(impl_->Conn());
    tx.exec_params(
        "INSERT INTO ledger_retention (tenant_id, hot_days) VALUES ($1, $2) "
        "ON CONFLICT (tenant_id) DO UPDATE SET hot_days = EXCLUDED.hot_days",
        tenant, hot_days);
    tx.commit();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("Writing the audit ledger failed: ", e.what()));
  }
}

absl::StatusOr<Archived> LedgerStore::Archive(const std::string& tenant, std::optional<core::TimePoint> before,
                                              const ArchiveSinkFactory& sinks) {
  if (!FitsAFileName(tenant)) {
    return absl::InvalidArgumentError(core::StrCat("Tenant '", tenant, "' cannot name an archive file"));
  }
  try {
    // A connection of its own: appends through this store go on while the file is written.
    pqxx::connection conn(impl_->dsn);
    pqxx::work tx(conn);
    tx.exec_params("SELECT pg_advisory_xact_lock(hashtextextended('medgrid-ledger-archive/' || $1, 0))", tenant);
    if (!before) {
      pqxx::result r = tx.exec_params(kHotDays, tenant);
      const int hot_days = r.empty() ? kDefaultHotDays : r[0][0].as<int>();
      before = impl_->clock->Now() - std::chrono::hours(24) * hot_days;
    }
    Archived out;
    pqxx::result head_row = tx.exec_params(kLatestHead, tenant);
    if (head_row.empty()) return out;
    ArchiveHeader header;
    header.tenant = tenant;
    header.head = RowToHead(tenant, head_row[0]);
    out.head_size = header.head.size;
    header.first =
        tx.exec_params("SELECT coalesce(max(end_seq), 0) FROM ledger_archives WHERE tenant_id = $1", tenant)[0][0]
            .as<uint64_t>();
    // Entries up to the head's size are under it; later ones are not archived yet.
    header.end = tx.exec_params(core::StrCat("SELECT coalesce(min(seq), $3) FROM ledger_entries WHERE tenant_id = $1 "
                                             "AND seq >= $2 AND seq < $3 AND recorded >= ",
                                             TimeOfMicros("$4")),
                                tenant, header.first, header.head.size, core::ToUnixMicros(*before))[0][0]
                     .as<uint64_t>();
    out.first = out.end = header.first;
    if (header.end <= header.first) return out;
    pqxx::result key = tx.exec_params("SELECT public_key FROM ledger_keys WHERE key_id = $1", header.head.key_id);
    if (key.empty()) {
      return absl::FailedPreconditionError(
          core::StrCat("The key ", header.head.key_id, " of the head is not recorded"));
    }
    header.public_key = pqxx::binarystring(key[0][0]).str();

    // The tenant's tree, shared with Append: read under trees_mu, a chunk at a time.
    std::shared_ptr<MerkleTree> tree;
    {
      std::lock_guard trees_lock(impl_->trees_mu);
      tree = impl_->trees[tenant];
      if (!tree || tree->size() < header.head.size) tree = impl_->TreeAt(tx, tenant, header.head.size);
      if (tree->Root(header.head.size) != header.head.root) {
        return absl::FailedPreconditionError(core::StrCat("The leaf hashes of tenant ", tenant,
                                                          " do not give the root of its head at size ",
                                                          header.head.size, ": run medgridctl audit verify"));
      }
    }
    out.file_name = ArchiveName(tenant, header.first, header.end);
    ASSIGN_OR_RETURN(std::unique_ptr<ArchiveSink> sink, sinks(out.file_name));
    ASSIGN_OR_RETURN(std::unique_ptr<ArchiveWriter> writer, ArchiveWriter::Create(std::move(sink), header));
    constexpr int kChunk = 10000;
    for (uint64_t seq = header.first; seq < header.end;) {
      pqxx::result r =
          tx.exec_params(core::StrCat("SELECT seq, ", kRecordedMicros,
                                      ", event_id, entry, leaf_hash FROM ledger_entries "
                                      "WHERE tenant_id = $1 AND seq >= $2 AND seq < $3 ORDER BY seq LIMIT $4"),
                         tenant, seq, header.end, kChunk);
      std::vector<ArchiveEntry> chunk;
      for (const pqxx::row& row : r) {
        ArchiveEntry& e = chunk.emplace_back();
        e.seq = row[0].as<uint64_t>();
        e.recorded_us = row[1].as<int64_t>();
        if (!row[2].is_null()) e.event_id = row[2].as<std::string>();
        e.entry = pqxx::binarystring(row[3]).str();
        e.leaf_hash = HashOf(row[4]);
        // An entry altered in place would go into the file and out of the database.
        if (e.seq != seq++ || LeafHash(e.entry) != e.leaf_hash) {
          return absl::FailedPreconditionError(core::StrCat("Entry ", seq - 1, " of tenant ", tenant,
                                                            " is missing or altered: run medgridctl audit verify"));
        }
      }
      if (chunk.empty()) return absl::FailedPreconditionError(core::StrCat("Entry ", seq, " is missing"));
      {
        std::lock_guard trees_lock(impl_->trees_mu);
        for (ArchiveEntry& e : chunk) e.proof = tree->InclusionProof(e.seq, header.head.size);
      }
      for (const ArchiveEntry& e : chunk) RETURN_IF_ERROR(writer->Add(e));
    }
    ASSIGN_OR_RETURN(out.file_sha256, writer->Finish());
    out.end = header.end;
    tx.exec_params(
        "INSERT INTO ledger_archives (tenant_id, first_seq, end_seq, file_name, file_sha256, head_size) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        tenant, out.first, out.end, out.file_name, pqxx::binarystring(Bytes(out.file_sha256)), out.head_size);
    tx.exec_params(
        "DELETE FROM audit_event_index i USING ledger_entries e WHERE i.tenant_id = $1 AND e.tenant_id = $1 "
        "AND e.seq >= $2 AND e.seq < $3 AND i.event_id = e.event_id",
        tenant, out.first, out.end);
    tx.exec_params(
        "UPDATE ledger_entries SET entry = ''::bytea, archived = true WHERE tenant_id = $1 AND seq >= $2 AND seq < $3",
        tenant, out.first, out.end);
    tx.commit();
    return out;
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("Archiving the audit ledger failed: ", e.what()));
  }
}

}  // namespace medgrid::ledger
