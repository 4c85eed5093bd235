// Search SQL: a parsed SearchRequest compiled to one parameterised query
// over the index tables (see migration 2), then _include/_revinclude.
//
// Every criterion compiles to a set of resource ids of one type ("SELECT
// res_id FROM idx_... WHERE tenant_id = $1 AND res_type = ... AND param =
// ..."). Chains nest these sets through idx_reference; _has walks it the
// other way. Index rows exist only for live current versions, so a set never
// names a deleted resource, and a page in res_id order is cut from the
// intersection of the sets before any resource is read (BuildSearch). All
// values travel as bind parameters; OR lists become "= ANY($n)". Every
// statement is scoped by tenant_id = $1.
#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "boost/json.hpp"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/search/text.h"
#include "pg_index.h"
#include "pg_resource_store.h"

namespace medgrid::store {
namespace {

namespace json = boost::json;
using search::Criterion;
using search::Modifier;
using search::Prefix;
using search::Value;

constexpr std::size_t kMaxIncluded = 5000;

// Characters of a string value that idx_string_prefix is keyed by (migration 9).
constexpr std::size_t kStringKeyChars = 2;

// The number of characters (UTF-8 code points) of `s`.
std::size_t Characters(std::string_view s) {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// Whether a plain string search matches values that begin with exactly the
// characters idx_string_prefix is keyed by: then it is an equality on that
// key, and its ids come in res_id order.
bool KeyedPrefix(const Criterion& c, const Value& v) {
  return c.modifier == Modifier::kNone && Characters(search::FoldText(v.text)) == kStringKeyChars;
}

absl::Status BadCursor() {
  return core::Error(absl::StatusCode::kInvalidArgument, "Parameter '_cursor': is malformed or expired")
      .Http(400)
      .Issue("invalid");
}

std::string EscapeLike(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char c : s) {
    if (c == '%' || c == '_' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// The half-width of a decimal's implied precision range (search.html#number:
// "100" stands for [99.5, 100.5)), as a numeric literal.
std::string HalfUnit(std::string_view number) {
  int decimals = 0;
  int exponent = 0;
  std::size_t dot = number.find('.');
  std::size_t e = number.find_first_of("eE");
  if (dot != std::string_view::npos) {
    decimals = static_cast<int>((e == std::string_view::npos ? number.size() : e) - dot - 1);
  }
  if (e != std::string_view::npos) {
    std::string_view exp = number.substr(e + 1);
    if (!exp.empty() && exp[0] == '+') exp.remove_prefix(1);
    std::from_chars(exp.data(), exp.data() + exp.size(), exponent);
  }
  return core::StrCat("5e", exponent - decimals - 1);
}

std::string Base64UrlEncode(std::string_view in) {
  static constexpr char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kChars[(n >> 18) & 63];
    out += kChars[(n >> 12) & 63];
    out += kChars[(n >> 6) & 63];
    out += kChars[n & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t n = uint8_t(in[i]) << 16;
    out += kChars[(n >> 18) & 63];
    out += kChars[(n >> 12) & 63];
  } else if (i + 2 == in.size()) {
    uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kChars[(n >> 18) & 63];
    out += kChars[(n >> 12) & 63];
    out += kChars[(n >> 6) & 63];
  }
  return out;
}

// One ORDER BY column of the page query.
struct OrderColumn {
  std::string expr;  // SQL over alias r, never NULL
  std::string cast;  // how a cursor value is cast back: "text", "bigint", "numeric", "boolean"
  bool descending = false;
};

class SearchSql {
 public:
  // `now` (microseconds since the epoch) anchors the ap prefix on dates.
  explicit SearchSql(const std::string& tenant, int64_t now = 0) : now_(now) { params_.push_back(tenant); }

  std::string P(std::string value) {
    params_.push_back(std::move(value));
    return core::StrCat("$", params_.size());
  }
  std::string Arr(const std::vector<std::string>& values) { return P(TextArrayLiteral(values)) + "::text[]"; }
  std::vector<std::string>& params() { return params_; }

  // The ids of live resources of `type` that satisfy `c`.
  absl::StatusOr<std::string> IdSet(const Criterion& c, const std::string& type);

  // The ids of live resources of `type` that satisfy a token criterion and
  // date criteria together, from idx_token_date (see FindCombo).
  absl::StatusOr<std::string> ComboSet(const TokenDateCombo& combo, const Criterion& token,
                                       const std::vector<const Criterion*>& dates, const std::string& type);

  // All live resources of `type`.
  std::string AllOf(const std::string& type) {
    return core::StrCat("SELECT res_id FROM resources WHERE tenant_id = $1 AND res_type = ", P(type),
                        " AND NOT deleted");
  }

 private:
  absl::StatusOr<std::string> ValueSet(const Criterion& c, const std::string& type);
  absl::StatusOr<std::string> ValueCondition(const fhir::SearchParamDef& def, const Criterion& c, const Value& v,
                                             const std::string& a);
  std::string DateCondition(const Value& v, const std::string& lo, const std::string& hi);
  std::string NumberCondition(const Value& v, const std::string& a);
  static const char* TableOf(const std::string& param_type);

  const int64_t now_;
  std::vector<std::string> params_;
};

const char* SearchSql::TableOf(const std::string& t) {
  if (t == "string") return "idx_string";
  if (t == "token") return "idx_token";
  if (t == "date") return "idx_date";
  if (t == "reference") return "idx_reference";
  if (t == "number" || t == "quantity") return "idx_quantity";
  if (t == "uri") return "idx_uri";
  return nullptr;
}

// The widening of an ap (approximately) date: 10% of the distance between
// the value and now, at least a day either side.
int64_t ApproximateGap(const Value& v, int64_t now) {
  const int64_t mid = v.date.lo / 2 + v.date.hi / 2;
  return std::max<int64_t>(std::abs(now / 10 - mid / 10), 86'400'000'000LL);
}

// Bounds [min, max) that DateCondition implies for lo of a target range no
// wider than `width` (hi - lo <= width), when it implies them: a condition
// "hi > x" gives lo > x - width.
struct LoBounds {
  std::optional<int64_t> min;
  std::optional<int64_t> max;
};

LoBounds SpanLoBounds(const Value& v, int64_t width, int64_t now) {
  const int64_t s = v.date.lo;
  const int64_t e = v.date.hi;
  auto below = [width](int64_t x) {
    return x < std::numeric_limits<int64_t>::min() + width ? std::numeric_limits<int64_t>::min() : x - width;
  };
  switch (v.prefix) {
    case Prefix::kEq: return {s, e};
    case Prefix::kNe: return {};
    case Prefix::kGt: return {below(e), std::nullopt};
    case Prefix::kLt: return {std::nullopt, s};
    case Prefix::kGe: return {below(s), std::nullopt};
    case Prefix::kLe: return {std::nullopt, e};
    case Prefix::kSa: return {e, std::nullopt};
    case Prefix::kEb: return {std::nullopt, s};
    case Prefix::kAp: {
      const int64_t gap = ApproximateGap(v, now);
      return {below(s - gap), e + gap};
    }
  }
  return {};
}

std::string SearchSql::DateCondition(const Value& v, const std::string& lo, const std::string& hi) {
  // Target [lo, hi) against the search range [s, e) (search.html#prefix).
  const int64_t s = v.date.lo;
  const int64_t e = v.date.hi;
  switch (v.prefix) {
    // The redundant bounds (lo < e for eq and le, hi > s for ge; a range
    // has lo < hi) let an index range scan serve the condition.
    case Prefix::kEq: return core::StrCat("(", lo, " >= ", s, " AND ", lo, " < ", e, " AND ", hi, " <= ", e, ")");
    case Prefix::kNe: return core::StrCat("NOT (", lo, " >= ", s, " AND ", hi, " <= ", e, ")");
    case Prefix::kGt: return core::StrCat("(", hi, " > ", e, ")");
    case Prefix::kLt: return core::StrCat("(", lo, " < ", s, ")");
    case Prefix::kGe:
      return core::StrCat("(", hi, " > ", s, " AND (", hi, " > ", e, " OR (", lo, " >= ", s, " AND ", hi, " <= ", e,
                          ")))");
    case Prefix::kLe:
      return core::StrCat("(", lo, " < ", e, " AND (", lo, " < ", s, " OR (", lo, " >= ", s, " AND ", hi, " <= ", e,
                          ")))");
    case Prefix::kSa: return core::StrCat("(", lo, " >= ", e, ")");
    case Prefix::kEb: return core::StrCat("(", hi, " <= ", s, ")");
    case Prefix::kAp: {
      const int64_t gap = ApproximateGap(v, now_);
      return core::StrCat("(", lo, " < ", e + gap, " AND ", hi, " > ", s - gap, ")");
    }
  }
  return "false";
}

std::string SearchSql::NumberCondition(const Value& v, const std::string& a) {
  const std::string n = P(v.number) + "::numeric";
  const std::string low = a + ".low";
  const std::string high = a + ".high";
  switch (v.prefix) {
    case Prefix::kEq:
    case Prefix::kNe: {
      const std::string half = P(HalfUnit(v.number)) + "::numeric";
      std::string eq = core::StrCat("(", low, " >= ", n, " - ", half, " AND ", high, " < ", n, " + ", half, ")");
      return v.prefix == Prefix::kEq ? eq : "NOT " + eq;
    }
    case Prefix::kGt: return core::StrCat("(", high, " > ", n, ")");
    case Prefix::kLt: return core::StrCat("(", low, " < ", n, ")");
    case Prefix::kGe: return core::StrCat("(", high, " >= ", n, ")");
    case Prefix::kLe: return core::StrCat("(", low, " <= ", n, ")");
    case Prefix::kSa: return core::StrCat("(", low, " > ", n, ")");
    case Prefix::kEb: return core::StrCat("(", high, " < ", n, ")");
    case Prefix::kAp:
      return core::StrCat("(", low, " <= ", n, " + abs(", n, ") * 0.1 AND ", high, " >= ", n, " - abs(", n,
                          ") * 0.1)");
  }
  return "false";
}

absl::StatusOr<std::string> SearchSql::ValueCondition(const fhir::SearchParamDef& def, const Criterion& c,
                                                      const Value& v, const std::string& a) {
  const std::string& t = def.type;
  if (t == "string") {
    if (c.modifier == Modifier::kExact) {
      return core::StrCat("(", a, ".folded = ", P(search::FoldText(v.text)), " AND ", a, ".exact = ", P(v.text), ")");
    }
    if (c.modifier == Modifier::kContains) {
      return core::StrCat("(", a, ".folded LIKE ", P(core::StrCat("%", EscapeLike(search::FoldText(v.text)), "%")),
                          ")");
    }
    if (KeyedPrefix(c, v)) {
      return core::StrCat("(left(", a, ".folded, ", kStringKeyChars, ") = ", P(search::FoldText(v.text)), ")");
    }
    return core::StrCat("(", a, ".folded LIKE ", P(EscapeLike(search::FoldText(v.text)) + "%"), ")");
  }
  if (t == "token") {
    if (c.modifier == Modifier::kText) {
      return core::StrCat("(", a, ".text LIKE ", P(EscapeLike(search::FoldText(v.text)) + "%"), ")");
    }
    if (c.modifier == Modifier::kOfType) {
      return core::StrCat("(", a, ".type_system = ", P(v.system.value_or("")), " AND ", a, ".type_code = ", P(v.code),
                          " AND ", a, ".code = ", P(v.text), ")");
    }
    std::string cond;
    if (!v.text.empty()) cond = core::StrCat(a, ".code = ", P(v.text));
    if (v.system) {
      std::string sys = v.system->empty() ? core::StrCat(a, ".system IS NULL")
                                          : core::StrCat(a, ".system = ", P(*v.system));
      cond = cond.empty() ? sys : core::StrCat(cond, " AND ", sys);
    }
    return cond.empty() ? std::string("true") : "(" + cond + ")";
  }
  if (t == "date") return DateCondition(v, a + ".lo", a + ".hi");
  if (t == "number") return NumberCondition(v, a);
  if (t == "quantity") {
    std::string cond = NumberCondition(v, a);
    if (v.system && !v.system->empty()) core::StrAppend(cond, " AND ", a, ".system = ", P(*v.system));
    if (!v.code.empty()) {
      if (v.system && !v.system->empty()) {
        core::StrAppend(cond, " AND ", a, ".code = ", P(v.code));
      } else {
        const std::string code = P(v.code);
        core::StrAppend(cond, " AND (", a, ".code = ", code, " OR ", a, ".unit = ", code, ")");
      }
    }
    return "(" + cond + ")";
  }
  if (t == "uri") {
    if (c.modifier == Modifier::kBelow) return core::StrCat("(", a, ".uri LIKE ", P(EscapeLike(v.text) + "%"), ")");
    if (c.modifier == Modifier::kContains) {
      return core::StrCat("(", a, ".uri LIKE ", P(core::StrCat("%", EscapeLike(v.text), "%")), ")");
    }
    if (c.modifier == Modifier::kAbove) {
      // Every prefix of the value that ends a path segment, and the value.
      std::vector<std::string> prefixes = {v.text};
      for (std::size_t i = v.text.find("://"); i != std::string::npos && i < v.text.size();) {
        i = v.text.find('/', i + 3 > v.text.size() ? v.text.size() : (prefixes.size() == 1 ? i + 3 : i + 1));
        if (i == std::string::npos) break;
        prefixes.push_back(v.text.substr(0, i));
      }
      return core::StrCat("(", a, ".uri = ANY(", Arr(prefixes), "))");
    }
    return core::StrCat("(", a, ".uri = ", P(v.text), ")");
  }
  if (t == "reference") {
    if (v.text.find(':') != std::string::npos) {  // an absolute URL, urn or canonical
      std::string cond = core::StrCat(a, ".url = ", P(v.text));
      if (!v.version.empty()) core::StrAppend(cond, " AND ", a, ".version = ", P(v.version));
      return "(" + cond + ")";
    }
    if (!v.ref_type.empty()) {
      return core::StrCat("(", a, ".target_type = ", P(v.ref_type), " AND ", a, ".target_id = ", P(v.text), ")");
    }
    return core::StrCat("(", a, ".target_id = ", P(v.text), ")");
  }
  return core::Error(absl::StatusCode::kInvalidArgument,
                     core::StrCat("Parameter '", c.key, "': searching parameters of type ", t, " is not supported"))
      .Http(400)
      .Issue("not-supported");
}

absl::StatusOr<std::string> SearchSql::ValueSet(const Criterion& c, const std::string& type) {
  const fhir::SearchParamDef& def = *c.param;
  const std::string tp = P(type);

  // Parameters served from the resources table.
  if (def.code == "_id") {
    std::vector<std::string> ids;
    for (const Value& v : c.values) ids.push_back(v.text);
    return core::StrCat("SELECT res_id FROM resources WHERE tenant_id = $1 AND res_type = ", tp,
                        " AND NOT deleted AND res_id ", c.modifier == Modifier::kNot ? "<> ALL(" : "= ANY(",
                        Arr(ids), ")");
  }
  if (def.code == "_lastUpdated") {
    std::string ors;
    for (const Value& v : c.values) {
      if (!ors.empty()) ors += " OR ";
      const std::string lo = "(extract(epoch from last_updated) * 1000000)::bigint";
      ors += DateCondition(v, lo, lo + " + 1");
    }
    return core::StrCat("SELECT res_id FROM resources WHERE tenant_id = $1 AND res_type = ", tp,
                        " AND NOT deleted AND (", ors, ")");
  }
  if (def.code == "_text" || def.code == "_content" || def.type == "special") {
    if (def.code != "_text" && def.code != "_content") {
      return core::Error(absl::StatusCode::kInvalidArgument,
                         core::StrCat("Parameter '", c.key, "': is not supported"))
          .Http(400)
          .Issue("not-supported");
    }
    const char* column = def.code == "_text" ? "narrative" : "content";
    std::string ors;
    for (const Value& v : c.values) {
      if (!ors.empty()) ors += " OR ";
      core::StrAppend(ors, column, " @@ websearch_to_tsquery('simple', ", P(v.text), ")");
    }
    return core::StrCat("SELECT res_id FROM idx_text WHERE tenant_id = $1 AND res_type = ", tp, " AND (", ors, ")");
  }
  const char* table = TableOf(def.type);
  if (table == nullptr) return absl::InternalError(core::StrCat("no index table for type ", def.type));
  const bool identifier = c.modifier == Modifier::kIdentifier;
  if (identifier) table = "idx_token";
  std::string ors;
  // Plain codes and reference ids become one "= ANY" each.
  std::vector<std::string> plain;
  for (const Value& v : c.values) {
    const bool plain_token = def.type == "token" && !identifier && c.modifier != Modifier::kText &&
                             c.modifier != Modifier::kOfType && !v.system && !v.text.empty();
    const bool plain_uri = def.type == "uri" && c.modifier == Modifier::kNone;
    if (plain_token || plain_uri) {
      plain.push_back(v.text);
      continue;
    }
    if (!ors.empty()) ors += " OR ";
    if (identifier) {
      Criterion token = {};
      fhir::SearchParamDef token_def;
      token_def.type = "token";
      ASSIGN_OR_RETURN(std::string cond, ValueCondition(token_def, token, v, "i"));
      ors += cond;
    } else {
      ASSIGN_OR_RETURN(std::string cond, ValueCondition(def, c, v, "i"));
      ors += cond;
    }
  }
  if (!plain.empty()) {
    if (!ors.empty()) ors += " OR ";
    // One value as "=": PostgreSQL 15 reads "= ANY" of an index column
    // unordered, so the set could not be cut in res_id order.
    const char* column = def.type == "uri" ? "i.uri" : "i.code";
    if (plain.size() == 1) {
      core::StrAppend(ors, column, " = ", P(plain[0]));
    } else {
      core::StrAppend(ors, column, " = ANY(", Arr(plain), ")");
    }
  }
  return core::StrCat("SELECT i.res_id FROM ", table, " i WHERE i.tenant_id = $1 AND i.res_type = ", tp,
                      " AND i.param = ", P(def.code), " AND (", ors, ")");
}

absl::StatusOr<std::string> SearchSql::IdSet(const Criterion& c, const std::string& type) {
  const fhir::SearchParamDef& def = *c.param;
  switch (c.kind) {
    case Criterion::Kind::kChain: {
      std::string ors;
      for (const search::ChainTarget& target : c.targets) {
        ASSIGN_OR_RETURN(std::string inner, IdSet(*target.next, target.type));
        if (!ors.empty()) ors += " OR ";
        core::StrAppend(ors, "(x.target_type = ", P(target.type), " AND x.target_id IN (", inner, "))");
      }
      return core::StrCat("SELECT x.res_id FROM idx_reference x WHERE x.tenant_id = $1 AND x.res_type = ", P(type),
                          " AND x.param = ", P(def.code), " AND (", ors, ")");
    }
    case Criterion::Kind::kHas: {
      ASSIGN_OR_RETURN(std::string inner, IdSet(*c.has_next, c.has_type));
      return core::StrCat("SELECT h.target_id FROM idx_reference h WHERE h.tenant_id = $1 AND h.res_type = ",
                          P(c.has_type), " AND h.param = ", P(def.code), " AND h.target_type = ", P(type),
                          " AND h.res_id IN (", inner, ")");
    }
    case Criterion::Kind::kValue: break;
  }
  if (c.modifier == Modifier::kMissing) {
    bool want_missing = false;
    bool want_present = false;
    for (const Value& v : c.values) (v.text == "true" ? want_missing : want_present) = true;
    if (want_missing && want_present) return AllOf(type);
    std::string present;
    if (def.code == "_id" || def.code == "_lastUpdated") {
      present = AllOf(type);
    } else if (def.code == "_text" || def.code == "_content") {
      present = core::StrCat("SELECT res_id FROM idx_text WHERE tenant_id = $1 AND res_type = ", P(type));
    } else {
      const bool composite = def.type == "composite";
      const char* table = nullptr;
      if (composite) {
        // A composite is present when its first component is.
        table = "idx_token";
        std::string ors;
        for (const char* t : {"idx_string", "idx_token", "idx_date", "idx_reference", "idx_quantity", "idx_uri"}) {
          if (!ors.empty()) ors += " UNION ALL ";
          core::StrAppend(ors, "SELECT res_id FROM ", t, " WHERE tenant_id = $1 AND res_type = ", P(type),
                          " AND param = ", P(def.code + "$0"));
        }
        present = ors;
      } else {
        table = TableOf(def.type);
        if (table == nullptr) return absl::InternalError(core::StrCat("no index table for type ", def.type));
        present = core::StrCat("SELECT res_id FROM ", table, " WHERE tenant_id = $1 AND res_type = ", P(type),
                               " AND param = ", P(def.code));
      }
    }
    if (want_present) return present;
    return core::StrCat(AllOf(type), " AND res_id NOT IN (", present, ")");
  }
  if (def.type == "composite") {
    // Component i lives in its type's table under "code$i"; the components
    // of one value share grp.
    std::string ors;
    for (const Value& v : c.values) {
      if (v.components.size() != def.components.size()) return absl::InternalError("composite arity");
      std::string from;
      std::string where;
      for (std::size_t i = 0; i < def.components.size(); ++i) {
        const std::string alias = core::StrCat("c", i);
        const fhir::SearchParamDef* comp = i < c.components.size() ? c.components[i] : nullptr;
        if (comp == nullptr) return absl::InternalError("unknown composite component");
        const char* table = TableOf(comp->type);
        if (table == nullptr) return absl::InternalError("composite component type");
        if (i == 0) {
          from = core::StrCat(table, " c0");
          where = core::StrCat("c0.tenant_id = $1 AND c0.res_type = ", P(type), " AND c0.param = ",
                               P(core::StrCat(def.code, "$0")));
        } else {
          core::StrAppend(from, " JOIN ", table, " ", alias, " ON ", alias, ".tenant_id = c0.tenant_id AND ", alias,
                          ".res_type = c0.res_type AND ", alias, ".res_id = c0.res_id AND ", alias,
                          ".grp = c0.grp AND ", alias, ".param = ", P(core::StrCat(def.code, "$", i)));
        }
        Criterion plain;
        plain.key = c.key;
        ASSIGN_OR_RETURN(std::string cond, ValueCondition(*comp, plain, v.components[i], alias));
        core::StrAppend(where, " AND ", cond);
      }
      if (!ors.empty()) ors += " UNION ";
      core::StrAppend(ors, "SELECT c0.res_id FROM ", from, " WHERE ", where);
    }
    return ors;
  }
  if (c.modifier == Modifier::kNot) {
    Criterion positive;
    positive.key = c.key;
    positive.param = c.param;
    positive.values = c.values;
    ASSIGN_OR_RETURN(std::string matching, ValueSet(positive, type));
    return core::StrCat(AllOf(type), " AND res_id NOT IN (", matching, ")");
  }
  return ValueSet(c, type);
}

absl::StatusOr<std::string> SearchSql::ComboSet(const TokenDateCombo& combo, const Criterion& token,
                                                const std::vector<const Criterion*>& dates, const std::string& type) {
  ASSIGN_OR_RETURN(std::string code, ValueCondition(*token.param, token, token.values[0], "m"));
  const std::string head = core::StrCat(
      "SELECT m.res_id FROM idx_token_date m WHERE m.tenant_id = $1 AND m.res_type = ", P(type),
      " AND m.token_param = ", P(combo.token_param), " AND m.date_param = ", P(combo.date_param), " AND ", code);
  // The date criteria on the one row of a resource with one date value.
  std::string conditions;
  for (const Criterion* d : dates) {
    std::string ors;
    for (const Value& v : d->values) {
      if (!ors.empty()) ors += " OR ";
      ors += DateCondition(v, "m.lo", "m.hi");
    }
    core::StrAppend(conditions, " AND (", ors, ")");
  }
  // One index range per span class, bounded by what the criteria imply for
  // lo at that class's width; the widest class is bounded above at most.
  std::string out;
  for (int span = 0; span <= kDateSpanClasses; ++span) {
    LoBounds bounds;
    for (const Criterion* d : dates) {
      LoBounds any;  // the loosest over the criterion's values (OR)
      bool all_min = true;
      bool all_max = true;
      for (const Value& v : d->values) {
        const LoBounds b = span < kDateSpanClasses ? SpanLoBounds(v, kDateSpanWidths[span], now_)
                                                   : LoBounds{std::nullopt, SpanLoBounds(v, 0, now_).max};
        all_min = all_min && b.min.has_value();
        all_max = all_max && b.max.has_value();
        if (b.min) any.min = any.min ? std::min(*any.min, *b.min) : *b.min;
        if (b.max) any.max = any.max ? std::max(*any.max, *b.max) : *b.max;
      }
      // Criteria are ANDed: the tightest.
      if (all_min) bounds.min = bounds.min ? std::max(*bounds.min, *any.min) : *any.min;
      if (all_max) bounds.max = bounds.max ? std::min(*bounds.max, *any.max) : *any.max;
    }
    core::StrAppend(out, span == 0 ? "" : " UNION ALL ", head, " AND m.single AND m.span = ", span);
    if (bounds.min) core::StrAppend(out, " AND m.lo >= ", *bounds.min);
    if (bounds.max) core::StrAppend(out, " AND m.lo < ", *bounds.max);
    out += conditions;
  }
  // A resource with several values of the date parameter may meet each
  // criterion with another value: it is checked against idx_date.
  std::string several = core::StrCat(head, " AND NOT m.single");
  for (const Criterion* d : dates) {
    ASSIGN_OR_RETURN(std::string set, IdSet(*d, type));
    core::StrAppend(several, " AND m.res_id IN (", set, ")");
  }
  return core::StrCat(out, " UNION ALL ", several);
}

#define MEDGRID_US(col) "(extract(epoch from " col ") * 1000000)::bigint"

// The ORDER BY columns of a request (without the final res_id tie-break)
// and the LATERAL joins computing them. A sort parameter with several
// values sorts by its lowest (ascending) or highest (descending); resources
// without a value come last either way.
struct Ordering {
  std::vector<OrderColumn> columns;
  std::string joins;
};

absl::StatusOr<Ordering> BuildOrdering(SearchSql& q, const search::SearchRequest& req) {
  Ordering o;
  int n = 0;
  for (const search::SortKey& key : req.sort) {
    const fhir::SearchParamDef& def = *key.param;
    if (def.code == "_id") {
      o.columns.push_back({"r.res_id", "text", key.descending});
      continue;
    }
    if (def.code == "_lastUpdated") {
      o.columns.push_back({MEDGRID_US("r.last_updated"), "bigint", key.descending});
      continue;
    }
    std::string table, value, cast, zero;
    const char* agg = key.descending ? "max" : "min";
    if (def.type == "string") {
      table = "idx_string", value = "folded", cast = "text", zero = "''";
    } else if (def.type == "token") {
      table = "idx_token", value = "code", cast = "text", zero = "''";
    } else if (def.type == "reference") {
      table = "idx_reference", value = "target_type || '/' || target_id || url", cast = "text", zero = "''";
    } else if (def.type == "uri") {
      table = "idx_uri", value = "uri", cast = "text", zero = "''";
    } else if (def.type == "date") {
      table = "idx_date", value = key.descending ? "hi" : "lo", cast = "bigint", zero = "0";
    } else if (def.type == "number" || def.type == "quantity") {
      table = "idx_quantity", value = key.descending ? "high" : "low", cast = "numeric", zero = "0";
    } else {
      return core::Error(absl::StatusCode::kInvalidArgument,
                         core::StrCat("Parameter '_sort': cannot sort by ", def.type, " parameter '", def.code, "'"))
          .Http(400)
          .Issue("not-supported");
    }
    const std::string alias = core::StrCat("s", n++);
    core::StrAppend(o.joins, " LEFT JOIN LATERAL (SELECT ", agg, "(", value, ") AS k FROM ", table,
                    " WHERE tenant_id = r.tenant_id AND res_type = r.res_type AND res_id = r.res_id AND param = ",
                    q.P(def.code), ") ", alias, " ON true");
    o.columns.push_back({core::StrCat("(", alias, ".k IS NULL)"), "boolean", false});
    o.columns.push_back({core::StrCat("coalesce(", alias, ".k, ", zero, ")"), cast, key.descending});
  }
  o.columns.push_back({"r.res_id", "text", false});
  return o;
}

// A cursor: the direction and the ORDER BY values of the row it starts
// after (next) or before (previous).
struct Cursor {
  bool previous = false;
  std::vector<std::string> values;
};

std::string EncodeCursor(const Cursor& c) {
  json::array values;
  for (const std::string& v : c.values) values.emplace_back(v);
  return Base64UrlEncode(json::serialize(json::object{{"d", c.previous ? "p" : "n"}, {"v", values}}));
}

absl::StatusOr<Cursor> DecodeCursor(std::string_view text, std::size_t columns) {
  std::optional<std::string> raw = core::Base64Decode(text, /*url_safe=*/true);
  if (!raw) return BadCursor();
  boost::system::error_code ec;
  json::value v = json::parse(*raw, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  const json::value* d = o ? o->if_contains("d") : nullptr;
  const json::value* vals = o ? o->if_contains("v") : nullptr;
  if (d == nullptr || !d->is_string() || vals == nullptr || !vals->is_array() ||
      vals->get_array().size() != columns) {
    return BadCursor();
  }
  Cursor c;
  c.previous = d->get_string() == "p";
  for (const json::value& x : vals->get_array()) {
    if (!x.is_string()) return BadCursor();
    c.values.emplace_back(x.get_string());
  }
  return c;
}

constexpr const char* kVersionColumns = MEDGRID_VERSION_COLUMNS;

using TypedId = std::pair<std::string, std::string>;

// Loads the current live versions of `ids`.
std::vector<ResourceVersion> LoadCurrent(pqxx::transaction_base& tx, const std::string& tenant,
                                         const std::vector<TypedId>& ids) {
  std::vector<std::string> types, names;
  for (const auto& [t, i] : ids) {
    types.push_back(t);
    names.push_back(i);
  }
  pqxx::result r = tx.exec_params(
      core::StrCat("SELECT ", kVersionColumns,
                   " FROM resources r JOIN resource_versions v ON v.tenant_id = r.tenant_id AND "
                   "v.res_type = r.res_type AND v.res_id = r.res_id AND v.version_id = r.version_id "
                   "WHERE r.tenant_id = $1 AND NOT r.deleted AND (r.res_type, r.res_id) IN "
                   "(SELECT * FROM unnest($2::text[], $3::text[])) ORDER BY r.res_type, r.res_id"),
      tenant, TextArrayLiteral(types), TextArrayLiteral(names));
  std::vector<ResourceVersion> out;
  for (const pqxx::row& row : r) out.push_back(TypedRowToVersion(row));
  return out;
}

// _include and _revinclude, :iterate to a fixed point. Never returns a
// resource twice or one of the matches.
void AddIncludes(pqxx::transaction_base& tx, const std::string& tenant, const search::SearchRequest& req,
                 SearchPage& page) {
  std::set<TypedId> seen;
  for (const ResourceVersion& m : page.matches) seen.emplace(m.type, m.id);
  std::map<std::string, std::vector<std::string>> frontier;  // type -> ids reached in the last round
  for (const ResourceVersion& m : page.matches) frontier[m.type].push_back(m.id);
  for (bool first = true; !frontier.empty(); first = false) {
    std::vector<TypedId> found;
    for (const search::Include& inc : req.includes) {
      if (!first && !inc.iterate) continue;
      for (const auto& [type, ids] : frontier) {
        SearchSql q(tenant);
        std::string sql;
        if (!inc.reverse) {
          if (!inc.source_type.empty() && inc.source_type != type) continue;
          sql = core::StrCat("SELECT DISTINCT i.target_type, i.target_id FROM idx_reference i WHERE i.tenant_id = $1 "
                             "AND i.res_type = ", q.P(type), " AND i.res_id = ANY(", q.Arr(ids),
                             ") AND i.target_id <> ''");
        } else {
          sql = core::StrCat("SELECT DISTINCT i.res_type, i.res_id FROM idx_reference i WHERE i.tenant_id = $1 "
                             "AND i.target_type = ", q.P(type), " AND i.target_id = ANY(", q.Arr(ids), ")");
          if (!inc.source_type.empty()) core::StrAppend(sql, " AND i.res_type = ", q.P(inc.source_type));
        }
        if (inc.param != nullptr) core::StrAppend(sql, " AND i.param = ", q.P(inc.param->code));
        if (!inc.target_type.empty()) {
          core::StrAppend(sql, inc.reverse ? " AND i.target_type = " : " AND i.target_type = ",
                          q.P(inc.target_type));
        }
        pqxx::result r = tx.exec_params(sql, pqxx::prepare::make_dynamic_params(q.params()));
        for (const pqxx::row& row : r) {
          TypedId id{row[0].as<std::string>(), row[1].as<std::string>()};
          if (seen.insert(id).second) found.push_back(std::move(id));
        }
      }
    }
    frontier.clear();
    if (found.empty()) break;
    if (page.included.size() + found.size() > kMaxIncluded) {
      found.resize(kMaxIncluded - page.included.size());
      page.include_warning = core::StrCat("Included resources stop at ", kMaxIncluded,
                                          " per page; use a smaller _count to get all of them");
    }
    for (ResourceVersion& v : LoadCurrent(tx, tenant, found)) {
      frontier[v.type].push_back(v.id);
      page.included.push_back(std::move(v));
    }
    if (page.include_warning) break;
  }
}

// A search's statements (sizes, count, page, includes) read one snapshot.
using SearchTransaction = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

}  // namespace

// The statements of one search, built before any of them runs.
struct SearchStatements {
  std::string where;                      // over alias r, without the cursor
  std::vector<std::string> where_params;  // the parameters `where` uses
  std::string count_sql;
  std::vector<std::string> count_params;  // the parameters `count_sql` uses
  std::string page_sql;
  std::vector<std::string> page_params;
  std::size_t order_columns = 0;
  std::optional<Cursor> cursor;
  bool backwards = false;
  // When set, the page query was planned without knowing which id set is
  // small; running this (with where_params) gives each set's size up to
  // kSmallSet, and BuildSearch with those sizes gives a better page query.
  std::string sizes_sql;
};

// An id set is small when it has fewer ids than this: small enough to read
// whole and hash, and cheap to count.
constexpr int64_t kSmallSet = 1000;

// Whether counting the first kSmallSet ids of a criterion's set is cheap:
// not for complements (:missing, :not), whose NOT IN reads the whole
// complemented set first, nor for full-text matches, whose bitmap holds every
// match before a LIMIT applies.
bool Countable(const search::Criterion& c) {
  if (c.kind == search::Criterion::Kind::kChain) {
    for (const search::ChainTarget& t : c.targets) {
      if (!Countable(*t.next)) return false;
    }
    return true;
  }
  if (c.kind == search::Criterion::Kind::kHas) return false;
  if (c.modifier == Modifier::kMissing || c.modifier == Modifier::kNot) return false;
  return c.param->code != "_text" && c.param->code != "_content";
}

// Whether a criterion's set comes out of its value index in res_id order: an
// equality on one token code or one relative reference target, which the
// value index is keyed by right before res_id (migration 5), or a string
// prefix of as many characters as idx_string_prefix is keyed by (migration 9).
bool InIdOrder(const search::Criterion& c) {
  if (c.kind != search::Criterion::Kind::kValue || c.modifier != Modifier::kNone || c.values.size() != 1) {
    return false;
  }
  const Value& v = c.values[0];
  if (c.param->code.starts_with('_')) return false;
  if (c.param->type == "token") return !v.text.empty();
  if (c.param->type == "reference") return !v.text.empty() && v.text.find(':') == std::string::npos;
  if (c.param->type == "string") return KeyedPrefix(c, v);
  return false;
}

// A walk: the page tried by reading one set (or a chain's reference rows)
// in res_id order, at most kWalkRows of it, testing each id against the
// other sets; it is cut from matches that grow with the data only by what it
// reads. Its page stands when it is full (the match one past the page was
// found within the walk); otherwise the general page query answers. Both
// are one statement (WalkOrGeneral), so a walk that was not made or could
// not finish costs no round trip.
constexpr int kWalkRows = 5000;
constexpr int kWalkMinInner = 50;

// The ids of a page: the walk's (CTE `wi`) when it found `limit` of them,
// else the general query's.
std::string WalkOrGeneral(const std::string& general_ids, int limit) {
  return core::StrCat("SELECT wi.res_id FROM wi WHERE (SELECT count(*) FROM wi) = ", limit,
                      " UNION ALL SELECT g.res_id FROM (", general_ids, ") g WHERE (SELECT count(*) FROM wi) < ", limit);
}

// A lone chain whose inner sets are small (a name that some hundreds of
// Patients have) matches resources that come in the order of their targets,
// so the general query reads every match and sorts them. The walk reads the
// chain parameter's reference rows in res_id order (idx_reference_res,
// index-only) against the hashed inner sets, when every inner set has at
// most kSmallSet ids and together at least kWalkMinInner (fewer make matches
// rare, and the general query cheap). Returns the CTEs (inner sets, then
// `wi`), or nothing when the search is not such a chain. `cursor` is the
// cursor's placeholder, or empty.
std::optional<std::string> ChainWalk(SearchSql& q, const search::SearchRequest& req, const std::string& type_param,
                                     const std::string& cursor, bool backwards, int limit) {
  if (req.criteria.size() != 1 || !req.sort.empty()) return std::nullopt;
  const Criterion& c = req.criteria[0];
  if (c.kind != Criterion::Kind::kChain || !Countable(c)) return std::nullopt;
  std::string ctes;
  std::string hit;
  std::string gate;
  std::string total;
  for (std::size_t k = 0; k < c.targets.size(); ++k) {
    const search::ChainTarget& target = c.targets[k];
    absl::StatusOr<std::string> inner = q.IdSet(*target.next, target.type);
    if (!inner.ok()) return std::nullopt;  // the general query reports the error
    const std::string name = core::StrCat("i", k);
    core::StrAppend(ctes, name, " AS MATERIALIZED (", *inner, " LIMIT ", kSmallSet + 1, "), ");
    core::StrAppend(hit, k == 0 ? "" : " OR ", "(x.target_type = ", q.P(target.type), " AND x.target_id IN (SELECT ",
                    name, ".res_id FROM ", name, "))");
    core::StrAppend(gate, " AND (SELECT count(*) FROM ", name, ") <= ", kSmallSet);
    core::StrAppend(total, k == 0 ? "" : " + ", "(SELECT count(*) FROM ", name, ")");
  }
  // (One target, the common case: one count.)
  if (c.targets.size() == 1) {
    gate = core::StrCat(" AND ", total, " BETWEEN ", kWalkMinInner, " AND ", kSmallSet);
  } else {
    core::StrAppend(gate, " AND ", total, " >= ", kWalkMinInner);
  }
  const char* order = backwards ? " DESC" : "";
  std::string walk = core::StrCat("SELECT x.res_id, (", hit, ") AS hit FROM idx_reference x WHERE x.tenant_id = $1 ",
                                  "AND x.res_type = ", type_param, " AND x.param = ", q.P(c.param->code), gate);
  if (!cursor.empty()) core::StrAppend(walk, " AND x.res_id ", backwards ? "<" : ">", " ", cursor, "::text");
  core::StrAppend(walk, " ORDER BY x.res_id", order, " LIMIT ", kWalkRows);
  return core::StrCat(ctes, "wi AS MATERIALIZED (SELECT DISTINCT w.res_id FROM (", walk,
                      ") w WHERE w.hit ORDER BY w.res_id", order, " LIMIT ", limit, ")");
}

// A token criterion and the date criteria that idx_token_date answers as
// one set: a plain token equality on one code, and every plain date
// criterion on the combination's date parameter.
struct ComboUse {
  const TokenDateCombo* combo = nullptr;
  std::size_t token = 0;
  std::vector<std::size_t> dates;
};

std::optional<ComboUse> FindCombo(const search::SearchRequest& req) {
  for (std::size_t i = 0; i < req.criteria.size(); ++i) {
    const Criterion& t = req.criteria[i];
    if (t.kind != Criterion::Kind::kValue || t.modifier != Modifier::kNone || t.param->type != "token" ||
        t.values.size() != 1 || t.values[0].text.empty()) {
      continue;
    }
    for (const TokenDateCombo& k : kTokenDateCombos) {
      if (req.type != k.type || t.param->code != k.token_param) continue;
      ComboUse use{&k, i, {}};
      for (std::size_t j = 0; j < req.criteria.size(); ++j) {
        const Criterion& d = req.criteria[j];
        if (d.kind == Criterion::Kind::kValue && d.modifier == Modifier::kNone && d.param->type == "date" &&
            d.param->code == k.date_param && !d.values.empty()) {
          use.dates.push_back(j);
        }
      }
      if (!use.dates.empty()) return use;
    }
  }
  return std::nullopt;
}

// _total=accurate of a search by one code (system|code, |code or code) is
// the count kept per code (migration 7): the folded count plus the deltas
// not folded yet. The statement and its parameters.
struct KeptCount {
  std::string sql;
  std::vector<std::string> params;
};

std::optional<KeptCount> CodeCount(const std::string& tenant, const search::SearchRequest& req,
                                   const std::optional<Compartment>& compartment) {
  if (req.criteria.size() != 1 || compartment) return std::nullopt;
  const Criterion& c = req.criteria[0];
  if (c.kind != Criterion::Kind::kValue || c.modifier != Modifier::kNone || c.param->type != "token" ||
      c.param->code.starts_with('_') || c.values.size() != 1 || c.values[0].text.empty()) {
    return std::nullopt;
  }
  KeptCount out;
  out.params = {tenant, req.type, c.param->code, c.values[0].text};
  const std::optional<std::string>& system = c.values[0].system;
  std::string key = "tenant_id = $1 AND res_type = $2 AND param = $3 AND code = $4 AND by_system = ";
  if (!system) {
    key += "false AND system IS NULL";
  } else if (system->empty()) {
    key += "true AND system IS NULL";
  } else {
    key += "true AND system = $5";
    out.params.push_back(*system);
  }
  out.sql = core::StrCat("SELECT coalesce((SELECT n FROM idx_token_count WHERE ", key,
                         "), 0) + coalesce((SELECT sum(n) FROM idx_token_count_delta WHERE ", key, "), 0)");
  return out;
}

// How many id sets a search intersects.
std::size_t SetCount(const search::SearchRequest& req, const std::optional<Compartment>& compartment) {
  std::size_t n = req.criteria.size() + (compartment ? 1 : 0);
  if (std::optional<ComboUse> combo = FindCombo(req)) n -= combo->dates.size();
  return n;
}

// `set_sizes`: the sizes that `sizes_sql` gave, counted in the snapshot the
// page query will read (`sizes_in_snapshot`) or remembered from an earlier
// one (SetSizeCache), in which case the page query checks them.
absl::StatusOr<SearchStatements> BuildSearch(const std::string& tenant, const search::SearchRequest& req,
                                             const std::optional<Compartment>& compartment, core::TimePoint now,
                                             const std::vector<int64_t>* set_sizes = nullptr,
                                             bool sizes_in_snapshot = true) {
  SearchStatements st;
  SearchSql q(tenant, core::ToUnixMicros(now));
  const std::string type_param = q.P(req.type);
  std::string where = core::StrCat("r.tenant_id = $1 AND r.res_type = ", type_param, " AND NOT r.deleted");
  std::vector<std::string> sets;
  // A _has set names referenced ids, which may be missing or deleted; the
  // others hold live resources only.
  bool live_sets = true;
  std::vector<bool> countable;
  std::vector<bool> in_id_order;
  const std::optional<ComboUse> combo = FindCombo(req);
  for (std::size_t i = 0; i < req.criteria.size(); ++i) {
    const search::Criterion& c = req.criteria[i];
    if (combo && i == combo->token) {
      std::vector<const Criterion*> dates;
      for (std::size_t j : combo->dates) dates.push_back(&req.criteria[j]);
      ASSIGN_OR_RETURN(std::string set, q.ComboSet(*combo->combo, c, dates, req.type));
      sets.push_back(std::move(set));
      countable.push_back(true);
      in_id_order.push_back(false);
      continue;
    }
    if (combo && std::find(combo->dates.begin(), combo->dates.end(), i) != combo->dates.end()) continue;
    ASSIGN_OR_RETURN(std::string set, q.IdSet(c, req.type));
    sets.push_back(std::move(set));
    countable.push_back(Countable(c));
    in_id_order.push_back(InIdOrder(c));
    if (c.kind == search::Criterion::Kind::kHas) live_sets = false;
  }
  if (compartment) {
    countable.push_back(true);
    in_id_order.push_back(false);
    sets.push_back(core::StrCat("SELECT c.res_id FROM idx_reference c WHERE c.tenant_id = $1 AND c.res_type = ",
                                type_param, " AND c.param = ANY(", q.Arr(compartment->params),
                                ") AND c.target_type = ", q.P(compartment->type), " AND c.target_id = ",
                                q.P(compartment->id)));
  }
  for (const std::string& set : sets) core::StrAppend(where, " AND r.res_id IN (", set, ")");
  st.where_params = q.params();
  if (sets.empty() || !live_sets) {
    st.count_sql = core::StrCat("SELECT count(*) FROM resources r WHERE ", where);
  } else {
    // The sets hold ids of live resources only (index rows exist for the
    // current version of live resources), so the count needs no look-up in
    // resources: it is the size of the sets' intersection, which index-only
    // scans can answer.
    // A set names a resource once per matching index row (two codings with
    // the code, say); INTERSECT, or DISTINCT for one set, counts it once.
    std::string intersection;
    for (const std::string& set : sets) {
      if (!intersection.empty()) intersection += " INTERSECT ";
      core::StrAppend(intersection, "(", set, ")");
    }
    if (sets.size() == 1) intersection = core::StrCat("SELECT DISTINCT one.res_id FROM (", sets[0], ") one");
    // (The type parameter, which only `where` uses, must still be typed.)
    st.count_sql = core::StrCat("SELECT count(*) FROM (", intersection, ") counted WHERE ", type_param,
                                "::text IS NOT NULL");
  }
  st.count_params = st.where_params;
  if (std::optional<KeptCount> kept = CodeCount(tenant, req, compartment)) {
    st.count_sql = std::move(kept->sql);
    st.count_params = std::move(kept->params);
  }

  ASSIGN_OR_RETURN(Ordering ordering, BuildOrdering(q, req));
  std::optional<Cursor>& cursor = st.cursor;
  if (!req.cursor.empty()) {
    ASSIGN_OR_RETURN(cursor, DecodeCursor(req.cursor, ordering.columns.size()));
  }
  const bool backwards = cursor && cursor->previous;
  st.backwards = backwards;
  st.order_columns = ordering.columns.size();
  const int limit = req.count + 1;
  if (req.sort.empty() && !sets.empty() && live_sets) {
    // In res_id order, with only live resources in the sets: the page is
    // cut from the intersection of the sets alone (index-only scans, which
    // stop after the page when a set is read in res_id order), and only the
    // page's rows are looked up in resources.
    //
    // Several sets: PostgreSQL estimates a rare value of a column shared by
    // many parameters (a token code, say) at one row, and then rescans the
    // other set once per id of that one, which is ruinous when it has
    // hundreds. So the sets are first counted up to kSmallSet; the smallest
    // drives, the other small ones are read once and hashed (an IN that is
    // not pulled up into a join becomes a hashed subplan; its LIMIT, which
    // the count shows is not reached, keeps the planner's size estimate
    // small enough to hash). The large ones are probed per id of the driver
    // (a correlated EXISTS that is not pulled up, served by the set's value
    // or (tenant, type, res_id) index) when the driver comes in res_id
    // order, so that the page stops early whatever the data's size, or when
    // the driver is small, so that at most kSmallSet probes replace reading
    // and hashing a set that grows with the data (PostgreSQL estimates a
    // common code at a few hundred rows and hashes all of it); otherwise
    // they are left to the planner as semi-joins.
    std::vector<std::size_t> order(sets.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::vector<bool> hashed(sets.size(), false);
    std::vector<bool> probed(sets.size(), false);
    const bool any_countable = std::find(countable.begin(), countable.end(), true) != countable.end();
    if (sets.size() > 1 && set_sizes == nullptr && any_countable) {
      // A set that is not counted reads as large. (It is still named, under
      // LIMIT 0, which never reads it, so that its parameters are typed.)
      std::string sizes;
      for (std::size_t i = 0; i < sets.size(); ++i) {
        core::StrAppend(sizes, i == 0 ? "SELECT " : ", ");
        if (countable[i]) {
          core::StrAppend(sizes, "(SELECT count(*) FROM (", sets[i], " LIMIT ", kSmallSet, ") n", i, ")");
        } else {
          core::StrAppend(sizes, "coalesce((SELECT 0::bigint FROM (", sets[i], ") n", i, " LIMIT 0), ", kSmallSet, ")");
        }
      }
      st.sizes_sql = core::StrCat(sizes, " WHERE ", type_param, "::text IS NOT NULL");
    } else if (set_sizes != nullptr && sets.size() > 1 && set_sizes->size() == sets.size()) {
      const std::vector<int64_t>& n = *set_sizes;
      // Smallest first; among sets of one size (all large, say), one in
      // res_id order.
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return n[a] != n[b] ? n[a] < n[b] : in_id_order[a] && !in_id_order[b];
      });
      const bool small_driver = n[order[0]] < kSmallSet;
      const bool ordered_driver = in_id_order[order[0]];
      for (std::size_t j = 1; j < order.size(); ++j) {
        const std::size_t i = order[j];
        hashed[i] = small_driver && n[i] < kSmallSet;
        probed[i] = !hashed[i] && (ordered_driver || small_driver);
      }
    }
    const std::string cursor_param = cursor ? q.P(cursor->values[0]) : "";
    const std::string after =
        cursor ? core::StrCat(" s0.res_id ", backwards ? "<" : ">", " ", cursor_param, "::text") : "";
    // The ids of the page of the sets in `sequence`: the first drives; with
    // `walk_rows`, only that many of its ids after the cursor are read.
    auto ids_of = [&](const std::vector<std::size_t>& sequence, int walk_rows) {
      std::string driver = sets[sequence[0]];
      if (walk_rows > 0) {
        driver = core::StrCat("SELECT s0.res_id FROM (", driver, ") s0", after.empty() ? "" : " WHERE", after,
                              " ORDER BY s0.res_id", backwards ? " DESC" : "", " LIMIT ", walk_rows);
      }
      std::string ids = core::StrCat("SELECT DISTINCT s0.res_id FROM (", driver, ") s0");
      for (std::size_t j = 1; j < sequence.size(); ++j) {
        const std::size_t i = sequence[j];
        core::StrAppend(ids, j == 1 ? " WHERE " : " AND ");
        if (hashed[i]) {
          core::StrAppend(ids, "(s0.res_id IN (", sets[i], " LIMIT ", kSmallSet, ")) IS TRUE");
        } else if (probed[i]) {
          core::StrAppend(ids, "EXISTS (SELECT 1 FROM (", sets[i], ") p", i, " WHERE p", i,
                          ".res_id = s0.res_id OFFSET 0)");
        } else {
          core::StrAppend(ids, "s0.res_id IN (", sets[i], ")");
        }
      }
      if (!after.empty() && walk_rows == 0) core::StrAppend(ids, sets.size() == 1 ? " WHERE" : " AND", after);
      core::StrAppend(ids, " ORDER BY s0.res_id", backwards ? " DESC" : "", " LIMIT ", limit);
      return ids;
    };
    // The page: `ctes` (each followed by ", "), then the page's rows. A
    // hashed set is read under LIMIT kSmallSet, which cuts it if it is not
    // small; with remembered sizes, a one-time filter first checks that each
    // still is, and stops the statement otherwise (migration 8).
    auto page = [&](const std::string& ctes, const std::string& ids) {
      std::string check;
      for (std::size_t i = 0; i < sets.size() && set_sizes != nullptr && !sizes_in_snapshot; ++i) {
        if (!hashed[i]) continue;
        core::StrAppend(check, check.empty() ? " WHERE (" : " AND ", "(SELECT count(*) FROM (", sets[i], " LIMIT ",
                        kSmallSet, ") c", i, ") < ", kSmallSet);
      }
      if (!check.empty()) check += ") OR medgrid_set_sizes_changed()";
      return core::StrCat(
          "WITH ", ctes, "p AS (SELECT r.res_id, r.version_id, r.res_id AS k0 FROM (", ids,
          ") ids JOIN resources r ON r.tenant_id = $1 AND r.res_type = ", type_param,
          " AND r.res_id = ids.res_id WHERE NOT r.deleted) SELECT ", kVersionColumns,
          ", p.* FROM p JOIN resource_versions v ON v.tenant_id = $1 AND v.res_type = ", type_param,
          " AND v.res_id = p.res_id AND v.version_id = p.version_id", check, " ORDER BY p.k0",
          backwards ? " DESC" : "");
    };
    const std::string general = ids_of(order, 0);
    st.page_sql = page("", general);
    if (set_sizes == nullptr && sets.size() == 1) {
      if (std::optional<std::string> walk = ChainWalk(q, req, type_param, cursor_param, backwards, limit)) {
        st.page_sql = page(*walk + ", ", WalkOrGeneral(general, limit));
      }
    }
    if (set_sizes != nullptr && sets.size() > 1 && set_sizes->size() == sets.size()) {
      // A small driver that is not in res_id order (a name prefix) reads all
      // its ids and sorts the matches, which grow with the data. When a
      // large set is in res_id order (a common code) and the driver has
      // enough ids that matches are not rare, that set is walked with the
      // small sets hashed.
      const std::vector<int64_t>& n = *set_sizes;
      const std::size_t d = order[0];
      if (n[d] < kSmallSet && n[d] >= kWalkMinInner && !in_id_order[d]) {
        for (std::size_t j = 1; j < order.size(); ++j) {
          const std::size_t w = order[j];
          if (!in_id_order[w] || n[w] < kSmallSet) continue;
          std::vector<std::size_t> walk_order = {w};
          for (std::size_t i : order) {
            if (i != w) walk_order.push_back(i);
          }
          hashed[d] = true;
          st.page_sql = page(core::StrCat("wi AS MATERIALIZED (", ids_of(walk_order, kWalkRows), "), "),
                             WalkOrGeneral(general, limit));
          hashed[d] = false;
          break;
        }
      }
    }
    st.page_params = q.params();
    st.where = std::move(where);
    return st;
  }
  std::string keyset;
  if (cursor) {
    // Rows after (or, going back, before) the cursor row in ORDER BY order.
    for (std::size_t i = 0; i < ordering.columns.size(); ++i) {
      if (!keyset.empty()) keyset += " OR ";
      keyset += '(';
      for (std::size_t j = 0; j < i; ++j) {
        const OrderColumn& col = ordering.columns[j];
        core::StrAppend(keyset, col.expr, " = ", q.P(cursor->values[j]), "::", col.cast, " AND ");
      }
      const OrderColumn& col = ordering.columns[i];
      const bool greater = col.descending == backwards;
      core::StrAppend(keyset, col.expr, greater ? " > " : " < ", q.P(cursor->values[i]), "::", col.cast, ")");
    }
  }
  std::string select = "r.res_id, r.version_id";
  std::string order;
  std::string outer_order;
  for (std::size_t i = 0; i < ordering.columns.size(); ++i) {
    const OrderColumn& col = ordering.columns[i];
    const bool desc = col.descending != backwards;
    core::StrAppend(select, ", (", col.expr, ")::text AS k", i);
    if (i > 0) {
      order += ", ";
      outer_order += ", ";
    }
    core::StrAppend(order, col.expr, desc ? " DESC" : "");
    core::StrAppend(outer_order, "(p.k", i, ")::", col.cast, desc ? " DESC" : "");
  }
  st.page_sql =
      core::StrCat("WITH p AS (SELECT ", select, " FROM resources r", ordering.joins, " WHERE ", where,
                   keyset.empty() ? "" : core::StrCat(" AND (", keyset, ")"), " ORDER BY ", order, " LIMIT ", limit,
                   ") SELECT ", kVersionColumns, ", p.* FROM p JOIN resource_versions v ON v.tenant_id = $1 AND "
                   "v.res_type = ", q.P(req.type), " AND v.res_id = p.res_id AND v.version_id = p.version_id "
                   "ORDER BY ", outer_order);

  st.page_params = q.params();
  st.where = std::move(where);
  return st;
}

// Counts the id sets (SearchStatements::sizes_sql) and builds the page query
// again with their sizes, which it returns (none when there was nothing to
// count). Only in a transaction whose statements share one snapshot: the
// sizes must hold when the page query runs.
absl::StatusOr<std::vector<int64_t>> PlanWithSizes(pqxx::transaction_base& tx, const std::string& tenant,
                                                   const search::SearchRequest& req,
                                                   const std::optional<Compartment>& compartment, core::TimePoint now,
                                                   SearchStatements& st) {
  std::vector<int64_t> sizes;
  if (st.sizes_sql.empty()) return sizes;
  pqxx::result r = tx.exec_params(st.sizes_sql, pqxx::prepare::make_dynamic_params(st.where_params));
  for (const pqxx::field& f : r[0]) sizes.push_back(f.as<int64_t>());
  ASSIGN_OR_RETURN(st, BuildSearch(tenant, req, compartment, now, &sizes));
  return sizes;
}

// The page query stopped itself: a set planned as small from remembered
// sizes no longer is (migration 8).
bool SetSizesChanged(const pqxx::sql_error& e) { return e.sqlstate() == "MG001"; }

// Runs the statements `st` of a search inside `tx`. With `one_snapshot`, the
// id sets are counted first when `st` asks for it; the counts are put in
// `counted`.
absl::StatusOr<SearchPage> RunStatements(pqxx::transaction_base& tx, const std::string& tenant,
                                         const search::SearchRequest& req,
                                         const std::optional<Compartment>& compartment, core::TimePoint now,
                                         SearchStatements st, bool one_snapshot, std::vector<int64_t>* counted) {
  const std::string& where = st.where;
  const std::vector<std::string>& where_params = st.where_params;
  const std::string& count_sql = st.count_sql;
  const std::optional<Cursor>& cursor = st.cursor;
  const bool backwards = st.backwards;
  const bool only_total = req.summary == search::Summary::kCount || req.count == 0;
  {
    SearchPage page;
    const search::Total total_mode = req.total.value_or(only_total ? search::Total::kAccurate : search::Total::kNone);
    if (total_mode == search::Total::kAccurate) {
      pqxx::result r = tx.exec_params(count_sql, pqxx::prepare::make_dynamic_params(st.count_params));
      page.total = r[0][0].as<int64_t>();
    } else if (total_mode == search::Total::kEstimate) {
      pqxx::result r = tx.exec_params(core::StrCat("EXPLAIN (FORMAT JSON) SELECT 1 FROM resources r WHERE ", where),
                                      pqxx::prepare::make_dynamic_params(where_params));
      boost::system::error_code ec;
      json::value plan = json::parse(r[0][0].as<std::string>(), ec);
      if (!ec && plan.is_array() && !plan.get_array().empty()) {
        if (const json::value* rows = plan.get_array()[0].at("Plan").as_object().if_contains("Plan Rows")) {
          page.total = rows->is_int64() ? rows->get_int64() : static_cast<int64_t>(rows->to_number<double>());
          page.total_is_estimate = true;
        }
      }
    }
    if (only_total) return page;

    if (one_snapshot) {
      ASSIGN_OR_RETURN(std::vector<int64_t> sizes, PlanWithSizes(tx, tenant, req, compartment, now, st));
      if (counted != nullptr) *counted = std::move(sizes);
    }
    pqxx::result r = tx.exec_params(st.page_sql, pqxx::prepare::make_dynamic_params(st.page_params));
    const std::size_t key_base = 9;  // 7 version columns, then p.res_id, p.version_id, then the keys
    std::vector<std::vector<std::string>> keys;
    for (const pqxx::row& row : r) {
      page.matches.push_back(TypedRowToVersion(row));
      std::vector<std::string> k;
      for (std::size_t i = 0; i < st.order_columns; ++i) k.push_back(row[static_cast<int>(key_base + i)].as<std::string>());
      keys.push_back(std::move(k));
    }
    const bool more = page.matches.size() > static_cast<std::size_t>(req.count);
    if (more) {
      page.matches.pop_back();
      keys.pop_back();
    }
    if (backwards) {
      std::reverse(page.matches.begin(), page.matches.end());
      std::reverse(keys.begin(), keys.end());
    }
    if (!page.matches.empty()) {
      // Going forward, a further page exists when the query found more; a
      // previous one whenever we came from a cursor. Going back, the
      // reverse.
      const bool has_next = backwards ? true : more;
      const bool has_prev = backwards ? more : cursor.has_value();
      if (has_next) page.next_cursor = EncodeCursor({false, keys.back()});
      if (has_prev) page.prev_cursor = EncodeCursor({true, keys.front()});
    }
    if (!page.total && !cursor && !more) page.total = static_cast<int64_t>(page.matches.size());
    if (!req.includes.empty() && !page.matches.empty()) AddIncludes(tx, tenant, req, page);
    return page;
  }
}

absl::StatusOr<SearchPage> RunSearch(pqxx::transaction_base& tx, const std::string& tenant,
                                     const search::SearchRequest& req, const std::optional<Compartment>& compartment,
                                     core::TimePoint now, bool one_snapshot) {
  ASSIGN_OR_RETURN(SearchStatements st, BuildSearch(tenant, req, compartment, now));
  return RunStatements(tx, tenant, req, compartment, now, std::move(st), one_snapshot, nullptr);
}

absl::StatusOr<std::string> PgResourceStore::ExplainSearch(const std::string& tenant,
                                                          const search::SearchRequest& req,
                                                          const std::optional<Compartment>& compartment) {
  QueryKindScope kind(QueryKind::kSearch);
  const core::TimePoint now = clock_.Now();
  ASSIGN_OR_RETURN(SearchStatements st, BuildSearch(tenant, req, compartment, now));
  return WithConnection(pool_, kRetryIfBroken, [&](pqxx::connection_base& conn) -> absl::StatusOr<std::string> {
    SearchTransaction tx(conn);
    SetLocalTimeout(tx);
    std::string out;
    auto explain = [&](const std::string& sql, const std::vector<std::string>& params) {
      pqxx::result r = tx.exec_params("EXPLAIN (ANALYZE, BUFFERS) " + sql, pqxx::prepare::make_dynamic_params(params));
      for (const pqxx::row& row : r) core::StrAppend(out, row[0].as<std::string>(), "\n");
    };
    if (!st.sizes_sql.empty()) {
      out += "-- id set sizes\n";
      explain(st.sizes_sql, st.where_params);
      RETURN_IF_ERROR(PlanWithSizes(tx, tenant, req, compartment, now, st).status());
    }
    out += "-- page query\n";
    explain(st.page_sql, st.page_params);
    if (req.total && *req.total == search::Total::kAccurate) {
      out += "-- _total=accurate\n";
      explain(st.count_sql, st.count_params);
    }
    return out;
  });
}

absl::StatusOr<SearchPage> PgResourceStore::Search(const std::string& tenant, const search::SearchRequest& req,
                                                   const std::optional<Compartment>& compartment) {
  QueryKindScope kind(QueryKind::kSearch);
  const core::TimePoint now = clock_.Now();
  ASSIGN_OR_RETURN(SearchStatements counting, BuildSearch(tenant, req, compartment, now));
  // With remembered set sizes, the page is planned without counting them.
  std::optional<SearchStatements> remembered;
  const std::string key =
      counting.sizes_sql.empty() ? "" : SetSizeCache::Key(counting.sizes_sql, counting.where_params);
  if (!key.empty()) {
    if (std::optional<std::vector<int64_t>> sizes = set_sizes_->Get(key)) {
      ASSIGN_OR_RETURN(remembered, BuildSearch(tenant, req, compartment, now, &*sizes, /*sizes_in_snapshot=*/false));
    }
  }
  return RoutedRead(tenant, /*not_found_on_primary=*/false, [&](pqxx::connection_base& conn) -> absl::StatusOr<SearchPage> {
    // Counting the sets, counting the matches and reading included resources
    // share the page's snapshot; otherwise one statement needs no transaction
    // (BEGIN and COMMIT would double the round trips of a plain search).
    const bool page_only = req.includes.empty() && !req.total && req.summary != search::Summary::kCount &&
                           req.count > 0;
    if (remembered) {
      try {
        ++sizes_remembered_;
        if (page_only) {
          pqxx::nontransaction tx(conn);
          return RunStatements(tx, tenant, req, compartment, now, *remembered, false, nullptr);
        }
        SearchTransaction tx(conn);
        SetLocalTimeout(tx);
        return RunStatements(tx, tenant, req, compartment, now, *remembered, false, nullptr);
      } catch (const pqxx::sql_error& e) {
        if (!SetSizesChanged(e)) throw;
        ++sizes_changed_;
        set_sizes_->Erase(key);
      }
    }
    if (page_only && counting.sizes_sql.empty()) {
      pqxx::nontransaction tx(conn);
      return RunStatements(tx, tenant, req, compartment, now, counting, /*one_snapshot=*/false, nullptr);
    }
    SearchTransaction tx(conn);
    SetLocalTimeout(tx);
    std::vector<int64_t> counted;
    absl::StatusOr<SearchPage> page =
        RunStatements(tx, tenant, req, compartment, now, counting, /*one_snapshot=*/true, &counted);
    if (page.ok() && !counted.empty()) {
      ++sizes_counted_;
      set_sizes_->Put(key, std::move(counted));
    }
    return page;
  });
}

}  // namespace medgrid::store
