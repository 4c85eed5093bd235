// The search request parser.
//
// Invariants:
// - Helpers below ParseSearch return statuses that carry only the reason; the
//   top level prefixes "Parameter '<name>': " and attaches HTTP 400 and the
//   issue code. The internal status code is the error's category:
//     kNotFound            the name does not resolve (unknown parameter):
//                          "not-supported", dropped in lenient mode
//     kUnimplemented       a known feature medgrid does not support (a
//                          modifier, _filter, near): "not-supported", dropped
//                          in lenient mode
//     kFailedPrecondition  the name exists but does not apply here (a chain
//                          through a non-reference, a _has whose reference
//                          cannot point at the type): "invalid"
//     kInvalidArgument     a malformed value or name: "invalid"
//   A chain without a type modifier tries each target type and skips those
//   that answer kNotFound or kFailedPrecondition; any other error stops it.
// - A chain with no type modifier fans out over its targets at every link
//   (Task?subject.subject.subject.name reaches about a thousand paths), so the
//   number of chain targets per parameter is capped.
#include "medgrid/search/query.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::search {
namespace {

// The most chain targets one parameter may expand to.
constexpr int kMaxChainTargets = 1024;
// _count above this is clamped to it.
constexpr int kMaxCount = 1000;

constexpr std::array<std::pair<std::string_view, Prefix>, 9> kPrefixes = {{
    {"eq", Prefix::kEq},
    {"ne", Prefix::kNe},
    {"gt", Prefix::kGt},
    {"lt", Prefix::kLt},
    {"ge", Prefix::kGe},
    {"le", Prefix::kLe},
    {"sa", Prefix::kSa},
    {"eb", Prefix::kEb},
    {"ap", Prefix::kAp},
}};

absl::Status Fail(absl::StatusCode code, std::string_view why) {
  return absl::Status(code, absl::string_view(why.data(), why.size()));
}
absl::Status Invalid(std::string_view why) { return Fail(absl::StatusCode::kInvalidArgument, why); }
absl::Status Unknown(std::string_view why) { return Fail(absl::StatusCode::kNotFound, why); }
absl::Status Unsupported(std::string_view why) { return Fail(absl::StatusCode::kUnimplemented, why); }
absl::Status NotApplicable(std::string_view why) { return Fail(absl::StatusCode::kFailedPrecondition, why); }

std::string_view MessageOf(const absl::Status& status) {
  absl::string_view m = status.message();
  return std::string_view(m.data(), m.size());
}

bool Contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A decimal as search writes it: -?digits(.digits)?([eE][+-]?digits)?
bool IsDecimal(std::string_view s) {
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t start = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    return i > start;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (!digits()) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

// A FHIR element name: [A-Za-z][A-Za-z0-9_]*
bool IsElementName(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin() + 1, s.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

std::string Join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) core::StrAppend(out, sep);
    core::StrAppend(out, items[i]);
  }
  return out;
}

bool IsTextSearch(const fhir::SearchParamDef& def) { return def.code == "_text" || def.code == "_content"; }

struct PrefixSplit {
  Prefix prefix = Prefix::kEq;
  std::string_view rest;
};

// Splits the comparison prefix off a number, date or quantity value.
absl::StatusOr<PrefixSplit> SplitPrefix(const fhir::SearchParamDef& def, std::string_view part) {
  PrefixSplit out{Prefix::kEq, part};
  if (part.size() < 2) return out;
  const std::string_view head = part.substr(0, 2);
  for (const auto& [text, prefix] : kPrefixes) {
    if (head != text) continue;
    if (!def.comparators.empty() && !Contains(def.comparators, text)) {
      return Invalid(core::StrCat("prefix '", text, "' is not allowed for this parameter"));
    }
    out.prefix = prefix;
    out.rest = part.substr(2);
    return out;
  }
  return out;
}

// "Type/id" at the end of an absolute URL: the type, if it is one.
std::string TypeOfUrl(std::string_view url, const fhir::StructureRegistry& structures) {
  std::vector<std::string_view> segments = core::StrSplit(url, '/');
  if (segments.size() < 2 || segments.back().empty()) return "";
  std::string_view type = segments[segments.size() - 2];
  return structures.IsResourceType(type) ? std::string(type) : "";
}

