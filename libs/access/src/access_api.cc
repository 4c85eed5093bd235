#include "medgrid/access/access_api.h"

#include <mutex>
#include <unordered_map>

#include "boost/asio/io_context.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/thread_pool.hpp"
#include "boost/json.hpp"
#include "medgrid/auth/principal.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/request_context.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/operation_outcome.h"
#include "medgrid/search/index.h"

namespace medgrid::access {
namespace json = boost::json;
using auth::Interaction;
using auth::ResourceScope;

namespace {

// Who is asking, captured on entry (callbacks may run on other threads).
struct Caller {
  std::shared_ptr<const auth::Principal> p;
  std::string purpose;     // purpose of use: the header's, else the token's
  std::string btg_reason;  // X-BTG-Reason
};

Caller CurrentCaller() {
  Caller c;
  c.p = auth::CurrentPrincipal();
  const core::RequestContext& ctx = core::CurrentRequest();
  c.purpose = ctx.purpose_of_use;
  if (c.purpose.empty() && c.p) c.purpose = c.p->purpose_of_use;
  c.btg_reason = ctx.btg_reason;
  return c;
}

absl::Status Unauthenticated() {
  return core::Error(absl::StatusCode::kUnauthenticated, "a bearer token is required").Http(401).Issue("login");
}

absl::Status Forbidden(std::string_view why) {
  return core::Error(absl::StatusCode::kPermissionDenied, std::string(why)).Http(403).Issue("forbidden");
}

// The same answer as for a resource that does not exist.
absl::Status NotKnown(std::string_view type, std::string_view id) {
  return core::Error(absl::StatusCode::kNotFound, core::StrCat("Resource ", type, "/", id, " is not known"))
      .Http(404)
      .Issue("not-found");
}

absl::Status ConsentDenied() {
  // Nothing about the resource or the Consent: only that access is refused.
  return core::Error(absl::StatusCode::kPermissionDenied,
                     "Access to this resource is not permitted by the patient's consent")
      .Http(403)
      .Issue("suppressed");
}

absl::Status NoScope(std::string_view type, std::string_view what) {
  return Forbidden(core::StrCat("The token's scopes do not allow ", what, " of ", type));
}

// Which of the caller's scopes grant an interaction on a type.
struct Grant {
  bool wide_full = false;  // a user/ or system/ scope without a filter
  std::vector<const ResourceScope*> wide_filtered;
  bool narrow_full = false;  // a patient/ scope (with a patient context) without a filter
  std::vector<const ResourceScope*> narrow_filtered;

  bool any() const { return wide_full || !wide_filtered.empty() || narrow_full || !narrow_filtered.empty(); }
  // Only patient/ scopes grant it: access is limited to the compartment.
  bool narrow_only() const { return !wide_full && wide_filtered.empty(); }
};

// `mask`: any of these interactions.
Grant GrantFor(const auth::Principal& p, std::string_view type, uint8_t mask) {
  Grant g;
  for (const ResourceScope& s : p.scopes.resource_scopes()) {
    if ((s.interactions & mask) == 0 || (s.type != "*" && s.type != type)) continue;
    if (s.context == ResourceScope::Context::kPatient) {
      if (p.patient.empty()) continue;
      if (s.filter.empty()) {
        g.narrow_full = true;
      } else {
        g.narrow_filtered.push_back(&s);
      }
    } else if (s.filter.empty()) {
      g.wide_full = true;
    } else {
      g.wide_filtered.push_back(&s);
    }
  }
  return g;
}

consent::DefaultPolicy PolicyOf(const store::TenantInfo& t) {
  return t.consent_policy == "opt-out" ? consent::DefaultPolicy::kOptOut : consent::DefaultPolicy::kOptIn;
}

// Splits "system|code" / "|code" / "code".
std::pair<std::optional<std::string>, std::string> SplitToken(std::string_view v) {
  const std::size_t bar = v.find('|');
  if (bar == std::string_view::npos) return {std::nullopt, std::string(v)};
  return {std::string(v.substr(0, bar)), std::string(v.substr(bar + 1))};
}

// Tenant maintenance ($reindex): a back-end service that may write every
// type of the tenant.
bool MayMaintain(const auth::Principal& p) {
  for (const ResourceScope& s : p.scopes.resource_scopes()) {
    if (s.context == ResourceScope::Context::kSystem && s.type == "*" && s.filter.empty() &&
        (s.interactions & (Interaction::kCreate | Interaction::kUpdate | Interaction::kDelete)) ==
            (Interaction::kCreate | Interaction::kUpdate | Interaction::kDelete)) {
      return true;
    }
  }
  return false;
}

enum class Verdict { kAllow, kHidden, kConsentDenied, kUnavailable, kNeedsBlocking };

}  // namespace

struct AccessControlledFhirApi::Impl {
  AccessConfig config;
  engine::FhirApi& inner;
  consent::ConsentApi& consent;
  consent::BreakGlass& btg;
  store::Store& store;
  const fhir::SearchParamRegistry& params;
  const fhir::CompartmentRegistry& compartments;
  const core::Clock& clock;
  boost::asio::thread_pool blocking;

