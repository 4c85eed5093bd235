#include "medgrid/audit/service.h"

#include "medgrid/core/status.h"

namespace medgrid::audit {

absl::StatusOr<std::unique_ptr<AuditConsumer>> AuditConsumer::Start(const events::KafkaConfig& kafka,
                                                                    AuditSink& ledger) {
  ASSIGN_OR_RETURN(std::unique_ptr<events::Consumer> consumer, events::Consumer::Create(kafka, kAuditConsumerGroup));
  RETURN_IF_ERROR(consumer->Subscribe({kAuditTopic}));
  // Batches of up to 1,000: one signed tree head per tenant per batch.
  auto loop = std::make_unique<events::ConsumerLoop>("audit", std::move(consumer), AuditMessageHandler(ledger), 1000);
  loop->Start();
  return std::unique_ptr<AuditConsumer>(new AuditConsumer(std::move(loop)));
}

AuditConsumer::~AuditConsumer() { Stop(); }

void AuditConsumer::Stop() { loop_->Stop(); }

}  // namespace medgrid::audit