// The code before the first ':' or '.' of a parameter name.
std::string_view LeadingCode(std::string_view name) { return name.substr(0, name.find_first_of(":.")); }

struct Link {
  std::string_view code;
  std::string_view modifier;  // empty when there is none
  bool has_colon = false;
};

Link SplitLink(std::string_view link) {
  const std::size_t colon = link.find(':');
  if (colon == std::string_view::npos) return Link{link, "", false};
  return Link{link.substr(0, colon), link.substr(colon + 1), true};
}

class QueryParser {
 public:
  QueryParser(const fhir::SearchParamRegistry& registry, const fhir::StructureRegistry& structures)
      : registry_(registry), structures_(structures) {}

  // Parses one criterion: `name` applied to resources of `type`, with the raw
  // (still escaped) value. An empty value yields a criterion with no values.
  absl::StatusOr<Criterion> ParseCriterion(std::string_view name, std::string_view type, std::string_view raw) {
    chain_targets_ = 0;
    return ParseName(name, type, raw);
  }

 private:
  absl::StatusOr<Value> ParseValue(const fhir::SearchParamDef& def, Modifier modifier, std::string_view type_modifier,
                                   std::string_view part) const;
  absl::StatusOr<Criterion> ParseName(std::string_view name, std::string_view type, std::string_view raw);
  absl::StatusOr<Criterion> ParseHas(std::string_view name, std::string_view type, std::string_view raw);
  absl::StatusOr<Criterion> ParseChain(std::string_view name, std::size_t dot, std::string_view type,
                                       std::string_view raw);
  absl::StatusOr<Criterion> ParseLeaf(std::string_view name, std::string_view type, std::string_view raw);
  absl::StatusOr<Modifier> ResolveModifier(const fhir::SearchParamDef& def, const Link& link) const;
  absl::StatusOr<Value> ParseToken(std::string_view part, Modifier modifier) const;
  absl::StatusOr<Value> ParseReference(Modifier modifier, std::string_view type_modifier, std::string_view part) const;
  absl::StatusOr<Value> ParseComposite(const fhir::SearchParamDef& def, std::string_view part) const;
  // The definitions of a composite's components, in order.
  absl::StatusOr<std::vector<const fhir::SearchParamDef*>> ResolveComponents(const fhir::SearchParamDef& def) const;

  const fhir::SearchParamRegistry& registry_;
  const fhir::StructureRegistry& structures_;
  int chain_targets_ = 0;
};

absl::StatusOr<Criterion> QueryParser::ParseName(std::string_view name, std::string_view type, std::string_view raw) {
  if (name.starts_with("_has:") || name == "_has") return ParseHas(name, type, raw);
  const std::size_t dot = name.find('.');
  if (dot != std::string_view::npos) return ParseChain(name, dot, type, raw);
  return ParseLeaf(name, type, raw);
}

absl::StatusOr<Criterion> QueryParser::ParseHas(std::string_view name, std::string_view type, std::string_view raw) {
  const std::string_view syntax = "expected _has:Type:reference:parameter";
  if (!name.starts_with("_has:")) return Invalid(syntax);
  std::string_view rest = name.substr(5);
  const std::size_t c1 = rest.find(':');
  if (c1 == std::string_view::npos) return Invalid(syntax);
  const std::string_view has_type = rest.substr(0, c1);
  rest = rest.substr(c1 + 1);
  const std::size_t c2 = rest.find(':');
  if (c2 == std::string_view::npos) return Invalid(syntax);
  const std::string_view ref_code = rest.substr(0, c2);
  const std::string_view next = rest.substr(c2 + 1);
  if (has_type.empty() || ref_code.empty() || next.empty()) return Invalid(syntax);
  if (!structures_.IsResourceType(has_type)) {
    return Invalid(core::StrCat("_has names '", has_type, "', which is not a resource type"));
  }
  const fhir::SearchParamDef* ref = registry_.Find(has_type, ref_code);
  if (ref == nullptr) return Unknown(core::StrCat(has_type, " has no search parameter '", ref_code, "'"));
  if (ref->type != "reference") {
    return NotApplicable(core::StrCat(has_type, ":", ref_code, " is a ", ref->type, " parameter, not a reference"));
  }
  if (!ref->targets.empty() && !Contains(ref->targets, type)) {
    return NotApplicable(core::StrCat(has_type, ":", ref_code, " cannot refer to ", type));
  }
  Criterion c;
  c.kind = Criterion::Kind::kHas;
  c.key = std::string(name);
  c.param = ref;
  c.has_type = std::string(has_type);
  ASSIGN_OR_RETURN(Criterion inner, ParseName(next, has_type, raw));
  c.has_next = std::make_unique<Criterion>(std::move(inner));
  return c;
}