  std::mutex defs_mu;
  // Type -> the reference parameters that put it in a Patient compartment.
  std::unordered_map<std::string, std::vector<const fhir::SearchParamDef*>> compartment_defs;  // guarded by defs_mu

  Impl(AccessConfig c, engine::FhirApi& i, consent::ConsentApi& co, consent::BreakGlass& b, store::Store& s,
       const fhir::SearchParamRegistry& p, const fhir::CompartmentRegistry& cm, const core::Clock& cl)
      : config(std::move(c)),
        inner(i),
        consent(co),
        btg(b),
        store(s),
        params(p),
        compartments(cm),
        clock(cl),
        blocking(static_cast<std::size_t>(std::max(1, config.blocking_threads))) {}

  const std::vector<const fhir::SearchParamDef*>& CompartmentDefs(const std::string& type) {
    std::lock_guard lock(defs_mu);
    auto it = compartment_defs.find(type);
    if (it != compartment_defs.end()) return it->second;
    std::vector<const fhir::SearchParamDef*> defs;
    for (const std::string& code : compartments.Params("Patient", type)) {
      if (const fhir::SearchParamDef* d = params.Find(type, code)) defs.push_back(d);
    }
    return compartment_defs.emplace(type, std::move(defs)).first->second;
  }

  // The patients whose compartment holds the resource.
  std::vector<std::string> PatientsOf(const std::string& type, const json::object& resource) {
    std::vector<std::string> out;
    if (type == "Patient") {
      if (const json::value* id = resource.if_contains("id"); id != nullptr && id->is_string()) {
        out.emplace_back(id->get_string());
      }
      return out;
    }
    const auto& defs = CompartmentDefs(type);
    if (defs.empty()) return out;
    json::value v(resource);
    search::IndexEntries e = search::ExtractParams(v, defs, params);
    for (const search::ReferenceEntry& r : e.references) {
      if (r.target_type == "Patient" && !r.target_id.empty() &&
          std::find(out.begin(), out.end(), r.target_id) == out.end()) {
        out.push_back(r.target_id);
      }
    }
    return out;
  }

  // Whether the resource matches every key=value of a v2 scope filter.
  // Token and reference parameters; any other kind does not match.
  bool MatchesFilter(const std::string& type, const json::object& resource, const ResourceScope& scope) {
    json::value v(resource);
    for (const auto& [name, value] : scope.filter) {
      const fhir::SearchParamDef* def = params.Find(type, name);
      if (def == nullptr || (def->type != "token" && def->type != "reference")) return false;
      search::IndexEntries e = search::ExtractParams(v, {def}, params);
      bool hit = false;
      if (def->type == "token") {
        auto [system, code] = SplitToken(value);
        for (const search::TokenEntry& t : e.tokens) {
          if (t.code != code) continue;
          if (!system || (system->empty() ? !t.system.has_value() : t.system == *system)) hit = true;
        }
      } else {
        for (const search::ReferenceEntry& r : e.references) {
          const std::string rel = core::StrCat(r.target_type, "/", r.target_id);
          if (value == rel || value == r.target_id || value == r.url) hit = true;
        }
      }
      if (!hit) return false;
    }
    return true;
  }

  bool AnyFilterMatches(const std::string& type, const json::object& resource,
                        const std::vector<const ResourceScope*>& scopes) {
    for (const ResourceScope* s : scopes) {
      if (MatchesFilter(type, resource, *s)) return true;
    }
    return false;
  }

  // Scopes and compartment: may the caller see this resource at all?
  bool ScopeAllows(const Caller& c, const Grant& g, const std::string& type, const json::object& resource) {
    if (g.wide_full) return true;
    if (AnyFilterMatches(type, resource, g.wide_filtered)) return true;
    if (!g.narrow_full && g.narrow_filtered.empty()) return false;
    const std::vector<std::string> patients = PatientsOf(type, resource);
    if (std::find(patients.begin(), patients.end(), c.p->patient) == patients.end()) return false;
    return g.narrow_full || AnyFilterMatches(type, resource, g.narrow_filtered);
  }

