// The `ledger` commands of medgridctl, on streams so that tests run them
// in-process. Leaves come on `in`, one per line, each line the hex of the
// leaf's bytes (an empty line is an empty leaf); input ends at EOF.
//
//   ledger root                               the root, lowercase hex
//   ledger inclusion --index I --size N       the audit path of leaf I (from 0) in the tree of the
//                                             first N leaves, one hash per line
//   ledger consistency --old M --new N        the consistency proof from size M to N, one hash per line
//
// Returns the exit status: 0, or 2 with a message on `err` for a bad
// command, argument or input line, or impossible sizes (an index at or past
// the size, M > N, a size past the leaves given).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace medgrid::ledger {

int RunLedgerCommand(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err);

// The `audit` commands of medgridctl (LedgerStore on PostgreSQL, archive.h
// files). The DSN is --dsn, else $MEDGRID_AUDIT_DSN. Each --public-key is a
// trusted raw Ed25519 key (64 hex digits).
//
//   audit verify --tenant T [--archive FILE]... [--dsn DSN] [--public-key HEX]...
//       recomputes the tenant's ledger from the stored entries and checks
//       every signed tree head (LedgerStore::Verify); archived entries
//       against the FILEs that hold them, else by their stored leaf hash
//       (the output counts those). Without --public-key the keys recorded in
//       the database are trusted, and the output says so. 0 when the ledger
//       verifies, 1 when it does not (naming the first altered entry).
//   audit retention --tenant T [--hot-days N] [--dsn DSN]
//       sets (N >= 1) and prints the tenant's hot window. 0.
//   audit archive --tenant T --out DIR [--before RFC3339] [--dsn DSN]
//       archives the entries older than the hot window (or --before, a
//       date-time with Z or an offset, or a date) into one file in DIR
//       (LedgerStore::Archive) and prints its name and range; 0, also when
//       there is nothing to archive; 1 when archiving fails.
//   audit verify-archive FILE [--public-key HEX]...
//       checks one archive file alone (VerifyArchive); without --public-key
//       with the key the file carries, and says it was not given to trust.
//       0 when it verifies, 1 when it does not (naming the first bad entry).
//
// Each returns 2 with a message on `err` for a bad command, an unreadable
// archive file or an unreachable database.
int RunAuditCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace medgrid::ledger
