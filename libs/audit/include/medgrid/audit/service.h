// The audit service's consumer: reads medgrid.audit.events as the group
// `medgrid-audit` (the partitions shared among the service's instances,
// offsets committed only after each batch is in the ledger) and hands each
// batch to the ledger (a LedgerSink). The standalone binary
// (services/audit) and the all-in-one server both run it.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "medgrid/audit/sink.h"
#include "medgrid/events/consumer_loop.h"
#include "medgrid/events/kafka.h"

namespace medgrid::audit {

inline constexpr const char* kAuditConsumerGroup = "medgrid-audit";

class AuditConsumer {
 public:
  // Subscribes and starts consuming into `ledger`, which must outlive it.
  static absl::StatusOr<std::unique_ptr<AuditConsumer>> Start(const events::KafkaConfig& kafka, AuditSink& ledger);
  ~AuditConsumer();
  void Stop();
  const events::ConsumerLoop& loop() const { return *loop_; }

 private:
  explicit AuditConsumer(std::unique_ptr<events::ConsumerLoop> loop) : loop_(std::move(loop)) {}
  std::unique_ptr<events::ConsumerLoop> loop_;
};

}  // namespace medgrid::audit