absl::StatusOr<Criterion> QueryParser::ParseChain(std::string_view name, std::size_t dot, std::string_view type,
                                                  std::string_view raw) {
  const Link link = SplitLink(name.substr(0, dot));
  const std::string_view rest = name.substr(dot + 1);
  if (link.code.empty() || rest.empty()) return Invalid("a chain link is empty");
  const fhir::SearchParamDef* def = registry_.Find(type, link.code);
  if (def == nullptr) return Unknown(core::StrCat(type, " has no search parameter '", link.code, "'"));
  if (def->type != "reference") {
    return NotApplicable(
        core::StrCat("'", link.code, "' is a ", def->type, " parameter of ", type, " and cannot be chained"));
  }
  Criterion c;
  c.kind = Criterion::Kind::kChain;
  c.key = std::string(name);
  c.param = def;
  std::vector<std::string> candidates;
  if (link.has_colon) {
    if (!structures_.IsResourceType(link.modifier)) {
      return Invalid(core::StrCat("a chain link's modifier must be a resource type, not ':", link.modifier, "'"));
    }
    if (!def->targets.empty() && !Contains(def->targets, link.modifier)) {
      return Invalid(core::StrCat("'", link.modifier, "' is not a target type of '", link.code, "' (",
                                  Join(def->targets, ", "), ")"));
    }
    c.modifier = Modifier::kType;
    c.type_modifier = std::string(link.modifier);
    candidates.push_back(c.type_modifier);
  } else {
    candidates = def->targets.empty() ? structures_.ResourceTypes() : def->targets;
  }

  const std::string_view next_code = LeadingCode(rest);
  absl::Status first_skipped;
  for (const std::string& target : candidates) {
    // Cheap pre-filter: a target without the next link's parameter cannot
    // define the chain.
    if (!link.has_colon && next_code != "_has" && registry_.Find(target, next_code) == nullptr) continue;
    if (++chain_targets_ > kMaxChainTargets) {
      return Invalid(core::StrCat("the chain reaches more than ", kMaxChainTargets,
                                  " target paths; name the types with modifiers (e.g. subject:Patient.name)"));
    }
    absl::StatusOr<Criterion> next = ParseName(rest, target, raw);
    if (!next.ok()) {
      const absl::StatusCode code = next.status().code();
      if (link.has_colon || (code != absl::StatusCode::kNotFound && code != absl::StatusCode::kFailedPrecondition)) {
        return next.status();
      }
      if (first_skipped.ok() ||
          (first_skipped.code() == absl::StatusCode::kNotFound && code == absl::StatusCode::kFailedPrecondition)) {
        first_skipped = next.status();
      }
      continue;
    }
    c.targets.push_back(ChainTarget{target, std::make_unique<Criterion>(*std::move(next))});
  }
  if (c.targets.empty()) {
    if (first_skipped.code() == absl::StatusCode::kFailedPrecondition) return first_skipped;
    return Unknown(core::StrCat("no target type of '", link.code, "' (", Join(candidates, ", "),
                                ") has the chained parameter '", rest, "'"));
  }
  return c;
}

