// Read replicas of one shard: the lag monitor and the routing of reads.
//
// A shard is a primary (its DSN may name several hosts; libpq then picks the
// writable one, see EnsureReadWrite) plus streaming replicas. A monitor
// thread samples, every `monitor_interval`, the primary's WAL position
// (pg_current_wal_lsn) and then each replica's replay position
// (pg_last_wal_replay_lsn) and whether it is still in recovery.
//
// Lag, on this process's clock (no comparison of two hosts' clocks): the
// primary samples are kept with the time each was sent. A replica whose
// replay position has reached the newest primary sample has no lag;
// otherwise its lag is the time since the oldest primary sample it has not
// reached, i.e. how long it has been known to miss WAL the primary had.
// Accurate to about one monitor interval.
//
// Routing (Pick): a read goes to a replica that answered the last sample,
// is in recovery and lags less than `max_lag`, round-robin among them;
// otherwise to the primary. Reads outside a request (no caller: change
// consumers, subscriptions, exports) always go to the primary.
//
// Read-your-writes: after a committed write, the caller (tenant plus the
// token's subject, else the agent, else the client address, from
// core::RequestContext) is remembered with the time of the write. Its reads
// may use a replica only once the replica has replayed a primary sample
// sent after that write; such a sample's LSN is at least the write's commit
// LSN, so the replica holds the write. No extra statement on the write path.
// Partial: this is per process; a caller whose requests are spread over
// several instances gets read-your-writes only from the instance it wrote
// through.
//
// Failover signal: when `failover_after` consecutive samples find no
// writable primary (connection refused, or the node is read-only), the
// shard reports primary_writable() == false until a sample succeeds.
// Meanwhile reads of every caller go to a standby that has replayed all
// the WAL it received (lag cannot be measured without a primary); with
// synchronous replication that standby holds every acknowledged write.
//
// Thread-safety: all members are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "medgrid/core/clock.h"
#include "medgrid/core/worker.h"
#include "medgrid/store/config.h"
#include "medgrid/store/store.h"
#include "pg_pool.h"

namespace medgrid::store {

// The caller of the current request for read-your-writes: the token's
// subject, else the agent, else the client address; empty outside a request.
std::string CurrentCaller();

class ReplicaRouter {
 public:
  // `primary_dsn` and `replica_dsns` are full connection strings (with any
  // options); `prepare` prepares the read statements on a replica connection.
  // `tenants`, if any, caps each tenant's connections on the replicas' pools
  // (together with the primary's) and must outlive the router.
  ReplicaRouter(std::string shard, std::string primary_dsn, std::vector<std::string> replica_dsns,
                const StoreConfig& config, const core::Clock& clock, PgPool::Prepare prepare,
                TenantConnections* tenants = nullptr);
  ~ReplicaRouter();

  // Starts and stops the monitor thread.
  void Start();
  void Stop();
  // One monitoring round (the monitor thread's step; tests may call it):
  // samples the primary and each replica and records what it found.
  void Sample();

  // What one round of samples found, as Sample records it; tests feed the
  // router with these directly. RecordPrimary comes first in a round:
  // `sent` is when the primary's sample was sent, `lsn` its WAL position or
  // nullopt when no writable primary answered.
  void RecordPrimary(core::TimePoint sent, std::optional<int64_t> lsn);
  struct ReplicaObservation {
    bool reachable = false;
    bool standby = false;            // in recovery
    int64_t replay_lsn = 0;
    bool replayed_received = false;  // has replayed all the WAL it received
  };
  void RecordReplica(std::size_t i, const ReplicaObservation& o);

  // The replica to read from for `tenant` and the current caller, or -1 for
  // the primary.
  int Pick(const std::string& tenant);
  // Records a committed write of the current caller to `tenant`. `caller`
  // is CurrentCaller() taken on the request's thread.
  void NoteWrite(const std::string& tenant, const std::string& caller);
  // Called (on the monitor's thread, under no lock) after each sample that
  // found a writable primary. Set before Start().
  void SetOnPrimaryAnswered(std::function<void()> hook) { on_primary_answered_ = std::move(hook); }
  // A read on replica `i` failed for lack of a connection: it is skipped
  // until the next sample finds it again.
  void ReportFailure(int i);
  // Counts a read served by a replica (true) or the primary.
  void CountRead(bool replica) { (replica ? reads_replica_ : reads_primary_).fetch_add(1); }

  int replicas() const { return static_cast<int>(replicas_.size()); }
  PgPool& pool(int i) { return *replicas_[i]->pool; }
  const std::string& dsn(int i) const { return replicas_[i]->dsn; }
  // The name the asynchronous pools of replica `i` are kept under.
  const std::string& async_name(int i) const { return replicas_[i]->async_name; }
  const std::shared_ptr<std::atomic<int>>& async_open(int i) const { return replicas_[i]->async_open; }
  bool primary_writable() const;
  ShardReplication Stats() const;

 private:
  struct Replica {
    std::string dsn;
    std::string async_name;
    std::unique_ptr<PgPool> pool;
    std::shared_ptr<std::atomic<int>> async_open = std::make_shared<std::atomic<int>>(0);
    std::unique_ptr<pqxx::connection> monitor;  // the monitor thread's own
    // Guarded by the router's mu_:
    bool reachable = false;
    bool standby = false;
    int64_t replay_lsn = 0;
    bool replayed_received = false;  // has replayed all the WAL it received
    // Send time of the newest primary sample the replica has replayed
    // (nullopt: none retained), and of the oldest it has not (nullopt: it
    // has replayed them all, no lag).
    std::optional<core::TimePoint> covered;
    std::optional<core::TimePoint> first_missing;
  };
  struct PrimarySample {
    core::TimePoint sent;
    int64_t lsn = 0;
  };

  // RecordPrimary without the hook: keeps the sample and the failover count (takes mu_).
  void KeepPrimarySample(core::TimePoint sent, std::optional<int64_t> primary);
  // The lag of `r` at `now`. Requires mu_.
  std::chrono::nanoseconds LagOf(const Replica& r, core::TimePoint now) const;
  // Primary's WAL position, or nullopt when no writable primary answers.
  std::optional<int64_t> SamplePrimary();

  const std::string shard_;
  const std::string primary_dsn_;
  const std::chrono::milliseconds max_lag_;
  const std::chrono::milliseconds interval_;
  const int failover_after_;
  const core::Clock& clock_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::unique_ptr<pqxx::connection> primary_monitor_;  // the monitor thread's own
  std::unique_ptr<core::Worker> worker_;
  std::function<void()> on_primary_answered_;
  std::atomic<int64_t> reads_primary_{0};
  std::atomic<int64_t> reads_replica_{0};

  mutable std::mutex mu_;
  std::deque<PrimarySample> samples_;  // guarded by mu_; oldest first
  int failed_samples_ = 0;             // guarded by mu_; consecutive
  bool primary_writable_ = true;       // guarded by mu_
  unsigned next_ = 0;                  // guarded by mu_; round-robin
  // tenant + "\n" + caller -> time of the last committed write.
  std::unordered_map<std::string, core::TimePoint> writers_;  // guarded by mu_
};

}  // namespace medgrid::store
