// FhirApi: the FHIR server's interface, independent of transport.
//
// The all-in-one binary uses the in-process FhirEngine (fhir_engine.h); the
// split deployment will put a gRPC client behind the same interface. Every
// call names the tenant, and implementations scope all data access by it.
//
//   ASSIGN_OR_RETURN(engine::ResourceResult r, api.Read("demo", "Patient", "p1"));
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"

namespace boost::asio {
class io_context;
}

namespace medgrid::engine {

// One resource version as returned by an interaction.
struct ResourceResult {
  bool created = false;  // the write made the first live version (201)
  std::string type;
  std::string id;
  int64_t version = 0;
  core::TimePoint last_updated;
  bool deleted = false;
  std::string body;  // resource JSON with meta; empty when deleted
};

struct HistoryRequest {
  std::optional<std::string> type;
  std::optional<std::string> id;
  std::optional<core::TimePoint> since;
  int count = 50;                     // page size, 1..1000
  std::optional<int64_t> cursor;      // opaque paging cursor from a next link
  std::string base_url;               // e.g. http://host/fhir/demo, for fullUrl and links
  std::string self_query;             // query string of this request, for the self link
};

using ResultCallback = std::function<void(absl::StatusOr<ResourceResult>)>;

// Decoded query parameters, in the order received.
using QueryParams = std::vector<std::pair<std::string, std::string>>;

struct SearchInput {
  std::string type;            // the type searched; empty for system-level search (types from _type)
  std::string compartment;     // compartment search (Patient/123/Observation): "Patient"
  std::string compartment_id;  // ... and "123"
  bool all_types = false;      // compartment search over "*"
  QueryParams params;
  bool lenient = false;        // Prefer: handling=lenient
  std::string base_url;        // e.g. http://host/fhir/demo, for fullUrl and links
};

// Patient/$everything (patient-operation-everything.html).
struct EverythingInput {
  std::string id;              // the patient; empty for the type level (every patient)
  QueryParams params;          // _since, _type, _count, and _cursor from a next link
  std::string base_url;        // e.g. http://host/fhir/demo, for fullUrl and links
};

// A batch or transaction Bundle posted to the tenant base.
struct BundleInput {
  std::string body;            // the Bundle, JSON text
  std::string base_url;        // e.g. http://host/fhir/demo: fullUrls, and request urls given absolutely
  std::string prefer_return;   // Prefer: return=minimal | representation (default) | operationoutcome
};

class FhirApi {
 public:
  virtual ~FhirApi() = default;

  // Errors common to all calls: NotFound (404) for an unknown tenant or
  // resource type; Unavailable (503) / DeadlineExceeded (504) from storage.