absl::StatusOr<Criterion> QueryParser::ParseLeaf(std::string_view name, std::string_view type, std::string_view raw) {
  const Link link = SplitLink(name);
  if (link.code.empty()) return Invalid("empty parameter name");
  const fhir::SearchParamDef* def = registry_.Find(type, link.code);
  if (def == nullptr) return Unknown(core::StrCat("unknown search parameter '", link.code, "' for ", type));
  if (def->type == "special" || (def->path == nullptr && !IsTextSearch(*def))) {
    return Unsupported(core::StrCat("the search parameter '", link.code, "' is not supported"));
  }
  ASSIGN_OR_RETURN(Modifier modifier, ResolveModifier(*def, link));
  Criterion c;
  c.kind = Criterion::Kind::kValue;
  c.key = std::string(name);
  c.param = def;
  c.modifier = modifier;
  if (modifier == Modifier::kType) c.type_modifier = std::string(link.modifier);
  if (def->type == "composite") {
    ASSIGN_OR_RETURN(c.components, ResolveComponents(*def));
  }
  if (raw.empty()) return c;
  for (const std::string& part : SplitEscaped(raw, ',')) {
    if (part.empty()) return Invalid("empty value in a comma-separated list");
    ASSIGN_OR_RETURN(Value v, ParseValue(*def, modifier, c.type_modifier, part));
    c.values.push_back(std::move(v));
  }
  return c;
}

absl::StatusOr<Modifier> QueryParser::ResolveModifier(const fhir::SearchParamDef& def, const Link& link) const {
  if (!link.has_colon) return Modifier::kNone;
  const std::string_view m = link.modifier;
  auto unsupported = [&] {
    return Unsupported(
        core::StrCat("modifier ':", m, "' is not supported on ", def.type, " parameter '", def.code, "'"));
  };
  if (m.empty()) return Invalid("empty modifier after ':'");
  if (IsTextSearch(def)) return unsupported();
  if (m == "missing") return Modifier::kMissing;
  if (def.type == "string") {
    if (m == "exact") return Modifier::kExact;
    if (m == "contains") return Modifier::kContains;
  } else if (def.type == "uri") {
    if (m == "contains") return Modifier::kContains;
    if (m == "above") return Modifier::kAbove;
    if (m == "below") return Modifier::kBelow;
  } else if (def.type == "token") {
    if (m == "text") return Modifier::kText;
    if (m == "not") return Modifier::kNot;
    if (m == "of-type") return Modifier::kOfType;
  } else if (def.type == "reference") {
    if (m == "identifier") return Modifier::kIdentifier;
    if (structures_.IsResourceType(m)) {
      if (!def.targets.empty() && !Contains(def.targets, m)) {
        return Invalid(
            core::StrCat("'", m, "' is not a target type of '", def.code, "' (", Join(def.targets, ", "), ")"));
      }
      return Modifier::kType;
    }
  }
  return unsupported();
}

absl::StatusOr<Value> QueryParser::ParseValue(const fhir::SearchParamDef& def, Modifier modifier,
                                              std::string_view type_modifier, std::string_view part) const {
  Value v;
  if (modifier == Modifier::kMissing) {
    v.text = Unescape(part);
    if (v.text != "true" && v.text != "false") {
      return Invalid(core::StrCat(":missing takes true or false, not '", v.text, "'"));
    }
    return v;
  }
  if (IsTextSearch(def)) {
    v.text = Unescape(part);
    return v;
  }
  const std::string& t = def.type;
  if (t == "number" || t == "date" || t == "quantity") {
    ASSIGN_OR_RETURN(PrefixSplit split, SplitPrefix(def, part));
    v.prefix = split.prefix;
    if (t == "date") {
      const std::string text = Unescape(split.rest);
      std::optional<DateRange> range = ParseDateRange(text);
      if (!range) return Invalid(core::StrCat("'", text, "' is not a valid date"));
      v.date = *range;
      return v;
    }
    std::vector<std::string> pieces = SplitEscaped(split.rest, '|');
    if (t == "number" && pieces.size() != 1) return Invalid(core::StrCat("'", part, "' is not a valid number"));
    if (pieces.size() != 1 && pieces.size() != 3) {
      return Invalid(
          core::StrCat("'", part, "' is not a quantity: expected number, number|system|code or number||code"));
    }
    v.number = Unescape(pieces[0]);
    if (!IsDecimal(v.number)) return Invalid(core::StrCat("'", v.number, "' is not a valid number"));
    if (pieces.size() == 3) {
      v.code = Unescape(pieces[2]);
      if (v.code.empty()) return Invalid(core::StrCat("'", part, "' has a '|' but no unit code"));
      // "n||code" matches the code in any system.
      if (!pieces[1].empty()) v.system = Unescape(pieces[1]);
    }
    return v;
  }
  if (t == "string" || t == "uri") {
    v.text = Unescape(part);
    return v;
  }
  if (t == "token") return ParseToken(part, modifier);
  if (t == "reference") return ParseReference(modifier, type_modifier, part);
  if (t == "composite") return ParseComposite(def, part);
  return Unsupported(core::StrCat("parameters of type '", t, "' are not supported"));
}

