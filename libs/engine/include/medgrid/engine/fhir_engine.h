// The in-process FhirApi: validation, versioning and storage on the
// tenant's shard.
//
//   engine::FhirEngine engine(registry, store, clock);
//   ASSIGN_OR_RETURN(auto created, engine.Create("demo", "Patient", body));
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <vector>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "medgrid/core/clock.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/fhir/compartments.h"
#include "medgrid/fhir/search_params.h"
#include "medgrid/search/query.h"
#include "medgrid/fhir/structure.h"
#include "medgrid/fhir/validator.h"
#include "medgrid/store/store.h"

namespace medgrid::engine {

class WriteTarget;  // internal.h

struct EngineOptions {
  // Limits of a batch or transaction Bundle; larger ones get 413.
  std::size_t max_bundle_entries = 10'000;
  std::size_t max_bundle_bytes = 16 * 1024 * 1024;
  // How long the response of a request with an Idempotency-Key is kept to
  // answer its retries (the seed's 24 h).
  std::chrono::milliseconds idempotency_ttl{std::chrono::hours(24)};
};

class FhirEngine final : public FhirApi {
 public:
  // All references must outlive the engine. Thread-safe.
  FhirEngine(const fhir::StructureRegistry& registry, const fhir::SearchParamRegistry& search_params,
             const fhir::CompartmentRegistry& compartments, store::Store& store, const core::Clock& clock,
             EngineOptions options = {});

