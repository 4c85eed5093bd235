#include "medgrid/audit/sink.h"

#include <map>

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/events/v1/audit_recorded.pb.h"

namespace medgrid::audit {

absl::Status LedgerSink::Deliver(const std::vector<PendingEvent>& events) {
  // Per tenant, in arrival order: the events, their ids, their facts.
  struct Batch {
    std::vector<std::string> entries;
    std::vector<std::string> ids;
    std::vector<EventFacts> facts;
  };
  std::map<std::string, Batch> by_tenant;
  for (const PendingEvent& e : events) {
    Batch& b = by_tenant[e.tenant];
    b.entries.push_back(e.json);
    b.ids.push_back(e.id);
    EventFacts facts;
    if (ParseFactsLine(e.facts, facts)) {
      facts.event_id = e.id;
      b.facts.push_back(std::move(facts));
    }
  }
  for (const auto& [tenant, b] : by_tenant) {
    absl::StatusOr<ledger::LedgerStore::Appended> appended = ledger_.Append(tenant, b.entries, &b.ids);
    if (!appended.ok()) return appended.status();
    if (index_ != nullptr) RETURN_IF_ERROR(index_->Put(tenant, b.facts));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KafkaAuditSink>> KafkaAuditSink::Create(const events::KafkaConfig& config) {
  ASSIGN_OR_RETURN(std::unique_ptr<events::Producer> producer, events::Producer::Create(config));
  return std::unique_ptr<KafkaAuditSink>(new KafkaAuditSink(config, std::move(producer)));
}

absl::Status KafkaAuditSink::Deliver(const std::vector<PendingEvent>& events) {
  if (producer_->fatal()) {
    core::Log(core::LogLevel::kError, "kafka.producer_replaced", {{"topic", kAuditTopic}});
    ASSIGN_OR_RETURN(producer_, events::Producer::Create(config_));
  }
  std::vector<events::OutMessage> messages;
  messages.reserve(events.size());
  for (const PendingEvent& e : events) {
    messages.push_back({kAuditTopic, core::StrCat(e.tenant, "/AuditEvent/", e.id), EncodeAuditRecorded(e)});
  }
  for (const absl::Status& s : producer_->Publish(messages)) RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

std::string EncodeAuditRecorded(const PendingEvent& event) {
  events::v1::AuditRecorded m;
  m.set_event_id(event.id);
  m.set_tenant(event.tenant);
  m.set_audit_event(event.json);
  m.set_facts(event.facts);
  return m.SerializeAsString();
}

absl::StatusOr<PendingEvent> DecodeAuditRecorded(std::string_view bytes) {
  events::v1::AuditRecorded m;
  if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || m.event_id().empty() || m.tenant().empty() ||
      m.audit_event().empty()) {
    return absl::InvalidArgumentError("Not a medgrid.events.v1.AuditRecorded");
  }
  return PendingEvent{m.tenant(), m.event_id(), m.facts(), m.audit_event()};
}

events::Consumer::Handler AuditMessageHandler(AuditSink& ledger) {
  return [&ledger](const std::vector<events::InMessage>& messages) -> absl::Status {
    std::vector<PendingEvent> batch;
    batch.reserve(messages.size());
    for (const events::InMessage& m : messages) {
      absl::StatusOr<PendingEvent> e = DecodeAuditRecorded(m.value);
      if (!e.ok()) {
        core::Log(core::LogLevel::kError, "kafka.message_malformed",
                  {{"topic", m.topic}, {"partition", std::to_string(m.partition)}, {"offset", std::to_string(m.offset)}});
        continue;
      }
      batch.push_back(std::move(*e));
    }
    return batch.empty() ? absl::OkStatus() : ledger.Deliver(batch);
  };
}

}  // namespace medgrid::audit
