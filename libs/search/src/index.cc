// Search index extraction (see index.h for the contract).
//
// Invariants:
// - Every parameter's items come from its compiled FHIRPath expression; an
//   item's shape (CodeableConcept, Period, ...) is taken from its FHIRPath
//   type when the evaluator knows it (choice elements: valueQuantity is a
//   Quantity) and otherwise guessed from the JSON members, because most
//   complex elements reach us untyped. Each parameter type then indexes the
//   shapes it understands and skips the rest.
// - Nothing here fails: malformed values index nothing, and an expression
//   that fails to evaluate indexes nothing for its parameter.
// - A composite group is stored only when every component has at least one
//   entry in it; group numbers are consecutive from 1 over the stored groups.
// - Entries are sorted and unique per vector (deduplicated at the end), so
//   their order says nothing about the resource's.
// - ExtractIndex is thread-safe: it shares only the registry, whose
//   definitions and compiled expressions (composite components' included)
//   are immutable.
#include "medgrid/search/index.h"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/json/value.hpp"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/fhirpath.h"
#include "medgrid/fhir/json.h"
#include "medgrid/search/date_range.h"
#include "medgrid/search/text.h"

namespace medgrid::search {
namespace {

namespace json = boost::json;

constexpr std::string_view kCurrencySystem = "urn:iso:std:iso:4217";

std::string_view View(json::string_view s) { return std::string_view(s.data(), s.size()); }
json::string_view JsonView(std::string_view s) { return json::string_view(s.data(), s.size()); }

bool IsPlainString(const json::value& v) { return v.is_string() && !fhir::IsDecimal(v); }

const json::value* Member(const json::value& v, std::string_view key) {
  if (!v.is_object()) return nullptr;
  return v.get_object().if_contains(JsonView(key));
}

// A string member of `v`; nullopt when absent or not a string.
std::optional<std::string_view> StringMember(const json::value& v, std::string_view key) {
  const json::value* m = Member(v, key);
  if (m == nullptr || !IsPlainString(*m)) return std::nullopt;
  return View(m->get_string());
}

std::string_view StringOr(const json::value& v, std::string_view key) {
  return StringMember(v, key).value_or(std::string_view());
}

// Calls `f` on each element of `v` if it is an array, else on `v` itself.
template <typename F>
void ForEach(const json::value* v, F&& f) {
  if (v == nullptr) return;
  if (v->is_array()) {
    for (const json::value& e : v->get_array()) f(e);
  } else {
    f(*v);
  }
}

// The number text of a JSON number, as written for decimals.
std::optional<std::string> NumberText(const json::value& v) {
  if (fhir::IsDecimal(v)) return std::string(fhir::DecimalText(v));
  if (v.is_int64()) return std::to_string(v.get_int64());
  if (v.is_uint64()) return std::to_string(v.get_uint64());
  if (v.is_double()) {
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v.get_double());
    if (ec == std::errc()) return std::string(buf, end);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Value shapes

enum class Shape {
  kOther,  // nothing any parameter type indexes (Attachment, SampledData, ...)
  kString,
  kBoolean,
  kNumber,
  kCodeableConcept,
  kCoding,
  kIdentifier,
  kContactPoint,
  kHumanName,
  kAddress,
  kPeriod,
  kTiming,
  kRange,
  kQuantity,
  kMoney,
  kReference,
  kResource,
};

// FHIR type names as the evaluator spells them (choice suffixes start upper
// case; `as` keeps the suffix), compared with the first letter folded.
bool TypeIs(std::string_view type, std::string_view name) {
  if (type.size() != name.size() || type.empty()) return false;
  const auto upper = [](char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; };
  return upper(type[0]) == upper(name[0]) && type.substr(1) == name.substr(1);
}

// The shape a complex FHIR type name stands for; nullopt for names this
// table does not know (resource types after resolve(), or suffixes that are
// not types at all), which are then classified by their JSON.
std::optional<Shape> ShapeOfTypeName(std::string_view type) {
  struct Entry {
    std::string_view name;
    Shape shape;
  };
  static constexpr Entry kTypes[] = {
      {"CodeableConcept", Shape::kCodeableConcept},
      {"Coding", Shape::kCoding},
      {"Identifier", Shape::kIdentifier},
      {"ContactPoint", Shape::kContactPoint},
      {"HumanName", Shape::kHumanName},
      {"Address", Shape::kAddress},
      {"Period", Shape::kPeriod},
      {"Timing", Shape::kTiming},
      {"Range", Shape::kRange},
      {"Quantity", Shape::kQuantity},
      {"SimpleQuantity", Shape::kQuantity},
      {"Age", Shape::kQuantity},
      {"Duration", Shape::kQuantity},
      {"Distance", Shape::kQuantity},
      {"Count", Shape::kQuantity},
      {"MoneyQuantity", Shape::kQuantity},
      {"Money", Shape::kMoney},
      {"Reference", Shape::kReference},
      {"Attachment", Shape::kOther},
      {"SampledData", Shape::kOther},
      {"Ratio", Shape::kOther},
      {"Annotation", Shape::kOther},
      {"Signature", Shape::kOther},
      {"Expression", Shape::kOther},
      {"Dosage", Shape::kOther},
      {"Meta", Shape::kOther},
      {"Narrative", Shape::kOther},
      {"Extension", Shape::kOther},
      {"ContactDetail", Shape::kOther},
      {"Contributor", Shape::kOther},
      {"DataRequirement", Shape::kOther},
      {"ParameterDefinition", Shape::kOther},
      {"RelatedArtifact", Shape::kOther},
      {"TriggerDefinition", Shape::kOther},
      {"UsageContext", Shape::kOther},
  };
  for (const Entry& e : kTypes) {
    if (TypeIs(type, e.name)) return e.shape;
  }
  return std::nullopt;
}

bool IsContactPointSystem(std::string_view s) {
  return s == "phone" || s == "fax" || s == "email" || s == "pager" || s == "url" || s == "sms" || s == "other";
}

// The shape of an untyped object, from its members.
Shape ShapeOfObject(const json::object& o) {
  const auto has = [&o](std::string_view key) { return o.contains(JsonView(key)); };
  if (has("resourceType")) return Shape::kResource;
  if (has("coding")) return Shape::kCodeableConcept;
  if (has("reference") || has("identifier")) return Shape::kReference;
  if (has("start") || has("end")) return Shape::kPeriod;
  if (has("low") || has("high")) return Shape::kRange;
  if (has("event") || has("repeat")) return Shape::kTiming;
  if (has("currency")) return Shape::kMoney;
  if (const json::value* value = o.if_contains("value"); value != nullptr && fhir::IsNumber(*value)) {
    return Shape::kQuantity;
  }
  if (has("family") || has("given") || has("prefix") || has("suffix")) return Shape::kHumanName;
  if (has("line") || has("city") || has("district") || has("state") || has("postalCode") || has("country")) {
    return Shape::kAddress;
  }
  if (has("value") || has("type") || (has("system") && !has("code"))) {
    const json::value* system = o.if_contains("system");
    const bool contact = has("rank") || (system != nullptr && IsPlainString(*system) &&
                                         IsContactPointSystem(View(system->get_string())));
    return contact ? Shape::kContactPoint : Shape::kIdentifier;
  }
  if (has("code") || has("system") || has("display")) return Shape::kCoding;
  if (has("text")) return Shape::kCodeableConcept;
  return Shape::kOther;
}

Shape ShapeOf(const fhir::FhirPathItem& item) {
  const json::value& v = *item.value;
  if (v.is_bool()) return Shape::kBoolean;
  if (fhir::IsNumber(v)) return Shape::kNumber;
  if (v.is_string()) return Shape::kString;
  if (!v.is_object()) return Shape::kOther;
  if (!item.unresolved_reference) {
    if (std::optional<Shape> s = ShapeOfTypeName(item.type)) return *s;
  }
  return ShapeOfObject(v.get_object());
}

// ---------------------------------------------------------------------------
// Narrative and content

bool IsInlineElement(std::string_view name) {
  static constexpr std::string_view kInline[] = {"a",    "abbr",   "acronym", "b",   "big", "cite", "code", "dfn",
                                                 "em",   "font",   "i",       "kbd", "q",   "s",    "samp", "small",
                                                 "span", "strike", "strong",  "sub", "sup", "tt",   "u",    "var"};
  for (std::string_view e : kInline) {
    if (name.size() == e.size() && std::equal(name.begin(), name.end(), e.begin(), [](char a, char b) {
          return (a >= 'A' && a <= 'Z' ? static_cast<char>(a - 'A' + 'a') : a) == b;
        })) {
      return true;
    }
  }
  return false;
}

// Decodes the entity at the start of `s` (which starts with '&') into `out`;
// returns the characters consumed, or 0 if it is not a known entity.
std::size_t DecodeEntity(std::string_view s, std::string& out) {
  const std::size_t semi = s.find(';');
  if (semi == std::string_view::npos || semi > 12) return 0;
  const std::string_view name = s.substr(1, semi - 1);
  if (name.size() > 1 && name[0] == '#') {
    const bool hex = name[1] == 'x' || name[1] == 'X';
    const std::string_view digits = name.substr(hex ? 2 : 1);
    uint32_t cp = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), cp, hex ? 16 : 10);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) return 0;
    // A no-break space is a space to a full-text search.
    core::AppendUtf8(out, cp == 0xA0 ? ' ' : cp);
    return semi + 1;
  }
  static constexpr std::pair<std::string_view, std::string_view> kNamed[] = {
      {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", " "},
  };
  for (const auto& [n, text] : kNamed) {
    if (name == n) {
      out.append(text);
      return semi + 1;
    }
  }
  return 0;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

// The text of an XHTML fragment: tags and comments removed, entities
// decoded, whitespace collapsed. Block-level tags separate words ("<td>a</td>
// <td>b</td>" is "a b"); inline ones do not ("<b>Pe</b>ter" is "Peter").
std::string NarrativeText(std::string_view xhtml) {
  std::string raw;
  raw.reserve(xhtml.size());
  for (std::size_t i = 0; i < xhtml.size();) {
    const char c = xhtml[i];
    if (c == '<') {
      if (xhtml.substr(i).starts_with("<!--")) {
        const std::size_t end = xhtml.find("-->", i + 4);
        i = end == std::string_view::npos ? xhtml.size() : end + 3;
        raw.push_back(' ');
        continue;
      }
      const std::size_t end = xhtml.find('>', i);
      if (end == std::string_view::npos) break;  // a truncated tag: drop the rest
      std::string_view tag = xhtml.substr(i + 1, end - i - 1);
      if (tag.starts_with('/')) tag.remove_prefix(1);
      const std::size_t name_end = tag.find_first_of(" \t\r\n/");
      if (!IsInlineElement(tag.substr(0, name_end))) raw.push_back(' ');
      i = end + 1;
    } else if (c == '&') {
      const std::size_t used = DecodeEntity(xhtml.substr(i), raw);
      if (used == 0) {
        raw.push_back('&');
        ++i;
      } else {
        i += used;
      }
    } else {
      raw.push_back(c);
      ++i;
    }
  }
  std::string out;
  out.reserve(raw.size());
  bool pending_space = false;
  for (char c : raw) {
    if (IsSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

// Appends every string leaf of `v` to `out`, space-separated, leaving out
// the narrative (Narrative.div, the only "div" member in FHIR).
void AppendContent(const json::value& v, std::string& out) {
  if (v.is_object()) {
    for (const json::key_value_pair& kv : v.get_object()) {
      if (kv.key() == "text" && kv.value().is_object()) {
        for (const json::key_value_pair& t : kv.value().get_object()) {
          if (t.key() != "div") AppendContent(t.value(), out);
        }
        continue;
      }
      AppendContent(kv.value(), out);
    }
  } else if (v.is_array()) {
    for (const json::value& e : v.get_array()) AppendContent(e, out);
  } else if (IsPlainString(v)) {
    const json::string& s = v.get_string();
    if (s.empty()) return;
    if (!out.empty()) out.push_back(' ');
    out.append(s.data(), s.size());
  }
}

// ---------------------------------------------------------------------------
// Deduplication

auto Key(const StringEntry& e) { return std::tie(e.param, e.group, e.exact, e.folded); }
auto Key(const TokenEntry& e) {
  return std::tie(e.param, e.group, e.system, e.code, e.text, e.type_system, e.type_code);
}
auto Key(const DateEntry& e) { return std::tie(e.param, e.group, e.lo, e.hi); }
auto Key(const ReferenceEntry& e) { return std::tie(e.param, e.group, e.target_type, e.target_id, e.url, e.version); }
auto Key(const QuantityEntry& e) { return std::tie(e.param, e.group, e.low, e.high, e.system, e.code, e.unit); }
auto Key(const UriEntry& e) { return std::tie(e.param, e.group, e.uri); }

// Sorts and removes duplicates (equal in every field).
template <typename T>
void Dedup(std::vector<T>& v) {
  std::sort(v.begin(), v.end(), [](const T& a, const T& b) { return Key(a) < Key(b); });
  v.erase(std::unique(v.begin(), v.end(), [](const T& a, const T& b) { return Key(a) == Key(b); }), v.end());
}

// ---------------------------------------------------------------------------
// Extraction

class Extractor {
 public:
  Extractor(const json::value& resource, const fhir::SearchParamRegistry& registry, IndexEntries& out)
      : resource_(resource), registry_(registry), out_(out) {}

  void AddParam(const fhir::SearchParamDef& def) {
    if (def.path == nullptr) return;
    absl::StatusOr<std::vector<fhir::FhirPathItem>> items = def.path->Evaluate(resource_);
    if (!items.ok()) return;
    if (def.type == "composite") {
      AddComposite(def, *items);
      return;
    }
    for (const fhir::FhirPathItem& item : *items) AddValue(def.type, def.code, 0, item);
  }

 private:
  void AddComposite(const fhir::SearchParamDef& def, const std::vector<fhir::FhirPathItem>& items) {
    struct Component {
      const fhir::SearchParamDef* def;
      const fhir::FhirPath* path;
      bool on_resource;  // the expression starts from %resource, not from the composite's item
      std::string param;
    };
    std::vector<Component> components;
    for (std::size_t i = 0; i < def.components.size(); ++i) {
      const fhir::SearchParamComponent& c = def.components[i];
      const fhir::SearchParamDef* component_def = registry_.ByUrl(c.definition);
      if (component_def == nullptr || component_def->type == "composite" || component_def->type == "special") continue;
      components.push_back(Component{component_def, c.path.get(), c.expression.find("%resource") != std::string::npos,
                                     core::StrCat(def.code, "$", i)});
    }
    if (components.empty()) return;
    for (const fhir::FhirPathItem& item : items) {
      const int group = last_group_ + 1;
      bool complete = true;
      for (const Component& c : components) {
        const std::size_t before = EntryCount();
        absl::StatusOr<std::vector<fhir::FhirPathItem>> values =
            c.path->Evaluate(c.on_resource ? resource_ : *item.value);
        if (values.ok()) {
          for (const fhir::FhirPathItem& value : *values) AddValue(c.def->type, c.param, group, value);
        }
        if (EntryCount() == before) {
          complete = false;
          break;
        }
      }
      // A composite value matches only with every component, so a group
      // that lacks one (an Observation without a value for
      // code-value-quantity) could never match: it is not stored.
      if (complete) {
        last_group_ = group;
      } else {
        DropGroup(group);
      }
    }
  }

  std::size_t EntryCount() const {
    return out_.strings.size() + out_.tokens.size() + out_.dates.size() + out_.references.size() +
           out_.quantities.size() + out_.uris.size();
  }

  // Removes the entries of `group`, the group being filled: they are the
  // last ones of each vector.
  void DropGroup(int group) {
    auto drop = [group](auto& v) {
      while (!v.empty() && v.back().group == group) v.pop_back();
    };
    drop(out_.strings);
    drop(out_.tokens);
    drop(out_.dates);
    drop(out_.references);
    drop(out_.quantities);
    drop(out_.uris);
  }

  void AddValue(std::string_view param_type, const std::string& param, int group, const fhir::FhirPathItem& item) {
    const Shape shape = ShapeOf(item);
    if (param_type == "string") {
      AddString(param, group, *item.value);
    } else if (param_type == "token") {
      AddToken(param, group, *item.value, shape);
    } else if (param_type == "date") {
      AddDate(param, group, item, shape);
    } else if (param_type == "reference") {
      AddReference(param, group, *item.value, shape);
    } else if (param_type == "quantity") {
      AddQuantity(param, group, *item.value, shape, /*units=*/true);
    } else if (param_type == "number") {
      AddQuantity(param, group, *item.value, shape, /*units=*/false);
    } else if (param_type == "uri") {
      if (shape == Shape::kString) AddUri(param, group, View(item.value->get_string()));
    }
  }

  // string

  void PushString(const std::string& param, int group, std::string_view s) {
    if (s.empty()) return;
    out_.strings.push_back(StringEntry{param, group, std::string(s), FoldText(s)});
  }

  void PushStrings(const std::string& param, int group, const json::value& v, std::string_view key) {
    ForEach(Member(v, key), [&](const json::value& e) {
      if (IsPlainString(e)) PushString(param, group, View(e.get_string()));
    });
  }

  // HumanName and Address: their parts. Both may be just {"text": ...},
  // which the shape guess cannot tell from a CodeableConcept, so every
  // object is searched for the parts of either.
  void AddString(const std::string& param, int group, const json::value& v) {
    if (IsPlainString(v)) {
      PushString(param, group, View(v.get_string()));
    } else if (v.is_object()) {
      for (std::string_view key : {"text", "family", "given", "prefix", "suffix", "line", "city", "district", "state",
                                   "postalCode", "country"}) {
        PushStrings(param, group, v, key);
      }
    }
  }

  // token

  void PushToken(const std::string& param, int group, std::optional<std::string_view> system, std::string_view code,
                 std::string_view text, std::optional<std::string_view> type_system = std::nullopt,
                 std::optional<std::string_view> type_code = std::nullopt) {
    TokenEntry e;
    e.param = param;
    e.group = group;
    if (system) e.system = std::string(*system);
    e.code = std::string(code);
    e.text = FoldText(text);
    if (type_system) e.type_system = std::string(*type_system);
    if (type_code) e.type_code = std::string(*type_code);
    out_.tokens.push_back(std::move(e));
  }

  // A Coding; `text` overrides its display (a CodeableConcept's text).
  void AddCoding(const std::string& param, int group, const json::value& coding, std::string_view text) {
    if (!coding.is_object()) return;
    const std::optional<std::string_view> system = StringMember(coding, "system");
    const std::string_view code = StringOr(coding, "code");
    const std::string_view display = StringOr(coding, "display");
    if (!system && code.empty() && display.empty()) return;
    PushToken(param, group, system, code, text.empty() ? display : text);
  }

  void AddIdentifier(const std::string& param, int group, const json::value& id) {
    const std::optional<std::string_view> system = StringMember(id, "system");
    const std::string_view value = StringOr(id, "value");
    const json::value* type = Member(id, "type");
    const std::string_view type_text = type != nullptr ? StringOr(*type, "text") : std::string_view();
    bool typed = false;
    if (type != nullptr) {
      ForEach(Member(*type, "coding"), [&](const json::value& coding) {
        const std::optional<std::string_view> type_system = StringMember(coding, "system");
        const std::optional<std::string_view> type_code = StringMember(coding, "code");
        if (!type_system && !type_code) return;
        PushToken(param, group, system, value, type_text, type_system, type_code);
        typed = true;
      });
    }
    if (!typed && (system || !value.empty() || !type_text.empty())) PushToken(param, group, system, value, type_text);
  }

  void AddToken(const std::string& param, int group, const json::value& v, Shape shape) {
    switch (shape) {
      case Shape::kString:
        if (IsPlainString(v) && !v.get_string().empty()) {
          PushToken(param, group, std::nullopt, View(v.get_string()), {});
        }
        return;
      case Shape::kBoolean:
        PushToken(param, group, std::nullopt, v.get_bool() ? "true" : "false", {});
        return;
      case Shape::kNumber:
        // Integers (positiveInt codes and the like); a decimal is no token.
        if (v.is_int64() || v.is_uint64()) PushToken(param, group, std::nullopt, *NumberText(v), {});
        return;
      case Shape::kCoding:
        AddCoding(param, group, v, {});
        return;
      case Shape::kCodeableConcept: {
        const std::string_view text = StringOr(v, "text");
        const std::size_t before = out_.tokens.size();
        ForEach(Member(v, "coding"), [&](const json::value& coding) { AddCoding(param, group, coding, text); });
        if (out_.tokens.size() == before && !text.empty()) PushToken(param, group, std::nullopt, {}, text);
        return;
      }
      case Shape::kIdentifier:
        AddIdentifier(param, group, v);
        return;
      case Shape::kContactPoint:
        // ContactPoint.system ("phone", "email") is the token's system, so
        // telecom=phone|555-1234 works; a bare value matches any.
        if (const std::string_view value = StringOr(v, "value"); !value.empty()) {
          const std::string_view system = StringOr(v, "system");
          PushToken(param, group, system.empty() ? std::nullopt : std::optional<std::string_view>(system), value, {});
        }
        return;
      default:
        return;
    }
  }

  // date

  void PushDate(const std::string& param, int group, int64_t lo, int64_t hi) {
    out_.dates.push_back(DateEntry{param, group, lo, hi});
  }

  void AddPeriod(const std::string& param, int group, const json::value& period) {
    const std::optional<std::string_view> start = StringMember(period, "start");
    const std::optional<std::string_view> end = StringMember(period, "end");
    if (!start && !end) return;
    int64_t lo = DateRange::kMin;
    int64_t hi = DateRange::kMax;
    if (start) {
      const std::optional<DateRange> r = ParseDateRange(*start);
      if (!r) return;
      lo = r->lo;
    }
    if (end) {
      const std::optional<DateRange> r = ParseDateRange(*end);
      if (!r) return;
      hi = r->hi;
    }
    PushDate(param, group, lo, hi);
  }

  void AddDate(const std::string& param, int group, const fhir::FhirPathItem& item, Shape shape) {
    const json::value& v = *item.value;
    switch (shape) {
      case Shape::kString: {
        // A choice element of another primitive type (onsetString) is no date.
        const std::string_view t = item.type;
        if (!t.empty() && !TypeIs(t, "Date") && !TypeIs(t, "DateTime") && !TypeIs(t, "Instant")) return;
        if (!IsPlainString(v)) return;
        if (const std::optional<DateRange> r = ParseDateRange(View(v.get_string()))) {
          PushDate(param, group, r->lo, r->hi);
        }
        return;
      }
      case Shape::kPeriod:
        AddPeriod(param, group, v);
        return;
      case Shape::kTiming: {
        const json::value* events = Member(v, "event");
        bool any = false;
        ForEach(events, [&](const json::value& e) {
          if (!IsPlainString(e)) return;
          if (const std::optional<DateRange> r = ParseDateRange(View(e.get_string()))) {
            PushDate(param, group, r->lo, r->hi);
            any = true;
          }
        });
        if (any) return;
        if (const json::value* repeat = Member(v, "repeat")) {
          if (const json::value* bounds = Member(*repeat, "boundsPeriod")) AddPeriod(param, group, *bounds);
        }
        return;
      }
      default:
        return;
    }
  }

  // reference

  bool IsKnownType(std::string_view type) const {
    return !type.empty() && type[0] >= 'A' && type[0] <= 'Z' && registry_.Find(type, "_id") != nullptr;
  }

  static bool IsId(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    });
  }

  // Splits the tail of `path` ("…/Type/id" or "…/Type/id/_history/n") into
  // type and id if the type is a known resource type. `relative` requires
  // the whole path to be that tail.
  bool SplitTypeAndId(std::string_view path, bool relative, ReferenceEntry& e) const {
    if (const std::size_t h = path.find("/_history/"); h != std::string_view::npos) path = path.substr(0, h);
    const std::size_t id_slash = path.rfind('/');
    if (id_slash == std::string_view::npos || id_slash == 0) return false;
    const std::size_t type_slash = path.rfind('/', id_slash - 1);
    if (relative && type_slash != std::string_view::npos) return false;
    const std::size_t type_start = type_slash == std::string_view::npos ? 0 : type_slash + 1;
    const std::string_view type = path.substr(type_start, id_slash - type_start);
    const std::string_view id = path.substr(id_slash + 1);
    if (!IsKnownType(type) || !IsId(id)) return false;
    e.target_type = std::string(type);
    e.target_id = std::string(id);
    return true;
  }

  void AddReferenceString(const std::string& param, int group, std::string_view ref) {
    if (ref.empty()) return;
    ReferenceEntry e;
    e.param = param;
    e.group = group;
    const std::size_t colon = ref.find(':');
    const bool absolute = colon != std::string_view::npos && ref.find('/') > colon;
    if (ref.starts_with('#')) {
      e.url = std::string(ref);
    } else if (absolute) {
      std::string_view url = ref;
      if (const std::size_t bar = url.find('|'); bar != std::string_view::npos) {
        e.version = std::string(url.substr(bar + 1));
        url = url.substr(0, bar);
      }
      e.url = std::string(url);
      if (url.starts_with("http://") || url.starts_with("https://")) {
        SplitTypeAndId(url.substr(0, url.find_first_of("?#")), /*relative=*/false, e);
      }
    } else if (!SplitTypeAndId(ref, /*relative=*/true, e)) {
      // Not "Type/id": kept as written so that an exact match still works.
      e.url = std::string(ref);
    }
    out_.references.push_back(std::move(e));
  }

  void AddReference(const std::string& param, int group, const json::value& v, Shape shape) {
    if (shape == Shape::kString) {
      if (IsPlainString(v)) AddReferenceString(param, group, View(v.get_string()));
      return;
    }
    if (shape != Shape::kReference) return;
    if (const std::optional<std::string_view> ref = StringMember(v, "reference")) {
      AddReferenceString(param, group, *ref);
    }
    if (const json::value* identifier = Member(v, "identifier"); identifier != nullptr && identifier->is_object()) {
      AddIdentifier(param, group, *identifier);
    }
  }

  // quantity and number

  void AddQuantity(const std::string& param, int group, const json::value& v, Shape shape, bool units) {
    QuantityEntry e;
    e.param = param;
    e.group = group;
    switch (shape) {
      case Shape::kNumber: {
        std::optional<std::string> n = NumberText(v);
        if (!n) return;
        e.low = *n;
        e.high = *std::move(n);
        break;
      }
      case Shape::kQuantity:
      case Shape::kMoney: {
        const json::value* value = Member(v, "value");
        std::optional<std::string> n = value != nullptr ? NumberText(*value) : std::nullopt;
        if (!n) return;
        e.low = *n;
        e.high = *std::move(n);
        if (!units) break;
        if (shape == Shape::kMoney) {
          e.code = std::string(StringOr(v, "currency"));
          if (!e.code.empty()) e.system = std::string(kCurrencySystem);
        } else {
          e.system = std::string(StringOr(v, "system"));
          e.code = std::string(StringOr(v, "code"));
          e.unit = std::string(StringOr(v, "unit"));
        }
        break;
      }
      case Shape::kRange: {
        const json::value* low = Member(v, "low");
        const json::value* high = Member(v, "high");
        const json::value* low_value = low != nullptr ? Member(*low, "value") : nullptr;
        const json::value* high_value = high != nullptr ? Member(*high, "value") : nullptr;
        if (low_value != nullptr) e.low = NumberText(*low_value).value_or("");
        if (high_value != nullptr) e.high = NumberText(*high_value).value_or("");
        if (e.low.empty() && e.high.empty()) return;
        if (!units) break;
        // Both ends share their unit (rng-2); take it from whichever is there.
        const json::value* q = !e.low.empty() ? low : high;
        e.system = std::string(StringOr(*q, "system"));
        e.code = std::string(StringOr(*q, "code"));
        e.unit = std::string(StringOr(*q, "unit"));
        break;
      }
      default:
        return;
    }
    out_.quantities.push_back(std::move(e));
  }

  // uri

  void AddUri(const std::string& param, int group, std::string_view uri) {
    if (uri.empty()) return;
    out_.uris.push_back(UriEntry{param, group, std::string(uri)});
  }

  const json::value& resource_;
  const fhir::SearchParamRegistry& registry_;
  IndexEntries& out_;
  int last_group_ = 0;
};

}  // namespace

IndexEntries ExtractIndex(const json::value& resource, std::string_view type,
                          const fhir::SearchParamRegistry& registry) {
  IndexEntries out;
  Extractor extractor(resource, registry, out);
  for (const fhir::SearchParamDef* def : registry.ForType(type)) {
    // _id and _lastUpdated are columns of the resources table.
    if (def->code == "_id" || def->code == "_lastUpdated" || def->type == "special") continue;
    extractor.AddParam(*def);
  }
  Dedup(out.strings);
  Dedup(out.tokens);
  Dedup(out.dates);
  Dedup(out.references);
  Dedup(out.quantities);
  Dedup(out.uris);

  AppendContent(resource, out.content);
  if (const json::value* text = Member(resource, "text")) {
    if (const std::optional<std::string_view> div = StringMember(*text, "div")) out.narrative = NarrativeText(*div);
  }
  return out;
}

IndexEntries ExtractParams(const json::value& resource, const std::vector<const fhir::SearchParamDef*>& params,
                           const fhir::SearchParamRegistry& registry) {
  IndexEntries out;
  Extractor extractor(resource, registry, out);
  for (const fhir::SearchParamDef* def : params) extractor.AddParam(*def);
  Dedup(out.tokens);
  Dedup(out.references);
  return out;
}

}  // namespace medgrid::search
