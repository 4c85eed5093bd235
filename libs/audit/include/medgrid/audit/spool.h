// The audit spool: a durable local queue of audit records between the
// request path and the ledger, so that recording an interaction never waits
// on the ledger (or, later, on Kafka).
//
// Records are appended to segment files under one directory
// (`<start offset>.seg`, 16 MiB each by default), each as a 4-byte length, a
// 4-byte CRC-32 and the bytes. A consumer reads from the committed offset
// and commits what it has handled (the offset is kept in `committed`,
// replaced atomically), and segments wholly below it are deleted. On open,
// a record cut short by a crash at the end of the last segment is dropped.
//
// A spool belongs to one process at a time (a lock file in the directory);
// opening one that another process holds fails.
//
// Append is thread-safe and never blocks on the consumer: when the records
// not yet committed reach `max_bytes` it fails (ResourceExhausted), and the
// caller counts the loss. Appends reach the kernel at once (one write each);
// Sync, which the consumer calls before reading, makes them durable
// (fdatasync), so an operating-system crash loses at most what was appended
// since the last read.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::audit {

struct SpoolOptions {
  std::string dir;
  uint64_t max_bytes = uint64_t{1} << 30;      // uncommitted bytes at most
  uint64_t segment_bytes = uint64_t{16} << 20;  // a new segment past this
};

class Spool {
 public:
  // Creates the directory if missing; recovers the segments and the
  // committed offset found there.
  static absl::StatusOr<std::unique_ptr<Spool>> Open(SpoolOptions options);
  ~Spool();

  absl::Status Append(std::string_view record);

  // Up to `max_records` records from the committed offset on, and the offset
  // after the last of them (to commit once they are handled). Read and
  // Commit are the consumer's: one thread calls them.
  struct Batch {
    std::vector<std::string> records;
    uint64_t end = 0;
  };
  absl::StatusOr<Batch> Read(std::size_t max_records);
  absl::Status Commit(uint64_t end);
  absl::Status Sync();

  uint64_t committed() const;
  uint64_t written() const;

 private:
  explicit Spool(SpoolOptions options);
  absl::Status Recover();
  absl::Status OpenSegmentLocked(uint64_t start);

  const SpoolOptions options_;
  mutable std::mutex mu_;
  std::vector<uint64_t> segments_;  // start offsets, ascending; the last is written to
  int fd_ = -1;                     // the last segment, for appending
  int lock_fd_ = -1;                // holds the directory's lock (flock) while open
  uint64_t written_ = 0;            // the offset after the last record
  uint64_t committed_ = 0;
  bool dirty_ = false;              // appended since the last Sync
};

// CRC-32 (IEEE 802.3), as the spool frames records with it.
uint32_t Crc32(std::string_view bytes);

}  // namespace medgrid::audit