absl::StatusOr<Value> QueryParser::ParseToken(std::string_view part, Modifier modifier) const {
  Value v;
  if (modifier == Modifier::kText) {
    v.text = Unescape(part);
    return v;
  }
  std::vector<std::string> pieces = SplitEscaped(part, '|');
  if (modifier == Modifier::kOfType) {
    if (pieces.size() != 3) {
      return Invalid(core::StrCat(":of-type takes type-system|type-code|value, not '", part, "'"));
    }
    v.system = Unescape(pieces[0]);
    v.code = Unescape(pieces[1]);
    v.text = Unescape(pieces[2]);
    if (v.code.empty() || v.text.empty()) {
      return Invalid(core::StrCat(":of-type needs a type code and a value in '", part, "'"));
    }
    return v;
  }
  if (pieces.size() > 2) return Invalid(core::StrCat("a token has at most one unescaped '|': '", part, "'"));
  if (pieces.size() == 1) {
    v.text = Unescape(pieces[0]);
    return v;
  }
  v.system = Unescape(pieces[0]);
  v.text = Unescape(pieces[1]);
  if (v.system->empty() && v.text.empty()) return Invalid("a token needs a system or a code, not just '|'");
  return v;
}

absl::StatusOr<Value> QueryParser::ParseReference(Modifier modifier, std::string_view type_modifier,
                                                  std::string_view part) const {
  if (modifier == Modifier::kIdentifier) return ParseToken(part, Modifier::kNone);
  Value v;
  if (modifier == Modifier::kType) {
    std::string id = Unescape(part);
    const std::string qualified = core::StrCat(type_modifier, "/");
    if (id.starts_with(qualified)) id.erase(0, qualified.size());
    if (id.empty() || id.find('/') != std::string::npos || id.find('|') != std::string::npos) {
      return Invalid(core::StrCat("with :", type_modifier, " the value is an id, not '", part, "'"));
    }
    v.text = std::move(id);
    v.ref_type = std::string(type_modifier);
    return v;
  }
  std::vector<std::string> pieces = SplitEscaped(part, '|');
  if (pieces.size() > 2) return Invalid(core::StrCat("a reference has at most one unescaped '|': '", part, "'"));
  if (pieces.size() == 2) {
    // A canonical with its version.
    v.text = Unescape(pieces[0]);
    v.version = Unescape(pieces[1]);
    if (v.text.empty()) return Invalid(core::StrCat("'", part, "' has a version but no canonical URL"));
    v.ref_type = TypeOfUrl(v.text, structures_);
    return v;
  }
  std::string ref = Unescape(part);
  if (ref.find("://") != std::string::npos || ref.starts_with("urn:")) {
    v.ref_type = TypeOfUrl(ref, structures_);
    v.text = std::move(ref);
    return v;
  }
  const std::size_t slash = ref.find('/');
  if (slash == std::string::npos) {
    v.text = std::move(ref);
    return v;
  }
  const std::string_view type = std::string_view(ref).substr(0, slash);
  const std::string_view id = std::string_view(ref).substr(slash + 1);
  if (!structures_.IsResourceType(type) || id.empty() || id.find('/') != std::string_view::npos) {
    return Invalid(
        core::StrCat("'", ref, "' is not a reference: expected Type/id, id, an absolute URL or url|version"));
  }
  v.ref_type = std::string(type);
  v.text = std::string(id);
  return v;
}