  // Consent (with break-the-glass) for one resource. `blocking`: whether
  // the registry may be asked on this thread.
  Verdict ConsentFor(const std::string& tenant, const Caller& c, const store::TenantInfo& t, const std::string& type,
                     const json::object& resource, bool blocking, std::string* btg_error) {
    const std::vector<std::string> patients = PatientsOf(type, resource);
    if (patients.empty()) return Verdict::kAllow;  // not a patient's data
    consent::AccessRequest req;
    req.resource = &resource;
    if (!c.p->fhir_user.empty()) req.actor_references.push_back(c.p->fhir_user);
    for (const std::string& role : c.p->roles) {
      auto [system, code] = SplitToken(role);
      req.actor_roles.push_back({system.value_or(""), code});
    }
    req.actions.push_back({"http://terminology.hl7.org/CodeSystem/consentaction", "access"});
    if (!c.purpose.empty()) req.purposes.push_back({"http://terminology.hl7.org/CodeSystem/v3-ActReason", c.purpose});
    req.now = clock.Now();
    for (const std::string& patient : patients) {
      req.patient_id = patient;
      absl::StatusOr<consent::Decision> d = absl::UnknownError("");
      if (blocking) {
        d = consent.Decide(tenant, PolicyOf(t), req);
      } else {
        // On an I/O thread: only what L1 holds; anything else (the
        // registry, Redis, break-the-glass) is for a blocking thread.
        std::optional<consent::Decision> cached = consent.DecideIfCached(tenant, PolicyOf(t), req);
        if (!cached || cached->effect != consent::Effect::kPermit) return Verdict::kNeedsBlocking;
        d = *cached;
      }
      if (d.ok() && d->effect == consent::Effect::kPermit) continue;
      // Denied, or not known: only a declared emergency goes on.
      if (!consent::IsEmergencyPurpose(c.purpose)) {
        return d.ok() ? Verdict::kConsentDenied : Verdict::kUnavailable;
      }
      consent::BreakGlassRequest b;
      b.tenant = tenant;
      b.subject = c.p->subject;
      b.agent = c.p->Agent();
      b.patient = patient;
      b.purpose = c.purpose;
      b.reason = c.btg_reason;
      b.roles = c.p->roles;
      b.allowed_roles = t.btg_roles;
      absl::StatusOr<consent::BreakGlassGrant> grant = btg.Check(b);
      if (!grant.ok()) {
        if (btg_error != nullptr) *btg_error = std::string(grant.status().message());
        return d.ok() ? Verdict::kConsentDenied : Verdict::kUnavailable;
      }
    }
    return Verdict::kAllow;
  }

  Verdict Check(const std::string& tenant, const Caller& c, const store::TenantInfo& t, const std::string& type,
                const json::object& resource, uint8_t mask, bool blocking, std::string* btg_error) {
    const Grant g = GrantFor(*c.p, type, mask);
    if (!g.any() || !ScopeAllows(c, g, type, resource)) return Verdict::kHidden;
    return ConsentFor(tenant, c, t, type, resource, blocking, btg_error);
  }

  // The answer for a resource read by id.
  absl::StatusOr<engine::ResourceResult> CheckRead(const std::string& tenant, const Caller& c,
                                                   const std::string& type, const std::string& id,
                                                   absl::StatusOr<engine::ResourceResult> r, bool blocking,
                                                   bool* needs_blocking) {
    if (!r.ok()) {
      // With patient/ scopes only, a deleted resource's 410 would confirm an
      // id outside the compartment: it reads as unknown.
      if (core::HttpStatusOf(r.status()) == 410 && GrantFor(*c.p, type, Interaction::kRead).narrow_only()) {
        return NotKnown(type, id);
      }
      return r;
    }
    absl::StatusOr<store::TenantInfo> t = store.Tenant(tenant);
    if (!t.ok()) return t.status();
    // The common case without parsing the body: a Patient read under a
    // user/ or system/ scope, in an opt-out tenant, of a patient known (from
    // this process's cache) to have no Consent.
    if (r->type == "Patient" && t->consent_policy == "opt-out" && GrantFor(*c.p, "Patient", Interaction::kRead).wide_full) {
      if (std::optional<bool> has = consent.HasConsentsCached(tenant, r->id); has && !*has) return r;
    }
    boost::system::error_code ec;
    json::value v = json::parse(r->body, ec);
    if (ec || !v.is_object()) return r;  // not JSON: nothing to decide on
    std::string btg_error;
    switch (Check(tenant, c, *t, r->type, v.get_object(), Interaction::kRead, blocking, &btg_error)) {
      case Verdict::kAllow: return r;
      case Verdict::kHidden: return NotKnown(r->type, r->id);
      case Verdict::kConsentDenied:
        return btg_error.empty() ? ConsentDenied() : Forbidden(btg_error);
      case Verdict::kUnavailable: return ConsentUnavailable(btg_error);
      case Verdict::kNeedsBlocking:
        if (needs_blocking != nullptr) *needs_blocking = true;
        return r;
    }
    return r;
  }

  static absl::Status ConsentUnavailable(const std::string& btg_error) {
    return core::Error(absl::StatusCode::kUnavailable,
                       btg_error.empty()
                           ? "Consent cannot be checked now; access to patient data is refused until it can. "
                             "Emergency access (purpose of use BTG with X-BTG-Reason) remains available."
                           : core::StrCat("Consent cannot be checked now, and emergency access was refused: ",
                                          btg_error))
        .Http(503)
        .Issue("transient");
  }

