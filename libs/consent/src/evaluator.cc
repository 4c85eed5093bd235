// Evaluation runs in two steps: ConsentParser turns the JSON into a checked
// Rule tree (or rejects the Consent as malformed), then Walk matches it
// against facts read once from the request. Everything about the Consent is
// validated in the first step, so matching never meets a wrong JSON type;
// the accessed resource is read leniently (what does not parse is absent),
// because it is data, not a rule.
#include "medgrid/consent/evaluator.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "boost/json/array.hpp"
#include "boost/json/value.hpp"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"
#include "medgrid/search/date_range.h"

namespace medgrid::consent {
namespace {

namespace json = boost::json;
using search::DateRange;

constexpr std::string_view kScopeSystem = "http://terminology.hl7.org/CodeSystem/consentscope";
constexpr std::string_view kActCodeSystem = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
constexpr std::string_view kActionSystem = "http://terminology.hl7.org/CodeSystem/consentaction";
constexpr std::string_view kConfidentialitySystem = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
constexpr std::string_view kResourceTypesSystem = "http://hl7.org/fhir/resource-types";
constexpr std::string_view kMimeTypeSystem = "urn:ietf:bcp:13";

std::string_view View(json::string_view s) { return std::string_view(s.data(), s.size()); }
json::string_view JsonView(std::string_view s) { return json::string_view(s.data(), s.size()); }

// Decimals are strings carrying fhir::kDecimalMarker; they are never text.
bool IsText(const json::value& v) { return v.is_string() && !fhir::IsDecimal(v); }

// A provision's or policy's effect, where it may be undetermined.
enum class Stance { kNone, kPermit, kDeny };

Stance Opposite(Stance s) {
  switch (s) {
    case Stance::kPermit:
      return Stance::kDeny;
    case Stance::kDeny:
      return Stance::kPermit;
    case Stance::kNone:
      break;
  }
  return Stance::kNone;
}

// A provision's own type, else the opposite of its parent's (or of the base
// policy, for the root).
Stance Resolve(Stance own, Stance parent) { return own != Stance::kNone ? own : Opposite(parent); }

// Precondition: s != kNone.
Effect ToEffect(Stance s) { return s == Stance::kPermit ? Effect::kPermit : Effect::kDeny; }

bool SameCoding(const Coding& a, const Coding& b) {
  return !a.code.empty() && a.code == b.code && a.system == b.system;
}

bool AnyShared(const std::vector<Coding>& a, const std::vector<Coding>& b) {
  for (const Coding& x : a) {
    for (const Coding& y : b) {
      if (SameCoding(x, y)) return true;
    }
  }
  return false;
}

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// "Type/id" of a reference: absolute URLs keep their last two segments and
// a version suffix is dropped. Anything without a slash ("#c1",
// "urn:uuid:...") is returned as it is.
std::string RelativeReference(std::string_view ref) {
  if (std::size_t history = ref.find("/_history/"); history != std::string_view::npos) ref = ref.substr(0, history);
  std::size_t last = ref.rfind('/');
  if (last == std::string_view::npos || last == 0) return std::string(ref);
  std::size_t previous = ref.rfind('/', last - 1);
  return std::string(previous == std::string_view::npos ? ref : ref.substr(previous + 1));
}

bool Overlaps(const DateRange& a, const DateRange& b) { return a.lo < b.hi && b.lo < a.hi; }

// Rank of a v3-Confidentiality code (U < L < M < N < R < V); -1 for others.
int ConfidentialityRank(const Coding& c) {
  static constexpr std::array<std::string_view, 6> kOrder = {"U", "L", "M", "N", "R", "V"};
  if (c.system != kConfidentialitySystem) return -1;
  for (std::size_t i = 0; i < kOrder.size(); ++i) {
    if (c.code == kOrder[i]) return static_cast<int>(i);
  }
  return -1;
}

// ---------------------------------------------------------------------------
// The checked form of a Consent.

struct Actor {
  std::optional<std::string> reference;  // "Type/id"
  std::optional<std::vector<Coding>> roles;
};

struct DataItem {
  bool authored_by = false;  // false: the resource itself (instance, related, dependents)
  std::string reference;     // "Type/id"
};

// One provision. A criterion in std::nullopt (or an empty vector for actors
// and data) is not stated and matches anything.
struct Rule {
  Stance type = Stance::kNone;
  DateRange period;  // unbounded when absent
  std::vector<Actor> actors;
  std::optional<std::vector<Coding>> actions;
  std::optional<std::vector<Coding>> security_labels;
  std::optional<std::vector<Coding>> purposes;
  std::optional<std::vector<Coding>> classes;
  std::optional<std::vector<Coding>> codes;
  std::optional<DateRange> data_period;
  std::vector<DataItem> data;
  std::vector<Rule> nested;
};

struct ParsedConsent {
  std::string id;
  std::string status;
  bool privacy = false;
  std::vector<std::string> patients;
  Stance base = Stance::kNone;  // from policyRule
  std::string base_code;        // the policyRule code that gave `base`
  std::optional<Rule> root;
  std::optional<DateRange> date_time;
  std::optional<DateRange> last_updated;
};

// Reads one Consent. Every accessor checks the JSON type and records the
// first problem in `malformed_`; reading goes on with empty values so that
// callers check once, at the end.
class ConsentParser {
 public:
  std::optional<ParsedConsent> Parse(const json::object& consent) {
    ParsedConsent out;
    if (String(consent, "resourceType").value_or("") != "Consent") return std::nullopt;
    std::optional<std::string_view> id = String(consent, "id");
    if (!id || id->empty()) return std::nullopt;
    out.id = std::string(*id);
    out.status = std::string(String(consent, "status").value_or(""));
    out.privacy = IsPrivacyConsent(consent);
    out.patients = PatientsOf(consent);
    if (const json::object* rule = Object(consent, "policyRule")) {
      for (const Coding& c : Codings(Array(*rule, "coding"))) {
        if (c.system != kActCodeSystem) continue;
        if (c.code == "OPTIN" || c.code == "OPTINR") out.base = Stance::kPermit;
        if (c.code == "OPTOUT" || c.code == "OPTOUTE") out.base = Stance::kDeny;
        if (out.base != Stance::kNone) {
          out.base_code = c.code;
          break;
        }
      }
    }
    if (const json::object* root = Object(consent, "provision")) out.root = ParseRule(*root, /*depth=*/0);
    out.date_time = OptionalDate(consent, "dateTime");
    if (const json::object* meta = Object(consent, "meta")) out.last_updated = OptionalDate(*meta, "lastUpdated");
    // scope and patient are checked leniently by IsPrivacyConsent and
    // PatientsOf (the server calls them on their own); wrong types there
    // make the Consent malformed all the same.
    if (const json::object* scope = Object(consent, "scope")) Codings(Array(*scope, "coding"));
    if (const json::object* patient = Object(consent, "patient")) String(*patient, "reference");
    if (malformed_) return std::nullopt;
    return out;
  }