absl::StatusOr<std::vector<const fhir::SearchParamDef*>> QueryParser::ResolveComponents(
    const fhir::SearchParamDef& def) const {
  std::vector<const fhir::SearchParamDef*> out;
  for (const fhir::SearchParamComponent& component : def.components) {
    const fhir::SearchParamDef* resolved = registry_.ByUrl(component.definition);
    if (resolved == nullptr) {
      return Unsupported(core::StrCat("component ", component.definition, " has no definition"));
    }
    out.push_back(resolved);
  }
  return out;
}

absl::StatusOr<Value> QueryParser::ParseComposite(const fhir::SearchParamDef& def, std::string_view part) const {
  ASSIGN_OR_RETURN(std::vector<const fhir::SearchParamDef*> components, ResolveComponents(def));
  std::vector<std::string> pieces = SplitEscaped(part, '$');
  if (pieces.size() != components.size()) {
    return Invalid(core::StrCat("'", part, "' has ", static_cast<int>(pieces.size()), " components separated by '$', ",
                                def.code, " needs ", static_cast<int>(components.size())));
  }
  Value v;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].empty()) {
      return Invalid(core::StrCat("component ", static_cast<int>(i + 1), " of '", part, "' is empty"));
    }
    ASSIGN_OR_RETURN(Value c, ParseValue(*components[i], Modifier::kNone, "", pieces[i]));
    v.components.push_back(std::move(c));
  }
  return v;
}

// --- Result parameters -----------------------------------------------------

absl::Status ParseCount(std::string_view value, SearchRequest& req) {
  if (value.empty() || !std::all_of(value.begin(), value.end(), IsDigit)) {
    return Invalid(core::StrCat("'", value, "' is not a non-negative integer"));
  }
  // Clamp before converting so that a long string cannot overflow.
  int n = 0;
  for (char c : value) {
    n = n * 10 + (c - '0');
    if (n > kMaxCount) {
      n = kMaxCount;
      break;
    }
  }
  req.count = n;
  return absl::OkStatus();
}

absl::Status ParseSort(std::string_view value, const fhir::SearchParamRegistry& registry, SearchRequest& req) {
  std::vector<SortKey> keys;
  for (std::string_view item : core::StrSplit(value, ',')) {
    SortKey key;
    if (item.starts_with('-')) {
      key.descending = true;
      item.remove_prefix(1);
    }
    if (item.empty()) return Invalid("empty sort key");
    key.param = registry.Find(req.type, item);
    if (key.param == nullptr) return Unknown(core::StrCat("unknown search parameter '", item, "' for ", req.type));
    const std::string& t = key.param->type;
    if (t == "composite" || t == "special" || key.param->path == nullptr) {
      return Unsupported(core::StrCat("cannot sort by the ", t, " parameter '", item, "'"));
    }
    keys.push_back(key);
  }
  req.sort = std::move(keys);
  return absl::OkStatus();
}

absl::Status ParseTotal(std::string_view value, SearchRequest& req) {
  if (value == "none") {
    req.total = Total::kNone;
  } else if (value == "estimate") {
    req.total = Total::kEstimate;
  } else if (value == "accurate") {
    req.total = Total::kAccurate;
  } else {
    return Invalid(core::StrCat("'", value, "' is not one of none, estimate, accurate"));
  }
  return absl::OkStatus();
}

absl::Status ParseSummary(std::string_view value, SearchRequest& req) {
  static constexpr std::array<std::pair<std::string_view, Summary>, 5> kValues = {{
      {"true", Summary::kTrue},
      {"false", Summary::kFalse},
      {"text", Summary::kText},
      {"data", Summary::kData},
      {"count", Summary::kCount},
  }};
  for (const auto& [text, summary] : kValues) {
    if (value == text) {
      req.summary = summary;
      return absl::OkStatus();
    }
  }
  return Invalid(core::StrCat("'", value, "' is not one of true, false, text, data, count"));
}

absl::Status ParseElements(std::string_view value, SearchRequest& req) {
  std::vector<std::string> names;
  for (std::string_view item : core::StrSplit(value, ',')) {
    if (!IsElementName(item)) return Invalid(core::StrCat("'", item, "' is not an element name"));
    names.emplace_back(item);
  }
  req.elements.insert(req.elements.end(), names.begin(), names.end());
  return absl::OkStatus();
}

