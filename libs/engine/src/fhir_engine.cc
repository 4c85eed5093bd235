#include "medgrid/engine/fhir_engine.h"

#include <random>

#include "fmt/format.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/json_patch.h"
#include "medgrid/fhir/rest_path.h"
#include "medgrid/search/index.h"
#include "internal.h"

namespace medgrid::engine {
namespace json = boost::json;

namespace {

constexpr int kMaxHistoryCount = 1000;

}  // namespace

absl::Status Gone(const std::string& type, const std::string& id, int64_t version) {
  return core::Error(absl::StatusCode::kNotFound,
                     core::StrCat("Resource ", type, "/", id, " was deleted (version ", version, ")"))
      .Http(410)
      .Issue("deleted");
}

namespace {

absl::Status Invalid(const std::string& message, int http = 400, std::string_view issue = "invalid",
                     std::string_view path = "") {
  core::Error e(absl::StatusCode::kInvalidArgument, message);
  e.Http(http).Issue(issue);
  if (!path.empty()) e.Path(path);
  return e;
}

}  // namespace

absl::Status CheckIfMatch(std::optional<int64_t> if_match, const std::optional<store::ResourceVersion>& current) {
  if (!if_match) return absl::OkStatus();
  if (!current || current->version != *if_match) {
    return core::Error(absl::StatusCode::kFailedPrecondition,
                       core::StrCat("If-Match version ", *if_match, " does not match the current version ",
                                    current ? std::to_string(current->version) : std::string("(none)")))
        .Http(412)
        .Issue("conflict");
  }
  return absl::OkStatus();
}

ResourceResult ToResult(store::ResourceVersion&& v) {
  ResourceResult r;
  r.type = std::move(v.type);
  r.id = std::move(v.id);
  r.version = v.version;
  r.last_updated = v.last_updated;
  r.deleted = v.deleted;
  r.body = std::move(v.body);
  return r;
}

std::string StampResource(const json::object& resource, const std::string& id, int64_t version,
                          core::TimePoint last_updated) {
  json::object out;
  out.reserve(resource.size() + 2);
  if (const json::value* rt = resource.if_contains("resourceType")) out.emplace("resourceType", *rt);
  out.emplace("id", id);
  json::object meta;
  meta.emplace("versionId", std::to_string(version));
  meta.emplace("lastUpdated", core::FormatInstant(last_updated));
  if (const json::value* old = resource.if_contains("meta"); old != nullptr && old->is_object()) {
    for (const auto& kv : old->get_object()) {
      if (kv.key() != "versionId" && kv.key() != "lastUpdated") meta.emplace(kv.key(), kv.value());
    }
  }
  out.emplace("meta", std::move(meta));
  for (const auto& kv : resource) {
    if (kv.key() != "resourceType" && kv.key() != "id" && kv.key() != "meta") out.emplace(kv.key(), kv.value());
  }
  return fhir::SerializeJson(out);
}

FhirEngine::FhirEngine(const fhir::StructureRegistry& registry, const fhir::SearchParamRegistry& search_params,
                       const fhir::CompartmentRegistry& compartments, store::Store& store, const core::Clock& clock,
                       EngineOptions options)
    : registry_(registry),
      search_params_(search_params),
      compartments_(compartments),
      validator_(registry),
      store_(store),
      clock_(clock),
      options_(options) {}

store::StoredBody FhirEngine::Stored(const std::string& tenant, const json::value& resource, const std::string& type,
                                     const std::string& id, int64_t version, core::TimePoint now) const {
  store::StoredBody out;
  out.json = StampResource(resource.get_object(), id, version, now);
  // Index what is stored; the stamped meta only adds versionId and
  // lastUpdated, which search reads from the resources table.
  out.index = search::ExtractIndex(resource, type, *ParamsFor(tenant));
  return out;
}

absl::Status FhirEngine::CheckType(const std::string& type) const {
  if (!registry_.IsResourceType(type)) {
    return core::Error(absl::StatusCode::kNotFound, core::StrCat("Unknown resource type '", type, "'"))
        .Http(404)
        .Issue("not-supported");
  }
  return absl::OkStatus();
}

absl::Status FhirEngine::ValidateResource(const std::string& tenant, const json::value& resource,
                                          int http_status) const {
  std::vector<fhir::ValidationIssue> issues = validator_.Validate(resource);
  if (issues.empty()) {
    RETURN_IF_ERROR(CheckSearchParameter(tenant, resource));
    return CheckSubscription(tenant, resource, http_status);
  }
  // The first issue decides the status text; all of them go in the message
  // so a client sees every problem at once.
  std::string message = issues[0].message;
  for (std::size_t i = 1; i < issues.size(); ++i) core::StrAppend(message, "; ", issues[i].message);
  return Invalid(message, http_status, issues[0].code, issues[0].path);
}

absl::StatusOr<json::value> FhirEngine::ParseResource(const std::string& type, const std::string& body) const {
  ASSIGN_OR_RETURN(json::value v, fhir::ParseJson(body));
  if (!v.is_object()) return Invalid("A resource must be a JSON object", 400, "structure");
  const json::value* rt = v.get_object().if_contains("resourceType");
  if (rt == nullptr || !rt->is_string()) {
    return Invalid("The resource has no resourceType", 400, "required", "resourceType");
  }
  if (rt->get_string() != type) {
    return Invalid(core::StrCat("resourceType '", std::string_view(rt->get_string()), "' does not match the URL type '",
                                type, "'"),
                   400, "invalid", "resourceType");
  }
  return v;
}

absl::StatusOr<FhirEngine::PreparedCreate> FhirEngine::PrepareCreate(const std::string& tenant,
                                                                     const std::string& type,
                                                                     const std::string& body) const {
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(json::value resource, ParseResource(type, body));
  // The server ignores a client id on create (http.html#create); drop it
  // before validation so a malformed one cannot fail the request.
  resource.get_object().erase("id");
  RETURN_IF_ERROR(ValidateResource(tenant, resource, 400));
  std::string id = core::TimeOrderedId(clock_.Now());
  auto shared = std::make_shared<const json::value>(std::move(resource));
  store::BodyFn stamp = [this, shared, id, type, tenant](const auto&, int64_t version, core::TimePoint now) {
    return absl::StatusOr<store::StoredBody>(Stored(tenant, *shared, type, id, version, now));
  };
  return PreparedCreate{shard, {tenant, type, id}, std::move(stamp)};
}

absl::StatusOr<ResourceResult> FhirEngine::Create(const std::string& tenant, const std::string& type,
                                                  const std::string& body) {
  ASSIGN_OR_RETURN(PreparedCreate c, PrepareCreate(tenant, type, body));
  ASSIGN_OR_RETURN(ResourceResult r,
                   Write(*c.shard, tenant, [&](WriteTarget& target) -> absl::StatusOr<ResourceResult> {
                     ASSIGN_OR_RETURN(store::ResourceVersion v, target.Create(c.key, c.body));
                     ResourceResult created = ToResult(std::move(v));
                     created.created = true;
                     return created;
                   }));
  if (type == "SearchParameter") InvalidateParams(tenant);
  return r;
}

void FhirEngine::CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                             boost::asio::io_context& io, ResultCallback done) {
  absl::StatusOr<PreparedCreate> c = PrepareCreate(tenant, type, body);
  if (!c.ok()) return done(c.status());
  c->shard->CreateAsync(c->key, c->body, io, [this, tenant, type, done = std::move(done)](absl::StatusOr<store::ResourceVersion> v) {
    if (!v.ok()) return done(v.status());
    if (type == "SearchParameter") InvalidateParams(tenant);
    ResourceResult r = ToResult(std::move(*v));
    r.created = true;
    done(std::move(r));
  });
}

