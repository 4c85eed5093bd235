// AccessControlledFhirApi: the FHIR API as the verified caller may use it.
//
// It wraps another FhirApi (the engine) and, for the Principal the gateway
// put on this thread (auth::CurrentPrincipal), enforces per call:
//   1. SMART scopes (v1 and v2): the interaction on the type must be granted.
//      patient/ scopes count only with a patient context and limit access to
//      that patient's compartment (reads, searches, includes, history,
//      $everything, writes); user/ and system/ scopes do not. v2 query
//      filters (patient/Observation.rs?category=laboratory) are checked on
//      each resource; token and reference parameters are supported, others
//      deny.
//   2. Consent: every resource in a patient's compartment is checked against
//      that patient's Consents (consent::ConsentApi) under the tenant's
//      default policy. A read of a denied resource is 403; a search, history,
//      $everything or batch drops denied resources and says so in an
//      OperationOutcome entry (search mode "outcome"), without a total.
//   3. Break-the-glass: a caller declaring an emergency purpose of use gets
//      what Consent denies, or what cannot be checked, through
//      consent::BreakGlass (role, reason, time limit, recorded).
//   4. Fail-closed: when the consent service is unavailable, non-emergency
//      access to patient data is 503 with an OperationOutcome.
// Out-of-compartment or out-of-scope resources read by id give the same 404
// as a resource that does not exist, so ids cannot be probed. A call without
// a Principal is refused (401): this wrapper is used only when auth is on.
//
// Writes of Consent resources are passed to the consent registry at once
// (read-your-writes; the change stream feeds it too).
#pragma once

#include <memory>
#include <string>

#include "medgrid/consent/break_glass.h"
#include "medgrid/consent/service.h"
#include "medgrid/core/clock.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/fhir/compartments.h"
#include "medgrid/fhir/search_params.h"
#include "medgrid/store/store.h"

namespace medgrid::access {

struct AccessConfig {
  // Published in the CapabilityStatement's security section.
  std::string authorize_url;
  std::string token_url;
  // Threads that finish asynchronous reads whose consent decision needs the
  // registry (kept off the I/O threads).
  int blocking_threads = 4;
};

class AccessControlledFhirApi final : public engine::FhirApi {
 public:
  // All references must outlive this object.
  AccessControlledFhirApi(AccessConfig config, engine::FhirApi& inner, consent::ConsentApi& consent,
                          consent::BreakGlass& break_glass, store::Store& store,
                          const fhir::SearchParamRegistry& params, const fhir::CompartmentRegistry& compartments,
                          const core::Clock& clock);
  ~AccessControlledFhirApi() override;

  absl::StatusOr<engine::ResourceResult> Create(const std::string& tenant, const std::string& type,
                                                const std::string& body) override;
  void CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                   boost::asio::io_context& io, engine::ResultCallback done) override;
  absl::StatusOr<engine::ResourceResult> Read(const std::string& tenant, const std::string& type,
                                              const std::string& id) override;
  absl::StatusOr<engine::ResourceResult> VRead(const std::string& tenant, const std::string& type,
                                               const std::string& id, int64_t version) override;
  bool ServesWithoutBlocking(const std::string& tenant) override;
  void ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                 std::optional<int64_t> version, boost::asio::io_context& io, engine::ResultCallback done) override;
  absl::StatusOr<engine::ResourceResult> Update(const std::string& tenant, const std::string& type,
                                                const std::string& id, const std::string& body,
                                                std::optional<int64_t> if_match) override;
  absl::StatusOr<engine::ResourceResult> Patch(const std::string& tenant, const std::string& type,
                                               const std::string& id, const std::string& patch,
                                               std::optional<int64_t> if_match) override;
  absl::StatusOr<engine::ResourceResult> Delete(const std::string& tenant, const std::string& type,
                                                const std::string& id, std::optional<int64_t> if_match) override;
  absl::StatusOr<std::string> Search(const std::string& tenant, const engine::SearchInput& input) override;
  absl::StatusOr<std::string> Everything(const std::string& tenant, const engine::EverythingInput& input) override;
  absl::StatusOr<std::string> ExplainSearch(const std::string& tenant, const std::string& type,
                                            const engine::QueryParams& params) override;
  absl::StatusOr<std::string> StartReindex(const std::string& tenant, const std::vector<std::string>& types) override;
  absl::StatusOr<std::string> ReindexStatus(const std::string& tenant) override;
  absl::StatusOr<engine::ResourceResult> ConditionalCreate(const std::string& tenant, const std::string& type,
                                                           const std::string& body,
                                                           const engine::QueryParams& criteria) override;
  absl::StatusOr<engine::ResourceResult> ConditionalUpdate(const std::string& tenant, const std::string& type,
                                                           const engine::QueryParams& criteria,
                                                           const std::string& body) override;
  absl::StatusOr<std::optional<engine::ResourceResult>> ConditionalDelete(const std::string& tenant,
                                                                          const std::string& type,
                                                                          const engine::QueryParams& criteria) override;
  absl::StatusOr<std::string> History(const std::string& tenant, const engine::HistoryRequest& request) override;
  absl::StatusOr<std::string> ProcessBundle(const std::string& tenant, const engine::BundleInput& input) override;
  absl::StatusOr<std::string> Capabilities(const std::string& tenant, const std::string& base_url) override;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::access
