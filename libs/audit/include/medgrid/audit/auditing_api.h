// AuditingFhirApi: the FhirApi with an AuditEvent recorded for every
// interaction (read, vread, search with the ids it returned, create, update,
// patch, delete, the conditional ones, history, capabilities and $reindex),
// successful or not. ExplainSearch is reached through the admin API, which
// records its own requests (RecordAdminAction), so it is not recorded here. It wraps the engine behind the gateway, so whatever
// transport reaches the API is audited the same way. The client's address
// comes from core::CurrentRequest(). Recording spools the event
// (AuditPipeline::Record) and never changes the interaction's answer.
//
// AuditEvent is served from the ledger (AuditIndex): read and search answer
// what the ledger holds, and every write of an AuditEvent is refused with
// 405. Reading an AuditEvent is itself recorded. A read by id of an
// AuditEvent queries the database on the calling thread, even through
// ReadAsync (auditors' reads are rare; the I/O thread waits for them).
#pragma once

#include "medgrid/audit/audit_index.h"
#include "medgrid/audit/pipeline.h"
#include "medgrid/engine/fhir_api.h"
#include "medgrid/fhir/search_params.h"
#include "medgrid/fhir/structure.h"

namespace medgrid::audit {

class AuditingFhirApi final : public engine::FhirApi {
 public:
  AuditingFhirApi(engine::FhirApi& inner, AuditPipeline& pipeline, AuditIndex& index,
                  const fhir::SearchParamRegistry& params, const fhir::StructureRegistry& structures,
                  const core::Clock& clock)
      : inner_(inner), pipeline_(pipeline), index_(index), params_(params), structures_(structures), clock_(clock) {}

  absl::StatusOr<engine::ResourceResult> Create(const std::string& tenant, const std::string& type,
                                                const std::string& body) override;
  void CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                   boost::asio::io_context& io, engine::ResultCallback done) override;
  absl::StatusOr<engine::ResourceResult> Read(const std::string& tenant, const std::string& type,
                                              const std::string& id) override;
  absl::StatusOr<engine::ResourceResult> VRead(const std::string& tenant, const std::string& type,
                                               const std::string& id, int64_t version) override;
  bool ServesWithoutBlocking(const std::string& tenant) override { return inner_.ServesWithoutBlocking(tenant); }
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
  absl::StatusOr<std::optional<engine::ResourceResult>> ConditionalDelete(
      const std::string& tenant, const std::string& type, const engine::QueryParams& criteria) override;
  absl::StatusOr<std::string> History(const std::string& tenant, const engine::HistoryRequest& request) override;
  absl::StatusOr<std::string> Capabilities(const std::string& tenant, const std::string& base_url) override;
  // One event for the whole Bundle (interaction transaction or batch), with
  // every resource its entries wrote or read. AuditEvent is refused inside
  // a Bundle: it is the ledger's, not the resource store's.
  absl::StatusOr<std::string> ProcessBundle(const std::string& tenant, const engine::BundleInput& input) override;

 private:
  // An interaction of `tenant`, with the caller's context and the time.
  Interaction Start(const std::string& tenant, const char* interaction, char action, const std::string& type,
                    const std::string& id) const;
  // Adds a resource's entities (itself, its patients) and the outcome, and records.
  void Finish(Interaction& in, const absl::StatusOr<engine::ResourceResult>& result);
  void FinishStatus(Interaction& in, const absl::Status& status);

  // AuditEvent from the ledger.
  absl::StatusOr<engine::ResourceResult> ReadAuditEvent(const std::string& tenant, const std::string& id);
  absl::StatusOr<std::string> SearchAuditEvents(const std::string& tenant, const engine::SearchInput& input);

  engine::FhirApi& inner_;
  AuditPipeline& pipeline_;
  AuditIndex& index_;
  const fhir::SearchParamRegistry& params_;
  const fhir::StructureRegistry& structures_;
  const core::Clock& clock_;
};

}  // namespace medgrid::audit
