// The outbox reader of one shard (medgrid/store/outbox.h).
#include <map>
#include <pqxx/pqxx>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/store/sql.h"
#include "pg_pool.h"
#include "pg_resource_store.h"

namespace medgrid::store {
namespace {

// The advisory lock that makes one relay per shard (any constant no other
// lock of the shard uses).
constexpr int64_t kRelayLock = 7262071;

class PgOutbox final : public Outbox {
 public:
  // Statements count in `queries`, which outlives the reader. With
  // `per_round_lock` (behind PgBouncer in transaction pooling mode, where a
  // session lock would stay on a server connection other clients get next),
  // each round is one transaction holding a transaction-scoped lock: TryLead
  // begins it, Pending (when nothing is pending) or Remove commits it.
  PgOutbox(std::string shard, std::string dsn, QueryCounters* queries, bool per_round_lock)
      : shard_(std::move(shard)), dsn_(std::move(dsn)), queries_(queries), per_round_lock_(per_round_lock) {}

  const std::string& shard() const override { return shard_; }

  absl::StatusOr<bool> TryLead() override {
    if (per_round_lock_) return BeginRound();
    if (leading_) return true;
    auto led = Run([&](pqxx::transaction_base& tx) -> absl::StatusOr<bool> {
      return tx.exec_params1("SELECT pg_try_advisory_lock($1)", kRelayLock)[0].as<bool>();
    });
    if (led.ok()) leading_ = *led;
    return led;
  }

  absl::StatusOr<std::vector<OutboxRow>> Pending(int limit,
                                                 const std::function<bool(const std::string&)>& with_body) override {
    RETURN_IF_ERROR(CheckLeading());
    using Rows = absl::StatusOr<std::vector<OutboxRow>>;
    Rows pending = Run([&](pqxx::transaction_base& tx) -> Rows {
      pqxx::result r = tx.exec_params(
          "SELECT seq, tenant_id, res_type, res_id, version_id, method, "
          "(extract(epoch from changed_at) * 1000000)::bigint FROM outbox ORDER BY seq LIMIT $1",
          limit);
      std::vector<OutboxRow> rows;
      rows.reserve(r.size());
      // The rows whose body to read, as parallel arrays for one query.
      std::vector<std::string> seqs, tenants, types, ids, versions;
      for (const pqxx::row& row : r) {
        OutboxRow& o = rows.emplace_back();
        o.seq = row[0].as<int64_t>();
        o.tenant = row[1].as<std::string>();
        o.type = row[2].as<std::string>();
        o.id = row[3].as<std::string>();
        o.version = row[4].as<int64_t>();
        o.method = row[5].as<std::string>();
        o.changed_at = core::FromUnixMicros(row[6].as<int64_t>());
        if (o.method != "DELETE" && with_body && with_body(o.tenant)) {
          seqs.push_back(std::to_string(o.seq));
          tenants.push_back(o.tenant);
          types.push_back(o.type);
          ids.push_back(o.id);
          versions.push_back(std::to_string(o.version));
        }
      }
      if (seqs.empty()) return rows;
      std::map<int64_t, std::string> bodies;
      for (const pqxx::row& row : tx.exec_params(
               "SELECT k.seq, v.body FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[]) "
               "AS k(seq, tenant_id, res_type, res_id, version_id) JOIN resource_versions v ON "
               "v.tenant_id = k.tenant_id AND v.res_type = k.res_type AND v.res_id = k.res_id AND "
               "v.version_id = k.version_id",
               TextArrayLiteral(seqs), TextArrayLiteral(tenants), TextArrayLiteral(types), TextArrayLiteral(ids),
               TextArrayLiteral(versions))) {
        if (!row[1].is_null()) bodies[row[0].as<int64_t>()] = row[1].as<std::string>();
      }
      for (OutboxRow& o : rows) {
        if (auto it = bodies.find(o.seq); it != bodies.end()) o.body = std::move(it->second);
      }
      return rows;
    });
    // Nothing to deliver: the round ends here (no Remove follows).
    if (pending.ok() && pending->empty() && round_) RETURN_IF_ERROR(EndRound());
    return pending;
  }

