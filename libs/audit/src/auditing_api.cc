#include "medgrid/audit/auditing_api.h"

#include <algorithm>

#include "boost/json.hpp"
#include "medgrid/core/request_context.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/search/date_range.h"
#include "medgrid/fhir/http_errors.h"

namespace medgrid::audit {
namespace {

namespace json = boost::json;

std::string QueryString(const engine::QueryParams& params) {
  std::string out;
  for (const auto& [k, v] : params) core::StrAppend(out, out.empty() ? "" : "&", k, "=", v);
  return out;
}

void AddUnique(std::vector<std::string>& to, std::string ref) {
  if (std::find(to.begin(), to.end(), ref) == to.end()) to.push_back(std::move(ref));
}

// The entries of a Bundle parsed into `v`; null when it has none.
const json::array* EntriesOf(const json::value& v) {
  const json::object* o = v.if_object();
  const json::value* entries = o ? o->if_contains("entry") : nullptr;
  return entries != nullptr && entries->is_array() ? &entries->get_array() : nullptr;
}

json::value ParseOrNull(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return nullptr;
  return v;
}

// The resources of a Bundle's entries ("Type/id") and the patients they
// name; with `responses`, also those of each entry's response.location
// (a batch or transaction response with Prefer: return=minimal).
void AddBundle(Interaction& in, const std::string& bundle, bool responses = false) {
  const json::value v = ParseOrNull(bundle);
  const json::array* entries = EntriesOf(v);
  if (entries == nullptr) return;
  for (const json::value& e : *entries) {
    const json::object* entry = e.if_object();
    if (entry == nullptr) continue;
    if (const json::value* r = entry->if_contains("resource"); r != nullptr && r->is_object()) {
      const json::value* type = r->get_object().if_contains("resourceType");
      const json::value* id = r->get_object().if_contains("id");
      if (type != nullptr && id != nullptr && type->is_string() && id->is_string()) {
        std::string ref = core::StrCat(type->get_string(), "/", id->get_string());
        if (type->get_string() == "Patient") AddUnique(in.patients, ref);
        AddUnique(in.resources, std::move(ref));
      }
    }
    const json::value* r = responses ? entry->if_contains("response") : nullptr;
    const json::value* loc = r != nullptr && r->is_object() ? r->get_object().if_contains("location") : nullptr;
    if (loc == nullptr || !loc->is_string()) continue;
    std::string_view l = loc->get_string();
    std::string ref(l.substr(0, l.find("/_history/")));
    if (ref.rfind("Patient/", 0) == 0) AddUnique(in.patients, ref);
    AddUnique(in.resources, std::move(ref));
  }
  for (std::string& p : PatientReferences(bundle, 100)) AddUnique(in.patients, std::move(p));
}

constexpr std::string_view kAuditEvent = "AuditEvent";

// Whether a Bundle has an entry whose request names AuditEvent.
bool BundleTouchesAuditEvent(const std::string& body, const std::string& base_url) {
  if (body.find(kAuditEvent) == std::string::npos) return false;
  const json::value v = ParseOrNull(body);
  const json::array* entries = EntriesOf(v);
  if (entries == nullptr) return false;
  for (const json::value& e : *entries) {
    const json::value* r = e.is_object() ? e.get_object().if_contains("request") : nullptr;
    const json::value* url = r != nullptr && r->is_object() ? r->get_object().if_contains("url") : nullptr;
    if (url == nullptr || !url->is_string()) continue;
    std::string_view u = url->get_string();
    if (!base_url.empty() && u.rfind(base_url, 0) == 0) u.remove_prefix(base_url.size());
    while (!u.empty() && u[0] == '/') u.remove_prefix(1);
    if (u.rfind(kAuditEvent, 0) == 0 &&
        (u.size() == kAuditEvent.size() || u[kAuditEvent.size()] == '/' || u[kAuditEvent.size()] == '?')) {
      return true;
    }
  }
  return false;
}

absl::Status ReadOnly() {
  return core::Error(absl::StatusCode::kFailedPrecondition,
                     "AuditEvent resources are read-only: they are the audit ledger's, written by the server")
      .Http(405)
      .Issue("not-supported");
}

}  // namespace

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::ReadAuditEvent(const std::string& tenant,
                                                                       const std::string& id) {
  ASSIGN_OR_RETURN(std::string body, index_.Read(tenant, id));
  engine::ResourceResult r;
  r.type = std::string(kAuditEvent);
  r.id = id;
  r.version = 1;
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    if (const json::value* recorded = v.get_object().if_contains("recorded"); recorded && recorded->is_string()) {
      if (auto range = search::ParseDateRange(std::string_view(recorded->get_string()))) {
        r.last_updated = core::FromUnixMicros(range->lo);
      }
    }
  }
  r.body = std::move(body);
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::SearchAuditEvents(const std::string& tenant,
                                                               const engine::SearchInput& input) {
  engine::QueryParams params = input.params;
  if (input.compartment == "Patient") params.emplace_back("patient", input.compartment_id);
  ASSIGN_OR_RETURN(search::SearchRequest req,
                   search::ParseSearch(params, kAuditEvent, params_, structures_, input.lenient));
  return index_.Search(tenant, req, input);
}

Interaction AuditingFhirApi::Start(const std::string& tenant, const char* interaction, char action,
                                   const std::string& type, const std::string& id) const {
  Interaction in;
  in.tenant = tenant;
  in.interaction = interaction;
  in.action = action;
  in.type = type;
  in.id = id;
  in.recorded = clock_.Now();
  const core::RequestContext& ctx = core::CurrentRequest();
  in.agent_address = ctx.client_address;
  in.agent = ctx.agent;
  if (!ctx.purpose_of_use.empty()) in.purpose_of_use.push_back(ctx.purpose_of_use);
  if (!type.empty() && !id.empty()) {
    in.resources.push_back(core::StrCat(type, "/", id));
    if (type == "Patient") in.patients.push_back(core::StrCat(type, "/", id));
  }
  return in;
}

void AuditingFhirApi::FinishStatus(Interaction& in, const absl::Status& status) {
  in.http_status = status.ok() ? 200 : fhir::ToHttpError(status).status;
  pipeline_.Record(in);
}

void AuditingFhirApi::Finish(Interaction& in, const absl::StatusOr<engine::ResourceResult>& result) {
  if (result.ok()) {
    in.http_status = result->created ? 201 : 200;
    const std::string ref = core::StrCat(result->type, "/", result->id);
    AddUnique(in.resources, ref);
    if (result->type == "Patient") AddUnique(in.patients, ref);
    for (std::string& p : PatientReferences(result->body)) AddUnique(in.patients, std::move(p));
    pipeline_.Record(in);
    return;
  }
  FinishStatus(in, result.status());
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::Create(const std::string& tenant, const std::string& type,
                                                               const std::string& body) {
  Interaction in = Start(tenant, "create", 'C', type, "");
  absl::StatusOr<engine::ResourceResult> r = type == kAuditEvent ? ReadOnly() : inner_.Create(tenant, type, body);
  Finish(in, r);
  return r;
}

void AuditingFhirApi::CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                                  boost::asio::io_context& io, engine::ResultCallback done) {
  auto in = std::make_shared<Interaction>(Start(tenant, "create", 'C', type, ""));
  if (type == kAuditEvent) {
    absl::StatusOr<engine::ResourceResult> r = ReadOnly();
    Finish(*in, r);
    done(std::move(r));
    return;
  }
  inner_.CreateAsync(tenant, type, body, io,
                     [this, in, done = std::move(done)](absl::StatusOr<engine::ResourceResult> r) {
                       Finish(*in, r);
                       done(std::move(r));
                     });
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::Read(const std::string& tenant, const std::string& type,
                                                             const std::string& id) {
  Interaction in = Start(tenant, "read", 'R', type, id);
  absl::StatusOr<engine::ResourceResult> r =
      type == kAuditEvent ? ReadAuditEvent(tenant, id) : inner_.Read(tenant, type, id);
  Finish(in, r);
  return r;
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::VRead(const std::string& tenant, const std::string& type,
                                                              const std::string& id, int64_t version) {
  Interaction in = Start(tenant, "vread", 'R', type, id);
  // An AuditEvent has one version.
  absl::StatusOr<engine::ResourceResult> r =
      type != kAuditEvent ? inner_.VRead(tenant, type, id, version)
      : version == 1      ? ReadAuditEvent(tenant, id)
                          : absl::StatusOr<engine::ResourceResult>(
                           core::Error(absl::StatusCode::kNotFound, core::StrCat("AuditEvent/", id, " has version 1 only"))
                               .Http(404)
                               .Issue("not-found"));
  Finish(in, r);
  return r;
}

void AuditingFhirApi::ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                                std::optional<int64_t> version, boost::asio::io_context& io,
                                engine::ResultCallback done) {
  if (type == kAuditEvent) {
    // Read and VRead record it.
    done(version ? VRead(tenant, type, id, *version) : Read(tenant, type, id));
    return;
  }
  auto in = std::make_shared<Interaction>(Start(tenant, version ? "vread" : "read", 'R', type, id));
  inner_.ReadAsync(tenant, type, id, version, io,
                   [this, in, done = std::move(done)](absl::StatusOr<engine::ResourceResult> r) {
                     Finish(*in, r);
                     done(std::move(r));
                   });
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::Update(const std::string& tenant, const std::string& type,
                                                               const std::string& id, const std::string& body,
                                                               std::optional<int64_t> if_match) {
  Interaction in = Start(tenant, "update", 'U', type, id);
  absl::StatusOr<engine::ResourceResult> r =
      type == kAuditEvent ? ReadOnly() : inner_.Update(tenant, type, id, body, if_match);
  if (r.ok() && r->created) in.action = 'C';
  Finish(in, r);
  return r;
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::Patch(const std::string& tenant, const std::string& type,
                                                              const std::string& id, const std::string& patch,
                                                              std::optional<int64_t> if_match) {
  Interaction in = Start(tenant, "patch", 'U', type, id);
  absl::StatusOr<engine::ResourceResult> r =
      type == kAuditEvent ? ReadOnly() : inner_.Patch(tenant, type, id, patch, if_match);
  Finish(in, r);
  return r;
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::Delete(const std::string& tenant, const std::string& type,
                                                               const std::string& id,
                                                               std::optional<int64_t> if_match) {
  Interaction in = Start(tenant, "delete", 'D', type, id);
  absl::StatusOr<engine::ResourceResult> r =
      type == kAuditEvent ? ReadOnly() : inner_.Delete(tenant, type, id, if_match);
  Finish(in, r);
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::Search(const std::string& tenant, const engine::SearchInput& input) {
  Interaction in = Start(tenant, input.type.empty() ? "search-system" : "search-type", 'E', input.type, "");
  if (!input.compartment.empty()) {
    const std::string ref = core::StrCat(input.compartment, "/", input.compartment_id);
    if (input.compartment == "Patient") AddUnique(in.patients, ref);
  }
  in.query = QueryString(input.params);
  absl::StatusOr<std::string> r =
      input.type == kAuditEvent ? SearchAuditEvents(tenant, input) : inner_.Search(tenant, input);
  if (r.ok()) AddBundle(in, *r);
  FinishStatus(in, r.status());
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::Everything(const std::string& tenant,
                                                        const engine::EverythingInput& input) {
  // Start names Patient/{id} as the patient; the type level names every
  // patient on the page through the Bundle.
  Interaction in = Start(tenant, "operation", 'E', "Patient", input.id);
  in.query = "$everything";
  if (!input.params.empty()) core::StrAppend(in.query, "?", QueryString(input.params));
  absl::StatusOr<std::string> r = inner_.Everything(tenant, input);
  if (r.ok()) AddBundle(in, *r);
  FinishStatus(in, r.status());
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::ExplainSearch(const std::string& tenant, const std::string& type,
                                                           const engine::QueryParams& params) {
  // Reached through the admin API, whose requests are recorded as admin actions.
  return inner_.ExplainSearch(tenant, type, params);
}

absl::StatusOr<std::string> AuditingFhirApi::StartReindex(const std::string& tenant,
                                                          const std::vector<std::string>& types) {
  Interaction in = Start(tenant, "operation", 'E', "", "");
  in.query = "$reindex";
  for (const std::string& t : types) core::StrAppend(in.query, in.query == "$reindex" ? "?type=" : ",", t);
  absl::StatusOr<std::string> r = inner_.StartReindex(tenant, types);
  FinishStatus(in, r.status());
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::ReindexStatus(const std::string& tenant) {
  return inner_.ReindexStatus(tenant);  // job progress, no resource data
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::ConditionalCreate(const std::string& tenant,
                                                                          const std::string& type,
                                                                          const std::string& body,
                                                                          const engine::QueryParams& criteria) {
  Interaction in = Start(tenant, "create", 'C', type, "");
  in.query = QueryString(criteria);
  absl::StatusOr<engine::ResourceResult> r =
      type == kAuditEvent ? ReadOnly() : inner_.ConditionalCreate(tenant, type, body, criteria);
  if (r.ok() && !r->created) in.action = 'R';  // an existing match was returned
  Finish(in, r);
  return r;
}

absl::StatusOr<engine::ResourceResult> AuditingFhirApi::ConditionalUpdate(const std::string& tenant,
                                                                          const std::string& type,
                                                                          const engine::QueryParams& criteria,
                                                                          const std::string& body) {
  Interaction in = Start(tenant, "update", 'U', type, "");
  in.query = QueryString(criteria);
  absl::StatusOr<engine::ResourceResult> r =
      type == kAuditEvent ? ReadOnly() : inner_.ConditionalUpdate(tenant, type, criteria, body);
  if (r.ok() && r->created) in.action = 'C';
  Finish(in, r);
  return r;
}

absl::StatusOr<std::optional<engine::ResourceResult>> AuditingFhirApi::ConditionalDelete(
    const std::string& tenant, const std::string& type, const engine::QueryParams& criteria) {
  Interaction in = Start(tenant, "delete", 'D', type, "");
  in.query = QueryString(criteria);
  absl::StatusOr<std::optional<engine::ResourceResult>> r =
      type == kAuditEvent ? absl::StatusOr<std::optional<engine::ResourceResult>>(ReadOnly())
                          : inner_.ConditionalDelete(tenant, type, criteria);
  if (r.ok() && r->has_value()) {
    Finish(in, **r);
  } else {
    FinishStatus(in, r.status());
  }
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::History(const std::string& tenant, const engine::HistoryRequest& request) {
  const char* level = request.id ? "history-instance" : request.type ? "history-type" : "history-system";
  Interaction in = Start(tenant, level, 'R', request.type.value_or(""), request.id.value_or(""));
  absl::StatusOr<std::string> r = inner_.History(tenant, request);
  if (r.ok()) AddBundle(in, *r);
  FinishStatus(in, r.status());
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::ProcessBundle(const std::string& tenant,
                                                           const engine::BundleInput& input) {
  Interaction in = Start(tenant, "batch", 'E', "", "");
  absl::StatusOr<std::string> r =
      BundleTouchesAuditEvent(input.body, input.base_url)
          ? absl::StatusOr<std::string>(
                core::Error(absl::StatusCode::kInvalidArgument,
                            "AuditEvent resources are the audit ledger's: they are read and searched at "
                            "/AuditEvent, not inside a batch or transaction")
                    .Http(400)
                    .Issue("not-supported"))
          : inner_.ProcessBundle(tenant, input);
  // The response's type says which it was; a failed one's is read from the request.
  bool transaction = false;
  if (r.ok()) {
    transaction = std::string_view(*r).substr(0, 200).find("\"transaction-response\"") != std::string_view::npos;
    AddBundle(in, *r, /*responses=*/true);
  } else {
    const json::value v = ParseOrNull(input.body);
    const json::value* type = v.is_object() ? v.get_object().if_contains("type") : nullptr;
    transaction = type != nullptr && type->is_string() && type->get_string() == "transaction";
  }
  if (transaction) in.interaction = "transaction";
  FinishStatus(in, r.status());
  return r;
}

absl::StatusOr<std::string> AuditingFhirApi::Capabilities(const std::string& tenant, const std::string& base_url) {
  Interaction in = Start(tenant, "capabilities", 'R', "", "");
  absl::StatusOr<std::string> r = inner_.Capabilities(tenant, base_url);
  FinishStatus(in, r.status());
  if (!r.ok()) return r;
  // AuditEvent as this server serves it: read and searched from the ledger, never written.
  boost::system::error_code ec;
  json::value cap = json::parse(*r, ec);
  json::array* resources = nullptr;
  if (!ec && cap.is_object()) {
    if (json::value* rest = cap.get_object().if_contains("rest"); rest && rest->is_array() && !rest->get_array().empty()) {
      if (json::value* res = rest->get_array()[0].as_object().if_contains("resource"); res && res->is_array()) {
        resources = &res->get_array();
      }
    }
  }
  if (resources == nullptr) return r;
  for (json::value& entry : *resources) {
    json::object& o = entry.as_object();
    const json::value* type = o.if_contains("type");
    if (type == nullptr || !type->is_string() || type->get_string() != kAuditEvent) continue;
    o["interaction"] = json::array{json::object{{"code", "read"}}, json::object{{"code", "vread"}},
                                   json::object{{"code", "search-type"}}};
    for (const char* key : {"updateCreate", "conditionalCreate", "conditionalUpdate"}) o[key] = false;
    o["conditionalDelete"] = "not-supported";
    o["readHistory"] = false;
    // None served (and FHIR JSON has no empty arrays).
    o.erase("searchInclude");
    o.erase("searchRevInclude");
    json::array served;
    if (json::value* params = o.if_contains("searchParam"); params && params->is_array()) {
      for (const json::value& p : params->get_array()) {
        const json::value* name = p.is_object() ? p.get_object().if_contains("name") : nullptr;
        if (name == nullptr || !name->is_string()) continue;
        const std::string_view n = name->get_string();
        if (n == "patient" || n == "agent" || n == "date" || n == "action" || n == "outcome" || n == "subtype" ||
            n == "address" || n == "_id") {
          served.push_back(p);
        }
      }
    }
    o["searchParam"] = std::move(served);
  }
  return json::serialize(cap);
}

}  // namespace medgrid::audit
