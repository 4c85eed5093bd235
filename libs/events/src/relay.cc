#include "medgrid/events/relay.h"

#include <algorithm>
#include <unordered_set>

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::events {
namespace {

ChangeEvent EventOf(store::OutboxRow& row, const std::string& shard) {
  ChangeEvent e;
  e.tenant = std::move(row.tenant);
  e.type = std::move(row.type);
  e.id = std::move(row.id);
  e.version = row.version;
  e.operation = std::string(OperationOf(row.method));
  e.changed_at = row.changed_at;
  e.body = std::move(row.body);
  e.shard = shard;
  e.outbox_seq = row.seq;
  return e;
}

}  // namespace

std::vector<absl::Status> HandlerSink::Deliver(const std::vector<ChangeEvent>& events) {
  std::vector<absl::Status> out;
  out.reserve(events.size());
  for (const ChangeEvent& e : events) out.push_back(handler_.Handle(e));
  return out;
}

absl::StatusOr<std::unique_ptr<KafkaSink>> KafkaSink::Create(const KafkaConfig& config, std::string topic) {
  ASSIGN_OR_RETURN(std::unique_ptr<Producer> producer, Producer::Create(config));
  return std::unique_ptr<KafkaSink>(new KafkaSink(config, std::move(topic), std::move(producer)));
}

std::vector<absl::Status> KafkaSink::Deliver(const std::vector<ChangeEvent>& events) {
  if (producer_->fatal()) {
    core::Log(core::LogLevel::kError, "kafka.producer_replaced", {{"topic", topic_}});
    absl::StatusOr<std::unique_ptr<Producer>> fresh = Producer::Create(config_);
    if (!fresh.ok()) return std::vector<absl::Status>(events.size(), fresh.status());
    producer_ = std::move(*fresh);
  }
  std::vector<OutMessage> messages;
  messages.reserve(events.size());
  for (const ChangeEvent& e : events) messages.push_back({topic_, e.Key(), EncodeChange(e)});
  return producer_->Publish(messages);
}

OutboxRelay::OutboxRelay(std::unique_ptr<store::Outbox> outbox, ChangeSink& sink, const core::Clock& clock,
                         RelayOptions options)
    : outbox_(std::move(outbox)), sink_(sink), clock_(clock), options_(std::move(options)) {}

OutboxRelay::~OutboxRelay() { Stop(); }

absl::StatusOr<int> OutboxRelay::RunOnce() {
  if (halted_) return absl::AbortedError("The relay was stopped before removing delivered rows");
  ASSIGN_OR_RETURN(bool leading, outbox_->TryLead());
  if (leading != leading_.exchange(leading)) {
    core::Log(core::LogLevel::kInfo, leading ? "outbox.relay_leads" : "outbox.relay_follows",
              {{"shard", outbox_->shard()}});
  }
  if (!leading) return 0;
  absl::StatusOr<std::vector<store::OutboxRow>> rows = outbox_->Pending(options_.batch, options_.include_body);
  if (!rows.ok()) {
    leading_ = false;  // a broken connection took the lead with it
    return rows.status();
  }
  if (rows->empty()) {
    oldest_pending_us_ = 0;
    return 0;
  }
  oldest_pending_us_ = std::max<int64_t>(0, core::ToUnixMicros(clock_.Now()) -
                                                core::ToUnixMicros(rows->front().changed_at));
  // The oldest pending change of each resource; its later ones wait.
  std::vector<ChangeEvent> events;
  std::unordered_set<std::string> keys;
  for (store::OutboxRow& row : *rows) {
    ChangeEvent e = EventOf(row, outbox_->shard());
    if (keys.insert(e.Key()).second) events.push_back(std::move(e));
  }
  const std::vector<absl::Status> results = sink_.Deliver(events);
  std::vector<int64_t> delivered;
  absl::Status first_failure;
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (results[i].ok()) {
      delivered.push_back(events[i].outbox_seq);
    } else if (first_failure.ok()) {
      first_failure = results[i];
    }
  }
  failed_ += events.size() - delivered.size();
  if (options_.before_remove && !options_.before_remove(delivered)) {
    halted_ = true;
    return absl::AbortedError("The relay was stopped before removing delivered rows");
  }
  RETURN_IF_ERROR(outbox_->Remove(delivered));
  delivered_ += delivered.size();
  if (!first_failure.ok()) {
    core::Log(core::LogLevel::kWarn, "outbox.delivery_failed",
              {{"shard", outbox_->shard()},
               {"failed", std::to_string(events.size() - delivered.size())},
               {"error", std::string(first_failure.message())}});
    // Only a round that delivered nothing is a failure (and makes the relay
    // pause): one resource's failing change must not slow the others.
    if (delivered.empty()) return first_failure;
  }
  return static_cast<int>(delivered.size());
}

std::optional<std::chrono::milliseconds> OutboxRelay::Step() {
  absl::StatusOr<int> moved = RunOnce();
  if (halted_) return std::nullopt;
  if (!moved.ok()) return backoff_ = core::NextBackoff(backoff_);
  backoff_ = std::chrono::milliseconds(0);
  if (!leading_) return options_.lead_retry;
  return *moved == 0 ? options_.idle_poll : std::chrono::milliseconds(0);
}

OutboxRelay::Stats OutboxRelay::stats() const {
  Stats s;
  s.delivered = delivered_.load();
  s.failed = failed_.load();
  s.oldest_pending_us = oldest_pending_us_.load();
  s.leading = leading_.load();
  return s;
}

}  // namespace medgrid::events
