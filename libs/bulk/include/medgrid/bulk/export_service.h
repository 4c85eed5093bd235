// FHIR Bulk Data Access $export (https://hl7.org/fhir/uv/bulkdata/export.html):
// kick-off, status, cancel and file reads for the gateway, and the
// background worker that writes the NDJSON files.
//
// A job lives in its tenant's shard (store::ExportJobStore) and is carried
// out by whichever instance leases it. The worker reads each type in res_id
// order by keyset pages, the version of every resource that was current at
// the job's transactionTime, and writes one line per resource straight into
// the current file part. A part ends before the line that would take it
// past `max_file_bytes`; the part is committed to the ObjectStore, then the
// checkpoint (type, last id, parts so far) is recorded with the lease. A job
// resumed after a stop or a crash starts the part after the last
// checkpoint again, so its files are byte-identical to an uninterrupted run.
//
//   bulk::ExportService exports(config, store, engine, structures, compartments, objects, clock);
//   exports.Start();
//   ASSIGN_OR_RETURN(std::string job, exports.KickOff(request));
//   ...
//   exports.Stop();  // stops after the page in progress and releases the job's lease
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "medgrid/bulk/object_store.h"
#include "medgrid/core/clock.h"
#include "medgrid/core/worker.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/fhir/compartments.h"
#include "medgrid/fhir/structure.h"
#include "medgrid/store/store.h"

namespace medgrid::bulk {

struct ExportConfig {
  // Largest NDJSON file part; a type with more output is split into several
  // parts (a single larger resource gets a part of its own).
  uint64_t max_file_bytes = uint64_t{64} << 20;
  // How long a finished job's manifest and files stay; then they are gone
  // (410 until the cleanup removes them, 404 after).
  std::chrono::hours expiry{24};
  // Resources read per database round trip (memory is about this many
  // bodies at once).
  int page_rows = 1000;
  // How long a claim lasts without a checkpoint or renewal.
  std::chrono::seconds lease{30};
  // Wait between looks for work when there is none.
  std::chrono::milliseconds idle_poll{1000};
  // How often expired jobs and their files are removed.
  std::chrono::seconds cleanup_every{60};
  // Pause after every page (tests use it to stop a server mid-job); 0 in
  // production.
  std::chrono::milliseconds page_pause{0};
  // Retry-After of a status answer while the job runs.
  int retry_after_seconds = 2;
};

// A kick-off request as the gateway received it.
struct KickOffRequest {
  std::string tenant;
  std::string level;     // system | patient | group
  std::string group_id;  // for group
  std::vector<std::pair<std::string, std::string>> params;  // decoded query
  std::string prefer;                                      // the Prefer header
  std::string request_url;                                 // the kick-off URL, for the manifest
};

// What a status request finds.
struct ExportStatus {
  enum class State { kRunning, kDone, kFailed };
  State state = State::kRunning;
  std::string progress;  // running: for X-Progress
  std::string manifest;  // done: the manifest JSON
  core::TimePoint expires;  // done: when the files go
  std::string error;     // failed
};

// Decides whether the caller may export `tenant` at `level` (Forbidden or
// Unauthenticated otherwise). This is where the SMART Backend Services
// `system/*.read` scope check goes once token auth exists; until then it
// allows every caller that reaches the FHIR API.
using ExportAccess = std::function<absl::Status(const std::string& tenant, const std::string& level)>;

// Told about each accepted kick-off (the App records an audit event).
struct KickOffEvent {
  std::string tenant;
  std::string job_id;
  std::string level;
  std::string group_id;
  std::string request_url;
};

class ExportService {
 public:
  // All references must outlive the service. Thread-safe.
  ExportService(ExportConfig config, store::Store& store, const engine::FhirEngine& engine,
                const fhir::StructureRegistry& structures, const fhir::CompartmentRegistry& compartments,
                ObjectStore& objects, const core::Clock& clock);
  ~ExportService();

  // Set before serving.
  void SetAccess(ExportAccess access) { access_ = std::move(access); }
  void SetKickOffHook(std::function<void(const KickOffEvent&)> hook) { kickoff_hook_ = std::move(hook); }

  // Validates the request and records a job; returns its id. Errors:
  // InvalidArgument (400) for a missing Prefer: respond-async, an unknown
  // parameter, type or _outputFormat, a malformed _since or _typeFilter;
  // NotFound (404) for an unknown tenant or Group, 410 for a deleted Group;
  // what the access check answers.
  absl::StatusOr<std::string> KickOff(const KickOffRequest& request);
  // The job's state; the manifest's file URLs are under `base_url`
  // (".../fhir/{tenant}"). Errors: NotFound (404) for an unknown job or
  // another tenant's; 410 for an expired one.
  absl::StatusOr<ExportStatus> Status(const std::string& tenant, const std::string& job_id,
                                      const std::string& base_url);
  // Cancels a job (running or finished) and removes its files; a worker
  // still writing one removes the rest when it finds the job gone. Errors:
  // NotFound.
  absl::Status Cancel(const std::string& tenant, const std::string& job_id);
  // A finished job's file: a reader over it. Errors: NotFound, 410 expired.
  absl::StatusOr<std::unique_ptr<ObjectReader>> OpenFile(const std::string& tenant, const std::string& job_id,
                                                         const std::string& name);

  // Starts and stops the background worker.
  void Start();
  void Stop();

  const ExportConfig& config() const { return config_; }

 private:
  struct Job;
  std::optional<std::chrono::milliseconds> Step();
  // Runs one claimed job until it ends, the lease is lost, or Stop.
  void Run(store::ExportJobStore& jobs, const store::ExportJobRecord& record);
  absl::Status RunJob(store::ExportJobStore& jobs, Job& job);
  void Cleanup();

  const ExportConfig config_;
  store::Store& store_;
  const engine::FhirEngine& engine_;
  const fhir::StructureRegistry& structures_;
  const fhir::CompartmentRegistry& compartments_;
  ObjectStore& objects_;
  const core::Clock& clock_;
  const std::string owner_;  // this instance's lease owner name
  ExportAccess access_;
  std::function<void(const KickOffEvent&)> kickoff_hook_;
  std::atomic<bool> stopping_{false};
  std::chrono::steady_clock::time_point last_cleanup_{};
  core::Worker worker_;
};

}  // namespace medgrid::bulk
