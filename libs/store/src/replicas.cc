#include "replicas.h"

#include <algorithm>

#include "libpq-fe.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/request_context.h"
#include "medgrid/core/strings.h"

namespace medgrid::store {
namespace {

// The connection options of `dsn` (key=value or URI), or an empty list when
// libpq cannot parse it.
std::vector<std::pair<std::string, std::string>> ParseDsn(const std::string& dsn) {
  std::vector<std::pair<std::string, std::string>> out;
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (err != nullptr) PQfreemem(err);
  if (opts == nullptr) return out;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out.emplace_back(o->keyword, o->val);
  }
  PQconninfoFree(opts);
  return out;
}

// Statements of the monitor: positions as byte offsets, so they compare as
// integers. pg_last_wal_replay_lsn() is NULL on a node never in recovery.
constexpr const char* kPrimarySql = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";
constexpr const char* kReplicaSql =
    "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, "
    "pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()";

// A monitor connection: short connect and statement timeouts, so one dead
// node cannot stall the samples of the others for long.
std::string MonitorDsn(const std::string& dsn) {
  return core::StrCat(dsn, " connect_timeout=2 options='-c statement_timeout=1000'");
}

}  // namespace

bool IsMultiHost(const std::string& dsn) {
  for (const auto& [key, value] : ParseDsn(dsn)) {
    if ((key == "host" || key == "hostaddr") && value.find(',') != std::string::npos) return true;
  }
  return false;
}

std::string EnsureReadWrite(const std::string& dsn) {
  if (!IsMultiHost(dsn)) return dsn;
  for (const auto& [key, value] : ParseDsn(dsn)) {
    if (key == "target_session_attrs") return dsn;  // the operator chose
  }
  const bool uri = dsn.rfind("postgres://", 0) == 0 || dsn.rfind("postgresql://", 0) == 0;
  if (uri) return core::StrCat(dsn, dsn.find('?') == std::string::npos ? "?" : "&", "target_session_attrs=read-write");
  return core::StrCat(dsn, " target_session_attrs=read-write");
}

std::string CurrentCaller() {
  const core::RequestContext& ctx = core::CurrentRequest();
  if (!ctx.subject.empty()) return core::StrCat("sub:", ctx.subject);
  if (!ctx.agent.empty()) return core::StrCat("agent:", ctx.agent);
  if (!ctx.client_address.empty()) return core::StrCat("addr:", ctx.client_address);
  return "";
}

ReplicaRouter::ReplicaRouter(std::string shard, std::string primary_dsn, std::vector<std::string> replica_dsns,
                             const StoreConfig& config, const core::Clock& clock, PgPool::Prepare prepare,
                             TenantConnections* tenants)
    : shard_(std::move(shard)),
      primary_dsn_(std::move(primary_dsn)),
      max_lag_(config.replica_max_lag),
      interval_(config.replica_monitor_interval),
      failover_after_(std::max(1, config.failover_after_samples)),
      clock_(clock) {
  for (std::size_t i = 0; i < replica_dsns.size(); ++i) {
    auto r = std::make_unique<Replica>();
    r->dsn = std::move(replica_dsns[i]);
    r->async_name = core::StrCat(shard_, "/replica", i);
    r->pool = std::make_unique<PgPool>(r->async_name, r->dsn, config.pool_size, config.acquire_timeout, prepare,
                                       nullptr, tenants);
    replicas_.push_back(std::move(r));
  }
}

ReplicaRouter::~ReplicaRouter() { Stop(); }

void ReplicaRouter::Start() {
  // A shard with one single-host primary has nothing to route or watch:
  // the shard's reachability check covers it.
  if (replicas_.empty() && !IsMultiHost(primary_dsn_)) return;
  if (!worker_) {
    worker_ = std::make_unique<core::Worker>([this] {
      Sample();
      return std::optional<std::chrono::milliseconds>(interval_);
    });
  }
  worker_->Start();
}

void ReplicaRouter::Stop() {
  if (worker_) worker_->Stop();
}

std::optional<int64_t> ReplicaRouter::SamplePrimary() {
  // A broken monitor connection is replaced once within the round: a
  // terminated backend is not a failover.
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      if (!primary_monitor_ || !primary_monitor_->is_open()) {
        primary_monitor_ = std::make_unique<pqxx::connection>(MonitorDsn(primary_dsn_));
      }
      pqxx::nontransaction tx(*primary_monitor_);
      return tx.exec1(kPrimarySql)[0].as<int64_t>();
    } catch (const std::exception&) {
      primary_monitor_.reset();
    }
  }
  return std::nullopt;
}

void ReplicaRouter::Sample() {
  // The send time is taken before the statement: the LSN it returns is at
  // least the primary's position at that time.
  const core::TimePoint sent = clock_.Now();
  RecordPrimary(sent, SamplePrimary());
  for (std::size_t i = 0; i < replicas_.size(); ++i) {
    Replica& r = *replicas_[i];
    ReplicaObservation o;
    for (int attempt = 0; attempt < 2 && !o.reachable; ++attempt) {
      try {
        if (!r.monitor || !r.monitor->is_open()) r.monitor = std::make_unique<pqxx::connection>(MonitorDsn(r.dsn));
        pqxx::nontransaction tx(*r.monitor);
        pqxx::row row = tx.exec1(kReplicaSql);
        o.standby = row[0].as<bool>();
        o.replay_lsn = row[1].is_null() ? 0 : row[1].as<int64_t>();
        o.replayed_received = !row[2].is_null() && row[2].as<bool>();
        o.reachable = true;
      } catch (const std::exception&) {
        r.monitor.reset();
      }
    }
    RecordReplica(i, o);
  }
}

