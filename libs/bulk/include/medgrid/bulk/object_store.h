// Where bulk export files live: a small object-store interface (keys are
// "/"-separated names) with a filesystem implementation. An S3-compatible
// store would implement the same interface (a writer as a multipart upload
// completed by Commit).
//
//   ASSIGN_OR_RETURN(auto store, bulk::FileObjectStore::Open("/var/lib/medgrid/exports"));
//   ASSIGN_OR_RETURN(auto w, store->OpenWriter("t1/job/Patient-0.ndjson"));
//   RETURN_IF_ERROR(w->Append("{...}\n"));
//   RETURN_IF_ERROR(w->Commit());  // visible from here on, whole or not at all
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace medgrid::bulk {

// Streams one object in. Nothing is visible under the key until Commit;
// dropping a writer without committing discards what it wrote. Not
// thread-safe.
class ObjectWriter {
 public:
  virtual ~ObjectWriter() = default;
  virtual absl::Status Append(std::string_view data) = 0;
  // Makes the object durable and visible, replacing any object of that key.
  virtual absl::Status Commit() = 0;
  virtual uint64_t size() const = 0;
};

// Streams one object out. Not thread-safe.
class ObjectReader {
 public:
  virtual ~ObjectReader() = default;
  virtual uint64_t size() const = 0;
  // Reads up to `max` bytes at `offset`; an empty result at the end.
  virtual absl::StatusOr<std::string> ReadAt(uint64_t offset, std::size_t max) = 0;
};

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
};

// Thread-safe.
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // Writes a whole object at once.
  virtual absl::Status Put(const std::string& key, std::string_view data) = 0;
  virtual absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWriter(const std::string& key) = 0;
  // Errors: NotFound.
  virtual absl::StatusOr<std::unique_ptr<ObjectReader>> OpenReader(const std::string& key) = 0;
  // Removes one object; a missing one is not an error.
  virtual absl::Status Delete(const std::string& key) = 0;
  // Removes every object whose key starts with `prefix`.
  virtual absl::Status DeletePrefix(const std::string& prefix) = 0;
  // The committed objects whose key starts with `prefix`, in key order.
  virtual absl::StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix) = 0;
};

// Objects as files under a root directory (created when missing). A writer
// writes "<key>.tmp", fsyncs and renames it on Commit. Keys must be
// relative, without "." or ".." segments (InvalidArgument otherwise).
class FileObjectStore final : public ObjectStore {
 public:
  static absl::StatusOr<std::unique_ptr<FileObjectStore>> Open(const std::string& root);

  absl::Status Put(const std::string& key, std::string_view data) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWriter(const std::string& key) override;
  absl::StatusOr<std::unique_ptr<ObjectReader>> OpenReader(const std::string& key) override;
  absl::Status Delete(const std::string& key) override;
  absl::Status DeletePrefix(const std::string& prefix) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix) override;

  const std::string& root() const { return root_; }

 private:
  explicit FileObjectStore(std::string root) : root_(std::move(root)) {}
  absl::StatusOr<std::string> PathOf(const std::string& key) const;

  const std::string root_;
};

}  // namespace medgrid::bulk
