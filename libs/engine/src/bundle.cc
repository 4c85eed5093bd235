// Batch and transaction Bundles (http.html#transaction).
//
// Both run entries through one executor: a transaction runs all of its
// entries in one database transaction; a batch runs each entry in one of
// its own, so the entries succeed or fail independently. Within a
// transaction the entries are processed in the order the specification
// sets: DELETE, then POST, then PUT and PATCH, then GET and HEAD. Every new
// version of a step is written by one set-based statement
// (store::TransactionScope::Write), which is what makes a large transaction
// fast to ingest.
#include <algorithm>
#include <array>
#include <map>
#include <set>

#include "absl/strings/match.h"

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/fhir/http_errors.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/json_patch.h"
#include "medgrid/fhir/operation_outcome.h"
#include "medgrid/fhir/rest_path.h"
#include "medgrid/fhir/validator.h"
#include "medgrid/search/date_range.h"
#include "internal.h"

namespace medgrid::engine {
namespace json = boost::json;

// One entry of the posted Bundle, as parsed before anything runs.
struct FhirEngine::BundleEntry {
  std::size_t index = 0;
  std::string full_url;
  std::string method;  // GET, HEAD, POST, PUT, PATCH or DELETE
  std::string url;     // as posted
  fhir::RestPath path;
  QueryParams query;
  json::value resource;  // POST and PUT: the resource; PATCH: the patch operations
  std::string if_none_exist;
  std::optional<int64_t> if_match;
  std::string if_none_match;
  std::optional<core::TimePoint> if_modified_since;  // the end of the instant given
  // Set while a transaction runs: the resource written or matched.
  store::ResourceKey key;
  bool conditional_match = false;  // POST with ifNoneExist that matched, or conditional DELETE of nothing
  std::optional<store::ResourceVersion> matched;
};

// What one entry's response says (Bundle.entry.response, and the resource).
struct FhirEngine::EntryResult {
  int status = 200;
  std::string location;  // Type/id/_history/v
  std::optional<int64_t> version;
  std::optional<core::TimePoint> last_modified;
  std::string full_url;
  std::string resource;  // JSON text: a resource, a Bundle or an OperationOutcome
  std::string outcome;   // OperationOutcome JSON for response.outcome
};

namespace {

absl::Status EntryError(std::size_t index, int http, std::string_view issue, std::string_view message) {
  return core::Error(http == 413 ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kInvalidArgument,
                     core::StrCat("Bundle.entry[", index, "]: ", message))
      .Http(http)
      .Issue(issue)
      .Path(core::StrCat("Bundle.entry[", index, "]"));
}

// `status` with its message prefixed by the entry and its path set to it,
// keeping its HTTP status and issue code.
// A path inside the resource (Observation.code) becomes one inside the
// entry (Bundle.entry[2].resource.code). Errors already about an entry
// (EntryError) pass as they are.
absl::Status AtEntry(const absl::Status& status, std::size_t index, std::string_view method, std::string_view url) {
  if (absl::StartsWith(status.message(), "Bundle.entry[")) return status;
  fhir::HttpError http = fhir::ToHttpError(status);
  core::Error e(status.code(), core::StrCat("Bundle.entry[", index, "] (", method, " ", url, "): ", std::string(status.message())));
  e.Http(http.status).Issue(core::IssueCodeOf(status).value_or(http.status == 500 ? "exception" : "processing"));
  std::string path = core::StrCat("Bundle.entry[", index, "]");
  if (std::optional<std::string> inner = core::PathOf(status)) {
    const std::size_t dot = inner->find('.');
    core::StrAppend(path, ".resource", dot == std::string::npos ? std::string() : inner->substr(dot));
  }
  e.Path(path);
  return e;
}

absl::Status Invalid(const std::string& message, int http, std::string_view issue, std::string_view path = "") {
  core::Error e(absl::StatusCode::kInvalidArgument, message);
  e.Http(http).Issue(issue);
  if (!path.empty()) e.Path(path);
  return e;
}

absl::Status NotKnown(const std::string& type, const std::string& id) {
  return core::Error(absl::StatusCode::kNotFound, core::StrCat("Resource ", type, "/", id, " is not known"))
      .Http(404)
      .Issue("not-found");
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status >= 500 ? "Internal Server Error" : "";
  }
}

std::optional<std::string> OptString(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return std::string(v->get_string());
}

// The processing step of a method: DELETE 0, POST 1, PUT/PATCH 2, GET 3.
int Step(const std::string& method) {
  if (method == "DELETE") return 0;
  if (method == "POST") return 1;
  if (method == "PUT" || method == "PATCH") return 2;
  return 3;
}

// Rewrites references in `v`: those naming a fullUrl of the Bundle become
// the server's Type/id, conditional ones (Type?criteria) the one resource
// they match (`resolve`). The narrative's links to rewritten fullUrls follow.
absl::Status RewriteReferences(json::value& v, const std::map<std::string, std::string, std::less<>>& ids,
                               const std::function<absl::StatusOr<std::string>(const std::string&)>& resolve) {
  if (v.is_array()) {
    for (json::value& e : v.get_array()) RETURN_IF_ERROR(RewriteReferences(e, ids, resolve));
    return absl::OkStatus();
  }
  if (!v.is_object()) return absl::OkStatus();
  for (auto& kv : v.get_object()) {
    json::value& value = kv.value();
    if (kv.key() == "reference" && value.is_string()) {
      std::string_view ref = value.get_string();
      if (auto it = ids.find(ref); it != ids.end()) {
        value = it->second;
      } else if (const std::size_t q = ref.find('?');
                 q != std::string_view::npos && ref.substr(0, q).find_first_of(":/") == std::string_view::npos) {
        ASSIGN_OR_RETURN(std::string target, resolve(std::string(ref)));
        value = target;
      }
      continue;
    }
    if (kv.key() == "div" && value.is_string()) {
      std::string div(value.get_string());
      bool changed = false;
      for (const auto& [from, to] : ids) {
        const bool absolute = from.rfind("urn:", 0) == 0 || from.find("://") != std::string::npos;
        if (!absolute || div.find(from) == std::string::npos) continue;
        div = core::StrReplaceAll(div, from, to);
        changed = true;
      }
      if (changed) value = div;
      continue;
    }
    if (value.is_object() || value.is_array()) RETURN_IF_ERROR(RewriteReferences(value, ids, resolve));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> FhirEngine::ProcessBundle(const std::string& tenant, const BundleInput& input) {
  const std::optional<store::IdempotencyKey> idempotency = TakeIdempotencyKey();
  if (input.body.size() > options_.max_bundle_bytes) {
    return core::Error(absl::StatusCode::kResourceExhausted,
                       core::StrCat("The Bundle is ", input.body.size(), " bytes; this server takes at most ",
                                    options_.max_bundle_bytes, " bytes in one batch or transaction. Split it."))
        .Http(413)
        .Issue("too-costly");
  }
  ASSIGN_OR_RETURN(json::value doc, fhir::ParseJson(input.body));
  json::object* bundle = doc.if_object();
  if (bundle == nullptr || OptString(*bundle, "resourceType") != "Bundle") {
    return core::Error(absl::StatusCode::kInvalidArgument, "The body posted to the base must be a Bundle")
        .Http(400)
        .Issue("invalid")
        .Path("Bundle");
  }
  const std::optional<std::string> type = OptString(*bundle, "type");
  if (type != "batch" && type != "transaction") {
    return core::Error(absl::StatusCode::kInvalidArgument,
                       core::StrCat("Bundle.type '", type.value_or(""),
                                    "' cannot be processed at the base; post batch or transaction Bundles here, "
                                    "and store other Bundles at /Bundle"))
        .Http(400)
        .Issue("invalid")
        .Path("Bundle.type");
  }
  const bool transaction = *type == "transaction";
  RETURN_IF_ERROR(store_.ForTenant(tenant).status());  // an unknown tenant is 404 before anything else

  json::array empty;
  json::array* raw_entries = &empty;
  if (json::value* e = bundle->if_contains("entry")) {
    if (!e->is_array()) return Invalid("Bundle.entry must be an array", 400, "structure", "Bundle.entry");
    raw_entries = &e->get_array();
  }
  if (raw_entries->size() > options_.max_bundle_entries) {
    return core::Error(absl::StatusCode::kResourceExhausted,
                       core::StrCat("The Bundle has ", raw_entries->size(), " entries; this server takes at most ",
                                    options_.max_bundle_entries, " in one batch or transaction. Split it."))
        .Http(413)
        .Issue("too-costly");
  }

  // Parse every entry. In a transaction a malformed entry fails the whole;
  // in a batch it fails alone.
  std::vector<BundleEntry> entries(raw_entries->size());
  std::vector<EntryResult> results(raw_entries->size());
  std::vector<std::optional<absl::Status>> parse_errors(raw_entries->size());
  for (std::size_t i = 0; i < raw_entries->size(); ++i) {
    BundleEntry& e = entries[i];
    e.index = i;
    absl::Status st = [&]() -> absl::Status {
      json::object* o = (*raw_entries)[i].if_object();
      if (o == nullptr) return EntryError(i, 400, "structure", "an entry must be a JSON object");
      e.full_url = OptString(*o, "fullUrl").value_or("");
      json::value* req = o->if_contains("request");
      if (req == nullptr || !req->is_object()) {
        return EntryError(i, 400, "required", "request is missing (batch and transaction entries need one)");
      }
      const json::object& r = req->get_object();
      e.method = OptString(r, "method").value_or("");
      e.url = OptString(r, "url").value_or("");
      static const std::array<std::string_view, 6> kMethods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
      if (std::find(kMethods.begin(), kMethods.end(), e.method) == kMethods.end()) {
        return EntryError(i, 400, "value", core::StrCat("request.method '", e.method, "' is not GET, HEAD, POST, PUT, PATCH or DELETE"));
      }
      if (e.url.empty()) return EntryError(i, 400, "required", "request.url is missing");
      std::string url = e.url;
      const std::string base_prefix = input.base_url + "/";
      if (!input.base_url.empty() && url.rfind(base_prefix, 0) == 0) url.erase(0, base_prefix.size());
      if (url.substr(0, url.find('?')).find("://") != std::string::npos) {
        return EntryError(i, 400, "value", "request.url must be relative to this server's base");
      }
      if (!url.empty() && url[0] == '/') url.erase(0, 1);
      std::string query;
      if (std::size_t q = url.find('?'); q != std::string::npos) {
        query = url.substr(q + 1);
        url.erase(q);
      }
      auto decoded = fhir::DecodeQuery(query);
      if (!decoded) return EntryError(i, 400, "value", "request.url has a malformed percent escape");
      e.query = std::move(*decoded);
      absl::StatusOr<fhir::RestPath> path =
          fhir::ParseRestPath(url.empty() ? core::StrCat("/fhir/", tenant) : core::StrCat("/fhir/", tenant, "/", url));
      if (!path.ok()) return AtEntry(path.status(), i, e.method, e.url);
      e.path = std::move(*path);
      e.if_none_exist = OptString(r, "ifNoneExist").value_or("");
      if (auto im = OptString(r, "ifMatch")) {
        auto version = fhir::ParseETagVersion(*im);
        if (!version) return EntryError(i, 400, "value", "request.ifMatch must be an ETag such as W/\"1\"");
        e.if_match = *version;
      }
      e.if_none_match = OptString(r, "ifNoneMatch").value_or("");
      if (auto ims = OptString(r, "ifModifiedSince")) {
        auto range = search::ParseDateRange(*ims);
        if (!range) return EntryError(i, 400, "value", "request.ifModifiedSince must be a FHIR instant");
        // Modified since the instant: later than the whole of its precision.
        e.if_modified_since = core::FromUnixMicros(range->hi);
      }

      using K = fhir::RestPath::Kind;
      const K kind = e.path.kind;
      const bool has_query = !e.query.empty();
      if (e.method == "POST") {
        if (kind != K::kType) return EntryError(i, 400, "not-supported", "POST entries create: request.url must be a resource type");
      } else if (e.method == "PUT" || e.method == "PATCH" || e.method == "DELETE") {
        if (!(kind == K::kInstance && !has_query) && !(kind == K::kType && has_query)) {
          return EntryError(i, 400, "not-supported",
                            core::StrCat(e.method, " entries need request.url Type/id, or Type?criteria for a conditional ",
                                         e.method == "PUT" ? "update" : e.method == "PATCH" ? "patch" : "delete"));
        }
      } else if (kind == K::kSystemOperation || kind == K::kTypeOperation) {
        return EntryError(i, 400, "not-supported", "operations are not supported inside a Bundle");
      }
      if (e.method != "GET" && e.method != "HEAD" && e.method != "DELETE") {
        RETURN_IF_ERROR(CheckType(e.path.type));
        json::value* res = o->if_contains("resource");
        if (res == nullptr || !res->is_object()) {
          return EntryError(i, 400, "required", core::StrCat(e.method, " entries need a resource"));
        }
        if (e.method == "PATCH") {
          // R4 carries a JSON Patch in a Binary (http.html#patch).
          const json::object& bin = res->get_object();
          if (OptString(bin, "resourceType") != "Binary" ||
              OptString(bin, "contentType") != "application/json-patch+json") {
            return EntryError(i, 400, "not-supported",
                              "PATCH entries take a Binary with contentType application/json-patch+json "
                              "(FHIRPath Patch in Parameters is not supported)");
          }
          std::optional<std::string> data = OptString(bin, "data");
          std::optional<std::string> patch = data ? core::Base64Decode(*data) : std::nullopt;
          if (!patch) return EntryError(i, 400, "invalid", "the Binary's data is missing or not base64");
          absl::StatusOr<json::value> ops = fhir::ParseJson(*patch);
          if (!ops.ok() || !ops->is_array()) {
            return EntryError(i, 400, "structure", "the Binary's data must be a JSON Patch document (a JSON array)");
          }
          e.resource = std::move(*ops);
        } else {
          const std::optional<std::string> rt = OptString(res->get_object(), "resourceType");
          if (rt != e.path.type) {
            return EntryError(i, 400, "invalid",
                              core::StrCat("the resource's type '", rt.value_or(""), "' does not match request.url"));
          }
          e.resource = std::move(*res);
        }
      } else {
        if (!e.path.type.empty()) RETURN_IF_ERROR(CheckType(e.path.type));
      }
      return absl::OkStatus();
    }();
    if (!st.ok()) {
      st = AtEntry(st, i, e.method, e.url);
      if (transaction) return st;
      parse_errors[i] = st;
    }
  }

  std::vector<std::size_t> all(entries.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::vector<std::size_t> order;  // a batch's entries that parsed, in the order they run
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (!parse_errors[i]) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return Step(entries[a].method) < Step(entries[b].method); });
  // A failed batch entry's response.
  auto fill_errors = [&](const std::vector<std::optional<absl::Status>>& errors) {
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (!errors[i]) continue;
      fhir::HttpError http = fhir::ToHttpError(*errors[i]);
      results[i] = EntryResult{};
      results[i].status = http.status;
      results[i].outcome = std::move(http.outcome);
    }
  };
  if (idempotency) {
    // With an Idempotency-Key the whole Bundle runs in the one transaction
    // that records its response Bundle, a batch included: its entries still
    // succeed or fail alone (a failed entry has written nothing), but a
    // database error fails the whole batch, which then wrote nothing and
    // may be sent again with the same key.
    ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
    std::string response;
    ASSIGN_OR_RETURN(
        store::IdempotentResult r,
        shard->RunIdempotent(tenant, *idempotency,
                             [&](store::TransactionScope& scope) -> absl::StatusOr<store::IdempotentResponse> {
                               // A retried attempt starts over.
                               results.assign(entries.size(), EntryResult{});
                               for (BundleEntry& e : entries) {
                                 e.key = {};
                                 e.conditional_match = false;
                                 e.matched.reset();
                               }
                               if (transaction) {
                                 RETURN_IF_ERROR(ExecuteEntries(scope, tenant, input, entries, all, results));
                               } else {
                                 std::vector<std::optional<absl::Status>> errors = parse_errors;
                                 for (std::size_t i : order) {
                                   absl::Status st = ExecuteEntries(scope, tenant, input, entries, {i}, results);
                                   if (!st.ok()) errors[i] = st;
                                 }
                                 fill_errors(errors);
                               }
                               store::IdempotentResponse recorded;
                               recorded.status = 200;
                               recorded.body = RenderBundleResponse(transaction, input, entries, results);
                               response = *recorded.body;
                               return recorded;
                             }));
    switch (r.outcome) {
      case store::IdempotentResult::Outcome::kExecuted: {
        MarkIdempotency(core::IdempotencyOutcome::kRecorded);
        for (const BundleEntry& e : entries) {
          if (e.path.type == "SearchParameter" && e.method != "GET" && e.method != "HEAD") {
            InvalidateParams(tenant);
            break;
          }
        }
        return response;
      }
      case store::IdempotentResult::Outcome::kReplayed:
        if (!r.response.body) return IdempotencyRefusal(store::IdempotentResult::Outcome::kMismatch);
        MarkIdempotency(core::IdempotencyOutcome::kReplayed);
        return *std::move(r.response.body);
      case store::IdempotentResult::Outcome::kMismatch:
      case store::IdempotentResult::Outcome::kInFlight:
        return IdempotencyRefusal(r.outcome);
    }
  }

  if (transaction) {
    RETURN_IF_ERROR(RunEntries(tenant, input, entries, all, results));
  } else {
    for (std::size_t i : order) {
      absl::Status st = RunEntries(tenant, input, entries, {i}, results);
      if (!st.ok()) parse_errors[i] = st;
    }
    fill_errors(parse_errors);
  }
  return RenderBundleResponse(transaction, input, entries, results);
}

std::string FhirEngine::RenderBundleResponse(bool transaction, const BundleInput& input,
                                             const std::vector<BundleEntry>& entries,
                                             const std::vector<EntryResult>& results) const {
  std::string out = R"({"resourceType":"Bundle","id":")";
  out += core::TimeOrderedId(clock_.Now());
  core::StrAppend(out, R"(","type":")", transaction ? "transaction-response" : "batch-response", R"(","link":[{"relation":"self","url":")");
  core::AppendJsonEscaped(out, input.base_url);
  out += R"("}],"entry":[)";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const EntryResult& r = results[i];
    if (i > 0) out += ',';
    out += '{';
    bool representation = input.prefer_return != "minimal" && input.prefer_return != "operationoutcome";
    if (!r.full_url.empty()) {
      out += R"("fullUrl":")";
      core::AppendJsonEscaped(out, r.full_url);
      out += "\",";
    }
    if (!r.resource.empty() && (representation || entries[i].method == "GET" || entries[i].method == "HEAD") &&
        entries[i].method != "HEAD") {
      core::StrAppend(out, R"("resource":)", r.resource, ",");
    }
    std::string phrase(ReasonPhrase(r.status));
    core::StrAppend(out, R"("response":{"status":")", r.status, phrase.empty() ? "" : " ", phrase, "\"");
    if (!r.location.empty()) {
      out += R"(,"location":")";
      core::AppendJsonEscaped(out, r.location);
      out += '"';
    }
    if (r.version) {
      out += R"(,"etag":")";
      core::AppendJsonEscaped(out, fhir::FormatETag(*r.version));
      out += '"';
    }
    if (r.last_modified) core::StrAppend(out, R"(,"lastModified":")", core::FormatInstant(*r.last_modified), "\"");
    if (!r.outcome.empty()) {
      core::StrAppend(out, R"(,"outcome":)", r.outcome);
    } else if (input.prefer_return == "operationoutcome" && r.status < 300 && !r.location.empty()) {
      core::StrAppend(out, R"(,"outcome":)",
                      fhir::OperationOutcomeJson({{"information", "informational",
                                                   core::StrCat(r.status == 201 ? "Created " : "Processed ", r.location),
                                                   ""}}));
    }
    out += "}}";
  }
  out += "]}";
  return out;
}