absl::StatusOr<ResourceResult> FhirEngine::Read(const std::string& tenant, const std::string& type,
                                                const std::string& id) {
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(store::ResourceVersion v, shard->Read({tenant, type, id}));
  if (v.deleted) return Gone(type, id, v.version);
  return ToResult(std::move(v));
}

absl::StatusOr<ResourceResult> FhirEngine::VRead(const std::string& tenant, const std::string& type,
                                                 const std::string& id, int64_t version) {
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(store::ResourceVersion v, shard->ReadVersion({tenant, type, id}, version));
  if (v.deleted) return Gone(type, id, v.version);
  return ToResult(std::move(v));
}

void FhirEngine::ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                           std::optional<int64_t> version, boost::asio::io_context& io, ResultCallback done) {
  if (absl::Status st = CheckType(type); !st.ok()) return done(st);
  // Callers check ServesWithoutBlocking first, so the tenant's shard comes
  // from memory here.
  absl::StatusOr<store::ResourceStore*> shard = store_.ForTenant(tenant);
  if (!shard.ok()) return done(shard.status());
  (*shard)->ReadAsync({tenant, type, id}, version, io,
                      [type, id, done = std::move(done)](absl::StatusOr<store::ResourceVersion> v) {
                        if (!v.ok()) return done(v.status());
                        if (v->deleted) return done(Gone(type, id, v->version));
                        done(ToResult(std::move(*v)));
                      });
}

