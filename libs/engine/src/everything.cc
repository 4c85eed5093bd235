// Patient/$everything (patient-operation-everything.html) of FhirEngine.
//
// The instance level is the Patient resource (with what it references, on
// the first page) plus a compartment search (Patient/{id}/*) with
// _include=*: every resource in the patient's compartment, and the
// resources those reference. Only references covered by a reference
// search parameter are followed (that is what _include=* means), so a
// reference in an element no search parameter indexes is not; nor are the
// references of included resources (no iteration). Paging is the
// compartment search's: the cursor of a next link is that search's,
// carried back to $everything. The patient itself comes first on the first
// page (so that page may hold one entry more than _count).
//
// _type keeps only entries of those types (an included resource by its own
// type, whatever referenced it); _since only those last updated at or
// after it (the compartment search as _lastUpdated=ge, the rest filtered
// here).
//
// The type level pages over the tenant's live Patients, _count per page,
// and puts each patient's whole $everything (its compartment read to the
// end, kCompartmentChunk resources a search) on that patient's page. It is
// allowed only for tenants created with everythingTypeLevel.
//
// Invariant: an entry appears at most once per page; a resource matched on
// one page and included on another may appear on both (as in any search).
#include <algorithm>
#include <charconv>
#include <set>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/fhir/validator.h"
#include "medgrid/search/date_range.h"
#include "internal.h"

namespace medgrid::engine {
namespace {

absl::Status BadParam(std::string_view name, std::string_view why, std::string_view issue = "invalid") {
  return core::Error(absl::StatusCode::kInvalidArgument, core::StrCat("Parameter '", name, "': ", why))
      .Http(400)
      .Issue(issue);
}

// The compartment of one patient is read this many resources per search.
constexpr int kCompartmentChunk = 1000;

// The parameters of $everything, checked.
struct EverythingParams {
  std::string since;                      // as given; empty when absent
  core::TimePoint since_time;             // its start
  std::vector<std::string> types;         // empty: every type
  std::string count;                      // as given; empty when absent
  std::string cursor;                     // from a next link; empty on the first page
};

absl::StatusOr<EverythingParams> ParseEverythingParams(const QueryParams& params,
                                                       const fhir::StructureRegistry& registry) {
  EverythingParams out;
  std::set<std::string, std::less<>> seen;
  for (const auto& [k, v] : params) {
    if (k == "start" || k == "end") {
      return BadParam(k, "care dates (start, end) are not supported by $everything; use _since or _type",
                      "not-supported");
    }
    if (k != "_since" && k != "_type" && k != "_count" && k != "_cursor") {
      return BadParam(k, "is not supported by $everything (it takes _since, _type and _count)", "not-supported");
    }
    if (!seen.insert(k).second) return BadParam(k, "may be given once");
    if (k == "_since") {
      std::optional<search::DateRange> range;
      if (fhir::IsValidInstant(v)) range = search::ParseDateRange(v);
      if (!range) return BadParam(k, "must be an instant such as 2026-01-01T00:00:00Z");
      out.since = v;
      out.since_time = core::FromUnixMicros(range->lo);
    } else if (k == "_type") {
      for (std::string_view t : core::StrSplit(v, ',')) {
        if (!registry.IsResourceType(t)) {
          return BadParam(k, core::StrCat("unknown resource type '", t, "'"), "not-supported");
        }
        out.types.emplace_back(t);
      }
    } else if (k == "_count") {
      int c = 0;
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), c);
      if (ec != std::errc() || ptr != v.data() + v.size() || c < 1) return BadParam(k, "must be a positive integer");
      out.count = v;
    } else {
      out.cursor = v;
    }
  }
  return out;
}

std::string Key(const store::ResourceVersion& v) { return core::StrCat(v.type, "/", v.id); }

// The search of one patient's compartment with what it references.
SearchInput CompartmentSearch(const std::string& patient_id, const EverythingParams& p, const std::string& count,
                              const std::string& cursor, const std::string& base_url) {
  SearchInput in;
  in.compartment = "Patient";
  in.compartment_id = patient_id;
  in.all_types = true;
  in.base_url = base_url;
  if (!p.types.empty()) {
    std::string types;
    for (const std::string& t : p.types) core::StrAppend(types, types.empty() ? "" : ",", t);
    in.params.emplace_back("_type", types);
  }
  if (!p.since.empty()) in.params.emplace_back("_lastUpdated", core::StrCat("ge", p.since));
  if (!count.empty()) in.params.emplace_back("_count", count);
  in.params.emplace_back("_include", "*");
  if (!cursor.empty()) in.params.emplace_back("_cursor", cursor);
  return in;
}

// Whether a resource not matched by the compartment search (the patient,
// an included one) belongs in the result: of a type asked for, changed
// since _since.
bool Wanted(const store::ResourceVersion& v, const EverythingParams& p) {
  if (!p.types.empty() && std::find(p.types.begin(), p.types.end(), v.type) == p.types.end()) return false;
  return p.since.empty() || v.last_updated >= p.since_time;
}

}  // namespace