  // Drops what the caller may not see from a searchset or history Bundle,
  // saying so in an OperationOutcome entry. Unavailable when Consent
  // cannot be checked (fail-closed).
  // `exact_total`: the query itself was limited to what the caller may
  // see, so Bundle.total counts only that (until something is withheld);
  // otherwise total is dropped, as it would count others' resources.
  absl::StatusOr<std::string> FilterBundle(const std::string& tenant, const Caller& c, std::string body,
                                           bool exact_total) {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec || !v.is_object()) return body;
    absl::StatusOr<store::TenantInfo> t = store.Tenant(tenant);
    if (!t.ok()) return t.status();
    RETURN_IF_ERROR(FilterBundleObject(tenant, c, *t, v.get_object()));
    if (!exact_total) v.get_object().erase("total");
    return json::serialize(v);
  }

  absl::Status FilterBundleObject(const std::string& tenant, const Caller& c, const store::TenantInfo& t,
                                  json::object& bundle) {
    json::value* entries = bundle.if_contains("entry");
    if (entries == nullptr || !entries->is_array()) return absl::OkStatus();
    json::array kept;
    int withheld = 0;
    std::string btg_error;
    for (json::value& entry : entries->get_array()) {
      json::object* e = entry.if_object();
      if (e == nullptr) continue;
      json::value* res = e->if_contains("resource");
      if (res == nullptr || !res->is_object()) {
        // A deleted version in a history: its type decides.
        std::string type;
        if (const json::value* req = e->if_contains("request"); req != nullptr && req->is_object()) {
          if (const json::value* url = req->get_object().if_contains("url"); url != nullptr && url->is_string()) {
            std::string_view u = url->get_string();
            type = std::string(u.substr(0, u.find('/')));
          }
        }
        const Grant g = GrantFor(*c.p, type, Interaction::kRead | Interaction::kSearch);
        if (g.any() && !g.narrow_only()) {
          kept.push_back(std::move(entry));
        } else {
          ++withheld;
        }
        continue;
      }
      json::object& r = res->get_object();
      const json::value* rt = r.if_contains("resourceType");
      const std::string type = rt != nullptr && rt->is_string() ? std::string(rt->get_string()) : "";
      if (type == "OperationOutcome") {
        kept.push_back(std::move(entry));
        continue;
      }
      switch (Check(tenant, c, t, type, r, Interaction::kRead | Interaction::kSearch, true, &btg_error)) {
        case Verdict::kAllow: kept.push_back(std::move(entry)); break;
        case Verdict::kHidden:
        case Verdict::kConsentDenied: ++withheld; break;
        case Verdict::kUnavailable: return ConsentUnavailable(btg_error);
        case Verdict::kNeedsBlocking: break;  // not with blocking = true
      }
    }
    if (withheld > 0) {
      json::value outcome = json::parse(fhir::OperationOutcomeJson(
          {{"information", "suppressed",
            core::StrCat(withheld, withheld == 1 ? " resource was" : " resources were",
                         " withheld: the patient's consent or the token's scopes do not permit access"),
            ""}}));
      kept.push_back(json::object{{"resource", std::move(outcome)}, {"search", json::object{{"mode", "outcome"}}}});
    }
    *entries = std::move(kept);
    // Last: erasing moves other members, `entries` among them.
    if (withheld > 0) bundle.erase("total");
    return absl::OkStatus();
  }

  // Before a write: the type and interaction must be granted, and with
  // patient/ scopes only, the resource must be in the patient's compartment.
  absl::Status CheckWrite(const Caller& c, const std::string& type, uint8_t interaction, const std::string* body,
                          const std::string& what) {
    const Grant g = GrantFor(*c.p, type, interaction);
    if (!g.any()) return NoScope(type, what);
    if (body == nullptr) return absl::OkStatus();
    boost::system::error_code ec;
    json::value v = json::parse(*body, ec);
    if (ec || !v.is_object()) return absl::OkStatus();  // the engine answers malformed bodies
    if (!ScopeAllows(c, g, type, v.get_object())) {
      return Forbidden(core::StrCat("The token's scopes do not allow ", what, " of this ", type,
                                    " (outside the patient's compartment or the scope's filter)"));
    }
    return absl::OkStatus();
  }

  // The current version must be one the caller could write (patient/
  // scopes: in the compartment). A missing resource passes (the engine
  // answers 404, or an update creates it after CheckWrite of the body).
  absl::Status CheckExisting(const std::string& tenant, const Caller& c, const std::string& type,
                             const std::string& id, uint8_t interaction, const std::string& what) {
    const Grant g = GrantFor(*c.p, type, interaction);
    if (!g.any()) return NoScope(type, what);
    if (g.wide_full) return absl::OkStatus();
    absl::StatusOr<engine::ResourceResult> cur = inner.Read(tenant, type, id);
    if (!cur.ok()) return absl::OkStatus();
    boost::system::error_code ec;
    json::value v = json::parse(cur->body, ec);
    if (ec || !v.is_object() || !ScopeAllows(c, g, type, v.get_object())) return NotKnown(type, id);
    return absl::OkStatus();
  }

  // A Consent written through this process goes to the registry now.
  void ConsentWritten(const std::string& tenant, const absl::StatusOr<engine::ResourceResult>& r) {
    if (!r.ok() || r->type != "Consent") return;
    std::optional<std::string> body;
    if (!r->deleted) body = r->body;
    if (absl::Status st = consent.Record(tenant, r->id, r->version, body); !st.ok()) {
      // The change stream brings it again.
      core::Log(core::LogLevel::kWarn, "consent.record_deferred",
                {{"tenant", tenant}, {"id", r->id}, {"error", std::string(st.message())}});
    }
  }
};

