// The change events of the all-in-one process: one outbox relay per shard,
// delivering to Kafka when brokers are configured and straight to the
// in-process ChangeBus otherwise (local mode); with Kafka, a consumer of the
// change topic feeds the bus. Subscriptions and cache invalidation register
// on the bus; either way they see each committed change at least once, in
// version order per resource.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"
#include "medgrid/events/change.h"
#include "medgrid/events/consumer_loop.h"
#include "medgrid/events/dedupe.h"
#include "medgrid/events/kafka.h"
#include "medgrid/events/relay.h"
#include "medgrid/store/store.h"
#include "prometheus/registry.h"

namespace medgrid::app {

class ChangeEvents {
 public:
  // Relays the outbox of every shard `store` knows at start-up. With
  // brokers, a consumer reads the change topic from this start on, and
  // commits as `consumer_group`. `handlers` are registered on the bus
  // before any change is delivered (they must outlive this object).
  static absl::StatusOr<std::unique_ptr<ChangeEvents>> Start(const events::KafkaConfig& kafka, store::Store& store,
                                                             const core::Clock& clock,
                                                             const std::string& consumer_group,
                                                             prometheus::Registry& metrics,
                                                             const std::vector<events::ChangeHandler*>& handlers = {});
  ~ChangeEvents();

  events::ChangeBus& bus() { return bus_; }
  // Reports `consumer` (another of this process's Kafka consumers) in the
  // metrics too. It must outlive this object.
  void Watch(const events::ConsumerLoop* consumer) { watched_.push_back(consumer); }
  // Refreshes the metrics (before a /metrics scrape).
  void UpdateMetrics();
  void Stop();

 private:
  explicit ChangeEvents(prometheus::Registry& metrics);

  events::ChangeBus bus_;
  events::VersionDeduper seen_;
  std::vector<std::unique_ptr<events::ChangeSink>> sinks_;  // one per relay, declared first: relays use them
  std::vector<std::unique_ptr<events::OutboxRelay>> relays_;
  std::unique_ptr<events::ConsumerLoop> consumer_;
  std::vector<const events::ConsumerLoop*> watched_;  // consumer_ and others, for metrics
  prometheus::Family<prometheus::Gauge>& relay_gauge_;
  prometheus::Family<prometheus::Gauge>& consumer_gauge_;
};

}  // namespace medgrid::app
