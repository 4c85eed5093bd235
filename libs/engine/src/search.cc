// Search and the conditional interactions of FhirEngine.
#include <algorithm>

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/rest_path.h"
#include "medgrid/fhir/validator.h"
#include "internal.h"

namespace medgrid::engine {
namespace json = boost::json;

namespace {

constexpr std::string_view kSubsetted =
    R"({"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED","display":"subsetted"})";

absl::Status BadRequest(const std::string& message, std::string_view issue = "invalid") {
  return core::Error(absl::StatusCode::kInvalidArgument, message).Http(400).Issue(issue);
}

// Percent-encodes a query component, keeping what needs no escaping and
// reads well in links.
void AppendQueryComponent(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == ':' || c == ',' || c == '$' ||
        c == '*' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
}

// `url` with `params` as its query string.
std::string WithQuery(std::string url, const QueryParams& params) {
  char sep = '?';
  for (const auto& [k, v] : params) {
    url += sep;
    sep = '&';
    AppendQueryComponent(url, k);
    url += '=';
    AppendQueryComponent(url, v);
  }
  return url;
}

QueryParams Without(const QueryParams& params, std::string_view name) {
  QueryParams out;
  for (const auto& kv : params) {
    if (kv.first != name) out.push_back(kv);
  }
  return out;
}

void AppendLink(std::string& out, bool& first, std::string_view relation, const std::string& url) {
  if (!first) out += ',';
  first = false;
  core::StrAppend(out, R"({"relation":")", relation, R"(","url":")");
  core::AppendJsonEscaped(out, url);
  out += "\"}";
}

// Rewrites reference values that name a resource on this server by its
// absolute URL ("http://host/fhir/demo/Patient/1") to the relative form the
// index stores ("Patient/1").
void RelativizeReferences(search::Criterion& c, const std::string& base_url) {
  const std::string prefix = base_url + "/";
  if (c.param != nullptr && c.param->type == "reference" && c.modifier != search::Modifier::kIdentifier) {
    for (search::Value& v : c.values) {
      if (v.text.rfind(prefix, 0) == 0) {
        std::string rest = v.text.substr(prefix.size());
        std::size_t slash = rest.find('/');
        if (slash != std::string::npos && rest.find('/', slash + 1) == std::string::npos) {
          v.ref_type = rest.substr(0, slash);
          v.text = rest.substr(slash + 1);
        }
      }
    }
  }
  for (search::ChainTarget& t : c.targets) RelativizeReferences(*t.next, base_url);
  if (c.has_next) RelativizeReferences(*c.has_next, base_url);
}

}  // namespace

absl::StatusOr<search::SearchRequest> FhirEngine::ParseSearch(const std::string& tenant, const QueryParams& params,
                                                              const std::string& type,
                                                              bool lenient, const std::string& base_url) const {
  ASSIGN_OR_RETURN(search::SearchRequest req, search::ParseSearch(params, type, *ParamsFor(tenant), registry_, lenient));
  for (search::Criterion& c : req.criteria) RelativizeReferences(c, base_url);
  return req;
}

std::string FhirEngine::Subset(const std::string& body, const std::string& type,
                               const search::SearchRequest& request) const {
  if (request.summary == search::Summary::kFalse && request.elements.empty()) return body;
  absl::StatusOr<json::value> parsed = fhir::ParseJson(body);
  if (!parsed.ok() || !parsed->is_object()) return body;
  const json::object& in = parsed->get_object();
  const fhir::ElementNode* root = registry_.Root(type);
  auto keep = [&](std::string_view key) -> bool {
    if (key == "resourceType" || key == "id" || key == "meta") return true;
    // Primitive extensions ("_birthDate") follow their element.
    std::string_view name = key.size() > 1 && key[0] == '_' ? key.substr(1) : key;
    const fhir::ElementDef* def = nullptr;
    if (root != nullptr) {
      if (auto it = root->by_name.find(name); it != root->by_name.end()) {
        def = &root->elements[it->second];
      } else if (auto ch = root->choice_by_name.find(name); ch != root->choice_by_name.end()) {
        def = &root->elements[ch->second.first];
      }
    }
    switch (request.summary) {
      case search::Summary::kTrue: return def != nullptr && def->is_summary;
      case search::Summary::kText: return name == "text" || (def != nullptr && def->min > 0);
      case search::Summary::kData: return name != "text";
      case search::Summary::kFalse:
      case search::Summary::kCount: break;
    }
    for (const std::string& e : request.elements) {
      if (e == name) return true;
      if (def != nullptr && def->is_choice && def->name == e) return true;
    }
    return false;
  };
  json::object out;
  for (const auto& kv : in) {
    if (keep(kv.key())) out.emplace(kv.key(), kv.value());
  }
  // The SUBSETTED tag tells the client this is not the whole resource.
  json::value& meta = out["meta"];
  if (!meta.is_object()) meta = json::object();
  json::value& tags = meta.get_object()["tag"];
  if (!tags.is_array()) tags = json::array();
  tags.get_array().push_back(json::parse(kSubsetted));
  return fhir::SerializeJson(out);
}

absl::StatusOr<std::string> FhirEngine::Search(const std::string& tenant, const SearchInput& input) {
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  return SearchWith(tenant, input, [&](const search::SearchRequest& req, const std::optional<store::Compartment>& comp) {
    return shard->Search(tenant, req, comp);
  });
}

absl::StatusOr<std::string> FhirEngine::SearchWith(const std::string& tenant, const SearchInput& input,
                                                   const Searcher& searcher) {
  ASSIGN_OR_RETURN(SearchResult result, Gather(tenant, input, searcher));
  std::string path = input.base_url;
  if (!input.compartment.empty()) {
    core::StrAppend(path, "/", input.compartment, "/", input.compartment_id, "/",
                    input.all_types ? std::string("*") : input.type);
  } else if (!input.type.empty()) {
    core::StrAppend(path, "/", input.type);
  }
  return RenderSearchset(result, input.base_url, path, input.params);
}

absl::StatusOr<FhirEngine::SearchResult> FhirEngine::Gather(const std::string& tenant, const SearchInput& input,
                                                            const Searcher& searcher) {

  // The types searched, and the parameters common to each.
  std::vector<std::string> types;
  QueryParams params = input.params;
  const bool compartment = !input.compartment.empty();
  if (compartment) {
    RETURN_IF_ERROR(CheckType(input.compartment));
    if (!compartments_.IsCompartment(input.compartment)) {
      return BadRequest(core::StrCat(input.compartment, " is not a compartment type"), "not-supported");
    }
  }
  if (input.all_types || (input.type.empty() && !compartment)) {
    std::vector<std::string> named;
    for (const auto& [k, v] : params) {
      if (k != "_type") continue;
      for (std::string_view t : core::StrSplit(v, ',')) {
        if (!registry_.IsResourceType(t)) {
          return BadRequest(core::StrCat("Parameter '_type': unknown resource type '", t, "'"), "not-supported");
        }
        named.emplace_back(t);
      }
    }
    params = Without(params, "_type");
    for (const std::string& t : named.empty() ? registry_.ResourceTypes() : named) {
      if (compartment && compartments_.Params(input.compartment, t).empty()) continue;
      types.push_back(t);
    }
    std::sort(types.begin(), types.end());
    types.erase(std::unique(types.begin(), types.end()), types.end());
  } else {
    RETURN_IF_ERROR(CheckType(input.type));
    if (compartment && compartments_.Params(input.compartment, input.type).empty()) {
      return BadRequest(core::StrCat(input.type, " resources are not part of the ", input.compartment, " compartment"),
                        "not-supported");
    }
    types.push_back(input.type);
  }
  const bool multi = types.size() != 1 || input.type.empty();

  // One type: the store pages it. Several: types in name order, each paged
  // by the store; the cursor is "<type>~<that type's cursor>".
  std::string cursor;
  for (const auto& [k, v] : params) {
    if (k == "_cursor") cursor = v;
  }
  std::size_t start = 0;
  std::string type_cursor = cursor;
  if (multi && !cursor.empty()) {
    std::size_t tilde = cursor.find('~');
    auto it = tilde == std::string::npos ? types.end() : std::find(types.begin(), types.end(), cursor.substr(0, tilde));
    if (it == types.end()) return BadRequest("Parameter '_cursor': is malformed or expired");
    start = static_cast<std::size_t>(it - types.begin());
    type_cursor = cursor.substr(tilde + 1);
  }
  const QueryParams type_params = multi ? Without(params, "_cursor") : params;

  std::vector<store::ResourceVersion> matches;
  std::vector<store::ResourceVersion> included;
  std::vector<std::string> warnings;
  std::optional<std::string> next;
  std::optional<std::string> previous;
  int64_t total = 0;
  bool total_known = true;
  // What the first type's request says about the whole result.
  struct Shape {
    int count = 20;
    std::optional<search::Total> total;
    search::SearchRequest subset;  // only summary and elements set
  };
  std::optional<Shape> shape;
  // The accurate count of the types after `i`, for a total across pages.
  auto count_after = [&](std::size_t i) -> absl::StatusOr<int64_t> {
    int64_t n = 0;
    for (std::size_t j = i + 1; j < types.size(); ++j) {
      ASSIGN_OR_RETURN(search::SearchRequest req, ParseSearch(tenant, type_params, types[j], input.lenient, input.base_url));
      req.count = 0;
      req.cursor.clear();
      req.includes.clear();
      req.total = search::Total::kAccurate;
      std::optional<store::Compartment> comp;
      if (compartment) {
        comp = store::Compartment{input.compartment, input.compartment_id,
                                  compartments_.Params(input.compartment, types[j])};
      }
      ASSIGN_OR_RETURN(store::SearchPage counted, searcher(req, comp));
      n += counted.total.value_or(0);
    }
    return n;
  };
  for (std::size_t i = start; i < types.size(); ++i) {
    ASSIGN_OR_RETURN(search::SearchRequest req, ParseSearch(tenant, type_params, types[i], input.lenient, input.base_url));
    if (multi) req.cursor = i == start ? type_cursor : "";
    if (!shape) {
      shape.emplace();
      shape->count = req.count;
      shape->total = req.total;
      shape->subset.summary = req.summary;
      shape->subset.elements = req.elements;
    }
    const bool accurate = shape->total && *shape->total == search::Total::kAccurate;
    const int remaining = shape->count - static_cast<int>(matches.size());
    if (remaining <= 0 && shape->count > 0) {
      // The page is full; the rest starts at this type.
      next = core::StrCat(types[i], "~");
      if (accurate && total_known) {
        ASSIGN_OR_RETURN(int64_t rest, count_after(i - 1));
        total += rest;
      } else {
        total_known = false;
      }
      break;
    }
    req.count = std::max(remaining, 0);
    std::optional<store::Compartment> comp;
    if (compartment) {
      comp = store::Compartment{input.compartment, input.compartment_id,
                                compartments_.Params(input.compartment, types[i])};
    }
    ASSIGN_OR_RETURN(store::SearchPage page, searcher(req, comp));
    if (i == start) {
      for (std::string& w : req.warnings) warnings.push_back(std::move(w));
      if (page.prev_cursor && !multi) previous = *page.prev_cursor;
    }
    if (page.include_warning) warnings.push_back(*page.include_warning);
    // Across types a total is only known from the first page on.
    if (total_known && page.total && (!multi || start == 0)) {
      total += *page.total;
    } else {
      total_known = false;
    }
    for (auto& m : page.matches) matches.push_back(std::move(m));
    for (auto& m : page.included) included.push_back(std::move(m));
    if (page.next_cursor) {
      next = multi ? core::StrCat(types[i], "~", *page.next_cursor) : *page.next_cursor;
      if (accurate && total_known) {
        ASSIGN_OR_RETURN(int64_t rest, count_after(i));
        total += rest;
      } else if (multi) {
        total_known = false;
      }
      break;
    }
  }
  if (!shape) shape.emplace();  // a compartment without types of its own
  SearchResult result;
  result.matches = std::move(matches);
  result.included = std::move(included);
  result.warnings = std::move(warnings);
  result.next = std::move(next);
  result.previous = std::move(previous);
  if (total_known) result.total = total;
  result.subset = std::move(shape->subset);
  return result;
}

std::string FhirEngine::RenderSearchset(const SearchResult& result, const std::string& base_url,
                                        const std::string& path, const QueryParams& params) const {
  const QueryParams link_params = Without(params, "_cursor");
  std::string out = R"({"resourceType":"Bundle","meta":{"lastUpdated":")";
  out += core::FormatInstant(clock_.Now());
  out += R"("},"type":"searchset")";
  if (result.total) core::StrAppend(out, R"(,"total":)", *result.total);
  out += R"(,"link":[)";
  bool first_link = true;
  AppendLink(out, first_link, "self", WithQuery(path, params));
  AppendLink(out, first_link, "first", WithQuery(path, link_params));
  if (result.previous) {
    QueryParams p = link_params;
    p.emplace_back("_cursor", *result.previous);
    AppendLink(out, first_link, "previous", WithQuery(path, p));
  }
  if (result.next) {
    QueryParams p = link_params;
    p.emplace_back("_cursor", *result.next);
    AppendLink(out, first_link, "next", WithQuery(path, p));
  }
  out += R"(],"entry":[)";
  bool first_entry = true;
  auto entry = [&](const store::ResourceVersion& v, std::string_view mode) {
    if (!first_entry) out += ',';
    first_entry = false;
    out += R"({"fullUrl":")";
    core::AppendJsonEscaped(out, core::StrCat(base_url, "/", v.type, "/", v.id));
    core::StrAppend(out, R"(","resource":)", Subset(v.body, v.type, result.subset), R"(,"search":{"mode":")", mode,
                    "\"}}");
  };
  for (const auto& m : result.matches) entry(m, "match");
  for (const auto& m : result.included) entry(m, "include");
  const std::vector<std::string>& warnings = result.warnings;
  if (!warnings.empty()) {
    if (!first_entry) out += ',';
    out += R"({"resource":{"resourceType":"OperationOutcome","issue":[)";
    for (std::size_t i = 0; i < warnings.size(); ++i) {
      if (i > 0) out += ',';
      out += R"({"severity":"warning","code":"not-supported","diagnostics":")";
      core::AppendJsonEscaped(out, warnings[i]);
      out += "\"}";
    }
    out += R"(]},"search":{"mode":"outcome"}})";
  }
  out += "]}";
  return out;
}