AccessControlledFhirApi::AccessControlledFhirApi(AccessConfig config, engine::FhirApi& inner,
                                                 consent::ConsentApi& consent, consent::BreakGlass& break_glass,
                                                 store::Store& store, const fhir::SearchParamRegistry& params,
                                                 const fhir::CompartmentRegistry& compartments,
                                                 const core::Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(config), inner, consent, break_glass, store, params, compartments,
                                   clock)) {}

AccessControlledFhirApi::~AccessControlledFhirApi() { impl_->blocking.join(); }

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::Create(const std::string& tenant,
                                                                       const std::string& type,
                                                                       const std::string& body) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  RETURN_IF_ERROR(impl_->CheckWrite(c, type, Interaction::kCreate, &body, "create"));
  absl::StatusOr<engine::ResourceResult> r = impl_->inner.Create(tenant, type, body);
  impl_->ConsentWritten(tenant, r);
  return r;
}

void AccessControlledFhirApi::CreateAsync(const std::string& tenant, const std::string& type, const std::string& body,
                                          boost::asio::io_context& io, engine::ResultCallback done) {
  Caller c = CurrentCaller();
  if (!c.p) return done(Unauthenticated());
  if (absl::Status st = impl_->CheckWrite(c, type, Interaction::kCreate, &body, "create"); !st.ok()) {
    return done(st);
  }
  if (type == "Consent") {
    // The registry write blocks: not on an I/O thread.
    return done(Create(tenant, type, body));
  }
  impl_->inner.CreateAsync(tenant, type, body, io, std::move(done));
}

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::Read(const std::string& tenant,
                                                                     const std::string& type,
                                                                     const std::string& id) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  if (!GrantFor(*c.p, type, Interaction::kRead).any()) return NoScope(type, "reads");
  return impl_->CheckRead(tenant, c, type, id, impl_->inner.Read(tenant, type, id), true, nullptr);
}

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::VRead(const std::string& tenant,
                                                                      const std::string& type, const std::string& id,
                                                                      int64_t version) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  if (!GrantFor(*c.p, type, Interaction::kRead).any()) return NoScope(type, "reads");
  return impl_->CheckRead(tenant, c, type, id, impl_->inner.VRead(tenant, type, id, version), true, nullptr);
}

bool AccessControlledFhirApi::ServesWithoutBlocking(const std::string& tenant) {
  return impl_->inner.ServesWithoutBlocking(tenant);
}

void AccessControlledFhirApi::ReadAsync(const std::string& tenant, const std::string& type, const std::string& id,
                                        std::optional<int64_t> version, boost::asio::io_context& io,
                                        engine::ResultCallback done) {
  Caller c = CurrentCaller();
  if (!c.p) return done(Unauthenticated());
  if (!GrantFor(*c.p, type, Interaction::kRead).any()) return done(NoScope(type, "reads"));
  impl_->inner.ReadAsync(
      tenant, type, id, version, io,
      [impl = impl_.get(), c, tenant, type, id, &io,
       done = std::move(done)](absl::StatusOr<engine::ResourceResult> r) mutable {
        bool needs_blocking = false;
        absl::StatusOr<engine::ResourceResult> checked =
            impl->CheckRead(tenant, c, type, id, r, false, &needs_blocking);
        if (!needs_blocking) return done(std::move(checked));
        // Consent may ask the registry: off the I/O thread, then back.
        boost::asio::post(impl->blocking, [impl, c, tenant, type, id, &io, r = std::move(r),
                                           done = std::move(done)]() mutable {
          absl::StatusOr<engine::ResourceResult> result =
              impl->CheckRead(tenant, c, type, id, std::move(r), true, nullptr);
          boost::asio::post(io, [done = std::move(done), result = std::move(result)]() mutable {
            done(std::move(result));
          });
        });
      });
}

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::Update(const std::string& tenant,
                                                                       const std::string& type,
                                                                       const std::string& id,
                                                                       const std::string& body,
                                                                       std::optional<int64_t> if_match) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  RETURN_IF_ERROR(impl_->CheckWrite(c, type, Interaction::kUpdate, &body, "update"));
  RETURN_IF_ERROR(impl_->CheckExisting(tenant, c, type, id, Interaction::kUpdate, "update"));
  absl::StatusOr<engine::ResourceResult> r = impl_->inner.Update(tenant, type, id, body, if_match);
  impl_->ConsentWritten(tenant, r);
  return r;
}

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::Patch(const std::string& tenant,
                                                                      const std::string& type, const std::string& id,
                                                                      const std::string& patch,
                                                                      std::optional<int64_t> if_match) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  RETURN_IF_ERROR(impl_->CheckExisting(tenant, c, type, id, Interaction::kUpdate, "update"));
  absl::StatusOr<engine::ResourceResult> r = impl_->inner.Patch(tenant, type, id, patch, if_match);
  impl_->ConsentWritten(tenant, r);
  return r;
}

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::Delete(const std::string& tenant,
                                                                       const std::string& type,
                                                                       const std::string& id,
                                                                       std::optional<int64_t> if_match) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  RETURN_IF_ERROR(impl_->CheckExisting(tenant, c, type, id, Interaction::kDelete, "delete"));
  absl::StatusOr<engine::ResourceResult> r = impl_->inner.Delete(tenant, type, id, if_match);
  impl_->ConsentWritten(tenant, r);
  return r;
}

