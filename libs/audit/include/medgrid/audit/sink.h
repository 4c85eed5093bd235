// Where the audit pipeline (pipeline.h) sends what it reads from the spool:
// into the ledger directly (local mode), or to Kafka `medgrid.audit.events`,
// from which the audit service's consumer appends to the ledger.
//
// Delivery is at least once on both legs; the ledger appends an event id
// once (LedgerStore::Append), so a batch sent again is harmless.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/audit/audit_index.h"
#include "medgrid/events/kafka.h"
#include "medgrid/ledger/ledger_store.h"

namespace medgrid::audit {

inline constexpr const char* kAuditTopic = "medgrid.audit.events";

// An audit event on its way to the ledger.
struct PendingEvent {
  std::string tenant;  // the ledger: a tenant, or AuditPipeline::kAdminLedger
  std::string id;
  std::string facts;   // FactsLine: what AuditEvent search reads
  std::string json;    // the AuditEvent: the bytes the ledger keeps
};

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // OK once every event of the batch is delivered; an error has the batch
  // sent again later.
  virtual absl::Status Deliver(const std::vector<PendingEvent>& events) = 0;
};

// Appends each tenant's events to its ledger (one signed tree head per
// tenant per batch), then indexes them for search when `index` is set.
class LedgerSink final : public AuditSink {
 public:
  LedgerSink(ledger::LedgerStore& ledger, AuditIndex* index) : ledger_(ledger), index_(index) {}
  absl::Status Deliver(const std::vector<PendingEvent>& events) override;

 private:
  ledger::LedgerStore& ledger_;
  AuditIndex* const index_;
};

// Publishes each event as a medgrid.events.v1.AuditRecorded on kAuditTopic,
// keyed "tenant/AuditEvent/id". A producer that hit a fatal error is
// replaced before the next batch.
class KafkaAuditSink final : public AuditSink {
 public:
  static absl::StatusOr<std::unique_ptr<KafkaAuditSink>> Create(const events::KafkaConfig& config);
  absl::Status Deliver(const std::vector<PendingEvent>& events) override;

 private:
  KafkaAuditSink(events::KafkaConfig config, std::unique_ptr<events::Producer> producer)
      : config_(std::move(config)), producer_(std::move(producer)) {}
  const events::KafkaConfig config_;
  std::unique_ptr<events::Producer> producer_;
};

// The protobuf bytes of an event on kAuditTopic, and back.
std::string EncodeAuditRecorded(const PendingEvent& event);
absl::StatusOr<PendingEvent> DecodeAuditRecorded(std::string_view bytes);

// The audit service's handler of kAuditTopic: decodes a batch and delivers
// it to `ledger` (a LedgerSink). Messages that are not AuditRecorded are
// logged and skipped.
events::Consumer::Handler AuditMessageHandler(AuditSink& ledger);

}  // namespace medgrid::audit
