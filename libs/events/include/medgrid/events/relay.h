// The outbox relay: moves the committed changes of one shard's outbox
// (medgrid/store/outbox.h) to a ChangeSink, and removes a row only after the
// sink has confirmed its delivery. One relay per shard delivers at a time
// (Outbox::TryLead); another instance's relay waits and takes over when
// the leader's connection goes.
//
// Order: each round delivers at most one change per resource (the oldest
// pending), so a later version is sent only after the earlier one was
// confirmed; a failed change holds its resource's later ones back. Changes of
// different resources go out together.
//
// Failures: rows whose delivery failed stay in the outbox. A round that
// delivered nothing makes the relay pause, from 100 ms growing to 5 s,
// however long the outage; a round that delivered some goes straight on. A relay that dies after delivering and before removing sends those
// changes again: consumers see them twice, with the same event id.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/worker.h"
#include "medgrid/events/change.h"
#include "medgrid/events/kafka.h"
#include "medgrid/store/outbox.h"

namespace medgrid::events {

// Where a relay delivers: one status per event, OK once it is delivered.
class ChangeSink {
 public:
  virtual ~ChangeSink() = default;
  virtual std::vector<absl::Status> Deliver(const std::vector<ChangeEvent>& events) = 0;
};

// Local mode: in-process, to a ChangeHandler (usually a ChangeBus).
class HandlerSink final : public ChangeSink {
 public:
  explicit HandlerSink(ChangeHandler& handler) : handler_(handler) {}
  std::vector<absl::Status> Deliver(const std::vector<ChangeEvent>& events) override;

 private:
  ChangeHandler& handler_;
};

// To Kafka: EncodeChange on `topic`, keyed by ChangeEvent::Key. A producer
// that hit a fatal error is replaced before the next batch. One relay's:
// Deliver is not to be called from two threads at once.
class KafkaSink final : public ChangeSink {
 public:
  static absl::StatusOr<std::unique_ptr<KafkaSink>> Create(const KafkaConfig& config,
                                                           std::string topic = kResourceChangedTopic);
  std::vector<absl::Status> Deliver(const std::vector<ChangeEvent>& events) override;

 private:
  KafkaSink(KafkaConfig config, std::string topic, std::unique_ptr<Producer> producer)
      : config_(std::move(config)), topic_(std::move(topic)), producer_(std::move(producer)) {}
  const KafkaConfig config_;
  const std::string topic_;
  std::unique_ptr<Producer> producer_;
};

struct RelayOptions {
  // Rows read per round. A round waits for its delivery reports (acks=all)
  // before the next one reads, so larger batches move more per second.
  int batch = 5000;
  std::chrono::milliseconds idle_poll{20};              // pause after a round found nothing
  std::chrono::milliseconds lead_retry{1000};           // pause while another relay leads
  // Whether a tenant's events carry the resource body (none when unset).
  std::function<bool(const std::string& tenant)> include_body;
  // Called after a round's delivery, before its rows are removed, with the
  // outbox positions delivered. Returning false stops the relay there, as
  // if its process had died: for tests of the resend.
  std::function<bool(const std::vector<int64_t>& delivered)> before_remove;
};

class OutboxRelay {
 public:
  // `clock` dates the age of pending rows (stats).
  OutboxRelay(std::unique_ptr<store::Outbox> outbox, ChangeSink& sink, const core::Clock& clock,
              RelayOptions options = {});
  ~OutboxRelay();

  // Starts and stops the relay's thread.
  void Start() { worker_.Start(); }
  void Stop() { worker_.Stop(); }

  // One round on the calling thread (with the thread stopped): leads if it
  // can, reads, delivers, removes. Returns the changes delivered (0 while
  // another relay leads), or the first delivery error when none was.
  absl::StatusOr<int> RunOnce();

  struct Stats {
    uint64_t delivered = 0;        // changes delivered and removed
    uint64_t failed = 0;           // changes whose delivery failed (each try)
    int64_t oldest_pending_us = 0;  // age of the oldest row at the last read (0: none)
    bool leading = false;
  };
  Stats stats() const;
  const std::string& shard() const { return outbox_->shard(); }

 private:
  // One round on the relay's thread, and the pause before the next.
  std::optional<std::chrono::milliseconds> Step();

  const std::unique_ptr<store::Outbox> outbox_;
  ChangeSink& sink_;
  const core::Clock& clock_;
  const RelayOptions options_;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<int64_t> oldest_pending_us_{0};
  std::atomic<bool> leading_{false};
  bool halted_ = false;  // before_remove said stop
  std::chrono::milliseconds backoff_{0};  // the relay's thread's
  core::Worker worker_{[this] { return Step(); }};  // last: it stops first
};

}  // namespace medgrid::events
