// Bulk data export jobs ($export) and the reads they make, on one shard
// (pg_export.cc; the job logic is bulk::ExportService).
//
// A job row holds the kick-off as the service parsed it (`request`, JSON)
// and its checkpoint (`state`, JSON), both opaque to the store. Workers of
// any instance lease running jobs like reindex jobs do: Claim takes one
// whose lease is free or lapsed, Checkpoint records progress and renews the
// lease, Release hands it back at once (a graceful stop).
//
//   ASSIGN_OR_RETURN(store::ResourceStore* shard, store.ForTenant("t1"));
//   store::ExportJobStore& jobs = shard->Exports();
//   ASSIGN_OR_RETURN(auto job, jobs.Create("t1", id, request_json, now));
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"

namespace medgrid::store {

struct ExportJobRecord {
  std::string tenant;
  std::string id;
  std::string status;  // running | done | failed
  std::string request;  // JSON, as given to Create
  std::string state;    // JSON checkpoint, "{}" until the first one
  core::TimePoint transaction_time;
  std::string error;  // why it failed
  core::TimePoint created;
  std::optional<core::TimePoint> finished;
  std::optional<core::TimePoint> expires;  // when its files go (set when it ends)
};

// One resource an export writes: its id and body.
struct ExportRow {
  std::string id;
  std::string body;
};

// Which resources of one type a page of an export reads: the version of
// each that was current at `as_of` (so a job reads the same rows however
// often it is resumed), live at that time, in res_id order.
struct ExportSelection {
  std::string tenant;
  std::string type;
  core::TimePoint as_of;
  // Only versions written after this (_since).
  std::optional<core::TimePoint> since;
  // Patient compartment: only resources whose reference parameters
  // `compartment_params` point at a Patient (for type Patient itself, the
  // patient is its own compartment), and when `restrict_patients` only at
  // (or being) one of `patients`. Reference rows are those of the current
  // version.
  bool patient_compartment = false;
  std::vector<std::string> compartment_params;
  bool restrict_patients = false;
  std::vector<std::string> patients;
  // When set, only these ids (a page of a _typeFilter search).
  std::optional<std::vector<std::string>> ids;
};

class ExportJobStore {
 public:
  virtual ~ExportJobStore() = default;
  // Records a running job. Errors: AlreadyExists on an id clash.
  virtual absl::StatusOr<ExportJobRecord> Create(const std::string& tenant, const std::string& id,
                                                 const std::string& request, core::TimePoint transaction_time) = 0;
  // The tenant's job. Errors: NotFound (also for another tenant's job).
  virtual absl::StatusOr<ExportJobRecord> Get(const std::string& tenant, const std::string& id) = 0;
  // Removes the job. Errors: NotFound.
  virtual absl::Status Delete(const std::string& tenant, const std::string& id) = 0;
  // Leases a running job of any tenant on this shard whose lease is free
  // or lapsed to `owner`; nullopt when there is none.
  virtual absl::StatusOr<std::optional<ExportJobRecord>> Claim(const std::string& owner,
                                                               std::chrono::seconds lease) = 0;
  // Records `state` and renews the lease. With `status` done or failed,
  // ends the job (error, expires). Errors: Aborted when the job is gone
  // (cancelled) or leased by another owner.
  virtual absl::Status Checkpoint(const std::string& tenant, const std::string& id, const std::string& owner,
                                  const std::string& state, std::chrono::seconds lease, const std::string& status,
                                  const std::string& error, std::optional<core::TimePoint> expires) = 0;
  // Frees the lease of `owner` at once, so any instance may go on.
  virtual absl::Status Release(const std::string& tenant, const std::string& id, const std::string& owner) = 0;
  // Removes the jobs that expired before `now`; returns their (tenant, id).
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> DeleteExpired(core::TimePoint now) = 0;
  // Up to `limit` resources of `selection` after `after_id`, in res_id order.
  virtual absl::StatusOr<std::vector<ExportRow>> Page(const ExportSelection& selection, const std::string& after_id,
                                                      int limit) = 0;
};

}  // namespace medgrid::store