absl::StatusOr<std::string> FhirEngine::ExplainSearch(const std::string& tenant, const std::string& type,
                                                      const QueryParams& params) {
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(search::SearchRequest req, ParseSearch(tenant, params, type, false, ""));
  return shard->ExplainSearch(tenant, req, std::nullopt);
}

absl::StatusOr<search::SearchRequest> FhirEngine::ParseCriteria(const std::string& tenant, const QueryParams& criteria,
                                                                const std::string& type) const {
  for (const auto& [k, v] : criteria) {
    if (!k.empty() && k[0] == '_' && k != "_id" && k != "_lastUpdated" && k != "_tag" && k != "_profile" &&
        k != "_security" && k != "_source" && k.rfind("_has:", 0) != 0 && k != "_text" && k != "_content") {
      return BadRequest(core::StrCat("Parameter '", k, "': is not allowed in the criteria of a conditional interaction"),
                        "not-supported");
    }
  }
  ASSIGN_OR_RETURN(search::SearchRequest req, search::ParseSearch(criteria, type, *ParamsFor(tenant), registry_, false));
  if (req.criteria.empty()) {
    return BadRequest("A conditional interaction needs search criteria");
  }
  req.count = 2;  // enough to tell none, one and several apart
  req.total.reset();
  return req;
}