void ReplicaRouter::RecordPrimary(core::TimePoint sent, std::optional<int64_t> primary) {
  KeepPrimarySample(sent, primary);
  if (primary && on_primary_answered_) on_primary_answered_();
}

void ReplicaRouter::KeepPrimarySample(core::TimePoint sent, std::optional<int64_t> primary) {
  std::lock_guard lock(mu_);
  if (primary) {
    samples_.push_back({sent, *primary});
    if (!primary_writable_) core::Log(core::LogLevel::kInfo, "db.primary_writable", {{"shard", shard_}});
    failed_samples_ = 0;
    primary_writable_ = true;
  } else if (++failed_samples_ >= failover_after_ && primary_writable_) {
    primary_writable_ = false;
    core::Log(core::LogLevel::kWarn, "db.primary_lost", {{"shard", shard_}});
  }
  // Keep what can still decide a lag below the threshold, with room.
  const core::TimePoint horizon = sent - 10 * (max_lag_ + interval_) - std::chrono::seconds(1);
  while (samples_.size() > 1 && (samples_.front().sent < horizon || samples_.size() > 4096)) samples_.pop_front();
  for (auto it = writers_.begin(); it != writers_.end();) {
    it = it->second < horizon ? writers_.erase(it) : std::next(it);
  }
}

void ReplicaRouter::RecordReplica(std::size_t i, const ReplicaObservation& o) {
  Replica& r = *replicas_[i];
  std::lock_guard lock(mu_);
  if (r.reachable != o.reachable || r.standby != o.standby) {
    core::Log(o.reachable && o.standby ? core::LogLevel::kInfo : core::LogLevel::kWarn, "db.replica_state",
              {{"shard", shard_},
               {"replica", std::to_string(i)},
               {"reachable", o.reachable ? "true" : "false"},
               {"standby", o.standby ? "true" : "false"}});
  }
  r.reachable = o.reachable;
  r.standby = o.standby;
  if (!o.reachable) return;
  r.replay_lsn = o.replay_lsn;
  r.replayed_received = o.replayed_received;
  r.covered.reset();
  r.first_missing.reset();
  for (const PrimarySample& s : samples_) {
    if (s.lsn <= o.replay_lsn) {
      r.covered = s.sent;
    } else if (!r.first_missing) {
      r.first_missing = s.sent;
    }
  }
}

std::chrono::nanoseconds ReplicaRouter::LagOf(const Replica& r, core::TimePoint now) const {
  if (!r.first_missing) return std::chrono::nanoseconds(0);
  return std::max(std::chrono::nanoseconds(0), std::chrono::duration_cast<std::chrono::nanoseconds>(now - *r.first_missing));
}

int ReplicaRouter::Pick(const std::string& tenant) {
  if (replicas_.empty()) return -1;
  const std::string caller = CurrentCaller();
  if (caller.empty()) return -1;
  const core::TimePoint now = clock_.Now();
  std::lock_guard lock(mu_);
  std::optional<core::TimePoint> wrote;
  if (!writers_.empty()) {
    if (auto it = writers_.find(core::StrCat(tenant, "\n", caller)); it != writers_.end()) wrote = it->second;
  }
  const std::size_t n = replicas_.size();
  const unsigned start = next_++;
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (start + k) % n;
    const Replica& r = *replicas_[i];
    if (!r.reachable || !r.standby) continue;
    if (!primary_writable_) {
      // Failing over (the seed's level 4: read-only, served from
      // replicas): a standby that has replayed all the WAL it received
      // serves every caller. With synchronous replication it holds every
      // acknowledged write; with asynchronous replication it may miss the
      // last ones, and so may the standby that gets promoted.
      if (r.replayed_received) return static_cast<int>(i);
      continue;
    }
    if (LagOf(r, now) >= max_lag_) continue;
    if (wrote && !(r.covered && *r.covered > *wrote)) continue;
    return static_cast<int>(i);
  }
  return -1;
}

void ReplicaRouter::NoteWrite(const std::string& tenant, const std::string& caller) {
  if (replicas_.empty() || caller.empty()) return;
  const core::TimePoint now = clock_.Now();
  std::lock_guard lock(mu_);
  writers_[core::StrCat(tenant, "\n", caller)] = now;
}

void ReplicaRouter::ReportFailure(int i) {
  std::lock_guard lock(mu_);
  replicas_[i]->reachable = false;
}

bool ReplicaRouter::primary_writable() const {
  std::lock_guard lock(mu_);
  return primary_writable_;
}

ShardReplication ReplicaRouter::Stats() const {
  ShardReplication out;
  out.shard_id = shard_;
  out.monitored = worker_ != nullptr;
  out.reads_primary = reads_primary_.load();
  out.reads_replica = reads_replica_.load();
  const core::TimePoint now = clock_.Now();
  std::lock_guard lock(mu_);
  out.primary_writable = primary_writable_;
  const int64_t primary_lsn = samples_.empty() ? 0 : samples_.back().lsn;
  for (std::size_t i = 0; i < replicas_.size(); ++i) {
    const Replica& r = *replicas_[i];
    ReplicaStats& s = out.replicas.emplace_back();
    s.index = static_cast<int>(i);
    s.dsn = r.dsn;
    s.reachable = r.reachable;
    s.standby = r.standby;
    s.lag_seconds = std::chrono::duration<double>(LagOf(r, now)).count();
    s.lag_bytes = r.reachable ? std::max<int64_t>(0, primary_lsn - r.replay_lsn) : 0;
  }
  return out;
}

}  // namespace medgrid::store
