#include "medgrid/ledger/cli.h"

#include <charconv>
#include <cstdlib>
#include <istream>
#include <map>
#include <optional>
#include <ostream>

#include "medgrid/ledger/ledger_store.h"
#include "medgrid/ledger/merkle.h"
#include "medgrid/ledger/signer.h"

namespace medgrid::ledger {
namespace {

constexpr const char* kUsage =
    "usage: medgridctl ledger root\n"
    "       medgridctl ledger inclusion --index I --size N\n"
    "       medgridctl ledger consistency --old M --new N\n"
    "Leaves are read from stdin, one per line, as hex.\n";

// "--name value" and "--name=value" pairs after the subcommand; nothing on a
// stray word, a repeated or valueless flag, or a value that is not a
// non-negative integer.
std::optional<std::map<std::string, uint64_t>> ParseFlags(const std::vector<std::string>& args, std::size_t from,
                                                          std::string& error) {
  std::map<std::string, uint64_t> flags;
  for (std::size_t i = from; i < args.size(); ++i) {
    std::string name = args[i];
    std::string value;
    if (name.rfind("--", 0) != 0) {
      error = "unexpected argument '" + name + "'";
      return std::nullopt;
    }
    if (std::size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      error = "flag " + name + " needs a value";
      return std::nullopt;
    }
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || end != value.data() + value.size() || value.empty()) {
      error = "flag " + name + " needs a non-negative integer, not '" + value + "'";
      return std::nullopt;
    }
    if (!flags.emplace(name.substr(2), n).second) {
      error = "flag " + name + " given twice";
      return std::nullopt;
    }
  }
  return flags;
}

}  // namespace

int RunLedgerCommand(const std::vector<std::string>& args, std::istream& in, std::ostream& out, std::ostream& err) {
  auto fail = [&](const std::string& message) {
    err << "medgridctl ledger: " << message << "\n";
    return 2;
  };
  if (args.empty()) return fail(std::string("missing subcommand\n") + kUsage);
  const std::string& command = args[0];
  std::map<std::string, const char*> expected;
  if (command == "root") {
  } else if (command == "inclusion") {
    expected = {{"index", "leaf index"}, {"size", "tree size"}};
  } else if (command == "consistency") {
    expected = {{"old", "old tree size"}, {"new", "new tree size"}};
  } else {
    return fail("unknown subcommand '" + command + "'\n" + kUsage);
  }
  std::string error;
  std::optional<std::map<std::string, uint64_t>> flags = ParseFlags(args, 1, error);
  if (!flags) return fail(error);
  for (const auto& [name, value] : *flags) {
    if (!expected.contains(name)) return fail("unknown flag --" + name + " for '" + command + "'");
  }
  for (const auto& [name, what] : expected) {
    if (!flags->contains(name)) return fail(std::string("missing --") + name + " (" + what + ")");
  }

  MerkleTree tree;
  std::string line;
  for (uint64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::optional<std::string> leaf = FromHex(line);
    if (!leaf) return fail("line " + std::to_string(number) + " is not an even number of hex digits");
    tree.Append(*leaf);
  }
  const uint64_t leaves = tree.size();
  auto print = [&](const std::vector<Hash>& hashes) {
    for (const Hash& h : hashes) out << ToHex(h) << "\n";
    return 0;
  };
  if (command == "root") {
    out << ToHex(tree.Root()) << "\n";
    return 0;
  }
  if (command == "inclusion") {
    const uint64_t index = flags->at("index");
    const uint64_t size = flags->at("size");
    if (size > leaves) {
      return fail("--size " + std::to_string(size) + " is past the " + std::to_string(leaves) + " leaves given");
    }
    if (index >= size) {
      return fail("--index " + std::to_string(index) + " is not below --size " + std::to_string(size));
    }
    return print(tree.InclusionProof(index, size));
  }
  const uint64_t old_size = flags->at("old");
  const uint64_t new_size = flags->at("new");
  if (old_size > new_size) {
    return fail("--old " + std::to_string(old_size) + " is past --new " + std::to_string(new_size));
  }
  if (new_size > leaves) {
    return fail("--new " + std::to_string(new_size) + " is past the " + std::to_string(leaves) + " leaves given");
  }
  return print(tree.ConsistencyProof(old_size, new_size));
}

}  // namespace medgrid::ledger

namespace medgrid::ledger {

int RunAuditCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  auto fail = [&](const std::string& message) {
    err << "medgridctl audit: " << message << "\n";
    return 2;
  };
  if (args.empty() || args[0] != "verify") {
    return fail("usage: medgridctl audit verify --tenant T [--dsn DSN] [--public-key HEX]...");
  }
  std::string tenant;
  const char* env_dsn = std::getenv("MEDGRID_AUDIT_DSN");
  std::string dsn = env_dsn != nullptr ? env_dsn : "";
  std::map<std::string, std::string> trusted;
  for (std::size_t i = 1; i < args.size(); ++i) {
    std::string name = args[i];
    std::string value;
    if (std::size_t eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (name.rfind("--", 0) == 0 && i + 1 < args.size()) {
      value = args[++i];
    } else {
      return fail("unexpected argument '" + name + "'");
    }
    if (name == "--tenant") {
      tenant = value;
    } else if (name == "--dsn") {
      dsn = value;
    } else if (name == "--public-key") {
      std::optional<std::string> key = FromHex(value);
      if (!key || key->size() != 32) return fail("--public-key needs 64 hex digits (a raw Ed25519 key)");
      trusted[KeyId(*key)] = *key;
    } else {
      return fail("unknown flag " + name);
    }
  }
  if (tenant.empty()) return fail("missing --tenant");
  if (dsn.empty()) return fail("missing --dsn (or MEDGRID_AUDIT_DSN)");
  absl::StatusOr<std::unique_ptr<LedgerStore>> store = LedgerStore::Open(dsn, nullptr);
  if (!store.ok()) return fail(std::string(store.status().message()));
  absl::StatusOr<VerifyReport> report = (*store)->Verify(tenant, trusted.empty() ? nullptr : &trusted);
  if (!report.ok()) return fail(std::string(report.status().message()));
  out << "tenant " << tenant << ": " << report->entries << " entries, " << report->heads << " signed tree heads\n";
  if (trusted.empty()) out << "(trusting the signing keys recorded in the database)\n";
  if (report->ok) {
    out << "verified\n";
    return 0;
  }
  out << "NOT VERIFIED";
  if (report->first_altered) out << ": first altered entry " << *report->first_altered;
  out << "\n";
  for (const std::string& p : report->problems) out << "  " << p << "\n";
  return 1;
}

}  // namespace medgrid::ledger