absl::Status FhirEngine::RunEntries(const std::string& tenant, const BundleInput& input,
                                    std::vector<BundleEntry>& all, const std::vector<std::size_t>& entries,
                                    std::vector<EntryResult>& results) {
  const ParamsPin pin(tenant, ParamsFor(tenant));  // before any transaction
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  std::vector<EntryResult> staged;
  bool params_changed = false;
  absl::Status st = shard->RunTransaction(tenant, [&](store::TransactionScope& scope) -> absl::Status {
    // A retried attempt starts over.
    staged.assign(all.size(), EntryResult{});
    for (std::size_t i : entries) {
      all[i].key = {};
      all[i].conditional_match = false;
      all[i].matched.reset();
    }
    return ExecuteEntries(scope, tenant, input, all, entries, staged);
  });
  if (!st.ok()) return st;
  for (std::size_t i : entries) {
    if (all[i].path.type == "SearchParameter" && all[i].method != "GET" && all[i].method != "HEAD") params_changed = true;
    results[i] = std::move(staged[i]);
  }
  if (params_changed) InvalidateParams(tenant);
  return absl::OkStatus();
}

absl::Status FhirEngine::ExecuteEntries(store::TransactionScope& scope, const std::string& tenant,
                                        const BundleInput& input, std::vector<BundleEntry>& all,
                                        const std::vector<std::size_t>& entries, std::vector<EntryResult>& results) {
  using K = fhir::RestPath::Kind;
  const core::TimePoint now = scope.Now();
  std::vector<std::size_t> by_step[4];
  for (std::size_t i : entries) by_step[Step(all[i].method)].push_back(i);
  auto at = [&](const BundleEntry& e, const absl::Status& s) { return AtEntry(s, e.index, e.method, e.url); };
  // The one match of conditional criteria, nullopt for none; 412 for several.
  auto match_one = [&](const std::string& type, const QueryParams& criteria)
      -> absl::StatusOr<std::optional<store::ResourceVersion>> {
    ASSIGN_OR_RETURN(search::SearchRequest req, ParseCriteria(tenant, criteria, type));
    RETURN_IF_ERROR(scope.Lock(LockKey(type, criteria)));
    ASSIGN_OR_RETURN(store::SearchPage page, scope.Search(req, std::nullopt));
    if (page.matches.size() > 1) return MultipleMatches(type);
    if (page.matches.empty()) return std::optional<store::ResourceVersion>();
    return std::optional<store::ResourceVersion>(std::move(page.matches[0]));
  };
  std::set<std::pair<std::string, std::string>> written;
  auto claim = [&](const BundleEntry& e) -> absl::Status {
    if (!written.emplace(e.key.type, e.key.id).second) {
      return EntryError(e.index, 400, "duplicate",
                        core::StrCat(e.key.type, "/", e.key.id, " is the target of more than one entry; a transaction "
                                     "may change each resource once"));
    }
    return absl::OkStatus();
  };
  auto stamp_time = [&](const std::optional<store::ResourceVersion>& current) {
    core::TimePoint t = now;
    if (current && t <= current->last_updated) t = current->last_updated + std::chrono::microseconds(1);
    return t;
  };
  auto written_result = [&](const store::ResourceKey& key, int64_t version, core::TimePoint t, int status,
                            std::string body) {
    EntryResult r;
    r.status = status;
    r.location = core::StrCat(key.type, "/", key.id, "/_history/", version);
    r.version = version;
    r.last_modified = t;
    r.full_url = core::StrCat(input.base_url, "/", key.type, "/", key.id);
    r.resource = std::move(body);
    return r;
  };

  // 1. DELETE.
  {
    std::vector<std::size_t> targets;
    for (std::size_t i : by_step[0]) {
      BundleEntry& e = all[i];
      if (e.path.kind == K::kType) {
        absl::StatusOr<std::optional<store::ResourceVersion>> m = match_one(e.path.type, e.query);
        if (!m.ok()) return at(e, m.status());
        if (!*m || (*m)->deleted) {
          // Nothing matches: nothing to delete (http.html#cdelete).
          e.conditional_match = true;
          results[i].status = 204;
          continue;
        }
        e.key = {tenant, e.path.type, (*m)->id};
      } else {
        e.key = {tenant, e.path.type, e.path.id};
      }
      RETURN_IF_ERROR(claim(e));
      targets.push_back(i);
    }
    std::vector<store::ResourceKey> keys;
    for (std::size_t i : targets) keys.push_back(all[i].key);
    ASSIGN_OR_RETURN(auto current, scope.Current(keys, /*lock=*/true, /*with_bodies=*/false));
    std::vector<store::PendingWrite> writes;
    for (std::size_t n = 0; n < targets.size(); ++n) {
      BundleEntry& e = all[targets[n]];
      if (!current[n]) {
        return at(e, NotKnown(e.key.type, e.key.id));
      }
      if (absl::Status s = CheckIfMatch(e.if_match, current[n]); !s.ok()) return at(e, s);
      EntryResult& r = results[e.index];
      r.status = 204;
      if (current[n]->deleted) {
        r.version = current[n]->version;
        continue;
      }
      store::PendingWrite w;
      w.key = e.key;
      w.version = current[n]->version + 1;
      w.method = "DELETE";
      w.last_updated = stamp_time(current[n]);
      r.version = w.version;
      r.last_modified = w.last_updated;
      writes.push_back(std::move(w));
    }
    RETURN_IF_ERROR(scope.Write(writes));
  }

  // 2. The identities of POST, PUT and PATCH entries, and the fullUrls
  // that name them.
  std::map<std::string, std::string, std::less<>> ids;
  auto map_full_url = [&](const BundleEntry& e) {
    if (e.full_url.empty()) return;
    std::string target = core::StrCat(e.key.type, "/", e.key.id);
    // An absolute fullUrl [base]/Type/id is also what the Bundle's relative
    // references Type/id resolve to (references.html#bundle-references).
    if (e.full_url.find("://") != std::string::npos) {
      const std::size_t last = e.full_url.rfind('/');
      const std::size_t type_start = last == std::string::npos || last == 0 ? std::string::npos
                                                                             : e.full_url.rfind('/', last - 1);
      if (type_start != std::string::npos &&
          std::string_view(e.full_url).substr(type_start + 1, last - type_start - 1) == e.key.type) {
        ids.emplace(e.full_url.substr(type_start + 1), target);
      }
    }
    ids[e.full_url] = std::move(target);
  };
  for (std::size_t i : by_step[1]) {
    BundleEntry& e = all[i];
    if (!e.if_none_exist.empty()) {
      std::string criteria = e.if_none_exist;
      if (std::size_t q = criteria.find('?'); q != std::string::npos) criteria.erase(0, q + 1);
      auto params = fhir::DecodeQuery(criteria);
      if (!params) return EntryError(i, 400, "value", "request.ifNoneExist has a malformed percent escape");
      absl::StatusOr<std::optional<store::ResourceVersion>> m = match_one(e.path.type, *params);
      if (!m.ok()) return at(e, m.status());
      if (*m) {
        e.conditional_match = true;
        e.key = {tenant, e.path.type, (*m)->id};
        e.matched = std::move(**m);
        map_full_url(e);
        continue;
      }
    }
    e.key = {tenant, e.path.type, core::TimeOrderedId(now)};
    map_full_url(e);
  }
  std::vector<std::size_t> creates_matched;
  for (std::size_t i : by_step[2]) {
    BundleEntry& e = all[i];
    if (e.path.kind == K::kType) {
      absl::StatusOr<std::optional<store::ResourceVersion>> m = match_one(e.path.type, e.query);
      if (!m.ok()) return at(e, m.status());
      std::string id;
      if (*m) {
        id = (*m)->id;
      } else if (e.method == "PATCH") {
        return at(e, core::Error(absl::StatusCode::kNotFound, core::StrCat("No ", e.path.type, " matches the criteria"))
                         .Http(404)
                         .Issue("not-found"));
      } else if (const json::value* body_id = e.resource.get_object().if_contains("id");
                 body_id != nullptr && body_id->is_string()) {
        id = std::string(body_id->get_string());
      } else {
        id = core::TimeOrderedId(now);
      }
      e.key = {tenant, e.path.type, id};
    } else {
      e.key = {tenant, e.path.type, e.path.id};
    }
    map_full_url(e);
  }
  for (std::size_t step : {1, 2}) {
    for (std::size_t i : by_step[step]) {
      if (!all[i].conditional_match) RETURN_IF_ERROR(claim(all[i]));
    }
  }

  // 3. References: fullUrls become Type/id; conditional references resolve
  // to their one match.
  std::map<std::string, std::string> resolved;
  auto resolve = [&](const std::string& ref) -> absl::StatusOr<std::string> {
    if (auto it = resolved.find(ref); it != resolved.end()) return it->second;
    const std::size_t q = ref.find('?');
    const std::string type = ref.substr(0, q);
    RETURN_IF_ERROR(CheckType(type));
    auto params = fhir::DecodeQuery(std::string_view(ref).substr(q + 1));
    if (!params) {
      return core::Error(absl::StatusCode::kInvalidArgument,
                         core::StrCat("The conditional reference '", ref, "' has a malformed percent escape"))
          .Http(400)
          .Issue("invalid");
    }
    ASSIGN_OR_RETURN(search::SearchRequest req, ParseCriteria(tenant, *params, type));
    ASSIGN_OR_RETURN(store::SearchPage page, scope.Search(req, std::nullopt));
    if (page.matches.size() != 1) {
      return core::Error(absl::StatusCode::kFailedPrecondition,
                         core::StrCat("The conditional reference '", ref, "' matches ",
                                      page.matches.empty() ? "no resource" : "more than one resource",
                                      "; it must match exactly one"))
          .Http(412)
          .Issue(page.matches.empty() ? "not-found" : "multiple-matches");
    }
    std::string target = core::StrCat(type, "/", page.matches[0].id);
    resolved.emplace(ref, target);
    return target;
  };
  for (std::size_t step : {1, 2}) {
    for (std::size_t i : by_step[step]) {
      BundleEntry& e = all[i];
      if (e.method == "PATCH" || e.conditional_match) continue;
      if (absl::Status s = RewriteReferences(e.resource, ids, resolve); !s.ok()) return at(e, s);
    }
  }

  // 4. POST, PUT and PATCH: validated, stamped and written together.
  std::vector<std::size_t> updates;
  for (std::size_t i : by_step[2]) updates.push_back(i);
  std::vector<store::ResourceKey> keys;
  bool need_bodies = false;
  for (std::size_t i : updates) {
    keys.push_back(all[i].key);
    need_bodies = need_bodies || all[i].method == "PATCH";
  }
  ASSIGN_OR_RETURN(auto current, scope.Current(keys, /*lock=*/true, need_bodies));
  std::vector<store::PendingWrite> writes;
  writes.reserve(by_step[1].size() + updates.size());
  std::vector<std::size_t> written_entries;
  for (std::size_t i : by_step[1]) {
    BundleEntry& e = all[i];
    if (e.conditional_match) {
      store::ResourceVersion& m = *e.matched;
      EntryResult r = written_result(e.key, m.version, m.last_updated, 200, m.body);
      results[i] = std::move(r);
      continue;
    }
    e.resource.get_object().erase("id");
    if (absl::Status s = ValidateResource(tenant, e.resource, 400); !s.ok()) return at(e, s);
    store::PendingWrite w;
    w.key = e.key;
    w.version = 1;
    w.method = "POST";
    w.last_updated = now;
    w.body = Stored(tenant, e.resource, e.key.type, e.key.id, 1, now);
    writes.push_back(std::move(w));
    written_entries.push_back(i);
  }
  for (std::size_t n = 0; n < updates.size(); ++n) {
    BundleEntry& e = all[updates[n]];
    const std::optional<store::ResourceVersion>& cur = current[n];
    if (absl::Status s = CheckIfMatch(e.if_match, cur); !s.ok()) return at(e, s);
    store::PendingWrite w;
    w.key = e.key;
    w.version = cur ? cur->version + 1 : 1;
    w.method = e.method;
    w.last_updated = stamp_time(cur);
    if (e.method == "PATCH") {
      if (!cur) {
        return at(e, NotKnown(e.key.type, e.key.id));
      }
      if (cur->deleted) return at(e, Gone(e.key.type, e.key.id, cur->version));
      absl::StatusOr<json::value> resource = fhir::ParseJson(cur->body);
      if (!resource.ok()) return at(e, resource.status());
      if (absl::Status s = fhir::ApplyJsonPatch(e.resource, *resource); !s.ok()) return at(e, s);
      const json::object* obj = resource->if_object();
      if (obj == nullptr || OptString(*obj, "resourceType") != e.key.type || OptString(*obj, "id") != e.key.id) {
        return EntryError(e.index, 422, "invalid", "a patch may not change the resourceType or the id");
      }
      if (absl::Status s = ValidateResource(tenant, *resource, 422); !s.ok()) return at(e, s);
      w.body = Stored(tenant, *resource, e.key.type, e.key.id, w.version, w.last_updated);
    } else {
      json::object& obj = e.resource.get_object();
      const json::value* body_id = obj.if_contains("id");
      if (e.path.kind == K::kInstance &&
          (body_id == nullptr || !body_id->is_string() || body_id->get_string() != e.key.id)) {
        return EntryError(e.index, 400, "invalid",
                          core::StrCat("the resource id must be the id of request.url ('", e.key.id, "')"));
      }
      if (body_id != nullptr && (!body_id->is_string() || body_id->get_string() != e.key.id)) {
        return EntryError(e.index, 400, "invalid",
                          core::StrCat("the resource id is not the id of the resource the criteria match ('",
                                       e.key.id, "')"));
      }
      obj["id"] = e.key.id;
      if (absl::Status s = ValidateResource(tenant, e.resource, 400); !s.ok()) return at(e, s);
      w.body = Stored(tenant, e.resource, e.key.type, e.key.id, w.version, w.last_updated);
    }
    results[e.index].status = !cur || cur->deleted ? 201 : 200;
    writes.push_back(std::move(w));
    written_entries.push_back(e.index);
  }
  RETURN_IF_ERROR(scope.Write(writes));
  for (std::size_t n = 0; n < writes.size(); ++n) {
    store::PendingWrite& w = writes[n];
    const std::size_t i = written_entries[n];
    const int status = all[i].method == "POST" ? 201 : results[i].status;
    results[i] = written_result(w.key, w.version, w.last_updated, status, std::move(w.body.json));
  }
  // The DELETE results, now that their locations are known.
  for (std::size_t i : by_step[0]) {
    BundleEntry& e = all[i];
    if (e.conditional_match || !results[i].version) continue;
    results[i].location = core::StrCat(e.key.type, "/", e.key.id, "/_history/", *results[i].version);
  }

  // 5. GET and HEAD, which see the writes above.
  for (std::size_t i : by_step[3]) {
    absl::StatusOr<EntryResult> r = ExecuteGet(scope, tenant, input, all[i]);
    if (!r.ok()) return at(all[i], r.status());
    results[i] = std::move(*r);
  }
  return absl::OkStatus();
}