absl::Status ParseInclude(std::string_view value, bool reverse, bool iterate, const fhir::SearchParamRegistry& registry,
                          const fhir::StructureRegistry& structures, SearchRequest& req) {
  Include inc;
  inc.reverse = reverse;
  inc.iterate = iterate;
  inc.text = std::string(value);
  if (value == "*") {
    req.includes.push_back(std::move(inc));
    return absl::OkStatus();
  }
  std::vector<std::string_view> parts = core::StrSplit(value, ':');
  const std::string_view syntax = "expected Type:parameter, Type:parameter:TargetType, Type:* or *";
  if (parts.size() < 2 || parts.size() > 3) return Invalid(core::StrCat("'", value, "': ", syntax));
  if (!structures.IsResourceType(parts[0])) {
    return Invalid(core::StrCat("'", parts[0], "' is not a resource type"));
  }
  inc.source_type = std::string(parts[0]);
  if (!reverse && !inc.iterate && inc.source_type != req.type) {
    return Invalid(core::StrCat("'", value, "' does not start with the searched type ", req.type,
                                " (use _include:iterate to follow included resources)"));
  }
  if (parts[1] == "*") {
    if (parts.size() == 3) return Invalid(core::StrCat("'", value, "': ", syntax));
    req.includes.push_back(std::move(inc));
    return absl::OkStatus();
  }
  if (parts[1].empty()) return Invalid(core::StrCat("'", value, "': ", syntax));
  inc.param = registry.Find(parts[0], parts[1]);
  if (inc.param == nullptr) {
    return Unknown(core::StrCat("unknown search parameter '", parts[1], "' for ", parts[0]));
  }
  if (inc.param->type != "reference") {
    return Invalid(core::StrCat(parts[0], ":", parts[1], " is a ", inc.param->type, " parameter, not a reference"));
  }
  if (parts.size() == 3) {
    if (!structures.IsResourceType(parts[2])) {
      return Invalid(core::StrCat("'", parts[2], "' is not a resource type"));
    }
    if (!inc.param->targets.empty() && !Contains(inc.param->targets, parts[2])) {
      return Invalid(core::StrCat("'", parts[2], "' is not a target type of ", parts[0], ":", parts[1], " (",
                                  Join(inc.param->targets, ", "), ")"));
    }
    inc.target_type = std::string(parts[2]);
  }
  req.includes.push_back(std::move(inc));
  return absl::OkStatus();
}

// Turns an internal status into the error the caller sees; `droppable` tells
// whether lenient mode may drop the parameter instead.
struct Refusal {
  absl::Status status;
  bool droppable = false;
};

Refusal Refuse(std::string_view name, const absl::Status& why) {
  const bool not_supported =
      why.code() == absl::StatusCode::kNotFound || why.code() == absl::StatusCode::kUnimplemented;
  return Refusal{
      core::Error(absl::StatusCode::kInvalidArgument, core::StrCat("Parameter '", name, "': ", MessageOf(why)))
          .Http(400)
          .Issue(not_supported ? "not-supported" : "invalid"),
      not_supported};
}

// One search request being parsed, parameter by parameter.
class SearchParser {
 public:
  SearchParser(std::string_view type, const fhir::SearchParamRegistry& registry,
               const fhir::StructureRegistry& structures)
      : registry_(registry), structures_(structures), criteria_(registry, structures) {
    req_.type = std::string(type);
  }

