// FHIR R4 Subscriptions (subscription.html): criteria that are searches,
// notified over rest-hook or websocket.
//
// Invariants, in the order a change goes through them:
// - The service is a ChangeHandler on the process's ChangeBus. For each
//   committed change it finds the tenant's subscriptions on that type, runs
//   each one's criteria with `_id` of the changed resource as a search on
//   the tenant's shard, and queues a notification row per match in that
//   shard (store::Notification) before returning OK. The outbox relay
//   removes the change only after that, so a crash between commit and
//   queueing loses nothing; the row's key makes a change delivered twice
//   queue once.
// - A worker leases due rows (any instance may), delivers them, removes
//   them on success, and on failure reschedules them with a backoff; the
//   subscription's later notifications of that round wait as long. After
//   `max_failures` consecutive failures of one notification the
//   Subscription is set to status error (with Subscription.error) and its
//   queue is dropped.
// - An in-memory registry of every tenant's Subscriptions, loaded at start
//   and kept current from the same change stream. A requested Subscription
//   is set to active by the service (an update through the engine, If-Match
//   its version); off and error stop delivery and drop the queue.
//
//   SubscriptionService subs(config, engine, structures, store, clock, metrics);
//   RETURN_IF_ERROR(subs.Load());
//   bus.Register(&subs);  // before the relays start
//   subs.Start();
//   ...
//   subs.Stop();  // before the HTTP server stops
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/worker.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/events/change.h"
#include "medgrid/fhir/structure.h"
#include "medgrid/fhir/subscription.h"
#include "medgrid/store/store.h"
#include "medgrid/subscriptions/rest_hook.h"
#include "medgrid/subscriptions/websocket.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace medgrid::subscriptions {

struct SubscriptionConfig {
  // Consecutive failed deliveries of one notification after which the
  // Subscription is set to status error and its queue dropped.
  int max_failures = 10;
  // The pause after the first failure; it doubles with each further one, up
  // to max_backoff.
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{5 * 60 * 1000};
  // rest-hook deadlines: connect, and the whole exchange after it.
  RestHookTimeouts timeouts;
  // How long a websocket ping waits for its writes.
  std::chrono::milliseconds websocket_send_timeout{5000};
  // How often the worker looks for due notifications when nothing new was
  // queued in this process (retries, and other instances' rows).
  std::chrono::milliseconds poll_interval{1000};
  // How long claimed notifications stay hidden from other workers; longer
  // than a delivery round can take.
  std::chrono::milliseconds lease{60000};
  // Notifications claimed per shard and round.
  int batch = 100;
};

// The pause before the next delivery of a notification that failed
// `failures` times (>= 1): initial_backoff * 2^(failures-1), at most
// max_backoff.
std::chrono::milliseconds DeliveryBackoff(int failures, const SubscriptionConfig& config);

class SubscriptionService final : public events::ChangeHandler {
 public:
  // Every reference must outlive the service.
  SubscriptionService(SubscriptionConfig config, engine::FhirEngine& engine, const fhir::StructureRegistry& structures,
                      store::Store& store, const core::Clock& clock, prometheus::Registry& metrics);
  ~SubscriptionService() override;

  // Loads every tenant's Subscriptions (and activates requested ones).
  // Errors: the store's. Before Start and before changes are delivered;
  // when it fails (a shard unreachable at start-up), the worker tries again
  // each round, and changes are refused (so the relay redelivers them)
  // until it succeeds.
  absl::Status Load();
  // Queues the notifications of one committed change; an error has it
  // delivered again. Thread-safe.
  absl::Status Handle(const events::ChangeEvent& event) override;
  // Starts and stops the delivery worker; Stop also refuses websocket
  // pings, so call it before the HTTP server stops. Idempotent.
  void Start();
  void Stop();

  // The websocket channel: its upgrade handler goes on the HTTP server.
  WebsocketHub& websocket() { return hub_; }

  struct Stats {
    int64_t queued = 0;     // notifications queued by this process
    int64_t delivered = 0;  // delivered and removed
    int64_t failed = 0;     // failed deliveries, each try
    int64_t dropped = 0;    // removed undelivered: the subscription stopped or is gone
    int64_t errored = 0;    // subscriptions set to error by this process
  };
  Stats stats() const;
  // The subscription as the registry has it now (tests, operations).
  std::optional<fhir::SubscriptionSpec> Find(const std::string& tenant, const std::string& id) const;

 private:
  using Spec = std::shared_ptr<const fhir::SubscriptionSpec>;

  std::optional<std::chrono::milliseconds> Step();
  absl::Status Refresh(const std::string& tenant, const std::string& id);
  // Registers `resource` (a stored Subscription) and returns its spec;
  // nullptr when it cannot be parsed (it is forgotten).
  Spec Install(const std::string& tenant, const store::ResourceVersion& resource);
  void Forget(const std::string& tenant, const std::string& id);
  absl::Status Activate(const std::string& tenant, const fhir::SubscriptionSpec& spec);
  absl::StatusOr<bool> Matches(store::ResourceStore& shard, const std::string& tenant, const fhir::SubscriptionSpec& spec,
                               const std::string& id);
  absl::Status Deliver(store::ResourceStore& shard, const fhir::SubscriptionSpec& spec, const store::Notification& n);
  void SetError(const std::string& tenant, const std::string& id, const std::string& message);
  Spec Lookup(const std::string& tenant, const std::string& id) const;

  const SubscriptionConfig config_;
  engine::FhirEngine& engine_;
  const fhir::StructureRegistry& structures_;
  store::Store& store_;
  const core::Clock& clock_;
  WebsocketHub hub_;
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, Spec>> by_tenant_;  // guarded by mu_
  std::atomic<bool> loaded_{false};
  prometheus::Family<prometheus::Counter>& counters_;
  prometheus::Counter& queued_;
  prometheus::Counter& delivered_;
  prometheus::Counter& failed_;
  prometheus::Counter& dropped_;
  prometheus::Counter& errored_;
  core::Worker worker_;  // last: its thread uses everything above
};

}  // namespace medgrid::subscriptions