  // Creates a resource with a server-assigned id. `body` is JSON text.
  // Errors: InvalidArgument (400) for malformed JSON, a resourceType that
  // does not match `type`, or structural validation failures.
  virtual absl::StatusOr<ResourceResult> Create(const std::string& tenant, const std::string& type,
                                                const std::string& body) = 0;
  // Create without blocking, on `io` as ReadAsync.
  virtual void CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                           boost::asio::io_context& io, ResultCallback done) = 0;
  // Errors: NotFound (404); Gone (410, as FailedPrecondition with HTTP 410)
  // when the current version is a deletion.
  virtual absl::StatusOr<ResourceResult> Read(const std::string& tenant, const std::string& type,
                                              const std::string& id) = 0;
  // Errors: NotFound (404); 410 for the version that records a deletion.
  virtual absl::StatusOr<ResourceResult> VRead(const std::string& tenant, const std::string& type,
                                               const std::string& id, int64_t version) = 0;
  // True when ReadAsync and CreateAsync for `tenant` can run without
  // blocking (its shard is known without asking the control database).
  virtual bool ServesWithoutBlocking(const std::string& tenant) = 0;
  // Read (version unset) or VRead without blocking the calling I/O thread:
  // the storage query runs on `io`, which must be the io_context driving
  // this thread, and `done` is called on this thread (possibly before
  // ReadAsync returns) with what Read or VRead would return.
  virtual void ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                         std::optional<int64_t> version, boost::asio::io_context& io, ResultCallback done) = 0;
  // Update, or create with the client's id. Errors as Create, plus 400 when
  // the body id is missing or differs from `id`, and 412 when `if_match` is
  // set and differs from the current version.
  virtual absl::StatusOr<ResourceResult> Update(const std::string& tenant, const std::string& type,
                                                const std::string& id, const std::string& body,
                                                std::optional<int64_t> if_match) = 0;
  // JSON Patch. Errors: 404 / 410 for a missing or deleted resource, 400 for
  // a malformed patch, 422 when the patch fails or yields an invalid
  // resource, 412 on If-Match mismatch.
  virtual absl::StatusOr<ResourceResult> Patch(const std::string& tenant, const std::string& type,
                                               const std::string& id, const std::string& patch,
                                               std::optional<int64_t> if_match) = 0;
  // Deletes (writes a tombstone version). Errors: 404 if never existed, 412.
  virtual absl::StatusOr<ResourceResult> Delete(const std::string& tenant, const std::string& type,
                                                const std::string& id, std::optional<int64_t> if_match) = 0;
  // A searchset Bundle (JSON text). Errors: 400 for unknown or malformed
  // parameters (unless lenient), a bad cursor, or a type outside the
  // compartment; 404 for an unknown type or tenant.
  virtual absl::StatusOr<std::string> Search(const std::string& tenant, const SearchInput& input) = 0;
  // Patient $everything: a searchset Bundle (JSON text) with the patient,
  // every resource in its compartment and the resources those reference
  // through reference search parameters; at the type level, every
  // patient's, paged by patient. Parameters: _since (an instant), _type,
  // _count and _cursor. Errors: 400 for any other parameter (start and end
  // are not supported) or a malformed one; 404 / 410 for an unknown or
  // deleted patient; 403 at the type level for a tenant not created with
  // everythingTypeLevel.
  virtual absl::StatusOr<std::string> Everything(const std::string& tenant, const EverythingInput& input) = 0;
  // The query plans of a type-level search, as text (EXPLAIN ANALYZE).
  virtual absl::StatusOr<std::string> ExplainSearch(const std::string& tenant, const std::string& type,
                                                    const QueryParams& params) = 0;
  // Starts an online reindex of the tenant's resources of `types` (all
  // when empty); returns a Parameters resource describing the job.
  virtual absl::StatusOr<std::string> StartReindex(const std::string& tenant, const std::vector<std::string>& types) = 0;
  // A Parameters resource with the tenant's reindex jobs: status, progress,
  // rate and estimated time left.
  virtual absl::StatusOr<std::string> ReindexStatus(const std::string& tenant) = 0;
  // Conditional create (If-None-Exist, http.html#ccreate): creates when
  // nothing matches `criteria`; returns the match (created = false) when
  // one does. Errors: as Create, plus 412 when several match.
  virtual absl::StatusOr<ResourceResult> ConditionalCreate(const std::string& tenant, const std::string& type,
                                                           const std::string& body, const QueryParams& criteria) = 0;
  // Conditional update (PUT Type?criteria): updates the one match, or
  // creates when none (with the body's id, or a new one). Errors: as Update,
  // plus 412 when several match, 400 when the body id names another resource.
  virtual absl::StatusOr<ResourceResult> ConditionalUpdate(const std::string& tenant, const std::string& type,
                                                           const QueryParams& criteria, const std::string& body) = 0;
  // Conditional delete (DELETE Type?criteria): deletes the one match;
  // nullopt when nothing matches. Errors: 412 when several match.
  virtual absl::StatusOr<std::optional<ResourceResult>> ConditionalDelete(const std::string& tenant,
                                                                          const std::string& type,
                                                                          const QueryParams& criteria) = 0;
  // A history Bundle (JSON text) at system, type or instance level.
  virtual absl::StatusOr<std::string> History(const std::string& tenant, const HistoryRequest& request) = 0;
  // Processes a batch or transaction Bundle (http.html#transaction) and
  // returns the batch-response or transaction-response Bundle (JSON text).
  // A transaction commits all of its entries in one database transaction or
  // none of them. Errors: 400 for a Bundle that is malformed or not a batch
  // or transaction; 413 over the entry or byte limits; for a transaction,
  // the status of the first entry that failed, with the message and path
  // naming the entry (Bundle.entry[i]). A batch answers each entry in its
  // response entry instead.
  virtual absl::StatusOr<std::string> ProcessBundle(const std::string& tenant, const BundleInput& input) = 0;
  // The CapabilityStatement (JSON text) for the tenant base.
  virtual absl::StatusOr<std::string> Capabilities(const std::string& tenant, const std::string& base_url) = 0;
};

}  // namespace medgrid::engine
