// The audit pipeline of one process: interactions become AuditEvents in the
// spool on the request path, and a thread moves them from the spool to an
// AuditSink (sink.h): each tenant's ledger, or Kafka on the way to it.
//
// Record never waits on the ledger: it builds the event and appends it to
// the spool. When that fails (the spool is full or its disk is not
// writable) the event is lost, which is counted (`spool_failures`) and
// logged as an error, and the interaction still gets its answer.
//
// The thread reads up to 1,000 records at a time (after a smaller batch it
// waits 200 ms for more), hands them to the sink, and commits the spool
// offset only after the sink took the whole batch. A failed delivery (the
// ledger database or the brokers unreachable) leaves the batch in the spool
// and is retried after a pause that grows to 5 s; events delivered before
// the failure come again with the same ids, and the ledger appends an id
// once. The spool bounds what can wait (1 GiB by default).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "medgrid/audit/audit_event.h"
#include "medgrid/audit/audit_index.h"
#include "medgrid/audit/sink.h"
#include "medgrid/audit/spool.h"
#include "medgrid/core/worker.h"

namespace medgrid::audit {

class AuditPipeline {
 public:
  // `source` names this server instance in the events.
  AuditPipeline(Spool& spool, AuditSink& sink, std::string source);
  ~AuditPipeline();

  // Starts and stops the thread that moves events to the sink. While it is
  // stopped, Record keeps spooling.
  void Start() { worker_.Start(); }
  void Stop() { worker_.Stop(); }

  // Spools the AuditEvent of `interaction`; false when it could not.
  bool Record(const Interaction& interaction);

  // The ledger of admin actions that concern no tenant (an underscore keeps
  // it apart from every tenant id).
  static constexpr const char* kAdminLedger = "_admin";

  // Waits until the sink has taken everything spooled before the call, or
  // `timeout` passes; true when it does. Stopped, it does not wait.
  bool Drain(std::chrono::milliseconds timeout);

  struct Stats {
    uint64_t recorded = 0;         // events spooled
    uint64_t spool_failures = 0;   // events that could not be spooled (lost)
    uint64_t appended = 0;         // events delivered to the sink
    uint64_t append_failures = 0;  // batches whose delivery failed (and were retried)
    uint64_t pending_bytes = 0;    // spooled, not yet delivered
  };
  Stats stats() const;

 private:
  // One batch on the pipeline's thread, and the pause before the next.
  std::optional<std::chrono::milliseconds> Step();
  // One batch from the spool to the sink: the events moved, or -1 when the
  // delivery failed.
  int64_t MoveBatch();

  Spool& spool_;
  AuditSink& sink_;
  const std::string source_;
  std::atomic<uint64_t> recorded_{0};
  std::atomic<uint64_t> spool_failures_{0};
  std::atomic<uint64_t> appended_{0};
  std::atomic<uint64_t> append_failures_{0};
  std::atomic<bool> draining_{false};  // Drain cuts the batch interval short
  std::chrono::milliseconds backoff_{0};  // the pipeline's thread's
  core::Worker worker_{[this] { return Step(); }};  // last: it stops first
};

}  // namespace medgrid::audit