absl::StatusOr<FhirEngine::EntryResult> FhirEngine::ExecuteGet(store::TransactionScope& scope,
                                                               const std::string& tenant, const BundleInput& input,
                                                               const BundleEntry& e) {
  using K = fhir::RestPath::Kind;
  EntryResult r;
  auto version_result = [&](store::ResourceVersion& v) -> absl::StatusOr<EntryResult> {
    if (v.deleted) return Gone(v.type, v.id, v.version);
    r.version = v.version;
    r.last_modified = v.last_updated;
    r.location = core::StrCat(v.type, "/", v.id, "/_history/", v.version);
    r.full_url = core::StrCat(input.base_url, "/", v.type, "/", v.id);
    // Conditional read (http.html#cread): 304 when the client's copy is current.
    std::optional<long long> none_match =
        e.if_none_match.empty() ? std::nullopt : fhir::ParseETagVersion(e.if_none_match);
    // If-None-Match wins over If-Modified-Since (RFC 9110 13.1.3).
    const bool not_modified = !e.if_none_match.empty()
                                  ? none_match && *none_match == v.version
                                  : e.if_modified_since && v.last_updated < *e.if_modified_since;
    if (not_modified) {
      r.status = 304;
      return r;
    }
    r.resource = std::move(v.body);
    return r;
  };
  switch (e.path.kind) {
    case K::kInstance: {
      if (!e.query.empty()) return Invalid("A read takes no parameters", 400, "not-supported");
      ASSIGN_OR_RETURN(auto current, scope.Current({{tenant, e.path.type, e.path.id}}, false, true));
      if (!current[0]) {
        return NotKnown(e.path.type, e.path.id);
      }
      current[0]->type = e.path.type;
      current[0]->id = e.path.id;
      return version_result(*current[0]);
    }
    case K::kVersion: {
      ASSIGN_OR_RETURN(store::ResourceVersion v,
                       scope.ReadVersion({tenant, e.path.type, e.path.id}, std::stoll(e.path.version)));
      return version_result(v);
    }
    case K::kType:
    case K::kTypeSearch:
    case K::kSystem:
    case K::kSystemSearch:
    case K::kCompartment: {
      SearchInput in;
      in.params = e.query;
      in.base_url = input.base_url;
      if (e.path.kind == K::kCompartment) {
        in.compartment = e.path.type;
        in.compartment_id = e.path.id;
        if (e.path.target == "*") {
          in.all_types = true;
        } else {
          in.type = e.path.target;
        }
      } else {
        in.type = e.path.type;
      }
      ASSIGN_OR_RETURN(r.resource, SearchWith(tenant, in, [&](const search::SearchRequest& req,
                                                               const std::optional<store::Compartment>& comp) {
                         return scope.Search(req, comp);
                       }));
      return r;
    }
    case K::kSystemHistory:
    case K::kTypeHistory:
    case K::kInstanceHistory: {
      HistoryRequest h;
      if (!e.path.type.empty()) h.type = e.path.type;
      if (!e.path.id.empty()) h.id = e.path.id;
      h.base_url = input.base_url;
      for (const auto& [k, v] : e.query) {
        if (k == "_count") {
          h.count = std::clamp(std::atoi(v.c_str()), 1, 1000);
        } else if (k == "_since") {
          auto range = search::ParseDateRange(v);
          if (!range) return Invalid("Parameter '_since': must be a FHIR instant", 400, "value");
          h.since = core::FromUnixMicros(range->lo);
        } else {
          return Invalid(core::StrCat("Parameter '", k, "': is not supported by history"), 400, "not-supported");
        }
      }
      ASSIGN_OR_RETURN(r.resource, HistoryWith(
                                       h, [&](const store::HistoryQuery& q) { return scope.History(q); },
                                       [&](const store::ResourceKey& key) -> absl::Status {
                                         ASSIGN_OR_RETURN(auto cur, scope.Current({{tenant, key.type, key.id}}, false,
                                                                                  false));
                                         return cur[0] ? absl::OkStatus() : NotKnown(key.type, key.id);
                                       }));
      return r;
    }
    case K::kMetadata: {
      ASSIGN_OR_RETURN(r.resource, Capabilities(tenant, input.base_url));
      return r;
    }
    default:
      return Invalid("This request is not supported inside a Bundle", 400, "not-supported");
  }
}

}  // namespace medgrid::engine