  absl::Status Remove(const std::vector<int64_t>& seqs) override {
    RETURN_IF_ERROR(CheckLeading());
    if (!seqs.empty()) {
      std::string list = "{";
      for (std::size_t i = 0; i < seqs.size(); ++i) core::StrAppend(list, i ? "," : "", seqs[i]);
      list += '}';
      RETURN_IF_ERROR(Run([&](pqxx::transaction_base& tx) -> absl::Status {
        tx.exec_params("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", list);
        return absl::OkStatus();
      }));
    }
    return round_ ? EndRound() : absl::OkStatus();
  }

  absl::StatusOr<int64_t> Backlog() override {
    return Run([&](pqxx::transaction_base& tx) -> absl::StatusOr<int64_t> {
      return tx.exec1("SELECT count(*) FROM outbox")[0].as<int64_t>();
    });
  }

 private:
  absl::Status CheckLeading() const {
    if (leading_) return absl::OkStatus();
    return absl::FailedPreconditionError(core::StrCat("Not the outbox relay of shard ", shard_, " (TryLead first)"));
  }

  // Runs `fn` on this reader's connection, opening it first if needed: in
  // the round's transaction if one is open, else on its own. A broken
  // connection is dropped (with it, the relay lock); any error ends the
  // round.
  template <typename Fn>
  auto Run(Fn&& fn) -> decltype(fn(std::declval<pqxx::transaction_base&>())) {
    try {
      if (!conn_) conn_ = OpenShardConnection(dsn_, queries_);
      if (round_) {
        auto result = fn(*round_);
        if (!result.ok()) AbandonRound();
        return result;
      }
      pqxx::nontransaction tx(*conn_);
      return fn(tx);
    } catch (const pqxx::broken_connection& e) {
      round_.reset();
      conn_.reset();
      leading_ = false;
      return StatusFromPqxx(e);
    } catch (const std::exception& e) {
      AbandonRound();
      return StatusFromPqxx(e);
    }
  }

  // A round of the relay (per_round_lock_): a transaction that takes the
  // relay lock if it is free. Ends any round left open.
  absl::StatusOr<bool> BeginRound() {
    AbandonRound();
    try {
      if (!conn_) conn_ = OpenShardConnection(dsn_, queries_);
      round_ = std::make_unique<pqxx::work>(*conn_);
      leading_ = round_->exec_params1("SELECT pg_try_advisory_xact_lock($1)", kRelayLock)[0].as<bool>();
      if (!leading_) AbandonRound();
      return leading_;
    } catch (const pqxx::broken_connection& e) {
      round_.reset();
      conn_.reset();
      leading_ = false;
      return StatusFromPqxx(e);
    } catch (const std::exception& e) {
      AbandonRound();
      return StatusFromPqxx(e);
    }
  }

  // Commits the round: its deletions, and the lock goes.
  absl::Status EndRound() {
    leading_ = false;
    try {
      round_->commit();
      round_.reset();
      return absl::OkStatus();
    } catch (const std::exception& e) {
      round_.reset();
      if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) conn_.reset();
      return StatusFromPqxx(e);
    }
  }

  // Rolls an open round back (destroying a pqxx::work aborts it).
  void AbandonRound() {
    if (!round_) return;
    leading_ = false;
    round_.reset();
  }

  const std::string shard_;
  const std::string dsn_;
  QueryCounters* const queries_;
  const bool per_round_lock_;
  std::unique_ptr<ShardConnection> conn_;
  std::unique_ptr<pqxx::work> round_;  // the open round (per_round_lock_); before conn_ in destruction
  bool leading_ = false;  // this connection holds kRelayLock (for this round, with per_round_lock_)
};

}  // namespace

absl::StatusOr<std::unique_ptr<Outbox>> PgResourceStore::OpenOutbox() {
  return std::unique_ptr<Outbox>(std::make_unique<PgOutbox>(shard_, dsn_, &pool_.queries(), pgbouncer_));
}

}  // namespace medgrid::store
