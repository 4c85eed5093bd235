#include "medgrid/ledger/ledger_store.h"

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

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
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
  RETURN_IF_ERROR(store::MigrateDatabase(dsn, LedgerMigrations(), "the audit ledger database"));
  auto impl = std::make_unique<Impl>();
  impl->dsn = dsn;
  impl->signer = std::move(signer);
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
      pqxx::result r = read.exec_params(
          "SELECT tree_size, root, signed_at_us, key_id, signature FROM ledger_heads WHERE tenant_id = $1 "
          "ORDER BY tree_size DESC LIMIT 1",
          tenant);
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
    head.timestamp_us = NowMicros();
    absl::Status signed_ok = impl_->signer->Sign(head);
    if (!signed_ok.ok()) {
      impl_->trees.erase(tenant);
      return signed_ok;
    }
    // Event ids ride in the same unnest, "x"-prefixed like the rest (NULL without them).
    tx.exec_params(
        "INSERT INTO ledger_entries (tenant_id, seq, recorded, entry, leaf_hash, event_id) "
        "SELECT $1, $2 + t.i - 1, now(), decode(substr(t.e, 2), 'hex'), decode(substr(t.h, 2), 'hex'), "
        "substr(t.v, 2) FROM unnest(string_to_array($3, ','), string_to_array($4, ','), string_to_array($5, ',')) "
        "WITH ORDINALITY AS t(e, h, v, i)",
        tenant, size, hex_entries, hex_hashes, hex_ids);
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
    pqxx::result r = tx.exec_params(
        "SELECT tree_size, root, signed_at_us, key_id, signature FROM ledger_heads WHERE tenant_id = $1 "
        "ORDER BY tree_size DESC LIMIT 1",
        tenant);
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
                                                 const std::map<std::string, std::string>* trusted_keys) {
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
    // One snapshot for entries, heads and state.
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(impl_->Conn());
    // Two checks: each entry's bytes against its recorded leaf hash (which
    // names an entry whose bytes were rewritten), and the tree of the
    // recorded leaf hashes against the signed heads (which shows an entry
    // rewritten together with its leaf hash, or removed).
    MerkleTree tree;
    uint64_t expected = 0;
    {
      // The entries, 10,000 at a time.
      constexpr int kChunk = 10000;
      for (;;) {
        pqxx::result r = tx.exec_params(
            "SELECT seq, entry, leaf_hash FROM ledger_entries WHERE tenant_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
            tenant, expected, kChunk);
        for (const pqxx::row& row : r) {
          const uint64_t seq = row[0].as<uint64_t>();
          if (seq != expected) {
            problem(core::StrCat("entries ", expected, " to ", seq - 1, " are missing"));
            altered(expected);
            exact.insert(expected);
            // Later leaves move down: the tree no longer matches the heads past the gap.
          }
          const pqxx::binarystring entry(row[1]);
          const Hash recorded = HashOf(row[2]);
          if (LeafHash(std::string_view(reinterpret_cast<const char*>(entry.data()), entry.size())) != recorded) {
            problem(core::StrCat("entry ", seq, " was altered: its bytes no longer hash to its recorded leaf hash"));
            altered(seq);
            exact.insert(seq);
          }
          tree.AppendLeafHash(recorded);
          expected = seq + 1;
        }
        if (r.size() < static_cast<std::size_t>(kChunk)) break;
      }
    }
    report.entries = tree.size();

    std::map<std::string, std::string> db_keys;
    for (const pqxx::row& row : tx.exec("SELECT key_id, public_key FROM ledger_keys")) {
      db_keys[row[0].as<std::string>()] = pqxx::binarystring(row[1]).str();
    }
    const std::map<std::string, std::string>& keys = trusted_keys != nullptr ? *trusted_keys : db_keys;
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

}  // namespace medgrid::ledger
