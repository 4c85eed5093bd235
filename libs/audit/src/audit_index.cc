#include "medgrid/audit/audit_index.h"

#include <cctype>
#include <pqxx/pqxx>

#include "boost/json.hpp"
#include "medgrid/core/status.h"
#include "medgrid/fhir/validator.h"
#include "medgrid/core/strings.h"
#include "medgrid/store/sql.h"

namespace medgrid::audit {
namespace {

namespace json = boost::json;
using search::Prefix;

constexpr int kDefaultCount = 50;

absl::Status Refused(std::string_view key, std::string_view why) {
  return core::Error(absl::StatusCode::kInvalidArgument, core::StrCat("Parameter '", key, "': ", why))
      .Http(400)
      .Issue("not-supported");
}

// Percent-encodes what a query value may not hold as is.
std::string UrlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/' || c == ':' || c == '|' ||
        c == ',') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string Join(const std::vector<std::string>& parts, char sep) {
  std::string out;
  for (const std::string& p : parts) core::StrAppend(out, out.empty() ? "" : std::string(1, sep), p);
  return out;
}

// SQL for the recorded instant against a date value (search.html#prefix),
// the instant being the range [t, t + 1 ms).
absl::StatusOr<std::string> DateSql(const search::Value& v, const std::string& key) {
  const int64_t s = v.date.lo;
  const int64_t e = v.date.hi;
  switch (v.prefix) {
    case Prefix::kEq: return core::StrCat("(recorded_us >= ", s, " AND recorded_us < ", e, ")");
    case Prefix::kNe: return core::StrCat("(recorded_us < ", s, " OR recorded_us >= ", e, ")");
    case Prefix::kGt:
    case Prefix::kSa: return core::StrCat("(recorded_us >= ", e, ")");
    case Prefix::kLt:
    case Prefix::kEb: return core::StrCat("(recorded_us < ", s, ")");
    case Prefix::kGe: return core::StrCat("(recorded_us >= ", s, ")");
    case Prefix::kLe: return core::StrCat("(recorded_us < ", e, ")");
    case Prefix::kAp: return Refused(key, "the prefix ap is not supported on AuditEvent dates");
  }
  return Refused(key, "unknown prefix");
}

}  // namespace

EventFacts FactsOf(const Interaction& in, const std::string& event_id) {
  EventFacts f;
  f.event_id = event_id;
  f.recorded_us = core::ToUnixMicros(in.recorded);
  f.action = std::string(1, in.action);
  f.outcome = in.http_status < 400 ? "0" : in.http_status < 500 ? "4" : "8";
  f.subtype = in.interaction;
  f.address = in.agent_address;
  if (IsReference(in.agent)) f.agent = in.agent;
  f.patients = in.patients;
  return f;
}

std::string FactsLine(const EventFacts& f) {
  return core::StrCat(f.recorded_us, "\t", f.action, "\t", f.outcome, "\t", f.subtype, "\t", f.address, "\t",
                      Join(f.patients, ','), "\t", f.agent);
}

bool ParseFactsLine(std::string_view line, EventFacts& f) {
  std::vector<std::string_view> parts;
  for (std::string_view p : core::StrSplit(line, '\t')) parts.push_back(p);
  // Six fields before agents were indexed (a spool written by an older
  // server), seven since.
  if (parts.size() != 6 && parts.size() != 7) return false;
  f.recorded_us = 0;
  for (char c : parts[0]) {
    if (c < '0' || c > '9') return false;
    f.recorded_us = f.recorded_us * 10 + (c - '0');
  }
  f.action = std::string(parts[1]);
  f.outcome = std::string(parts[2]);
  f.subtype = std::string(parts[3]);
  f.address = std::string(parts[4]);
  f.patients.clear();
  if (!parts[5].empty()) {
    for (std::string_view p : core::StrSplit(parts[5], ',')) f.patients.emplace_back(p);
  }
  f.agent = parts.size() == 7 ? std::string(parts[6]) : "";
  return true;
}

struct AuditIndex::Impl {
  std::unique_ptr<pqxx::connection> conn;
};

AuditIndex::AuditIndex() : impl_(std::make_unique<Impl>()) {}

absl::StatusOr<std::unique_ptr<AuditIndex>> AuditIndex::Open(const std::string& dsn) {
  std::unique_ptr<AuditIndex> index(new AuditIndex());
  index->dsn_ = dsn;
  try {
    index->impl_->conn = std::make_unique<pqxx::connection>(dsn);
  } catch (const std::exception& e) {
    return absl::UnavailableError(core::StrCat("The audit ledger database: ", e.what()));
  }
  return index;
}

