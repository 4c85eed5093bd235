#include "medgrid/ledger/cli.h"

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <istream>
#include <map>
#include <optional>
#include <ostream>

#include "medgrid/core/strings.h"
#include "medgrid/ledger/archive.h"
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

// The arguments after a subcommand: words, and flags given as "--name
// value" or "--name=value".
struct Args {
  std::vector<std::string> words;
  std::map<std::string, std::vector<std::string>> flags;  // by name without "--", values in order
};

// Nothing (and `error`) for a flag without a value.
std::optional<Args> SplitArgs(const std::vector<std::string>& args, std::size_t from, std::string& error) {
  Args out;
  for (std::size_t i = from; i < args.size(); ++i) {
    std::string name = args[i];
    if (name.rfind("--", 0) != 0) {
      out.words.push_back(name);
      continue;
    }
    std::string value;
    if (std::size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      error = "flag " + name + " needs a value";
      return std::nullopt;
    }
    out.flags[name.substr(2)].push_back(value);
  }
  return out;
}

// The flags of a `ledger` command; nothing on a stray word, a repeated or
// valueless flag, or a value that is not a non-negative integer.
std::optional<std::map<std::string, uint64_t>> ParseFlags(const std::vector<std::string>& args, std::size_t from,
                                                          std::string& error) {
  std::optional<Args> split = SplitArgs(args, from, error);
  if (!split) return std::nullopt;
  if (!split->words.empty()) {
    error = "unexpected argument '" + split->words[0] + "'";
    return std::nullopt;
  }
  std::map<std::string, uint64_t> flags;
  for (const auto& [name, values] : split->flags) {
    const std::string& value = values.front();
    if (values.size() > 1) {
      error = "flag --" + name + " given twice";
      return std::nullopt;
    }
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec != std::errc() || end != value.data() + value.size() || value.empty()) {
      error = "flag --" + name + " needs a non-negative integer, not '" + value + "'";
      return std::nullopt;
    }
    flags[name] = n;
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
namespace {

constexpr const char* kAuditUsage =
    "usage: medgridctl audit verify --tenant T [--archive FILE]... [--dsn DSN] [--public-key HEX]...\n"
    "       medgridctl audit retention --tenant T [--hot-days N] [--dsn DSN]\n"
    "       medgridctl audit archive --tenant T --out DIR [--before RFC3339] [--dsn DSN]\n"
    "       medgridctl audit verify-archive FILE [--public-key HEX]...\n";

// An RFC 3339 date-time (2024-05-01T10:00:00Z, fractions and offsets
// allowed) or a date (midnight UTC).
std::optional<core::TimePoint> ParseTime(std::string_view s) {
  auto num = [&](std::size_t pos, std::size_t len, int& v) {
    if (pos + len > s.size()) return false;
    auto [end, ec] = std::from_chars(s.data() + pos, s.data() + pos + len, v);
    return ec == std::errc() && end == s.data() + pos + len && s[pos] != '-' && s[pos] != '+';
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  // Years past 2200 would overflow core::TimePoint.
  if (s.size() < 10 || s[4] != '-' || s[7] != '-' || !num(0, 4, y) || !num(5, 2, mo) || !num(8, 2, d) || y < 1970 ||
      y > 2200) {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{std::chrono::year(y), std::chrono::month(mo), std::chrono::day(d)};
  if (!date.ok()) return std::nullopt;
  core::TimePoint t = std::chrono::sys_days(date);
  if (s.size() == 10) return t;
  if (s.size() < 20 || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' || !num(11, 2, h) ||
      !num(14, 2, mi) || !num(17, 2, sec) || h > 23 || mi > 59 || sec > 60) {
    return std::nullopt;
  }
  t += std::chrono::hours(h) + std::chrono::minutes(mi) + std::chrono::seconds(sec);
  std::size_t pos = 19;
  if (s[pos] == '.') {
    int64_t micros = 0;
    int digits = 0;
    for (++pos; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++digits) {
      if (digits < 6) micros = micros * 10 + (s[pos] - '0');
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 6; ++digits) micros *= 10;
    t += std::chrono::microseconds(micros);
  }
  const std::string_view zone = s.substr(pos);
  if (zone == "Z" || zone == "z") return t;
  int oh = 0, om = 0;
  if (zone.size() != 6 || (zone[0] != '+' && zone[0] != '-') || zone[3] != ':' || !num(pos + 1, 2, oh) ||
      !num(pos + 4, 2, om) || oh > 23 || om > 59) {
    return std::nullopt;
  }
  const auto offset = std::chrono::hours(oh) + std::chrono::minutes(om);
  return zone[0] == '+' ? t - offset : t + offset;
}

// One `medgridctl audit` command: its words (FILE arguments) and flags.
class AuditCommand {
 public:
  AuditCommand(std::ostream& out, std::ostream& err) : out_(out), err_(err) {}

  int Run(const std::vector<std::string>& args) {
    if (args.empty()) return Fail(core::StrCat("missing subcommand\n", kAuditUsage));
    const std::string& command = args[0];
    std::string error;
    std::optional<Args> split = SplitArgs(args, 1, error);
    if (!split) return Fail(error);
    words_ = std::move(split->words);
    flags_ = std::move(split->flags);
    struct Subcommand {
      std::map<std::string, bool> flags;  // true: may be repeated
      std::size_t words;                  // FILE arguments
      int (AuditCommand::*run)();
    };
    static const std::map<std::string, Subcommand> kSubcommands = {
        {"verify",
         {{{"tenant", false}, {"dsn", false}, {"public-key", true}, {"archive", true}}, 0, &AuditCommand::Verify}},
        {"retention", {{{"tenant", false}, {"dsn", false}, {"hot-days", false}}, 0, &AuditCommand::Retention}},
        {"archive",
         {{{"tenant", false}, {"dsn", false}, {"out", false}, {"before", false}}, 0, &AuditCommand::Archive}},
        {"verify-archive", {{{"public-key", true}}, 1, &AuditCommand::VerifyArchiveFile}},
    };
    auto sub = kSubcommands.find(command);
    if (sub == kSubcommands.end()) return Fail(core::StrCat("unknown subcommand '", command, "'\n", kAuditUsage));
    for (const auto& [name, values] : flags_) {
      auto it = sub->second.flags.find(name);
      if (it == sub->second.flags.end()) return Fail(core::StrCat("unknown flag --", name, " for '", command, "'"));
      if (!it->second && values.size() > 1) return Fail(core::StrCat("flag --", name, " given twice"));
    }
    if (words_.size() > sub->second.words) return Fail(core::StrCat("unexpected argument '", words_.back(), "'"));
    if (words_.size() < sub->second.words) return Fail(core::StrCat("missing FILE\n", kAuditUsage));
    if (sub->second.flags.contains("tenant") && Flag("tenant").empty()) return Fail("missing --tenant");
    return (this->*sub->second.run)();
  }

 private:
  int Fail(std::string_view message) {
    err_ << "medgridctl audit: " << message << "\n";
    return 2;
  }

  // The values of flag `name`, in order.
  const std::vector<std::string>& Values(const std::string& name) const {
    static const std::vector<std::string> kNone;
    auto it = flags_.find(name);
    return it == flags_.end() ? kNone : it->second;
  }
  std::string Flag(const std::string& name) const { return Values(name).empty() ? "" : Values(name).front(); }

  // The --public-key flags as key id -> raw key; nothing (with a message) for a bad one.
  std::optional<std::map<std::string, std::string>> TrustedKeys() {
    std::map<std::string, std::string> trusted;
    for (const std::string& value : Values("public-key")) {
      std::optional<std::string> key = FromHex(value);
      if (!key || key->size() != 32) {
        Fail("--public-key needs 64 hex digits (a raw Ed25519 key)");
        return std::nullopt;
      }
      trusted[KeyId(*key)] = *key;
    }
    return trusted;
  }

  // The store at --dsn or $MEDGRID_AUDIT_DSN; nothing (with a message) when it cannot be opened.
  std::unique_ptr<LedgerStore> OpenStore() {
    std::string dsn = Flag("dsn");
    if (const char* env = std::getenv("MEDGRID_AUDIT_DSN"); dsn.empty() && env != nullptr) dsn = env;
    if (dsn.empty()) {
      Fail("missing --dsn (or MEDGRID_AUDIT_DSN)");
      return nullptr;
    }
    absl::StatusOr<std::unique_ptr<LedgerStore>> store = LedgerStore::Open(dsn, nullptr);
    if (!store.ok()) {
      Fail(std::string(store.status().message()));
      return nullptr;
    }
    return std::move(*store);
  }

  // Ends the output of a check: 0 when it held, else 1 with its problems.
  int Verdict(bool ok, std::string_view first_bad, const std::vector<std::string>& problems, uint64_t more = 0) {
    if (ok) {
      out_ << "verified\n";
      return 0;
    }
    out_ << "NOT VERIFIED" << first_bad << "\n";
    for (const std::string& p : problems) out_ << "  " << p << "\n";
    if (more > 0) out_ << "  and " << more << " more problems\n";
    return 1;
  }

  int Verify() {
    std::optional<std::map<std::string, std::string>> trusted = TrustedKeys();
    if (!trusted) return 2;
    std::vector<std::unique_ptr<ArchiveReader>> archives;
    for (const std::string& path : Values("archive")) {
      absl::StatusOr<std::unique_ptr<ArchiveReader>> reader = ArchiveReader::Open(path);
      if (!reader.ok()) return Fail(std::string(reader.status().message()));
      archives.push_back(std::move(*reader));
    }
    std::unique_ptr<LedgerStore> store = OpenStore();
    if (store == nullptr) return 2;
    const std::string tenant = Flag("tenant");
    absl::StatusOr<VerifyReport> report =
        store->Verify(tenant, trusted->empty() ? nullptr : &*trusted, std::move(archives));
    if (!report.ok()) return Fail(std::string(report.status().message()));
    out_ << "tenant " << tenant << ": " << report->entries << " entries, " << report->heads << " signed tree heads\n";
    if (trusted->empty()) out_ << "(trusting the signing keys recorded in the database)\n";
    if (report->archived > 0) {
      out_ << report->archived << " archived entries: " << report->archived - report->archived_unchecked
           << " checked against archive files, " << report->archived_unchecked << " by their stored leaf hash only"
           << (report->archived_unchecked > 0 ? " (give --archive FILE to check their bytes)" : "") << "\n";
    }
    return Verdict(report->ok,
                   report->first_altered ? core::StrCat(": first altered entry ", *report->first_altered) : "",
                   report->problems);
  }

  int Retention() {
    int hot_days = 0;
    const std::string value = Flag("hot-days");
    if (!value.empty()) {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), hot_days);
      if (ec != std::errc() || end != value.data() + value.size() || hot_days < 1) {
        return Fail(core::StrCat("--hot-days needs a whole number of days, at least 1, not '", value, "'"));
      }
    }
    std::unique_ptr<LedgerStore> store = OpenStore();
    if (store == nullptr) return 2;
    const std::string tenant = Flag("tenant");
    if (hot_days > 0) {
      if (absl::Status set = store->SetRetention(tenant, hot_days); !set.ok()) return Fail(std::string(set.message()));
    }
    absl::StatusOr<ledger::Retention> retention = store->GetRetention(tenant);
    if (!retention.ok()) return Fail(std::string(retention.status().message()));
    out_ << "tenant " << tenant << ": hot window " << retention->hot_days << " days"
         << (retention->is_default ? " (the default)" : "") << "\n";
    return 0;
  }

  int Archive() {
    const std::string dir = Flag("out");
    if (dir.empty()) return Fail("missing --out (the directory for the archive file)");
    std::optional<core::TimePoint> before;
    if (const std::string value = Flag("before"); !value.empty()) {
      before = ParseTime(value);
      if (!before) {
        return Fail(core::StrCat("--before needs an RFC 3339 time such as 2024-05-01T00:00:00Z, not '", value, "'"));
      }
    }
    std::unique_ptr<LedgerStore> store = OpenStore();
    if (store == nullptr) return 2;
    const std::string tenant = Flag("tenant");
    absl::StatusOr<Archived> archived = store->Archive(tenant, before, DirectorySinks(dir));
    if (!archived.ok()) {
      err_ << "medgridctl audit: " << archived.status().message() << "\n";
      return 1;
    }
    if (archived->first == archived->end) {
      out_ << "tenant " << tenant << ": nothing to archive (no entry past " << archived->first << " is old enough)\n";
      return 0;
    }
    out_ << "tenant " << tenant << ": archived entries " << archived->first << " to " << archived->end - 1 << " into "
         << dir << "/" << archived->file_name << "\n"
         << "sha256 " << ToHex(archived->file_sha256) << ", proved against the head at size " << archived->head_size
         << "\n";
    return 0;
  }

  int VerifyArchiveFile() {
    std::optional<std::map<std::string, std::string>> trusted = TrustedKeys();
    if (!trusted) return 2;
    absl::StatusOr<std::unique_ptr<ArchiveReader>> reader = ArchiveReader::Open(words_[0]);
    if (!reader.ok()) return Fail(std::string(reader.status().message()));
    const ArchiveHeader& h = (*reader)->header();
    out_ << words_[0] << ": tenant " << h.tenant << ", "
         << (h.end > h.first ? core::StrCat("entries ", h.first, " to ", h.end - 1) : "no entries") << ", head at size "
         << h.head.size << " signed by key " << h.head.key_id << "\n";
    const ArchiveReport report = VerifyArchive(**reader, trusted->empty() ? nullptr : &*trusted);
    if (report.key_from_file) {
      out_ << "(the head was checked with the key the file carries: no --public-key was given to trust)\n";
    }
    out_ << report.entries << " entries read\n";
    return Verdict(report.ok, report.first_bad ? core::StrCat(": first bad entry ", *report.first_bad) : "",
                   report.problems, report.more_problems);
  }

  std::ostream& out_;
  std::ostream& err_;
  std::vector<std::string> words_;
  std::map<std::string, std::vector<std::string>> flags_;  // by name without "--", values in order
};

}  // namespace

int RunAuditCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return AuditCommand(out, err).Run(args);
}

}  // namespace medgrid::ledger