absl::StatusOr<ResourceResult> FhirEngine::Update(const std::string& tenant, const std::string& type,
                                                  const std::string& id, const std::string& body,
                                                  std::optional<int64_t> if_match) {
  const ParamsPin pin(tenant, ParamsFor(tenant));  // before any transaction
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(json::value resource, ParseResource(type, body));
  const json::value* body_id = resource.get_object().if_contains("id");
  if (body_id == nullptr) return Invalid("The resource has no id; an update must carry the id of the URL", 400, "required", "id");
  if (!body_id->is_string() || body_id->get_string() != id) {
    return Invalid(core::StrCat("The resource id does not match the URL id '", id, "'"), 400, "invalid", "id");
  }
  RETURN_IF_ERROR(ValidateResource(tenant, resource, 400));
  ASSIGN_OR_RETURN(ResourceResult r, Write(*shard, tenant, [&](WriteTarget& target) -> absl::StatusOr<ResourceResult> {
                     bool created = false;
                     ASSIGN_OR_RETURN(
                         store::ResourceVersion v,
                         target.Update({tenant, type, id}, "PUT",
                                       [&](const std::optional<store::ResourceVersion>& current, int64_t version,
                                           core::TimePoint now) -> absl::StatusOr<store::StoredBody> {
                                         RETURN_IF_ERROR(CheckIfMatch(if_match, current));
                                         created = !current || current->deleted;
                                         return Stored(tenant, resource, type, id, version, now);
                                       }));
                     ResourceResult updated = ToResult(std::move(v));
                     updated.created = created;
                     return updated;
                   }));
  if (type == "SearchParameter") InvalidateParams(tenant);
  return r;
}

absl::StatusOr<ResourceResult> FhirEngine::Patch(const std::string& tenant, const std::string& type,
                                                 const std::string& id, const std::string& patch,
                                                 std::optional<int64_t> if_match) {
  const ParamsPin pin(tenant, ParamsFor(tenant));  // before any transaction
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(json::value ops, fhir::ParseJson(patch));
  if (!ops.is_array()) return Invalid("A JSON Patch document must be a JSON array", 400, "structure");
  ASSIGN_OR_RETURN(
      ResourceResult r,
      Write(
          *shard, tenant, [&](WriteTarget& target) -> absl::StatusOr<ResourceResult> {
            ASSIGN_OR_RETURN(
                store::ResourceVersion v,
                target.Update(
                    {tenant, type, id}, "PATCH",
                    [&](const std::optional<store::ResourceVersion>& current, int64_t version,
                        core::TimePoint now) -> absl::StatusOr<store::StoredBody> {
                      if (!current) {
                        return core::Error(absl::StatusCode::kNotFound,
                                           core::StrCat("Resource ", type, "/", id, " is not known"))
                            .Http(404)
                            .Issue("not-found");
                      }
                      if (current->deleted) return Gone(type, id, current->version);
                      RETURN_IF_ERROR(CheckIfMatch(if_match, current));
                      ASSIGN_OR_RETURN(json::value resource, fhir::ParseJson(current->body));
                      RETURN_IF_ERROR(fhir::ApplyJsonPatch(ops, resource));
                      if (!resource.is_object())
                        return Invalid("The patch replaced the resource with a non-object", 422);
                      const json::object& obj = resource.get_object();
                      const json::value* rt = obj.if_contains("resourceType");
                      if (rt == nullptr || !rt->is_string() || rt->get_string() != type) {
                        return Invalid("A patch may not change resourceType", 422, "invalid", "resourceType");
                      }
                      const json::value* new_id = obj.if_contains("id");
                      if (new_id == nullptr || !new_id->is_string() || new_id->get_string() != id) {
                        return Invalid("A patch may not change or remove the id", 422, "invalid", "id");
                      }
                      RETURN_IF_ERROR(ValidateResource(tenant, resource, 422));
                      return Stored(tenant, resource, type, id, version, now);
                    }));
            return ToResult(std::move(v));
          }));
  if (type == "SearchParameter") InvalidateParams(tenant);
  return r;
}