absl::StatusOr<std::string> AccessControlledFhirApi::Search(const std::string& tenant,
                                                            const engine::SearchInput& input) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  engine::SearchInput in = input;
  bool exact_total = false;
  if (!in.type.empty()) {
    const Grant g = GrantFor(*c.p, in.type, Interaction::kSearch);
    if (!g.any()) return NoScope(in.type, "searches");
    // Unfiltered, or the patient's whole compartment (set below).
    exact_total = g.wide_full || (g.narrow_only() && g.narrow_full);
    if (g.narrow_only()) {
      // patient/ scopes only: search inside the patient's compartment, so
      // pages and totals count only what the caller may see.
      if (!in.compartment.empty() && (in.compartment != "Patient" || in.compartment_id != c.p->patient)) {
        return Forbidden("The token's patient/ scopes allow only the patient's own compartment");
      }
      if (in.type == "Patient") {
        in.params.emplace_back("_id", c.p->patient);
      } else if (in.compartment.empty()) {
        if (impl_->compartments.Params("Patient", in.type).empty()) {
          return NoScope(in.type, "searches (not in a patient compartment)");
        }
        in.compartment = "Patient";
        in.compartment_id = c.p->patient;
      }
    }
  } else {
    const Grant g = GrantFor(*c.p, "*", Interaction::kSearch);
    exact_total = g.wide_full;
    if (in.all_types && g.narrow_only() && !c.p->patient.empty() && in.compartment_id != c.p->patient) {
      return Forbidden("The token's patient/ scopes allow only the patient's own compartment");
    }
  }
  ASSIGN_OR_RETURN(std::string bundle, impl_->inner.Search(tenant, in));
  return impl_->FilterBundle(tenant, c, std::move(bundle), exact_total);
}

absl::StatusOr<std::string> AccessControlledFhirApi::Everything(const std::string& tenant,
                                                                const engine::EverythingInput& input) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  const Grant g = GrantFor(*c.p, "Patient", Interaction::kRead);
  if (!g.any()) return NoScope("Patient", "reads");
  if (g.narrow_only()) {
    if (input.id.empty()) return Forbidden("Patient/$everything at the type level needs user/ or system/ scopes");
    if (input.id != c.p->patient) return NotKnown("Patient", input.id);
  }
  ASSIGN_OR_RETURN(std::string bundle, impl_->inner.Everything(tenant, input));
  return impl_->FilterBundle(tenant, c, std::move(bundle), GrantFor(*c.p, "*", Interaction::kRead).wide_full);
}

absl::StatusOr<std::string> AccessControlledFhirApi::ExplainSearch(const std::string& tenant, const std::string& type,
                                                                   const engine::QueryParams& params) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  if (!c.p->admin()) return Forbidden("Query plans need the medgrid/admin scope");
  return impl_->inner.ExplainSearch(tenant, type, params);
}

absl::StatusOr<std::string> AccessControlledFhirApi::StartReindex(const std::string& tenant,
                                                                  const std::vector<std::string>& types) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  if (!MayMaintain(*c.p)) return Forbidden("$reindex needs a system/*.cruds (or *.write) scope");
  return impl_->inner.StartReindex(tenant, types);
}

absl::StatusOr<std::string> AccessControlledFhirApi::ReindexStatus(const std::string& tenant) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  if (!MayMaintain(*c.p)) return Forbidden("$reindex needs a system/*.cruds (or *.write) scope");
  return impl_->inner.ReindexStatus(tenant);
}

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::ConditionalCreate(const std::string& tenant,
                                                                                  const std::string& type,
                                                                                  const std::string& body,
                                                                                  const engine::QueryParams& criteria) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  RETURN_IF_ERROR(impl_->CheckWrite(c, type, Interaction::kCreate, &body, "create"));
  if (GrantFor(*c.p, type, Interaction::kCreate).narrow_only()) {
    return Forbidden("Conditional create needs user/ or system/ scopes: its criteria search beyond the patient");
  }
  absl::StatusOr<engine::ResourceResult> r = impl_->inner.ConditionalCreate(tenant, type, body, criteria);
  if (r.ok() && !r->created) {
    // The existing match is returned: only if the caller may read it.
    const std::string id = r->id;
    return impl_->CheckRead(tenant, c, type, id, std::move(r), true, nullptr);
  }
  impl_->ConsentWritten(tenant, r);
  return r;
}