  absl::StatusOr<ResourceResult> Create(const std::string& tenant, const std::string& type,
                                        const std::string& body) override;
  absl::StatusOr<ResourceResult> Read(const std::string& tenant, const std::string& type,
                                      const std::string& id) override;
  absl::StatusOr<ResourceResult> VRead(const std::string& tenant, const std::string& type, const std::string& id,
                                       int64_t version) override;
  bool ServesWithoutBlocking(const std::string& tenant) override { return store_.TenantCached(tenant); }
  void CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                   boost::asio::io_context& io, ResultCallback done) override;
  void ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                 std::optional<int64_t> version, boost::asio::io_context& io, ResultCallback done) override;
  absl::StatusOr<ResourceResult> Update(const std::string& tenant, const std::string& type, const std::string& id,
                                        const std::string& body, std::optional<int64_t> if_match) override;
  absl::StatusOr<ResourceResult> Patch(const std::string& tenant, const std::string& type, const std::string& id,
                                       const std::string& patch, std::optional<int64_t> if_match) override;
  absl::StatusOr<ResourceResult> Delete(const std::string& tenant, const std::string& type, const std::string& id,
                                        std::optional<int64_t> if_match) override;
  absl::StatusOr<std::string> History(const std::string& tenant, const HistoryRequest& request) override;
  // search.cc
  absl::StatusOr<std::string> Search(const std::string& tenant, const SearchInput& input) override;
  absl::StatusOr<std::string> ExplainSearch(const std::string& tenant, const std::string& type,
                                            const QueryParams& params) override;
  absl::StatusOr<std::string> StartReindex(const std::string& tenant, const std::vector<std::string>& types) override;
  absl::StatusOr<std::string> ReindexStatus(const std::string& tenant) override;
  // everything.cc
  absl::StatusOr<std::string> Everything(const std::string& tenant, const EverythingInput& input) override;

  // The tenant's search parameters (never null; the standard ones when its
  // own cannot be loaded, which is logged).
  std::shared_ptr<const fhir::SearchParamRegistry> ParamsFor(const std::string& tenant) const;
  // Forgets the cached parameters of `tenant`.
  void InvalidateParams(const std::string& tenant) const;
  // Computes index entries with the tenant's current parameters, for reindexing.
  store::IndexFn IndexerFor(const std::string& tenant) const;
  absl::StatusOr<ResourceResult> ConditionalCreate(const std::string& tenant, const std::string& type,
                                                   const std::string& body, const QueryParams& criteria) override;
  absl::StatusOr<ResourceResult> ConditionalUpdate(const std::string& tenant, const std::string& type,
                                                   const QueryParams& criteria, const std::string& body) override;
  absl::StatusOr<std::optional<ResourceResult>> ConditionalDelete(const std::string& tenant, const std::string& type,
                                                                  const QueryParams& criteria) override;
  absl::StatusOr<std::string> Capabilities(const std::string& tenant, const std::string& base_url) override;
  absl::StatusOr<std::string> ProcessBundle(const std::string& tenant, const BundleInput& input) override;  // bundle.cc

 private:
  // Where a search reads its pages: the shard, or an open transaction.
  using Searcher = std::function<absl::StatusOr<store::SearchPage>(const search::SearchRequest&,
                                                                    const std::optional<store::Compartment>&)>;
  absl::StatusOr<std::string> SearchWith(const std::string& tenant, const SearchInput& input, const Searcher& searcher);
  // What a search found, before it becomes a Bundle.
  struct SearchResult {
    std::vector<store::ResourceVersion> matches;
    std::vector<store::ResourceVersion> included;
    std::vector<std::string> warnings;    // for an OperationOutcome entry
    std::optional<std::string> next;      // the next page's _cursor
    std::optional<std::string> previous;  // the previous page's _cursor
    std::optional<int64_t> total;         // when known
    search::SearchRequest subset;         // only summary and elements set
  };
  // One page of the search `input` describes.
  absl::StatusOr<SearchResult> Gather(const std::string& tenant, const SearchInput& input, const Searcher& searcher);
  // The searchset Bundle of `result`. Links point at `path`: self with
  // `params`, the others with params' _cursor replaced.
  std::string RenderSearchset(const SearchResult& result, const std::string& base_url, const std::string& path,
                              const QueryParams& params) const;
  // One $everything page over a page of patients (everything.cc).
  absl::StatusOr<std::string> EverythingOfPatients(const std::string& tenant, const EverythingInput& input);
  // History over `history`; `exists` tells a resource with no versions
  // since _since from an unknown one (its key's tenant is left empty).
  absl::StatusOr<std::string> HistoryWith(
      const HistoryRequest& request,
      const std::function<absl::StatusOr<store::HistoryPage>(const store::HistoryQuery&)>& history,
      const std::function<absl::Status(const store::ResourceKey&)>& exists);

  // Bundle processing (bundle.cc).
  struct BundleEntry;
  struct EntryResult;
  // Runs `entries` (indexes into `all`) in one database transaction on the
  // shard, filling their `results` when it commits.
  absl::Status RunEntries(const std::string& tenant, const BundleInput& input, std::vector<BundleEntry>& all,
                          const std::vector<std::size_t>& entries, std::vector<EntryResult>& results);
  absl::Status ExecuteEntries(store::TransactionScope& scope, const std::string& tenant, const BundleInput& input,
                              std::vector<BundleEntry>& all, const std::vector<std::size_t>& entries,
                              std::vector<EntryResult>& results);
  // The batch-response or transaction-response Bundle.
  std::string RenderBundleResponse(bool transaction, const BundleInput& input, const std::vector<BundleEntry>& entries,
                                   const std::vector<EntryResult>& results) const;
  absl::StatusOr<EntryResult> ExecuteGet(store::TransactionScope& scope, const std::string& tenant,
                                         const BundleInput& input, const BundleEntry& e);

  // Idempotency keys (idempotency.cc). The key the gateway put in this
  // thread's request context, taken so that no nested call uses it again.
  std::optional<store::IdempotencyKey> TakeIdempotencyKey() const;
  // Runs a single-resource write `fn`: on the shard directly without a key;
  // with one, inside the transaction that records its response, or not at
  // all when the key answers by itself (a replay of the recorded response,
  // 422 for another request's key, 409 while the key is in flight).
  using WriteFn = std::function<absl::StatusOr<ResourceResult>(WriteTarget&)>;
  absl::StatusOr<ResourceResult> Write(store::ResourceStore& shard, const std::string& tenant, const WriteFn& fn);

  absl::Status CheckType(const std::string& type) const;
  // Everything a create does before storage: the shard, the validated
  // resource, the new id and a function stamping the stored body.
  struct PreparedCreate {
    store::ResourceStore* shard;
    store::ResourceKey key;
    store::BodyFn body;
  };
  absl::StatusOr<PreparedCreate> PrepareCreate(const std::string& tenant, const std::string& type,
                                               const std::string& body) const;
  // Parses and validates a resource body for `type`.
  absl::StatusOr<boost::json::value> ParseResource(const std::string& type, const std::string& body) const;
  // Structural validation, and for SearchParameter resources the checks that
  // make them usable as the tenant's own search parameters.
  absl::Status ValidateResource(const std::string& tenant, const boost::json::value& resource,
                                int http_status) const;
  absl::Status CheckSearchParameter(const std::string& tenant, const boost::json::value& resource) const;
  // For Subscription resources: a supported channel and endpoint, and
  // criteria that parse as a search of a known type (params.cc).
  absl::Status CheckSubscription(const std::string& tenant, const boost::json::value& resource,
                                 int http_status) const;

  // The stored body and search index entries of a resource version.
  store::StoredBody Stored(const std::string& tenant, const boost::json::value& resource, const std::string& type,
                           const std::string& id, int64_t version, core::TimePoint now) const;

  // Parses a search of `type`, resolving references to this server's base.
  absl::StatusOr<search::SearchRequest> ParseSearch(const std::string& tenant, const QueryParams& params,
                                                    const std::string& type, bool lenient,
                                                    const std::string& base_url) const;
  // The criteria of a conditional interaction: a search that reads at most
  // two matches. Errors: 400 for no criteria or for result parameters.
  absl::StatusOr<search::SearchRequest> ParseCriteria(const std::string& tenant, const QueryParams& criteria,
                                                      const std::string& type) const;
  // A resource body shaped by _summary / _elements.
  std::string Subset(const std::string& body, const std::string& type, const search::SearchRequest& request) const;

  const fhir::StructureRegistry& registry_;
  const fhir::SearchParamRegistry& search_params_;
  const fhir::CompartmentRegistry& compartments_;
  // Each tenant's search parameters: the standard ones plus its own
  // SearchParameter resources, reloaded when one of those is written here
  // or after kParamsTtl (a write through another instance).
  struct TenantParams {
    std::shared_ptr<const fhir::SearchParamRegistry> registry;
    std::chrono::steady_clock::time_point loaded;
  };
  mutable std::mutex params_mu_;
  mutable std::map<std::string, TenantParams, std::less<>> params_;  // guarded by params_mu_
  fhir::Validator validator_;
  store::Store& store_;
  const core::Clock& clock_;
  const EngineOptions options_;
};

// Returns `resource` with id and meta.versionId/lastUpdated set, other meta
// elements kept, serialized with resourceType, id and meta first.
std::string StampResource(const boost::json::object& resource, const std::string& id, int64_t version,
                          core::TimePoint last_updated);

}  // namespace medgrid::engine
