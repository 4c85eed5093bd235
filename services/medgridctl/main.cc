// medgridctl: the operators' command line.
//
//   medgridctl ledger root|inclusion|consistency ...   RFC 6962 Merkle tree arithmetic on leaves from stdin
#include <iostream>
#include <string>
#include <vector>

#include "medgrid/ledger/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "ledger") {
    args.erase(args.begin());
    return medgrid::ledger::RunLedgerCommand(args, std::cin, std::cout, std::cerr);
  }
  std::cerr << "usage: medgridctl ledger root|inclusion|consistency ...\n";
  return 2;
}
