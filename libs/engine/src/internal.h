// Helpers shared by the FhirEngine source files.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "medgrid/core/clock.h"
#include "medgrid/core/request_context.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/search/query.h"
#include "medgrid/store/resource_store.h"

namespace medgrid::fhir {
class SearchParamRegistry;
}  // namespace medgrid::fhir

namespace medgrid::engine {

// While alive, FhirEngine::ParamsFor(tenant) on this thread answers with
// `params` instead of looking them up. A write pins its tenant's registry
// before it opens a transaction, so that indexing inside the transaction
// never needs a second database connection: behind PgBouncer's small
// server pool, transactions each waiting for one more connection while
// holding one would wait for each other until PgBouncer gives up. Scopes
// nest; lives on the stack.
class ParamsPin {
 public:
  ParamsPin(std::string tenant, std::shared_ptr<const fhir::SearchParamRegistry> params);
  ~ParamsPin();
  ParamsPin(const ParamsPin&) = delete;
  ParamsPin& operator=(const ParamsPin&) = delete;
  // The registry pinned for `tenant` on this thread, or null.
  static std::shared_ptr<const fhir::SearchParamRegistry> Find(const std::string& tenant);

 private:
  ParamsPin* const previous_;
  const std::string tenant_;
  const std::shared_ptr<const fhir::SearchParamRegistry> params_;
};


ResourceResult ToResult(store::ResourceVersion&& v);

// 410 for a resource whose current version (`version`) is a deletion.
absl::Status Gone(const std::string& type, const std::string& id, int64_t version);
// 412 when `if_match` is set and is not the current version.
absl::Status CheckIfMatch(std::optional<int64_t> if_match, const std::optional<store::ResourceVersion>& current);
// 412 for conditional criteria that match several resources of `type`.
absl::Status MultipleMatches(const std::string& type);
// The advisory lock key of conditional criteria: the same for the same
// parameters in any order.
std::string LockKey(const std::string& type, const QueryParams& criteria);

// The 409 (in flight) or 422 (another request's key) answer of an
// idempotency key, noted in the request context for the gateway.
absl::Status IdempotencyRefusal(store::IdempotentResult::Outcome outcome);
// Notes what a key did in the request context (kRecorded, kReplayed).
void MarkIdempotency(core::IdempotencyOutcome outcome);

// Where a single-resource write runs: by itself on the shard, or inside the
// transaction that records the request's idempotency key (idempotency.cc).
// The calls mean what the ResourceStore calls of the same names mean.
class WriteTarget {
 public:
  virtual ~WriteTarget() = default;
  virtual absl::StatusOr<store::ResourceVersion> Create(const store::ResourceKey& key, const store::BodyFn& body) = 0;
  virtual absl::StatusOr<store::ResourceVersion> Update(const store::ResourceKey& key, const std::string& method,
                                                        const store::BodyFn& body) = 0;
  // Conditional create and update (a DecideFn that deletes is refused).
  virtual absl::StatusOr<std::optional<store::ResourceVersion>> Conditional(const std::string& tenant,
                                                                            const search::SearchRequest& match,
                                                                            const std::string& lock_key,
                                                                            const store::DecideFn& decide) = 0;
};

}  // namespace medgrid::engine
