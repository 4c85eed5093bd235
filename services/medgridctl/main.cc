// medgridctl: the operators' command line.
//
//   medgridctl ledger root|inclusion|consistency ...   RFC 6962 Merkle tree arithmetic on leaves from stdin
//   medgridctl audit verify --tenant T ...             checks a tenant's audit ledger in PostgreSQL
//   medgridctl audit retention|archive --tenant T ...  its hot window, and archiving what is older
//   medgridctl audit verify-archive FILE ...           checks an archive file on its own
//   medgridctl token keygen|mint ...                   a dev signing key and its JWKS; tokens signed with it
#include <iostream>
#include <string>
#include <vector>

#include "medgrid/auth/cli.h"
#include "medgrid/core/clock.h"
#include "medgrid/ledger/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "ledger") {
    args.erase(args.begin());
    return medgrid::ledger::RunLedgerCommand(args, std::cin, std::cout, std::cerr);
  }
  if (!args.empty() && args[0] == "audit") {
    args.erase(args.begin());
    return medgrid::ledger::RunAuditCommand(args, std::cout, std::cerr);
  }
  if (!args.empty() && args[0] == "token") {
    args.erase(args.begin());
    medgrid::core::RealClock clock;
    return medgrid::auth::RunTokenCommand(args, clock, std::cout, std::cerr);
  }
  std::cerr << "usage: medgridctl ledger root|inclusion|consistency ...\n"
               "       medgridctl audit verify|retention|archive|verify-archive ...\n"
               "       medgridctl token keygen|mint ...\n";
  return 2;
}