absl::StatusOr<ResourceResult> FhirEngine::Delete(const std::string& tenant, const std::string& type,
                                                  const std::string& id, std::optional<int64_t> if_match) {
  RETURN_IF_ERROR(CheckType(type));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(store::ResourceVersion v, shard->Delete({tenant, type, id}, [&](const store::ResourceVersion& cur) {
                     return CheckIfMatch(if_match, cur);
                   }));
  if (type == "SearchParameter") InvalidateParams(tenant);
  return ToResult(std::move(v));
}

absl::StatusOr<std::string> FhirEngine::History(const std::string& tenant, const HistoryRequest& request) {
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  return HistoryWith(
      request, [&](const store::HistoryQuery& q) { return shard->History(tenant, q); },
      [&](const store::ResourceKey& key) { return shard->Read(key).status(); });
}

absl::StatusOr<std::string> FhirEngine::HistoryWith(
    const HistoryRequest& request, const std::function<absl::StatusOr<store::HistoryPage>(const store::HistoryQuery&)>& history,
    const std::function<absl::Status(const store::ResourceKey&)>& exists) {
  if (request.type) RETURN_IF_ERROR(CheckType(*request.type));
  if (request.count < 1 || request.count > kMaxHistoryCount) {
    return Invalid(core::StrCat("_count must be between 1 and ", kMaxHistoryCount), 400, "value");
  }
  store::HistoryQuery q;
  q.type = request.type;
  q.id = request.id;
  q.since = request.since;
  q.count = request.count;
  q.before_seq = request.cursor;
  ASSIGN_OR_RETURN(store::HistoryPage page, history(q));
  if (request.id && page.entries.empty() && !request.cursor) {
    // Distinguish "no such resource" from "no versions since _since".
    RETURN_IF_ERROR(exists({"", *request.type, *request.id}));
  }
  std::string path = request.base_url;
  if (request.type) core::StrAppend(path, "/", *request.type);
  if (request.id) core::StrAppend(path, "/", *request.id);
  core::StrAppend(path, "/_history");

  std::string out = R"({"resourceType":"Bundle","type":"history","link":[{"relation":"self","url":")";
  core::AppendJsonEscaped(out, path);
  if (!request.self_query.empty()) {
    out += '?';
    core::AppendJsonEscaped(out, request.self_query);
  }
  out += "\"}";
  if (page.next_cursor) {
    std::string next = core::StrCat(path, "?_count=", request.count, "&_cursor=", *page.next_cursor);
    if (request.since) core::StrAppend(next, "&_since=", core::FormatInstant(*request.since));
    out += R"(,{"relation":"next","url":")";
    core::AppendJsonEscaped(out, next);
    out += "\"}";
  }
  out += R"(],"entry":[)";
  bool first = true;
  for (const store::ResourceVersion& v : page.entries) {
    if (!first) out += ',';
    first = false;
    out += R"({"fullUrl":")";
    core::AppendJsonEscaped(out, core::StrCat(request.base_url, "/", v.type, "/", v.id));
    out += '"';
    if (!v.deleted) core::StrAppend(out, R"(,"resource":)", v.body);
    core::StrAppend(out, R"(,"request":{"method":")", v.method, R"(","url":")", v.type);
    if (v.method != "POST") core::StrAppend(out, "/", v.id);
    core::StrAppend(out, R"("},"response":{"status":")",
                    v.method == "POST" ? "201" : (v.deleted ? "204" : "200"), R"(","etag":")");
    core::AppendJsonEscaped(out, fhir::FormatETag(v.version));
    core::StrAppend(out, R"(","lastModified":")", core::FormatInstant(v.last_updated), R"("}})");
  }
  out += "]}";
  return out;
}

