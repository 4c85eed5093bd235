// Versioned FHIR resource storage for one shard.
//
// Every call names the tenant; every statement filters on it, so one
// tenant can never see or change another's rows, even on a shared shard.
// Writes create a new row in resource_versions and move the current pointer
// in `resources` in one transaction. Concurrent writers to one resource are
// serialized by a row lock; the version sequence has no gaps or duplicates.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"

namespace boost::asio {
class io_context;
}

namespace medgrid::store {

struct ResourceKey {
  std::string tenant;
  std::string type;
  std::string id;
};

// One stored version.
struct ResourceVersion {
  std::string type;
  std::string id;
  int64_t version = 0;
  core::TimePoint last_updated;
  bool deleted = false;
  std::string method;  // POST, PUT, PATCH or DELETE: how this version was made
  std::string body;    // full resource JSON with meta; empty for a deletion
};

// Called inside the write transaction with the current version (nullopt if
// the resource never existed), the version number and timestamp the new
// version will get. Returns the body to store, or an error that aborts the
// write (e.g. an If-Match mismatch). May be called more than once if the
// transaction is retried.
using BodyFn = std::function<absl::StatusOr<std::string>(const std::optional<ResourceVersion>& current,
                                                         int64_t new_version, core::TimePoint now)>;

struct HistoryQuery {
  std::optional<std::string> type;  // type or instance level
  std::optional<std::string> id;    // instance level (requires type)
  std::optional<core::TimePoint> since;
  int count = 50;
  std::optional<int64_t> before_seq;  // paging cursor: rows with seq < before_seq
};

struct HistoryPage {
  std::vector<ResourceVersion> entries;  // newest first
  std::optional<int64_t> next_cursor;    // set when more rows exist
};

using ReadCallback = std::function<void(absl::StatusOr<ResourceVersion>)>;

class ResourceStore {
 public:
  virtual ~ResourceStore() = default;

  // The current version. Errors: NotFound if the resource never existed.
  // A deleted resource is returned with deleted = true.
  virtual absl::StatusOr<ResourceVersion> Read(const ResourceKey& key) = 0;
  // One version. Errors: NotFound.
  virtual absl::StatusOr<ResourceVersion> ReadVersion(const ResourceKey& key, int64_t version) = 0;
  // Read (version unset) or ReadVersion without blocking: the query runs on
  // `io`, the io_context driving the calling thread, and `done` is called on
  // that thread with the same results and errors as the blocking calls.
  // Precondition: called from a thread running `io`.
  virtual void ReadAsync(const ResourceKey& key, std::optional<int64_t> version, boost::asio::io_context& io,
                         ReadCallback done) = 0;
  // Inserts version 1 of a resource whose id the server just generated.
  // Errors: AlreadyExists on an id clash.
  virtual absl::StatusOr<ResourceVersion> Create(const ResourceKey& key, const BodyFn& body) = 0;
  // Create without blocking, on `io` as ReadAsync; same results and errors.
  virtual void CreateAsync(const ResourceKey& key, const BodyFn& body, boost::asio::io_context& io,
                           ReadCallback done) = 0;
  // Writes the next version of `key` (version 1 if it never existed) with
  // `method` PUT or PATCH. If body() fails, nothing is written and its
  // status is returned.
  virtual absl::StatusOr<ResourceVersion> Update(const ResourceKey& key, const std::string& method,
                                                 const BodyFn& body) = 0;
  // Writes a deletion version. `check` runs on the current version first
  // (for If-Match). Errors: NotFound if the resource never existed. Deleting
  // a deleted resource writes nothing and returns the existing tombstone.
  virtual absl::StatusOr<ResourceVersion> Delete(
      const ResourceKey& key, const std::function<absl::Status(const ResourceVersion&)>& check) = 0;
  virtual absl::StatusOr<HistoryPage> History(const std::string& tenant, const HistoryQuery& q) = 0;
};

}  // namespace medgrid::store