 private:
  // ParseJson caps nesting at 64 levels; this cap keeps recursion bounded for
  // objects built in code as well.
  static constexpr int kMaxDepth = 32;

  Rule ParseRule(const json::object& p, int depth) {
    Rule r;
    if (depth > kMaxDepth) {
      malformed_ = true;
      return r;
    }
    if (std::optional<std::string_view> type = String(p, "type")) {
      if (*type == "permit") {
        r.type = Stance::kPermit;
      } else if (*type == "deny") {
        r.type = Stance::kDeny;
      } else {
        malformed_ = true;
      }
    }
    if (const json::object* period = Object(p, "period")) r.period = Period(*period);
    if (const json::array* actors = Array(p, "actor")) {
      for (const json::value& v : *actors) {
        const json::object* a = AsObject(v);
        if (a == nullptr) continue;
        Actor actor;
        if (const json::object* role = Object(*a, "role")) actor.roles = Codings(Array(*role, "coding"));
        if (const json::object* ref = Object(*a, "reference")) {
          // A reference by identifier or display only cannot be compared:
          // it stays empty and never matches.
          std::optional<std::string_view> s = String(*ref, "reference");
          actor.reference = s ? RelativeReference(*s) : std::string();
        }
        if (!actor.reference && !actor.roles) malformed_ = true;
        r.actors.push_back(std::move(actor));
      }
    }
    r.actions = ConceptListCodings(Array(p, "action"));
    r.security_labels = StatedCodings(Array(p, "securityLabel"));
    r.purposes = StatedCodings(Array(p, "purpose"));
    r.classes = StatedCodings(Array(p, "class"));
    r.codes = ConceptListCodings(Array(p, "code"));
    if (const json::object* period = Object(p, "dataPeriod")) r.data_period = Period(*period);
    if (const json::array* data = Array(p, "data")) {
      for (const json::value& v : *data) {
        const json::object* d = AsObject(v);
        if (d == nullptr) continue;
        std::optional<std::string_view> meaning = String(*d, "meaning");
        std::optional<std::string_view> ref;
        if (const json::object* reference = Object(*d, "reference")) ref = String(*reference, "reference");
        if (!meaning || !ref ||
            (*meaning != "instance" && *meaning != "related" && *meaning != "dependents" && *meaning != "authoredby")) {
          malformed_ = true;
          continue;
        }
        r.data.push_back(DataItem{.authored_by = *meaning == "authoredby", .reference = RelativeReference(*ref)});
      }
    }
    if (const json::array* nested = Array(p, "provision")) {
      for (const json::value& v : *nested) {
        if (const json::object* n = AsObject(v)) r.nested.push_back(ParseRule(*n, depth + 1));
      }
    }
    return r;
  }

