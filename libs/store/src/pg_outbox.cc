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
  // Statements count in `queries`, which outlives the reader.
  PgOutbox(std::string shard, std::string dsn, QueryCounters* queries)
      : shard_(std::move(shard)), dsn_(std::move(dsn)), queries_(queries) {}

  const std::string& shard() const override { return shard_; }

  absl::StatusOr<bool> TryLead() override {
    if (leading_) return true;
    auto led = Run([&](pqxx::nontransaction& tx) -> absl::StatusOr<bool> {
      return tx.exec_params1("SELECT pg_try_advisory_lock($1)", kRelayLock)[0].as<bool>();
    });
    if (led.ok()) leading_ = *led;
    return led;
  }

  absl::StatusOr<std::vector<OutboxRow>> Pending(int limit,
                                                 const std::function<bool(const std::string&)>& with_body) override {
    RETURN_IF_ERROR(CheckLeading());
    return Run([&](pqxx::nontransaction& tx) -> absl::StatusOr<std::vector<OutboxRow>> {
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
  }

  absl::Status Remove(const std::vector<int64_t>& seqs) override {
    if (seqs.empty()) return absl::OkStatus();
    RETURN_IF_ERROR(CheckLeading());
    std::string list = "{";
    for (std::size_t i = 0; i < seqs.size(); ++i) core::StrAppend(list, i ? "," : "", seqs[i]);
    list += '}';
    return Run([&](pqxx::nontransaction& tx) -> absl::Status {
      tx.exec_params("DELETE FROM outbox WHERE seq = ANY($1::bigint[])", list);
      return absl::OkStatus();
    });
  }

  absl::StatusOr<int64_t> Backlog() override {
    return Run([&](pqxx::nontransaction& tx) -> absl::StatusOr<int64_t> {
      return tx.exec1("SELECT count(*) FROM outbox")[0].as<int64_t>();
    });
  }

 private:
  absl::Status CheckLeading() const {
    if (leading_) return absl::OkStatus();
    return absl::FailedPreconditionError(core::StrCat("Not the outbox relay of shard ", shard_, " (TryLead first)"));
  }

  // Runs `fn` on this reader's connection, opening it first if needed. A
  // broken connection is dropped (with it, the relay lock).
  template <typename Fn>
  auto Run(Fn&& fn) -> decltype(fn(std::declval<pqxx::nontransaction&>())) {
    try {
      if (!conn_) conn_ = OpenShardConnection(dsn_, queries_);
      pqxx::nontransaction tx(*conn_);
      return fn(tx);
    } catch (const pqxx::broken_connection& e) {
      conn_.reset();
      leading_ = false;
      return StatusFromPqxx(e);
    } catch (const std::exception& e) {
      return StatusFromPqxx(e);
    }
  }

  const std::string shard_;
  const std::string dsn_;
  QueryCounters* const queries_;
  std::unique_ptr<ShardConnection> conn_;
  bool leading_ = false;  // this connection holds kRelayLock
};

}  // namespace

absl::StatusOr<std::unique_ptr<Outbox>> PgResourceStore::OpenOutbox() {
  return std::unique_ptr<Outbox>(std::make_unique<PgOutbox>(shard_, dsn_, &pool_.queries()));
}

}  // namespace medgrid::store