absl::Status MultipleMatches(const std::string& type) {
  return core::Error(absl::StatusCode::kFailedPrecondition,
                     core::StrCat("The criteria match more than one ", type, "; be more specific"))
      .Http(412)
      .Issue("multiple-matches");
}

std::string LockKey(const std::string& type, const QueryParams& criteria) {
  QueryParams sorted = criteria;
  std::sort(sorted.begin(), sorted.end());
  return WithQuery(type, sorted);
}

absl::StatusOr<ResourceResult> FhirEngine::ConditionalCreate(const std::string& tenant, const std::string& type,
                                                             const std::string& body, const QueryParams& criteria) {
  const ParamsPin pin(tenant, ParamsFor(tenant));  // before any transaction
  ASSIGN_OR_RETURN(PreparedCreate c, PrepareCreate(tenant, type, body));
  ASSIGN_OR_RETURN(search::SearchRequest match, ParseCriteria(tenant, criteria, type));
  ASSIGN_OR_RETURN(
      ResourceResult result, Write(*c.shard, tenant, [&](WriteTarget& target) -> absl::StatusOr<ResourceResult> {
        std::optional<store::ResourceVersion> existing;
        ASSIGN_OR_RETURN(
            std::optional<store::ResourceVersion> written,
            target.Conditional(
                tenant, match, LockKey(type, criteria),
                [&](const std::vector<store::ResourceVersion>& matches)
                    -> absl::StatusOr<std::optional<store::ConditionalWrite>> {
                  if (matches.size() > 1) return MultipleMatches(type);
                  if (matches.size() == 1) {
                    existing = matches[0];
                    return std::optional<store::ConditionalWrite>();
                  }
                  return std::optional<store::ConditionalWrite>(store::ConditionalWrite{c.key, "POST", c.body});
                }));
        if (existing) return ToResult(std::move(*existing));
        ResourceResult r = ToResult(std::move(*written));
        r.created = true;
        return r;
      }));
  if (result.created && type == "SearchParameter") InvalidateParams(tenant);
  return result;
}