  // start..end; either may be absent (unbounded on that side).
  DateRange Period(const json::object& period) {
    DateRange out;
    if (std::optional<DateRange> start = OptionalDate(period, "start")) out.lo = start->lo;
    if (std::optional<DateRange> end = OptionalDate(period, "end")) out.hi = end->hi;
    return out;
  }

  std::optional<DateRange> OptionalDate(const json::object& o, std::string_view key) {
    std::optional<std::string_view> text = String(o, key);
    if (!text) return std::nullopt;
    std::optional<DateRange> range = search::ParseDateRange(*text);
    if (!range) malformed_ = true;
    return range;
  }

  // Codings of an array of CodeableConcept, flattened; nullopt when absent.
  std::optional<std::vector<Coding>> ConceptListCodings(const json::array* concepts) {
    if (concepts == nullptr || concepts->empty()) return std::nullopt;
    std::vector<Coding> out;
    for (const json::value& v : *concepts) {
      const json::object* cc = AsObject(v);
      if (cc == nullptr) continue;
      std::vector<Coding> codings = Codings(Array(*cc, "coding"));
      out.insert(out.end(), codings.begin(), codings.end());
    }
    return out;
  }

  std::optional<std::vector<Coding>> StatedCodings(const json::array* codings) {
    if (codings == nullptr || codings->empty()) return std::nullopt;
    return Codings(codings);
  }

  std::vector<Coding> Codings(const json::array* codings) {
    std::vector<Coding> out;
    if (codings == nullptr) return out;
    for (const json::value& v : *codings) {
      const json::object* c = AsObject(v);
      if (c == nullptr) continue;
      out.push_back(Coding{.system = std::string(String(*c, "system").value_or("")),
                           .code = std::string(String(*c, "code").value_or(""))});
    }
    return out;
  }

  const json::object* AsObject(const json::value& v) {
    if (!v.is_object()) {
      malformed_ = true;
      return nullptr;
    }
    return &v.get_object();
  }

  const json::object* Object(const json::object& o, std::string_view key) {
    const json::value* v = o.if_contains(JsonView(key));
    return v == nullptr ? nullptr : AsObject(*v);
  }

  const json::array* Array(const json::object& o, std::string_view key) {
    const json::value* v = o.if_contains(JsonView(key));
    if (v == nullptr) return nullptr;
    if (!v->is_array()) {
      malformed_ = true;
      return nullptr;
    }
    return &v->get_array();
  }

  std::optional<std::string_view> String(const json::object& o, std::string_view key) {
    const json::value* v = o.if_contains(JsonView(key));
    if (v == nullptr) return std::nullopt;
    if (!IsText(*v)) {
      malformed_ = true;
      return std::nullopt;
    }
    return View(v->get_string());
  }

