// Archive files of the audit ledger: a range of one tenant's entries moved
// out of the hot database (LedgerStore::Archive), carrying what proves them,
// so that they can be checked years later without the database.
//
// A file is gzip-compressed NDJSON. The first line is the header:
//   {"format":"medgrid-ledger-archive-v1","tenant":T,"first":F,"end":E,
//    "head":{"size":N,"root":HEX,"signed_at_us":US,"key_id":ID,"signature":HEX,"public_key":HEX}}
// where head is the tenant's latest signed tree head when the file was made
// (N >= E) and public_key the raw Ed25519 key that signed it. Then one line
// per entry, seq F to E-1 in order:
//   {"seq":S,"recorded_us":US,"event_id":ID or null,"entry":BASE64,"leaf_hash":HEX,"proof":[HEX,...]}
// where proof is the RFC 6962 audit path of the entry in the tree of head.size.
//
//   ASSIGN_OR_RETURN(auto reader, ArchiveReader::Open(path));
//   ASSIGN_OR_RETURN(ArchiveReport report, VerifyArchive(*reader, &trusted_keys));
//
// Writing goes through an ArchiveSink (a file in a directory now; object
// storage can take its place), so nothing shows under the file's name until
// the whole file is durable.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/ledger/merkle.h"
#include "medgrid/ledger/signer.h"

namespace medgrid::ledger {

inline constexpr std::string_view kArchiveFormat = "medgrid-ledger-archive-v1";

struct ArchiveHeader {
  std::string tenant;
  uint64_t first = 0;  // the entries are seq first to end - 1
  uint64_t end = 0;
  TreeHead head;           // head.tenant is `tenant`
  std::string public_key;  // raw Ed25519 key of head.key_id, as the ledger recorded it
};

struct ArchiveEntry {
  uint64_t seq = 0;
  int64_t recorded_us = 0;  // Unix time
  std::optional<std::string> event_id;
  std::string entry;  // the leaf's bytes
  Hash leaf_hash{};
  std::vector<Hash> proof;  // audit path in the tree of the header's head.size
};

// Where an archive's bytes go. Nothing is visible under the name until
// Commit returns OK; a sink destroyed before that leaves nothing behind.
// Not thread-safe.
class ArchiveSink {
 public:
  virtual ~ArchiveSink() = default;
  virtual absl::Status Write(std::string_view bytes) = 0;
  // Makes the bytes durable under the name; once only, and no Write after.
  virtual absl::Status Commit() = 0;
};

// Opens a sink for an archive named `name` (a file name, no directories).
using ArchiveSinkFactory = std::function<absl::StatusOr<std::unique_ptr<ArchiveSink>>(const std::string& name)>;

// Sinks into files of directory `dir` (which must exist): a temporary file
// beside the final one, fsynced, renamed, and the directory fsynced.
ArchiveSinkFactory DirectorySinks(std::string dir);

// Writes one archive: the header, then each entry in order. Not thread-safe.
class ArchiveWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ArchiveWriter>> Create(std::unique_ptr<ArchiveSink> sink,
                                                               const ArchiveHeader& header);
  ~ArchiveWriter();
  // Appends the next entry; the caller gives them in seq order.
  absl::Status Add(const ArchiveEntry& entry);
  // Ends the compressed stream and commits the sink. Returns the SHA-256 of
  // the file's (compressed) bytes.
  absl::StatusOr<Hash> Finish();

 private:
  struct Impl;
  explicit ArchiveWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads an archive file forward. Not thread-safe.
class ArchiveReader {
 public:
  // Opens `path` and reads its header. NotFound when it cannot be opened;
  // DataLoss when it is not a gzip-compressed archive of this format.
  static absl::StatusOr<std::unique_ptr<ArchiveReader>> Open(const std::string& path);
  ~ArchiveReader();

  const ArchiveHeader& header() const;
  const std::string& path() const;
  // The seq the next entry must have.
  uint64_t next_seq() const;
  // The next entry, or nothing after entry end - 1. DataLoss for a line that
  // does not decode, an entry out of sequence, a file that ends early or
  // goes on past end - 1, or compressed data that is damaged; the entry it
  // concerns is next_seq().
  absl::StatusOr<std::optional<ArchiveEntry>> Next();

 private:
  struct Impl;
  explicit ArchiveReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What is wrong with an archive's head, or nothing: its key must be in
// `trusted_keys` (key id -> raw public key) and sign it; without trusted
// keys, the public key in the header must have the head's key id and sign it.
// The head must cover the archive's entries.
std::optional<std::string> CheckArchiveHead(const ArchiveHeader& header,
                                            const std::map<std::string, std::string>* trusted_keys);

// What is wrong with one entry of an archive, or nothing: its bytes must hash
// to its leaf hash, and its proof must lead from that leaf hash to the head's root.
std::optional<std::string> CheckArchiveEntry(const ArchiveHeader& header, const ArchiveEntry& entry);

struct ArchiveReport {
  bool ok = true;
  uint64_t entries = 0;               // entries read
  bool key_from_file = false;         // no trusted key given: the head was checked with the file's own key
  std::optional<uint64_t> first_bad;  // the first entry that does not check (not set for a bad head alone)
  std::vector<std::string> problems;  // the first few, in the order found
  uint64_t more_problems = 0;         // past those
};

// Checks the whole archive `reader` was opened on: the head (CheckArchiveHead),
// and every entry (CheckArchiveEntry), seq first to end - 1 without gaps.
ArchiveReport VerifyArchive(ArchiveReader& reader, const std::map<std::string, std::string>* trusted_keys);

}  // namespace medgrid::ledger
