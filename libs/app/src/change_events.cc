#include "change_events.h"

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "prometheus/gauge.h"

namespace medgrid::app {

ChangeEvents::ChangeEvents(prometheus::Registry& metrics)
    : relay_gauge_(prometheus::BuildGauge()
                       .Name("medgrid_outbox_relay")
                       .Help("Outbox relay per shard: delivered (changes delivered and removed), failed (deliveries "
                             "that failed, each try), oldest_pending_seconds (age of the oldest undelivered change "
                             "at the last read), leading (1 when this instance relays the shard)")
                       .Register(metrics)),
      consumer_gauge_(prometheus::BuildGauge()
                          .Name("medgrid_events_consumer")
                          .Help("Kafka consumers of this process: handled (messages), failures (batches retried), "
                                "lag (messages not yet handled)")
                          .Register(metrics)) {}

ChangeEvents::~ChangeEvents() { Stop(); }

absl::StatusOr<std::unique_ptr<ChangeEvents>> ChangeEvents::Start(const events::KafkaConfig& kafka,
                                                                 store::Store& store, const core::Clock& clock,
                                                                 const std::string& consumer_group,
                                                                 prometheus::Registry& metrics,
                                                                 const std::vector<events::ChangeHandler*>& handlers) {
  std::unique_ptr<ChangeEvents> c(new ChangeEvents(metrics));
  for (events::ChangeHandler* handler : handlers) c->bus_.Register(handler);
  if (!kafka.brokers.empty()) {
    // This process's consumers want the changes made since it started:
    // what it caches, it caches after that (no group, no history).
    ASSIGN_OR_RETURN(std::unique_ptr<events::Consumer> consumer, events::Consumer::Create(kafka, consumer_group));
    const core::TimePoint started = clock.Now();
    c->consumer_ = std::make_unique<events::ConsumerLoop>(
        "changes", std::move(consumer), events::ChangeMessageHandler(c->bus_, c->seen_), 500,
        [started](events::Consumer& consumer) {
          return consumer.AssignFromTime(events::kResourceChangedTopic, started, std::chrono::seconds(10));
        });
    c->consumer_->Start();
    c->watched_.push_back(c->consumer_.get());
  }
  events::RelayOptions options;
  // The tenant's policy, from the store's tenant cache.
  options.include_body = [&store](const std::string& tenant) {
    absl::StatusOr<store::TenantInfo> t = store.Tenant(tenant);
    return t.ok() && t->events_include_body;
  };
  for (store::ResourceStore* shard : store.AllShards()) {
    // A sink (a producer) per relay: the relays' rounds do not wait on each
    // other's delivery reports.
    std::unique_ptr<events::ChangeSink> sink;
    if (kafka.brokers.empty()) {
      sink = std::make_unique<events::HandlerSink>(c->bus_);
    } else {
      ASSIGN_OR_RETURN(sink, events::KafkaSink::Create(kafka));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<store::Outbox> outbox, shard->OpenOutbox());
    c->relays_.push_back(std::make_unique<events::OutboxRelay>(std::move(outbox), *sink, clock, options));
    c->sinks_.push_back(std::move(sink));
    c->relays_.back()->Start();
  }
  core::Log(core::LogLevel::kInfo, "events.on",
            {{"delivery", kafka.brokers.empty() ? "in-process" : "kafka"},
             {"shards", std::to_string(c->relays_.size())}});
  return c;
}

void ChangeEvents::UpdateMetrics() {
  for (const auto& relay : relays_) {
    const std::string& shard = relay->shard();
    const events::OutboxRelay::Stats st = relay->stats();
    relay_gauge_.Add({{"shard", shard}, {"state", "delivered"}}).Set(static_cast<double>(st.delivered));
    relay_gauge_.Add({{"shard", shard}, {"state", "failed"}}).Set(static_cast<double>(st.failed));
    relay_gauge_.Add({{"shard", shard}, {"state", "oldest_pending_seconds"}}).Set(st.oldest_pending_us / 1e6);
    relay_gauge_.Add({{"shard", shard}, {"state", "leading"}}).Set(st.leading ? 1 : 0);
  }
  for (const events::ConsumerLoop* consumer : watched_) {
    const events::ConsumerLoop::Stats st = consumer->stats();
    const std::string& name = consumer->name();
    consumer_gauge_.Add({{"consumer", name}, {"state", "handled"}}).Set(static_cast<double>(st.handled));
    consumer_gauge_.Add({{"consumer", name}, {"state", "failures"}}).Set(static_cast<double>(st.failures));
    consumer_gauge_.Add({{"consumer", name}, {"state", "lag"}}).Set(static_cast<double>(st.lag));
  }
}

void ChangeEvents::Stop() {
  for (auto& relay : relays_) relay->Stop();
  if (consumer_) consumer_->Stop();
}

}  // namespace medgrid::app
