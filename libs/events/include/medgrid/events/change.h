// Committed changes of resources as events: the in-process form, its wire
// form (medgrid.events.v1.ResourceChanged, proto/medgrid/events/v1), and the
// interface their consumers implement.
//
// Whatever carries them (the outbox relay in-process in local mode, or Kafka
// and a consumer), changes reach handlers at least once, in version order
// per resource; a handler that must act once drops repeats (dedupe.h).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"

namespace medgrid::events {

// The Kafka topic of change events.
inline constexpr const char* kResourceChangedTopic = "medgrid.resource.changed";

struct ChangeEvent {
  std::string tenant;
  std::string type;
  std::string id;
  int64_t version = 0;
  std::string operation;  // create, update, patch or delete
  core::TimePoint changed_at;
  std::optional<std::string> body;  // the resource JSON, per the tenant's policy
  std::string shard;
  int64_t outbox_seq = 0;

  // "tenant/type/id": the Kafka key, one partition per resource.
  std::string Key() const;
  // "tenant/type/id/_history/version": the same on every delivery.
  std::string EventId() const;
};

// The operation of a version written with `method` (POST, PUT, PATCH, DELETE).
std::string_view OperationOf(std::string_view method);

// The protobuf bytes of an event, and back. Decode fails on bytes that are
// not a ResourceChanged with a tenant, type, id and version.
std::string EncodeChange(const ChangeEvent& event);
absl::StatusOr<ChangeEvent> DecodeChange(std::string_view bytes);

// What consumes changes: cache invalidation, subscriptions, analytics. A
// handler returns an error to have the event delivered again later.
class ChangeHandler {
 public:
  virtual ~ChangeHandler() = default;
  virtual absl::Status Handle(const ChangeEvent& event) = 0;
};

// Hands each change to every registered handler, in registration order.
// The relay delivers to it directly in local mode; with Kafka, a consumer
// of kResourceChangedTopic does. Handlers are registered before delivery
// starts and outlive the bus.
class ChangeBus final : public ChangeHandler {
 public:
  void Register(ChangeHandler* handler);
  // The first handler error, after every handler has seen the event.
  absl::Status Handle(const ChangeEvent& event) override;
  uint64_t delivered() const;

 private:
  mutable std::mutex mu_;
  std::vector<ChangeHandler*> handlers_;  // guarded by mu_
  uint64_t delivered_ = 0;                // guarded by mu_
};

}  // namespace medgrid::events