  // Parses one name/value pair into the request. Errors carry only the reason.
  absl::Status Parse(const std::string& name, const std::string& value) {
    const std::size_t colon = name.find(':');
    const std::string_view base = std::string_view(name).substr(0, colon);
    const bool has_modifier = colon != std::string::npos;
    const std::string_view modifier = has_modifier ? std::string_view(name).substr(colon + 1) : std::string_view();

    if (base == "_format" || base == "_pretty") return absl::OkStatus();  // the transport's
    if (base == "_type") return Invalid("_type is only allowed in a system-level search");
    if (base == "_contained" || base == "_containedType" || base == "_list" || base == "_query" || base == "_filter") {
      return Unsupported(core::StrCat(base, " is not supported"));
    }
    if (base == "_include" || base == "_revinclude") {
      const bool iterate = modifier == "iterate" || modifier == "recurse";
      if (has_modifier && !iterate) {
        return Unsupported(core::StrCat("modifier ':", modifier, "' is not supported (only :iterate)"));
      }
      if (value.empty()) return absl::OkStatus();
      return ParseInclude(value, base == "_revinclude", iterate, registry_, structures_, req_);
    }
    if (base == "_count" || base == "_sort" || base == "_total" || base == "_summary" || base == "_cursor" ||
        base == "_elements") {
      if (has_modifier) return Unsupported(core::StrCat("modifier ':", modifier, "' is not supported on ", base));
      // search.html: empty parameters are not errors, they are ignored.
      if (value.empty()) return absl::OkStatus();
      if (base == "_elements") return ParseElements(value, req_);
      if (base == "_count") {
        RETURN_IF_ERROR(Once(seen_count_));
        return ParseCount(value, req_);
      }
      if (base == "_sort") {
        RETURN_IF_ERROR(Once(seen_sort_));
        return ParseSort(value, registry_, req_);
      }
      if (base == "_total") {
        RETURN_IF_ERROR(Once(seen_total_));
        return ParseTotal(value, req_);
      }
      if (base == "_summary") {
        RETURN_IF_ERROR(Once(seen_summary_));
        return ParseSummary(value, req_);
      }
      RETURN_IF_ERROR(Once(seen_cursor_));
      req_.cursor = value;
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(Criterion c, criteria_.ParseCriterion(name, req_.type, value));
    // An empty value is ignored, once its name is known to be valid.
    if (!value.empty()) req_.criteria.push_back(std::move(c));
    return absl::OkStatus();
  }

  SearchRequest& request() { return req_; }

 private:
  // Marks a parameter that may appear once as seen; fails on a repeat.
  static absl::Status Once(bool& seen) {
    if (seen) return Invalid("may appear only once");
    seen = true;
    return absl::OkStatus();
  }

  const fhir::SearchParamRegistry& registry_;
  const fhir::StructureRegistry& structures_;
  QueryParser criteria_;
  SearchRequest req_;
  bool seen_count_ = false;
  bool seen_sort_ = false;
  bool seen_total_ = false;
  bool seen_summary_ = false;
  bool seen_cursor_ = false;
};

}  // namespace

absl::StatusOr<SearchRequest> ParseSearch(const std::vector<std::pair<std::string, std::string>>& params,
                                          std::string_view type, const fhir::SearchParamRegistry& registry,
                                          const fhir::StructureRegistry& structures, bool lenient) {
  if (!structures.IsResourceType(type)) {
    return core::Error(absl::StatusCode::kInvalidArgument, core::StrCat("Unknown resource type '", type, "'"))
        .Http(400)
        .Issue("not-supported");
  }
  SearchParser parser(type, registry, structures);
  for (const auto& [name, value] : params) {
    absl::Status st = parser.Parse(name, value);
    if (st.ok()) continue;
    Refusal refusal = Refuse(name, st);
    if (!lenient || !refusal.droppable) return refusal.status;
    parser.request().warnings.emplace_back(MessageOf(refusal.status));
  }
  return std::move(parser.request());
}

std::vector<std::string> SplitEscaped(std::string_view value, char sep) {
  std::vector<std::string> out(1);
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (c == '\\' && i + 1 < value.size()) {
      // Keep the escape and the escaped character together, so "\\," ends in
      // an escaped backslash and a real separator.
      out.back().push_back(c);
      out.back().push_back(value[++i]);
    } else if (c == sep) {
      out.emplace_back();
    } else {
      out.back().push_back(c);
    }
  }
  return out;
}

std::string Unescape(std::string_view part) {
  std::string out;
  out.reserve(part.size());
  for (std::size_t i = 0; i < part.size(); ++i) {
    const char c = part[i];
    if (c == '\\' && i + 1 < part.size()) {
      const char next = part[i + 1];
      if (next == ',' || next == '$' || next == '|' || next == '\\') {
        out.push_back(next);
        ++i;
        continue;
      }
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace medgrid::search