AuditIndex::~AuditIndex() = default;

absl::Status AuditIndex::Put(const std::string& tenant, const std::vector<EventFacts>& facts) {
  if (facts.empty()) return absl::OkStatus();
  // One statement: the facts as parallel arrays, unnested. Patients travel
  // as one text per event ("a,b"), split in SQL; references hold no commas.
  std::vector<std::string> ids, times, actions, outcomes, subtypes, addresses, patients, agents;
  for (const EventFacts& f : facts) {
    ids.push_back(f.event_id);
    times.push_back(std::to_string(f.recorded_us));
    actions.push_back(f.action);
    outcomes.push_back(f.outcome);
    subtypes.push_back(f.subtype);
    addresses.push_back(f.address);
    patients.push_back(Join(f.patients, ','));
    agents.push_back(f.agent);
  }
  std::lock_guard lock(mu_);
  try {
    if (!impl_->conn || !impl_->conn->is_open()) impl_->conn = std::make_unique<pqxx::connection>(dsn_);
    pqxx::work tx(*impl_->conn);
    const auto& arr = store::TextArrayLiteral;
    tx.exec_params(
        "INSERT INTO audit_event_index (tenant_id, event_id, recorded_us, action, outcome, subtype, address, patients, "
        "agent) SELECT $1, t.id, t.at::bigint, t.action, t.outcome, t.subtype, t.address, "
        "CASE WHEN t.patients = '' THEN '{}'::text[] ELSE string_to_array(t.patients, ',') END, t.agent "
        "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) "
        "AS t(id, at, action, outcome, subtype, address, patients, agent) ON CONFLICT DO NOTHING",
        tenant, arr(ids), arr(times), arr(actions), arr(outcomes), arr(subtypes), arr(addresses), arr(patients),
        arr(agents));
    tx.commit();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    impl_->conn.reset();
    return absl::UnavailableError(core::StrCat("Indexing audit events failed: ", e.what()));
  }
}

absl::StatusOr<std::string> AuditIndex::Read(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  try {
    if (!impl_->conn || !impl_->conn->is_open()) impl_->conn = std::make_unique<pqxx::connection>(dsn_);
    pqxx::read_transaction tx(*impl_->conn);
    pqxx::result r = tx.exec_params(
        "SELECT convert_from(entry, 'UTF8'), archived FROM ledger_entries WHERE tenant_id = $1 AND event_id = $2",
        tenant, id);
    if (r.empty()) {
      return core::Error(absl::StatusCode::kNotFound, core::StrCat("AuditEvent/", id, " is not in this ledger"))
          .Http(404)
          .Issue("not-found");
    }
    if (r[0][1].as<bool>()) {
      // Past the tenant's hot-retention window: its bytes are in an archive
      // file (medgridctl audit archive), not here.
      return core::Error(absl::StatusCode::kNotFound,
                         core::StrCat("AuditEvent/", id, " has been moved to the ledger's archive"))
          .Http(410)
          .Issue("not-found");
    }
    return r[0][0].as<std::string>();
  } catch (const std::exception& e) {
    impl_->conn.reset();
    return absl::UnavailableError(core::StrCat("Reading the audit ledger failed: ", e.what()));
  }
}