  bool malformed_ = false;
};

// ---------------------------------------------------------------------------
// What the criteria look at, read once per request. Lenient: a resource
// element of an unexpected shape is treated as absent.

const json::value* Member(const json::object& o, std::string_view key) { return o.if_contains(JsonView(key)); }

std::optional<std::string_view> TextMember(const json::object& o, std::string_view key) {
  const json::value* v = Member(o, key);
  if (v == nullptr || !IsText(*v)) return std::nullopt;
  return View(v->get_string());
}

// Calls `f` on each object in `v` if it is an array, or on `v` if it is one.
template <typename F>
void ForEachObject(const json::value* v, F&& f) {
  if (v == nullptr) return;
  if (v->is_object()) {
    f(v->get_object());
  } else if (v->is_array()) {
    for (const json::value& e : v->get_array()) {
      if (e.is_object()) f(e.get_object());
    }
  }
}

void AppendCoding(const json::object& c, std::vector<Coding>& out) {
  out.push_back(Coding{.system = std::string(TextMember(c, "system").value_or("")),
                       .code = std::string(TextMember(c, "code").value_or(""))});
}

void AppendConceptCodings(const json::value* concepts, std::vector<Coding>& out) {
  ForEachObject(concepts, [&](const json::object& cc) {
    ForEachObject(Member(cc, "coding"), [&](const json::object& c) { AppendCoding(c, out); });
  });
}

std::optional<DateRange> DateOf(const json::value* v) {
  if (v == nullptr) return std::nullopt;
  if (IsText(*v)) return search::ParseDateRange(View(v->get_string()));
  if (!v->is_object()) return std::nullopt;
  // A Period.
  std::optional<std::string_view> start = TextMember(v->get_object(), "start");
  std::optional<std::string_view> end = TextMember(v->get_object(), "end");
  std::optional<DateRange> lo = start ? search::ParseDateRange(*start) : std::nullopt;
  std::optional<DateRange> hi = end ? search::ParseDateRange(*end) : std::nullopt;
  if (!lo && !hi) return std::nullopt;
  DateRange out;
  if (lo) out.lo = lo->lo;
  if (hi) out.hi = hi->hi;
  return out;
}

// The resource's clinically relevant time; see the header for the order.
std::optional<DateRange> ClinicalTime(const json::object& r) {
  static constexpr std::array<std::string_view, 16> kElements = {"effectiveDateTime",
                                                                 "effectivePeriod",
                                                                 "effectiveInstant",
                                                                 "occurrenceDateTime",
                                                                 "occurrencePeriod",
                                                                 "performedDateTime",
                                                                 "performedPeriod",
                                                                 "onsetDateTime",
                                                                 "onsetPeriod",
                                                                 "issued",
                                                                 "period",
                                                                 "authoredOn",
                                                                 "recordedDate",
                                                                 "date",
                                                                 "recorded",
                                                                 "created"};
  for (std::string_view name : kElements) {
    if (std::optional<DateRange> range = DateOf(Member(r, name))) return range;
  }
  if (const json::value* meta = Member(r, "meta"); meta != nullptr && meta->is_object()) {
    return DateOf(Member(meta->get_object(), "lastUpdated"));
  }
  return std::nullopt;
}

// Canonical URL without its |version.
std::string_view Unversioned(std::string_view canonical) { return canonical.substr(0, canonical.find('|')); }

struct ResourceFacts {
  std::string type;
  std::string reference;  // "Type/id"; empty without an id
  std::vector<Coding> security;
  std::vector<Coding> codes;  // code, type, category
  std::vector<std::string> profiles;
  std::vector<std::string> content_types;
  std::vector<std::string> authors;  // "Type/id"
  std::optional<DateRange> time;
};

ResourceFacts ReadResource(const json::object& r) {
  ResourceFacts f;
  f.type = std::string(TextMember(r, "resourceType").value_or(""));
  if (std::optional<std::string_view> id = TextMember(r, "id"); id && !f.type.empty()) {
    f.reference = core::StrCat(f.type, "/", *id);
  }
  if (const json::value* meta = Member(r, "meta"); meta != nullptr && meta->is_object()) {
    ForEachObject(Member(meta->get_object(), "security"), [&](const json::object& c) { AppendCoding(c, f.security); });
    if (const json::value* profiles = Member(meta->get_object(), "profile");
        profiles != nullptr && profiles->is_array()) {
      for (const json::value& p : profiles->get_array()) {
        if (IsText(p)) f.profiles.emplace_back(Unversioned(View(p.get_string())));
      }
    }
  }
  for (std::string_view name : {"code", "type", "category"}) AppendConceptCodings(Member(r, name), f.codes);
  if (std::optional<std::string_view> ct = TextMember(r, "contentType")) f.content_types.emplace_back(*ct);
  ForEachObject(Member(r, "content"), [&](const json::object& content) {
    ForEachObject(Member(content, "attachment"), [&](const json::object& attachment) {
      if (std::optional<std::string_view> ct = TextMember(attachment, "contentType")) f.content_types.emplace_back(*ct);
    });
  });
  auto add_author = [&](const json::object& ref) {
    if (std::optional<std::string_view> s = TextMember(ref, "reference")) f.authors.push_back(RelativeReference(*s));
  };
  for (std::string_view name : {"author", "recorder", "asserter", "requester", "performer"}) {
    ForEachObject(Member(r, name), [&](const json::object& o) {
      add_author(o);
      // Procedure.performer and the like wrap the reference in .actor.
      ForEachObject(Member(o, "actor"), add_author);
    });
  }
  f.time = ClinicalTime(r);
  return f;
}

struct RequestFacts {
  int64_t now = 0;
  std::vector<std::string> actors;  // "Type/id"
  const std::vector<Coding>* roles = nullptr;
  std::vector<Coding> actions;
  const std::vector<Coding>* purposes = nullptr;
  std::optional<ResourceFacts> resource;
};

// ---------------------------------------------------------------------------
// Matching.

bool ActorMatches(const Actor& a, const RequestFacts& req) {
  if (a.reference && (a.reference->empty() || !Contains(req.actors, *a.reference))) return false;
  if (a.roles && !AnyShared(*a.roles, *req.roles)) return false;
  return true;
}

bool LabelMatches(const std::vector<Coding>& wanted, const std::vector<Coding>& present) {
  for (const Coding& w : wanted) {
    int ceiling = ConfidentialityRank(w);
    for (const Coding& p : present) {
      if (ceiling >= 0 ? (ConfidentialityRank(p) >= 0 && ConfidentialityRank(p) <= ceiling) : SameCoding(w, p)) {
        return true;
      }
    }
  }
  return false;
}

bool ClassMatches(const std::vector<Coding>& classes, const ResourceFacts& r) {
  for (const Coding& c : classes) {
    if (c.code.empty()) continue;
    if (c.system == kResourceTypesSystem) {
      if (c.code == r.type) return true;
    } else if (c.system == kMimeTypeSystem) {
      if (Contains(r.content_types, c.code)) return true;
    } else if (Contains(r.profiles, Unversioned(c.code))) {
      return true;
    }
  }
  return false;
}

bool DataMatches(const std::vector<DataItem>& data, const ResourceFacts& r) {
  for (const DataItem& d : data) {
    if (d.authored_by ? Contains(r.authors, d.reference) : (!r.reference.empty() && d.reference == r.reference)) {
      return true;
    }
  }
  return false;
}

bool Applies(const Rule& p, const RequestFacts& req) {
  if (req.now < p.period.lo || req.now >= p.period.hi) return false;
  if (!p.actors.empty() &&
      std::none_of(p.actors.begin(), p.actors.end(), [&](const Actor& a) { return ActorMatches(a, req); })) {
    return false;
  }
  if (p.actions && !AnyShared(*p.actions, req.actions)) return false;
  if (p.purposes && !AnyShared(*p.purposes, *req.purposes)) return false;
  const bool about_resource = p.security_labels || p.classes || p.codes || p.data_period || !p.data.empty();
  if (!about_resource) return true;
  if (!req.resource) return false;
  const ResourceFacts& r = *req.resource;
  if (p.security_labels && !LabelMatches(*p.security_labels, r.security)) return false;
  if (p.classes && !ClassMatches(*p.classes, r)) return false;
  if (p.codes && !AnyShared(*p.codes, r.codes)) return false;
  if (p.data_period && !(r.time && Overlaps(*p.data_period, *r.time))) return false;
  if (!p.data.empty() && !DataMatches(p.data, r)) return false;
  return true;
}

struct Candidate {
  int depth = 0;
  Effect effect = Effect::kDeny;
  std::string path;  // "1", "1.2", ...
};

// Deeper wins; at equal depth deny wins; otherwise the first found stays.
bool Better(const Candidate& a, const Candidate& b) {
  if (a.depth != b.depth) return a.depth > b.depth;
  return a.effect == Effect::kDeny && b.effect == Effect::kPermit;
}

// The deciding provision in the subtree of `p`, if `p` applies. `stance` is
// p's resolved effect.
std::optional<Candidate> Walk(const Rule& p, Stance stance, const std::string& path, int depth,
                              const RequestFacts& req) {
  if (!Applies(p, req)) return std::nullopt;
  std::optional<Candidate> best;
  if (stance != Stance::kNone) best = Candidate{.depth = depth, .effect = ToEffect(stance), .path = path};
  for (std::size_t i = 0; i < p.nested.size(); ++i) {
    const Rule& n = p.nested[i];
    std::optional<Candidate> c = Walk(n, Resolve(n.type, stance), core::StrCat(path, ".", i + 1), depth + 1, req);
    if (c && (!best || Better(*c, *best))) best = std::move(c);
  }
  return best;
}

std::string_view Verb(Effect e) { return e == Effect::kPermit ? "permitted" : "denied"; }

// What one applicable Consent says, if anything.
std::optional<Decision> Decide(const ParsedConsent& c, const RequestFacts& req) {
  if (!c.root) {
    if (c.base == Stance::kNone) return std::nullopt;
    Effect effect = ToEffect(c.base);
    return Decision{.effect = effect,
                    .consent_id = c.id,
                    .reason = core::StrCat(Verb(effect), " by Consent/", c.id, " policyRule ", c.base_code)};
  }
  // The root provision is an exception to the base policy.
  std::optional<Candidate> best = Walk(*c.root, Resolve(c.root->type, c.base), "1", 0, req);
  if (!best) return std::nullopt;
  return Decision{.effect = best->effect,
                  .consent_id = c.id,
                  .reason = core::StrCat(Verb(best->effect), " by Consent/", c.id, " provision ", best->path)};
}

// Recency for ordering Consents; see the header.
std::pair<int64_t, int64_t> Recency(const ParsedConsent& c) {
  int64_t updated = c.last_updated ? c.last_updated->lo : DateRange::kMin;
  return {c.date_time ? c.date_time->lo : updated, updated};
}

}  // namespace

bool IsPrivacyConsent(const json::object& consent) {
  const json::value* scope = Member(consent, "scope");
  if (scope == nullptr || !scope->is_object()) return false;
  const json::value* codings = Member(scope->get_object(), "coding");
  if (codings == nullptr || !codings->is_array()) return false;
  for (const json::value& v : codings->get_array()) {
    if (!v.is_object()) continue;
    if (TextMember(v.get_object(), "system") == kScopeSystem &&
        TextMember(v.get_object(), "code") == "patient-privacy") {
      return true;
    }
  }
  return false;
}

std::vector<std::string> PatientsOf(const json::object& consent) {
  const json::value* patient = Member(consent, "patient");
  if (patient == nullptr || !patient->is_object()) return {};
  std::optional<std::string_view> ref = TextMember(patient->get_object(), "reference");
  if (!ref) return {};
  std::string relative = RelativeReference(*ref);
  constexpr std::string_view kPrefix = "Patient/";
  if (relative.size() <= kPrefix.size() || relative.compare(0, kPrefix.size(), kPrefix) != 0) return {};
  return {relative.substr(kPrefix.size())};
}

Decision Evaluate(const std::vector<const json::object*>& consents, const AccessRequest& request,
                  DefaultPolicy policy) {
  RequestFacts req;
  req.now = core::ToUnixMicros(request.now);
  for (const std::string& a : request.actor_references) req.actors.push_back(RelativeReference(a));
  req.roles = &request.actor_roles;
  req.actions = request.actions;
  if (req.actions.empty()) req.actions.push_back(Coding{.system = std::string(kActionSystem), .code = "access"});
  req.purposes = &request.purposes;
  if (request.resource != nullptr) req.resource = ReadResource(*request.resource);

  std::optional<Decision> best;
  std::pair<int64_t, int64_t> best_recency = {DateRange::kMin, DateRange::kMin};
  for (const json::object* consent : consents) {
    if (consent == nullptr) continue;
    std::optional<ParsedConsent> c = ConsentParser().Parse(*consent);
    if (!c || c->status != "active" || !c->privacy || !Contains(c->patients, request.patient_id)) continue;
    std::optional<Decision> d = Decide(*c, req);
    if (!d) continue;
    std::pair<int64_t, int64_t> recency = Recency(*c);
    if (!best || recency > best_recency ||
        (recency == best_recency && d->effect == Effect::kDeny && best->effect == Effect::kPermit)) {
      best = std::move(d);
      best_recency = recency;
    }
  }
  if (best) return *std::move(best);
  if (policy == DefaultPolicy::kOptIn)
    return Decision{.effect = Effect::kDeny, .consent_id = "", .reason = "default opt-in"};
  return Decision{.effect = Effect::kPermit, .consent_id = "", .reason = "default opt-out"};
}

}  // namespace medgrid::consent
