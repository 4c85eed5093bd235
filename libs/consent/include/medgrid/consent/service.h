// The consent service: the registry of patients' privacy Consents and the
// decisions made from it, behind ConsentApi (in-process in the all-in-one
// binary; a gRPC client would implement the same interface).
//
// The registry is its own PostgreSQL database (medgrid_consent): one row per
// Consent resource of a tenant, fed from the FHIR store's committed changes
// (the ChangeBus, at least once, in version order) and, for read-your-writes,
// directly after a Consent is written through this process. It keeps the
// latest version only and ignores older ones, so the two feeds can race.
//
// A decision reads the patient's Consents through two caches: L1 in-process
// (parsed, TTL 60 s) and Redis (5-15 min), both invalidated when one of the
// patient's Consents changes: the L1 entry here, the Redis entry through a
// per-patient epoch (so a late fill cannot bring back an old set), and the
// L1 of other instances through Redis pub/sub. Registry reads run on the
// service's own threads under a deadline and a circuit breaker (the seed's
// consent settings); when they fail or time out the decision is
// Unavailable, which callers turn into a fail-closed 503.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/consent/evaluator.h"
#include "medgrid/core/clock.h"
#include "medgrid/events/change.h"
#include "medgrid/resilience/circuit_breaker.h"

namespace prometheus {
class Registry;
}

namespace medgrid::cache {
class RedisClient;
}

namespace medgrid::consent {

class ConsentApi {
 public:
  virtual ~ConsentApi() = default;
  // The decision for `request` under the tenant's default `policy`.
  // Unavailable when the registry cannot answer within the deadline, or
  // the breaker is open.
  virtual absl::StatusOr<Decision> Decide(const std::string& tenant, DefaultPolicy policy,
                                          const AccessRequest& request) = 0;
  // The same from what is cached in this process only, without blocking
  // (for I/O threads); nullopt when Decide would have to look further.
  virtual std::optional<Decision> DecideIfCached(const std::string& tenant, DefaultPolicy policy,
                                                 const AccessRequest& request) = 0;
  // Whether the patient has any privacy Consent, from this process's cache
  // only; nullopt when that is not cached. With none, the tenant's policy
  // decides without looking at the resource.
  virtual std::optional<bool> HasConsentsCached(const std::string& tenant, const std::string& patient) = 0;
  // A Consent was written (`body`, the resource JSON) or deleted (nullopt)
  // at `version`. Updates the registry and invalidates the caches of the
  // patients concerned (before and after).
  virtual absl::Status Record(const std::string& tenant, const std::string& id, int64_t version,
                              const std::optional<std::string>& body) = 0;
};

struct ConsentServiceConfig {
  // libpq DSN of the registry database. Required.
  std::string dsn;
  // How long a decision may wait for the registry.
  std::chrono::milliseconds deadline{250};
  // Registry connections (and the threads that use them).
  int pool_size = 4;
  // Registry reads queued beyond this are refused at once.
  int max_queue = 64;
  std::chrono::microseconds l1_ttl = std::chrono::seconds(60);
  std::size_t l1_max_entries = 100000;
  std::chrono::seconds redis_ttl{600};
  // After a Redis error, L2 is skipped for this long.
  std::chrono::milliseconds redis_backoff{1000};
  // Namespaces this deployment's Redis keys and channel.
  std::string redis_prefix = "mg";
  resilience::BreakerSettings breaker = resilience::ForDependency("consent");
};

// Reads a Consent version's body for a change event that does not carry it:
// the body, nullopt for a deleted version, or an error to retry later.
using ConsentFetcher = std::function<absl::StatusOr<std::optional<std::string>>(
    const std::string& tenant, const std::string& id, int64_t version)>;

class ConsentService final : public ConsentApi, public events::ChangeHandler {
 public:
  // Creates the registry's table when missing. `redis` may be null (no L2).
  // Errors: the registry cannot be reached at start.
  static absl::StatusOr<std::unique_ptr<ConsentService>> Open(ConsentServiceConfig config,
                                                              std::shared_ptr<cache::RedisClient> redis,
                                                              ConsentFetcher fetch, const core::Clock& clock,
                                                              prometheus::Registry& metrics);
  ~ConsentService() override;

  absl::StatusOr<Decision> Decide(const std::string& tenant, DefaultPolicy policy,
                                  const AccessRequest& request) override;
  std::optional<Decision> DecideIfCached(const std::string& tenant, DefaultPolicy policy,
                                         const AccessRequest& request) override;
  std::optional<bool> HasConsentsCached(const std::string& tenant, const std::string& patient) override;
  absl::Status Record(const std::string& tenant, const std::string& id, int64_t version,
                      const std::optional<std::string>& body) override;
  // Consent changes from the FHIR store's outbox.
  absl::Status Handle(const events::ChangeEvent& event) override;

  // Drops the cached Consents of one patient, here, in Redis and (by
  // pub/sub) on other instances.
  void Invalidate(const std::string& tenant, const std::string& patient);

  struct Stats {
    uint64_t l1_hits = 0;
    uint64_t l2_hits = 0;
    uint64_t misses = 0;        // read from the registry
    uint64_t failures = 0;      // registry failed, timed out, or breaker open
    uint64_t redis_errors = 0;  // L2 bypassed
    uint64_t registry_us = 0;   // time spent on registry reads (misses and failures)
  };
  Stats stats() const;
  resilience::BreakerState breaker_state();

 private:
  struct Impl;
  explicit ConsentService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::consent