absl::StatusOr<engine::ResourceResult> AccessControlledFhirApi::ConditionalUpdate(const std::string& tenant,
                                                                                  const std::string& type,
                                                                                  const engine::QueryParams& criteria,
                                                                                  const std::string& body) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  RETURN_IF_ERROR(impl_->CheckWrite(c, type, Interaction::kUpdate, &body, "update"));
  if (GrantFor(*c.p, type, Interaction::kUpdate).narrow_only()) {
    return Forbidden("Conditional update needs user/ or system/ scopes: its criteria search beyond the patient");
  }
  absl::StatusOr<engine::ResourceResult> r = impl_->inner.ConditionalUpdate(tenant, type, criteria, body);
  impl_->ConsentWritten(tenant, r);
  return r;
}

absl::StatusOr<std::optional<engine::ResourceResult>> AccessControlledFhirApi::ConditionalDelete(
    const std::string& tenant, const std::string& type, const engine::QueryParams& criteria) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  const Grant g = GrantFor(*c.p, type, Interaction::kDelete);
  if (!g.any()) return NoScope(type, "delete");
  if (g.narrow_only()) {
    return Forbidden("Conditional delete needs user/ or system/ scopes: its criteria search beyond the patient");
  }
  absl::StatusOr<std::optional<engine::ResourceResult>> r = impl_->inner.ConditionalDelete(tenant, type, criteria);
  if (r.ok() && r->has_value()) impl_->ConsentWritten(tenant, **r);
  return r;
}

absl::StatusOr<std::string> AccessControlledFhirApi::History(const std::string& tenant,
                                                             const engine::HistoryRequest& request) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  if (request.type) {
    const uint8_t mask = request.id ? Interaction::kRead : Interaction::kSearch;
    const Grant g = GrantFor(*c.p, *request.type, mask);
    if (!g.any()) return NoScope(*request.type, "history");
    if (request.id) {
      // The current version decides, as for a read (404 outside the
      // compartment); the entries are filtered too.
      absl::StatusOr<engine::ResourceResult> cur = impl_->inner.Read(tenant, *request.type, *request.id);
      if (cur.ok()) {
        absl::StatusOr<engine::ResourceResult> checked =
            impl_->CheckRead(tenant, c, *request.type, *request.id, std::move(cur), true, nullptr);
        if (!checked.ok()) return checked.status();
      } else if (g.narrow_only()) {
        return NotKnown(*request.type, *request.id);
      }
    }
  }
  ASSIGN_OR_RETURN(std::string bundle, impl_->inner.History(tenant, request));
  const bool exact_total =
      GrantFor(*c.p, request.type.value_or("*"), request.id ? Interaction::kRead : Interaction::kSearch).wide_full;
  return impl_->FilterBundle(tenant, c, std::move(bundle), exact_total);
}

