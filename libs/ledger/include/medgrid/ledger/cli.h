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

// `audit verify --tenant T [--dsn DSN] [--public-key HEX]...`: recomputes the
// tenant's ledger from the stored entries and checks every signed tree head
// (LedgerStore::Verify). The DSN defaults to $MEDGRID_AUDIT_DSN. Each
// --public-key is a trusted raw Ed25519 key (64 hex digits); without one the
// keys recorded in the database are trusted, and the output says so.
// Returns 0 when the ledger verifies, 1 when it does not (naming the first
// altered entry), 2 on a bad command or an unreachable database.
int RunAuditCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace medgrid::ledger