absl::StatusOr<std::string> FhirEngine::Capabilities(const std::string& tenant, const std::string& base_url) {
  RETURN_IF_ERROR(store_.Tenant(tenant).status());
  std::string out = R"({"resourceType":"CapabilityStatement","status":"active","date":")";
  out += core::FormatInstant(clock_.Now());
  out += R"(","publisher":"medgrid","kind":"instance","software":{"name":"medgrid","version":"0.1.0"},)"
         R"("implementation":{"description":"medgrid FHIR R4 server","url":")";
  core::AppendJsonEscaped(out, base_url);
  out += R"("},"fhirVersion":"4.0.1","format":["application/fhir+json","json"],)"
         R"("patchFormat":["application/json-patch+json"],"rest":[{"mode":"server",)";
  // Where websocket Subscriptions bind (libs/subscriptions): ws(s):// of the base.
  std::string websocket = base_url;
  if (websocket.rfind("http", 0) == 0) websocket.replace(0, 4, "ws");
  out += R"("extension":[{"url":"http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket","valueUri":")";
  core::AppendJsonEscaped(out, core::StrCat(websocket, "/$subscription-websocket"));
  out += R"("}],"resource":[)";
  // The tenant's own SearchParameter resources are listed with the
  // standard parameters.
  std::shared_ptr<const fhir::SearchParamRegistry> params = ParamsFor(tenant);
  auto param_json = [&](std::string& o, const fhir::SearchParamDef& def) {
    o += R"({"name":")";
    core::AppendJsonEscaped(o, def.code);
    o += R"(","definition":")";
    core::AppendJsonEscaped(o, def.url);
    core::StrAppend(o, R"(","type":")", def.type, "\"}");
  };
  bool first_type = true;
  for (const std::string& type : registry_.ResourceTypes()) {
    if (!first_type) out += ',';
    first_type = false;
    core::StrAppend(out, R"({"type":")", type,
                    R"(","interaction":[{"code":"read"},{"code":"vread"},{"code":"update"},{"code":"patch"},)"
                    R"({"code":"delete"},{"code":"history-instance"},{"code":"history-type"},{"code":"create"},)"
                    R"({"code":"search-type"}],"versioning":"versioned-update","readHistory":true,"updateCreate":true,)"
                    R"("conditionalCreate":true,"conditionalRead":"full-support","conditionalUpdate":true,)"
                    R"("conditionalDelete":"single","searchInclude":["*")");
    std::vector<const fhir::SearchParamDef*> defs = params->ForType(type);
    for (const fhir::SearchParamDef* def : defs) {
      if (def->type == "reference") core::StrAppend(out, R"(,")", type, ":", def->code, "\"");
    }
    out += R"(],"searchRevInclude":["*"],"searchParam":[)";
    bool first_param = true;
    for (const fhir::SearchParamDef* def : defs) {
      // _query, _filter, near and the like are refused, so not listed.
      if (def->type == "special" && def->code != "_text" && def->code != "_content") continue;
      if (def->expression.empty() && def->code != "_text" && def->code != "_content") continue;
      if (!first_param) out += ',';
      first_param = false;
      param_json(out, *def);
    }
    out += ']';
    if (type == "Patient") {
      out += R"(,"operation":[{"name":"everything",)"
             R"("definition":"http://hl7.org/fhir/OperationDefinition/Patient-everything"},)"
             R"({"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}])";
    }
    if (type == "Group") {  // bulk data export (libs/bulk)
      out += R"(,"operation":[{"name":"export",)"
             R"("definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}])";
    }
    out += '}';
  }
  out += R"(],"interaction":[{"code":"transaction"},{"code":"batch"},{"code":"history-system"},{"code":"search-system"}],)"
         R"("operation":[{"name":"reindex","definition":"urn:medgrid:operation:reindex"},)"
         R"({"name":"export","definition":"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}]})";
  return out;
}

}  // namespace medgrid::engine