absl::StatusOr<std::string> AccessControlledFhirApi::ProcessBundle(const std::string& tenant,
                                                                   const engine::BundleInput& input) {
  Caller c = CurrentCaller();
  if (!c.p) return Unauthenticated();
  // Every entry's interaction must be granted before anything runs.
  boost::system::error_code ec;
  json::value request = json::parse(input.body, ec);
  std::vector<std::string> methods;  // per entry, to find GET answers below
  if (!ec && request.is_object()) {
    const json::value* entries = request.get_object().if_contains("entry");
    if (entries != nullptr && entries->is_array()) {
      std::size_t i = 0;
      for (const json::value& entry : entries->get_array()) {
        const json::object* e = entry.if_object();
        const json::value* req = e ? e->if_contains("request") : nullptr;
        const json::object* ro = req ? req->if_object() : nullptr;
        const json::value* method = ro ? ro->if_contains("method") : nullptr;
        const json::value* url = ro ? ro->if_contains("url") : nullptr;
        if (method == nullptr || !method->is_string() || url == nullptr || !url->is_string()) {
          methods.emplace_back();
          ++i;
          continue;  // the engine explains what is malformed
        }
        const std::string m(method->get_string());
        std::string_view u = url->get_string();
        if (std::size_t base = u.find("/fhir/"); base != std::string_view::npos) {
          u = u.substr(base + 6);
          u = u.substr(u.find('/') == std::string_view::npos ? u.size() : u.find('/') + 1);
        }
        const std::string path(u.substr(0, u.find('?')));
        const std::string type = path.substr(0, path.find('/'));
        const bool conditional = u.find('?') != std::string_view::npos;
        const bool by_id = path.find('/') != std::string::npos;
        const std::string where = core::StrCat("Bundle.entry[", i, "]");
        methods.push_back(m);
        ++i;
        uint8_t interaction = 0;
        if (m == "GET" || m == "HEAD") {
          interaction = by_id ? Interaction::kRead : Interaction::kSearch;
        } else if (m == "POST") {
          interaction = Interaction::kCreate;
        } else if (m == "PUT" || m == "PATCH") {
          interaction = Interaction::kUpdate;
        } else if (m == "DELETE") {
          interaction = Interaction::kDelete;
        }
        if (type.empty() || interaction == 0) continue;
        const Grant g = GrantFor(*c.p, type, interaction);
        if (!g.any()) return Forbidden(core::StrCat(where, ": the token's scopes do not allow ", m, " on ", type));
        if (!g.narrow_only()) continue;
        if (m == "PUT" || m == "PATCH" || m == "DELETE" || (m == "POST" && conditional) ||
            ro->contains("ifNoneExist")) {
          return Forbidden(core::StrCat(where, ": with patient/ scopes only, a Bundle may create resources and "
                                               "read, but not update, delete or write conditionally"));
        }
        if (m == "POST") {
          const json::value* res = e->if_contains("resource");
          if (res == nullptr || !res->is_object() || !impl_->ScopeAllows(c, g, type, res->get_object())) {
            return Forbidden(core::StrCat(where, ": the resource is outside the patient's compartment"));
          }
        }
      }
    }
  }
  ASSIGN_OR_RETURN(std::string response, impl_->inner.ProcessBundle(tenant, input));
  json::value v = json::parse(response, ec);
  if (ec || !v.is_object()) return response;
  json::value* entries = v.get_object().if_contains("entry");
  if (entries == nullptr || !entries->is_array()) return response;
  absl::StatusOr<store::TenantInfo> t = impl_->store.Tenant(tenant);
  if (!t.ok()) return t.status();
  std::size_t i = 0;
  for (json::value& entry : entries->get_array()) {
    const std::string method = i < methods.size() ? methods[i] : "";
    ++i;
    json::object* e = entry.if_object();
    if (e == nullptr) continue;
    // Consents written: to the registry now.
    if (const json::value* resp = e->if_contains("response"); resp != nullptr && resp->is_object()) {
      const json::value* loc = resp->get_object().if_contains("location");
      if (loc != nullptr && loc->is_string() && loc->get_string().starts_with("Consent/")) {
        std::string_view l = loc->get_string();
        std::vector<std::string> parts;
        for (std::string_view part : core::StrSplit(l, '/')) parts.emplace_back(part);
        if (parts.size() == 4) {
          impl_->ConsentWritten(tenant, impl_->inner.VRead(tenant, "Consent", parts[1], std::stoll(parts[3])));
        }
      }
    }
    if (method != "GET" && method != "HEAD") continue;
    json::value* res = e->if_contains("resource");
    if (res == nullptr || !res->is_object()) continue;
    json::object& r = res->get_object();
    const json::value* rt = r.if_contains("resourceType");
    const std::string type = rt != nullptr && rt->is_string() ? std::string(rt->get_string()) : "";
    if (type == "Bundle") {
      RETURN_IF_ERROR(impl_->FilterBundleObject(tenant, c, *t, r));
      continue;
    }
    std::string btg_error;
    Verdict verdict = impl_->Check(tenant, c, *t, type, r, Interaction::kRead, true, &btg_error);
    if (verdict == Verdict::kAllow) continue;
    if (verdict == Verdict::kUnavailable) return Impl::ConsentUnavailable(btg_error);
    const bool hidden = verdict == Verdict::kHidden;
    e->erase("resource");
    json::value outcome = json::parse(fhir::OperationOutcomeJson(
        {{"error", hidden ? "not-found" : "suppressed",
          hidden ? "Resource is not known" : "Access to this resource is not permitted by the patient's consent", ""}}));
    e->insert_or_assign("response", json::object{{"status", hidden ? "404 Not Found" : "403 Forbidden"},
                                                 {"outcome", std::move(outcome)}});
  }
  return json::serialize(v);
}

absl::StatusOr<std::string> AccessControlledFhirApi::Capabilities(const std::string& tenant,
                                                                  const std::string& base_url) {
  ASSIGN_OR_RETURN(std::string caps, impl_->inner.Capabilities(tenant, base_url));
  boost::system::error_code ec;
  json::value v = json::parse(caps, ec);
  if (ec || !v.is_object()) return caps;
  json::value* rest = v.get_object().if_contains("rest");
  if (rest == nullptr || !rest->is_array()) return caps;
  for (json::value& r : rest->get_array()) {
    if (!r.is_object()) continue;
    r.get_object()["security"] = json::object{
        {"extension",
         json::array{json::object{
             {"url", "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"},
             {"extension", json::array{json::object{{"url", "authorize"}, {"valueUri", impl_->config.authorize_url}},
                                       json::object{{"url", "token"}, {"valueUri", impl_->config.token_url}}}}}}},
        {"cors", true},
        {"service", json::array{json::object{
                        {"coding", json::array{json::object{
                                       {"system", "http://terminology.hl7.org/CodeSystem/restful-security-service"},
                                       {"code", "SMART-on-FHIR"}}}},
                        {"text", "OAuth2 bearer tokens (SMART App Launch, scopes v1 and v2)"}}}},
        {"description", "SMART on FHIR: bearer tokens signed by the identity provider; patient/, user/ and system/ "
                        "scopes; patient consent enforced per resource, with break-the-glass emergency access."}};
  }
  return json::serialize(v);
}

}  // namespace medgrid::access