absl::StatusOr<ResourceResult> FhirEngine::ConditionalUpdate(const std::string& tenant, const std::string& type,
                                                             const QueryParams& criteria, const std::string& body) {
  const ParamsPin pin(tenant, ParamsFor(tenant));  // before any transaction
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(json::value resource, ParseResource(type, body));
  std::string body_id;
  if (const json::value* id = resource.get_object().if_contains("id")) {
    if (!id->is_string() || !fhir::IsValidId(std::string_view(id->get_string()))) {
      return core::Error(absl::StatusCode::kInvalidArgument, "The resource id is malformed").Http(400).Issue("invalid");
    }
    body_id = std::string(id->get_string());
  }
  ASSIGN_OR_RETURN(search::SearchRequest match, ParseCriteria(tenant, criteria, type));
  auto resource_ptr = std::make_shared<json::value>(std::move(resource));
  ASSIGN_OR_RETURN(
      ResourceResult result, Write(*shard, tenant, [&](WriteTarget& target) -> absl::StatusOr<ResourceResult> {
        bool created = false;
        ASSIGN_OR_RETURN(std::optional<store::ResourceVersion> written,
                         target.Conditional(
                             tenant, match, LockKey(type, criteria),
                             [&](const std::vector<store::ResourceVersion>& matches)
                                 -> absl::StatusOr<std::optional<store::ConditionalWrite>> {
                               if (matches.size() > 1) return MultipleMatches(type);
                               std::string id;
                               if (matches.size() == 1) {
                                 id = matches[0].id;
                                 if (!body_id.empty() && body_id != id) {
                                   return core::Error(absl::StatusCode::kInvalidArgument,
                                                      core::StrCat("The resource id '", body_id,
                                                                   "' is not the id of the match '", id, "'"))
                                       .Http(400)
                                       .Issue("invalid");
                                 }
                               } else {
                                 id = body_id.empty() ? core::TimeOrderedId(clock_.Now()) : body_id;
                                 created = true;
                               }
                               resource_ptr->get_object()["id"] = id;
                               RETURN_IF_ERROR(ValidateResource(tenant, *resource_ptr, 400));
                               store::BodyFn stored = [this, resource_ptr, tenant, type, id](
                                                          const std::optional<store::ResourceVersion>&, int64_t version,
                                                          core::TimePoint now) -> absl::StatusOr<store::StoredBody> {
                                 return Stored(tenant, *resource_ptr, type, id, version, now);
                               };
                               return std::optional<store::ConditionalWrite>(
                                   store::ConditionalWrite{{tenant, type, id}, "PUT", std::move(stored)});
                             }));
        ResourceResult r = ToResult(std::move(*written));
        r.created = created || r.version == 1;
        return r;
      }));
  if (type == "SearchParameter") InvalidateParams(tenant);
  return result;
}

absl::StatusOr<std::optional<ResourceResult>> FhirEngine::ConditionalDelete(const std::string& tenant,
                                                                            const std::string& type,
                                                                            const QueryParams& criteria) {
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(search::SearchRequest match, ParseCriteria(tenant, criteria, type));
  ASSIGN_OR_RETURN(std::optional<store::ResourceVersion> written,
                   shard->Conditional(tenant, match, LockKey(type, criteria),
                                      [&](const std::vector<store::ResourceVersion>& matches)
                                          -> absl::StatusOr<std::optional<store::ConditionalWrite>> {
                                        if (matches.size() > 1) return MultipleMatches(type);
                                        if (matches.empty()) return std::optional<store::ConditionalWrite>();
                                        return std::optional<store::ConditionalWrite>(
                                            store::ConditionalWrite{{tenant, type, matches[0].id}, "DELETE", nullptr});
                                      }));
  if (!written) return std::optional<ResourceResult>();
  if (type == "SearchParameter") InvalidateParams(tenant);
  return std::optional<ResourceResult>(ToResult(std::move(*written)));
}

}  // namespace medgrid::engine
