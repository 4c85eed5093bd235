// The audit pipeline of one process: interactions become AuditEvents in the
// spool on the request path, and a thread moves them from the spool into
// each tenant's ledger.
//
// Record never waits on the ledger: it builds the event and appends it to
// the spool. When that fails (the spool is full or its disk is not
// writable) the event is lost, which is counted (`spool_failures`) and
// logged as an error, and the interaction still gets its answer.
//
// The thread reads up to 1,000 records at a time (after a smaller batch it
// waits 200 ms for more), appends each tenant's events to its ledger (one
// signed tree head per tenant per batch), and
// commits the spool offset only after every append of the batch succeeded.
// A failed append leaves the batch in the spool and is retried after a
// pause that grows to 5 s; events appended before the failure are skipped on
// the retry by their ids, so each event is in the ledger once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "medgrid/audit/audit_event.h"
#include "medgrid/audit/audit_index.h"
#include "medgrid/audit/spool.h"
#include "medgrid/ledger/ledger_store.h"

namespace medgrid::audit {

class AuditPipeline {
 public:
  // `source` names this server instance in the events. With `index`, each
  // appended batch's search columns are written there too (AuditEvent search).
  AuditPipeline(Spool& spool, ledger::LedgerStore& ledger, AuditIndex* index, std::string source);
  ~AuditPipeline();

  // Starts and stops the thread that moves events into the ledger. While it
  // is stopped, Record keeps spooling.
  void Start();
  void Stop();

  // Spools the AuditEvent of `interaction`; false when it could not.
  bool Record(const Interaction& interaction);

  // The ledger of admin actions that concern no tenant (an underscore keeps
  // it apart from every tenant id).
  static constexpr const char* kAdminLedger = "_admin";

  // Waits until the ledger holds everything spooled before the call, or
  // `timeout` passes; true when it does. Stopped, it does not wait.
  bool Drain(std::chrono::milliseconds timeout);

  struct Stats {
    uint64_t recorded = 0;         // events spooled
    uint64_t spool_failures = 0;   // events that could not be spooled (lost)
    uint64_t appended = 0;         // events moved into the ledger
    uint64_t append_failures = 0;  // batches whose append failed (and were retried)
    uint64_t pending_bytes = 0;    // spooled, not yet in the ledger
  };
  Stats stats() const;

 private:
  void Run();
  // One batch from the spool into the ledger: the events moved, or -1 when
  // an append failed.
  int64_t MoveBatch();

  Spool& spool_;
  ledger::LedgerStore& ledger_;
  AuditIndex* const index_;
  const std::string source_;
  std::atomic<uint64_t> recorded_{0};
  std::atomic<uint64_t> spool_failures_{0};
  std::atomic<uint64_t> appended_{0};
  std::atomic<uint64_t> append_failures_{0};
  std::mutex mu_;
  std::condition_variable wake_;
  bool running_ = false;   // guarded by mu_
  bool draining_ = false;  // guarded by mu_; Drain cuts the batch interval short
  std::thread thread_;
};

}  // namespace medgrid::audit