absl::StatusOr<std::string> AuditIndex::Search(const std::string& tenant, const search::SearchRequest& req,
                                               const engine::SearchInput& input) {
  // Conditions, each a parenthesized SQL text over audit_event_index; every
  // value is a bind parameter ($2 on) but the numbers of dates.
  std::vector<std::string> params = {tenant};
  auto p = [&](std::string v) {
    params.push_back(std::move(v));
    return core::StrCat("$", params.size());
  };
  std::string where = "tenant_id = $1";
  for (const search::Criterion& c : req.criteria) {
    const std::string& code = c.param->code;
    if (c.kind != search::Criterion::Kind::kValue || c.modifier != search::Modifier::kNone) {
      return Refused(c.key, "only plain values are supported on AuditEvent (no chains, _has or modifiers)");
    }
    std::string ors;
    for (const search::Value& v : c.values) {
      std::string one;
      if (code == "patient") {
        const std::string ref = v.text.find('/') == std::string::npos ? core::StrCat("Patient/", v.text) : v.text;
        one = core::StrCat("patients @> ARRAY[", p(ref), "]::text[]");
      } else if (code == "date") {
        ASSIGN_OR_RETURN(one, DateSql(v, c.key));
      } else if (code == "action" || code == "outcome" || code == "subtype") {
        one = core::StrCat(code, " = ", p(v.text));
      } else if (code == "agent") {
        // The parser splits "Practitioner/1" into ref_type and the id.
        const std::string ref = v.ref_type.empty() ? v.text : core::StrCat(v.ref_type, "/", v.text);
        if (IsReference(ref)) {
          one = core::StrCat("agent = ", p(ref));
        } else if (v.ref_type.empty() && fhir::IsValidId(v.text)) {
          one = core::StrCat("agent LIKE '%/' || ", p(v.text));  // ids hold no LIKE wildcards
        } else {
          return Refused(c.key, "must be a reference (Practitioner/123) or an id");
        }
      } else if (code == "address") {
        one = core::StrCat("address = ", p(v.text));
      } else if (code == "_id") {
        one = core::StrCat("event_id = ", p(v.text));
      } else {
        return Refused(c.key, "is not supported on AuditEvent here: use patient, agent, date, action, outcome, "
                              "subtype, address or _id");
      }
      core::StrAppend(ors, ors.empty() ? "" : " OR ", one);
    }
    core::StrAppend(where, " AND (", ors, ")");
  }
  if (!req.sort.empty() || !req.includes.empty()) {
    return Refused(req.sort.empty() ? "_include" : "_sort", "is not supported on AuditEvent");
  }
  const int count = req.count > 0 ? std::min(req.count, 1000) : kDefaultCount;
  // The cursor: "<recorded_us>.<event_id>" of the last event of the page before.
  std::string after;
  if (!req.cursor.empty()) {
    const std::size_t dot = req.cursor.find('.');
    int64_t at = 0;
    bool ok = dot != std::string::npos && dot > 0;
    for (std::size_t i = 0; ok && i < dot; ++i) {
      ok = req.cursor[i] >= '0' && req.cursor[i] <= '9';
      at = at * 10 + (req.cursor[i] - '0');
    }
    if (!ok) {
      return core::Error(absl::StatusCode::kInvalidArgument, "Parameter '_cursor': is malformed").Http(400).Issue("invalid");
    }
    after = core::StrCat(" AND (recorded_us, event_id) > (", at, ", ", p(req.cursor.substr(dot + 1)), ")");
  }
  std::lock_guard lock(mu_);
  try {
    if (!impl_->conn || !impl_->conn->is_open()) impl_->conn = std::make_unique<pqxx::connection>(dsn_);
    pqxx::read_transaction tx(*impl_->conn);
    pqxx::result r = tx.exec_params(
        core::StrCat("SELECT i.recorded_us, i.event_id, convert_from(e.entry, 'UTF8') FROM (SELECT recorded_us, event_id "
                     "FROM audit_event_index WHERE ", where, after, " ORDER BY recorded_us, event_id LIMIT ", count + 1,
                     ") i JOIN ledger_entries e ON e.tenant_id = $1 AND e.event_id = i.event_id AND NOT e.archived "
                     "ORDER BY i.recorded_us, "
                     "i.event_id"),
        pqxx::prepare::make_dynamic_params(params));
    json::array entries;
    const bool more = r.size() > static_cast<std::size_t>(count);
    std::string next;
    for (std::size_t i = 0; i < r.size() && i < static_cast<std::size_t>(count); ++i) {
      const std::string id = r[i][1].as<std::string>();
      entries.push_back(json::object{{"fullUrl", core::StrCat(input.base_url, "/AuditEvent/", id)},
                                     {"resource", json::parse(r[i][2].as<std::string>())},
                                     {"search", json::object{{"mode", "match"}}}});
      next = core::StrCat(r[i][0].as<int64_t>(), ".", id);
    }
    std::string query;
    for (const auto& [k, v] : input.params) {
      if (k != "_cursor") core::StrAppend(query, query.empty() ? "?" : "&", UrlEncode(k), "=", UrlEncode(v));
    }
    const std::string self = core::StrCat(input.base_url, "/AuditEvent", query);
    json::array links{json::object{{"relation", "self"}, {"url", self}}};
    if (more) {
      links.push_back(json::object{
          {"relation", "next"},
          {"url", core::StrCat(self, query.empty() ? "?" : "&", "_cursor=", next)}});
    }
    json::object bundle{{"resourceType", "Bundle"}, {"type", "searchset"}, {"link", std::move(links)}};
    if (!more && req.cursor.empty()) bundle["total"] = entries.size();
    if (!entries.empty()) bundle["entry"] = std::move(entries);  // FHIR JSON has no empty arrays
    return json::serialize(bundle);
  } catch (const std::exception& e) {
    impl_->conn.reset();
    return absl::UnavailableError(core::StrCat("Searching the audit ledger failed: ", e.what()));
  }
}

}  // namespace medgrid::audit
