// The background worker that carries out reindex jobs ($reindex), and
// keeps the search tables' planner statistics fresh between autovacuum
// runs and the per-code counts folded (see ResourceStore::RefreshStatistics).
// It polls
// every shard for a running job whose lease is free, leases it, and works
// through it batch by batch, renewing the lease with each batch. Jobs live
// in the shards, so a job started before a restart, or left by an instance
// that died, is taken up again once its lease runs out.
//
//   engine::Reindexer reindexer(engine, store, {});
//   reindexer.Start();
//   ...
//   reindexer.Stop();  // finishes the current batch, then returns
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "medgrid/engine/fhir_engine.h"
#include "medgrid/store/store.h"

namespace medgrid::engine {

struct ReindexerConfig {
  int batch = 500;                                  // resources per transaction
  std::chrono::seconds lease{30};                   // how long a claim lasts without renewal
  std::chrono::milliseconds idle_poll{1000};        // wait between looks when there is no work
  std::chrono::seconds statistics_every{2};         // how often to look for stale statistics (and purge)
  int idempotency_purge_batch = 1000;              // expired idempotency records removed per shard per round
};

class Reindexer {
 public:
  Reindexer(const FhirEngine& engine, store::Store& store, ReindexerConfig config);
  ~Reindexer();

  void Start();
  // Stops after the batch in progress; its job stays leased until the
  // lease runs out, then any instance continues it.
  void Stop();

 private:
  void Run();
  // Works through one claimed job until it is done, the lease is lost, or
  // Stop is called. Returns false if it did nothing.
  bool WorkOnce();
  void RefreshStatistics();

  const FhirEngine& engine_;
  store::Store& store_;
  const ReindexerConfig config_;
  const std::string owner_;  // this instance's lease owner name
  std::chrono::steady_clock::time_point last_statistics_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace medgrid::engine