absl::StatusOr<std::string> FhirEngine::Everything(const std::string& tenant, const EverythingInput& input) {
  if (input.id.empty()) return EverythingOfPatients(tenant, input);
  ASSIGN_OR_RETURN(EverythingParams p, ParseEverythingParams(input.params, registry_));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  auto searcher = [&](const search::SearchRequest& req, const std::optional<store::Compartment>& comp) {
    return shard->Search(tenant, req, comp);
  };
  // 404 for an unknown patient, 410 for a deleted one.
  ASSIGN_OR_RETURN(store::ResourceVersion read, shard->Read({tenant, "Patient", input.id}));
  if (read.deleted) return Gone("Patient", input.id, read.version);
  const store::ResourceVersion* patient = &read;

  ASSIGN_OR_RETURN(SearchResult result,
                   Gather(tenant, CompartmentSearch(input.id, p, p.count, p.cursor, input.base_url), searcher));
  if (p.cursor.empty()) {
    // What the patient itself references (generalPractitioner,
    // managingOrganization, link), once, on the first page.
    ASSIGN_OR_RETURN(search::SearchRequest own,
                     ParseSearch(tenant, {{"_id", input.id}, {"_include", "*"}}, "Patient", false, input.base_url));
    ASSIGN_OR_RETURN(store::SearchPage page, shard->Search(tenant, own, std::nullopt));
    for (auto& v : page.included) result.included.push_back(std::move(v));
  }
  const bool with_patient = Wanted(*patient, p);
  std::set<std::string> seen{Key(*patient)};
  if (with_patient && p.cursor.empty()) result.matches.insert(result.matches.begin(), *patient);
  if (with_patient && result.total) ++*result.total;
  for (const auto& m : result.matches) seen.insert(Key(m));
  std::vector<store::ResourceVersion> included;
  for (auto& v : result.included) {
    if (Wanted(v, p) && seen.insert(Key(v)).second) included.push_back(std::move(v));
  }
  result.included = std::move(included);
  return RenderSearchset(result, input.base_url, core::StrCat(input.base_url, "/Patient/", input.id, "/$everything"),
                         input.params);
}

absl::StatusOr<std::string> FhirEngine::EverythingOfPatients(const std::string& tenant,
                                                             const EverythingInput& input) {
  ASSIGN_OR_RETURN(EverythingParams p, ParseEverythingParams(input.params, registry_));
  ASSIGN_OR_RETURN(store::TenantInfo info, store_.Tenant(tenant));
  if (!info.everything_type_level) {
    return core::Error(absl::StatusCode::kPermissionDenied,
                       core::StrCat("Patient/$everything for every patient is not enabled for tenant '", tenant,
                                    "'; ask for one patient's (Patient/{id}/$everything)"))
        .Http(403)
        .Issue("forbidden");
  }
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  auto searcher = [&](const search::SearchRequest& req, const std::optional<store::Compartment>& comp) {
    return shard->Search(tenant, req, comp);
  };
  // A page of patients, in id order; the cursor is that search's.
  QueryParams patient_params;
  if (!p.count.empty()) patient_params.emplace_back("_count", p.count);
  if (!p.cursor.empty()) patient_params.emplace_back("_cursor", p.cursor);
  patient_params.emplace_back("_include", "*");  // what the patients reference
  ASSIGN_OR_RETURN(search::SearchRequest patients_req,
                   ParseSearch(tenant, patient_params, "Patient", false, input.base_url));
  ASSIGN_OR_RETURN(store::SearchPage patients, shard->Search(tenant, patients_req, std::nullopt));

  SearchResult result;
  result.next = patients.next_cursor;
  std::set<std::string> seen;
  std::vector<store::ResourceVersion> included = std::move(patients.included);
  for (store::ResourceVersion& patient : patients.matches) {
    // The patients of the page are never included from another's
    // compartment: each comes with its own.
    seen.insert(Key(patient));
  }
  for (store::ResourceVersion& patient : patients.matches) {
    if (Wanted(patient, p)) result.matches.push_back(patient);
    std::string cursor;
    do {
      ASSIGN_OR_RETURN(SearchResult part,
                       Gather(tenant,
                              CompartmentSearch(patient.id, p, std::to_string(kCompartmentChunk), cursor,
                                                input.base_url),
                              searcher));
      for (auto& m : part.matches) {
        if (seen.insert(Key(m)).second) result.matches.push_back(std::move(m));
      }
      for (auto& v : part.included) included.push_back(std::move(v));
      for (auto& w : part.warnings) {
        if (std::find(result.warnings.begin(), result.warnings.end(), w) == result.warnings.end()) {
          result.warnings.push_back(std::move(w));
        }
      }
      cursor = part.next.value_or("");
    } while (!cursor.empty());
  }
  for (auto& v : included) {
    if (Wanted(v, p) && seen.insert(Key(v)).second) result.included.push_back(std::move(v));
  }
  return RenderSearchset(result, input.base_url, core::StrCat(input.base_url, "/Patient/$everything"), input.params);
}

}  // namespace medgrid::engine
