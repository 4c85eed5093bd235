// Invariants: a job's files are "<tenant>/<job>/<Type>-<part>.ndjson"; a
// part is committed to the object store before the checkpoint that lists
// it, and nothing after the last checkpoint is relied on when resuming, so
// a crash between the two only makes the resumed job write that part again
// (with the same bytes: the same rows as of transaction_time, cut at the
// same size).
#include "medgrid/bulk/export_service.h"

#include <unistd.h>

#include <algorithm>
#include <random>
#include <set>
#include <thread>

#include "boost/json.hpp"
#include "fmt/format.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/rest_path.h"
#include "medgrid/fhir/validator.h"
#include "medgrid/search/date_range.h"
#include "medgrid/search/query.h"

namespace medgrid::bulk {
namespace json = boost::json;
namespace {

using Ms = std::chrono::milliseconds;

absl::Status BadRequest(std::string_view message) {
  return core::Error(absl::StatusCode::kInvalidArgument, message).Http(400);
}

std::string RandomId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

std::string OwnerName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}/{}/{}", host, getpid(), RandomId().substr(0, 8));
}

std::string Str(const json::value* v) { return v != nullptr && v->is_string() ? std::string(v->get_string()) : ""; }

bool IsNdjson(std::string_view f) {
  return f == "application/fhir+ndjson" || f == "application/ndjson" || f == "ndjson";
}

std::string FileName(const std::string& type, int64_t part) { return core::StrCat(type, "-", part, ".ndjson"); }

std::string Prefix(const std::string& tenant, const std::string& job) { return core::StrCat(tenant, "/", job, "/"); }

// The result parameters a _typeFilter may not use: it selects, it does not shape.
absl::Status CheckFilterShape(const search::SearchRequest& r, const std::string& filter) {
  if (!r.sort.empty() || !r.includes.empty() || r.total || !r.elements.empty() ||
      r.summary != search::Summary::kFalse || !r.cursor.empty()) {
    return BadRequest(core::StrCat("_typeFilter '", filter,
                                   "': only search criteria are allowed (no _sort, _include, _total, _summary, "
                                   "_elements, _count or _cursor)"));
  }
  return absl::OkStatus();
}

}  // namespace

// A job as the worker carries it out: the kick-off and the checkpoint.
struct ExportService::Job {
  store::ExportJobRecord record;
  std::string level;
  std::vector<std::string> types;
  std::optional<core::TimePoint> since;
  std::map<std::string, std::string> filters;  // type -> query
  std::vector<std::string> patients;           // group members
  // Checkpoint.
  int64_t type_index = 0;
  std::string after;   // last id of the last committed part of the current type
  std::string cursor;  // _typeFilter: the search cursor of the page holding `after`
  int64_t part = 0;    // the next part number of the current type
  int64_t written = 0;
  json::array output;  // {type, name, count}

  std::string State() const {
    json::object o{{"t", type_index}, {"after", after}, {"cursor", cursor},
                   {"part", part},    {"written", written}, {"output", output}};
    return json::serialize(o);
  }
};

ExportService::ExportService(ExportConfig config, store::Store& store, const engine::FhirEngine& engine,
                             const fhir::StructureRegistry& structures, const fhir::CompartmentRegistry& compartments,
                             ObjectStore& objects, const core::Clock& clock)
    : config_(config),
      store_(store),
      engine_(engine),
      structures_(structures),
      compartments_(compartments),
      objects_(objects),
      clock_(clock),
      owner_(OwnerName()),
      worker_([this] { return Step(); }) {}

ExportService::~ExportService() { Stop(); }

void ExportService::Start() {
  stopping_ = false;
  worker_.Start();
}

void ExportService::Stop() {
  stopping_ = true;
  worker_.Stop();
}

absl::StatusOr<std::string> ExportService::KickOff(const KickOffRequest& req) {
  ASSIGN_OR_RETURN(store::TenantInfo tenant, store_.Tenant(req.tenant));
  (void)tenant;
  if (access_) RETURN_IF_ERROR(access_(req.tenant, req.level));
  bool async = false;
  for (std::string_view part : core::StrSplit(req.prefer, ',')) {
    for (std::string_view token : core::StrSplit(part, ';')) {
      while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
      while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
      if (token == "respond-async") async = true;
    }
  }
  if (!async) return BadRequest("$export requires the header 'Prefer: respond-async'");

  // The types this level may export.
  std::set<std::string> allowed;
  for (const std::string& t : structures_.ResourceTypes()) {
    if (t == "Resource" || t == "DomainResource") continue;
    if (req.level != "system" && t != "Patient" && compartments_.Params("Patient", t).empty()) continue;
    allowed.insert(t);
  }
  std::vector<std::string> types;
  std::set<std::string> seen;
  std::map<std::string, std::string> filters;
  std::optional<int64_t> since;
  for (const auto& [k, v] : req.params) {
    if (k == "_outputFormat") {
      if (!IsNdjson(v)) {
        return BadRequest(core::StrCat("_outputFormat '", v,
                                       "' is not supported; use application/fhir+ndjson, application/ndjson or ndjson"));
      }
    } else if (k == "_since") {
      std::optional<search::DateRange> range = search::ParseDateRange(v);
      if (!range || v.size() < 10 || !fhir::IsValidDateTime(v)) {
        return BadRequest(core::StrCat("_since '", v, "' is not a FHIR instant such as 2026-01-01T00:00:00Z"));
      }
      since = range->lo;
    } else if (k == "_type") {
      for (std::string_view t : core::StrSplit(v, ',')) {
        std::string type(t);
        if (!structures_.IsResourceType(type) || type == "Resource" || type == "DomainResource") {
          return BadRequest(core::StrCat("_type: '", type, "' is not a resource type"));
        }
        if (!allowed.contains(type)) {
          return BadRequest(core::StrCat("_type: '", type, "' is not in the Patient compartment"));
        }
        if (seen.insert(type).second) types.push_back(type);
      }
    } else if (k == "_typeFilter") {
      const std::size_t q = v.find('?');
      const std::string type = v.substr(0, q);
      if (q == std::string::npos || !structures_.IsResourceType(type)) {
        return BadRequest(core::StrCat("_typeFilter '", v, "' must be a search such as Observation?code=1234-5"));
      }
      if (!allowed.contains(type)) return BadRequest(core::StrCat("_typeFilter: '", type, "' cannot be exported here"));
      if (filters.contains(type)) {
        return BadRequest(core::StrCat("_typeFilter: only one filter per type is supported (", type, ")"));
      }
      std::optional<std::vector<std::pair<std::string, std::string>>> params = fhir::DecodeQuery(v.substr(q + 1));
      if (!params) return BadRequest(core::StrCat("_typeFilter '", v, "' is not a valid query"));
      absl::StatusOr<search::SearchRequest> parsed =
          search::ParseSearch(*params, type, *engine_.ParamsFor(req.tenant), structures_, /*lenient=*/false);
      if (!parsed.ok()) return BadRequest(core::StrCat("_typeFilter '", v, "': ", std::string(parsed.status().message())));
      RETURN_IF_ERROR(CheckFilterShape(*parsed, v));
      filters[type] = v.substr(q + 1);
    } else {
      return BadRequest(core::StrCat("Parameter '", k, "' is not supported by $export"));
    }
  }
  if (!types.empty()) {
    for (const auto& [type, q] : filters) {
      if (!seen.contains(type)) return BadRequest(core::StrCat("_typeFilter names '", type, "', which _type leaves out"));
    }
  } else {
    types.assign(allowed.begin(), allowed.end());
  }

  json::array patients;
  if (req.level == "group") {
    if (!fhir::IsValidId(req.group_id)) return core::Error(absl::StatusCode::kNotFound, "No such Group").Http(404);
    ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(req.tenant));
    ASSIGN_OR_RETURN(store::ResourceVersion group, shard->Read({req.tenant, "Group", req.group_id}));
    if (group.deleted) return core::Error(absl::StatusCode::kNotFound, "Group was deleted").Http(410);
    ASSIGN_OR_RETURN(json::value body, fhir::ParseJson(group.body));
    std::set<std::string> members;
    if (const json::value* m = body.as_object().if_contains("member"); m != nullptr && m->is_array()) {
      for (const json::value& member : m->get_array()) {
        const json::object* mo = member.if_object();
        const json::value* entity = mo ? mo->if_contains("entity") : nullptr;
        std::string ref = entity && entity->is_object() ? Str(entity->get_object().if_contains("reference")) : "";
        if (ref.rfind("Patient/", 0) != 0) continue;
        ref = ref.substr(8);
        ref = ref.substr(0, ref.find('/'));
        if (fhir::IsValidId(ref)) members.insert(ref);
      }
    }
    for (const std::string& p : members) patients.emplace_back(p);
  }

  json::object filter_obj;
  for (const auto& [type, q] : filters) filter_obj[type] = q;
  json::array type_arr;
  for (const std::string& t : types) type_arr.emplace_back(t);
  json::object request{{"level", req.level}, {"group", req.group_id},   {"types", type_arr},
                       {"filters", filter_obj}, {"patients", patients}, {"request", req.request_url}};
  if (since) request["since"] = *since;
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(req.tenant));
  const std::string id = RandomId();
  ASSIGN_OR_RETURN(store::ExportJobRecord record,
                   shard->Exports().Create(req.tenant, id, json::serialize(request), clock_.Now()));
  core::Log(core::LogLevel::kInfo, "export.kickoff",
            {{"tenant", req.tenant}, {"job", id}, {"level", req.level}, {"types", std::to_string(types.size())}});
  if (kickoff_hook_) kickoff_hook_({req.tenant, id, req.level, req.group_id, req.request_url});
  worker_.Wake();
  return record.id;
}

absl::StatusOr<ExportStatus> ExportService::Status(const std::string& tenant, const std::string& job_id,
                                                   const std::string& base_url) {
  if (access_) RETURN_IF_ERROR(access_(tenant, "status"));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(store::ExportJobRecord job, shard->Exports().Get(tenant, job_id));
  ExportStatus out;
  if (job.expires && *job.expires <= clock_.Now()) {
    return core::Error(absl::StatusCode::kNotFound, "This export has expired").Http(410);
  }
  ASSIGN_OR_RETURN(json::value request, fhir::ParseJson(job.request));
  ASSIGN_OR_RETURN(json::value state_v, fhir::ParseJson(job.state));
  const json::object& state = state_v.as_object();
  if (job.status == "failed") {
    out.state = ExportStatus::State::kFailed;
    out.error = job.error;
    return out;
  }
  if (job.status == "running") {
    const int64_t types = static_cast<int64_t>(request.at("types").as_array().size());
    const json::value* t = state.if_contains("t");
    const json::value* written = state.if_contains("written");
    const int64_t index = t != nullptr ? t->to_number<int64_t>() : 0;
    out.progress = core::StrCat(std::min(index, types), " of ", types, " types done, ",
                                written != nullptr ? written->to_number<int64_t>() : 0, " resources written");
    return out;
  }
  out.state = ExportStatus::State::kDone;
  out.expires = job.expires.value_or(clock_.Now());
  json::array output;
  if (const json::value* o = state.if_contains("output"); o != nullptr && o->is_array()) {
    for (const json::value& f : o->get_array()) {
      const json::object& fo = f.as_object();
      output.push_back(json::object{{"type", fo.at("type")},
                                    {"url", core::StrCat(base_url, "/$export-file/", job_id, "/", Str(&fo.at("name")))},
                                    {"count", fo.at("count")}});
    }
  }
  json::object manifest{{"transactionTime", core::FormatInstant(job.transaction_time)},
                        {"request", request.at("request")},
                        {"requiresAccessToken", false},
                        {"output", output},
                        {"error", json::array()}};
  out.manifest = json::serialize(manifest);
  return out;
}

absl::Status ExportService::Cancel(const std::string& tenant, const std::string& job_id) {
  if (access_) RETURN_IF_ERROR(access_(tenant, "cancel"));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  RETURN_IF_ERROR(shard->Exports().Delete(tenant, job_id));
  // The job is cancelled now. A worker still on it may be writing a file
  // while its directory is removed here (which then fails as not empty);
  // it finds the job gone at its next checkpoint and removes what is left.
  absl::Status removed = objects_.DeletePrefix(Prefix(tenant, job_id));
  core::Log(core::LogLevel::kInfo, "export.cancelled",
            {{"tenant", tenant}, {"job", job_id}, {"files", removed.ok() ? "removed" : "left to the worker"}});
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ObjectReader>> ExportService::OpenFile(const std::string& tenant,
                                                                      const std::string& job_id,
                                                                      const std::string& name) {
  if (access_) RETURN_IF_ERROR(access_(tenant, "file"));
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(store::ExportJobRecord job, shard->Exports().Get(tenant, job_id));
  if (job.expires && *job.expires <= clock_.Now()) {
    return core::Error(absl::StatusCode::kNotFound, "This export has expired").Http(410);
  }
  bool listed = false;
  if (job.status == "done") {
    ASSIGN_OR_RETURN(json::value state, fhir::ParseJson(job.state));
    if (const json::value* o = state.as_object().if_contains("output"); o != nullptr && o->is_array()) {
      for (const json::value& f : o->get_array()) listed = listed || Str(f.as_object().if_contains("name")) == name;
    }
  }
  if (!listed) return core::Error(absl::StatusCode::kNotFound, "No such export file").Http(404);
  return objects_.OpenReader(Prefix(tenant, job_id) + name);
}

std::optional<Ms> ExportService::Step() {
  if (stopping_) return std::nullopt;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_cleanup_ >= config_.cleanup_every) {
    last_cleanup_ = now;
    Cleanup();
  }
  bool worked = false;
  for (store::ResourceStore* shard : store_.AllShards()) {
    if (stopping_) return std::nullopt;
    absl::StatusOr<std::optional<store::ExportJobRecord>> claimed = shard->Exports().Claim(owner_, config_.lease);
    if (!claimed.ok()) {
      core::Log(core::LogLevel::kWarn, "export.claim_failed", {{"reason", std::string(claimed.status().message())}});
      continue;
    }
    if (!*claimed) continue;
    worked = true;
    Run(shard->Exports(), **claimed);
  }
  return worked ? Ms(0) : config_.idle_poll;
}

void ExportService::Cleanup() {
  for (store::ResourceStore* shard : store_.AllShards()) {
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> expired =
        shard->Exports().DeleteExpired(clock_.Now());
    if (!expired.ok()) {
      core::Log(core::LogLevel::kWarn, "export.cleanup_failed", {{"reason", std::string(expired.status().message())}});
      continue;
    }
    for (const auto& [tenant, job] : *expired) {
      absl::Status st = objects_.DeletePrefix(Prefix(tenant, job));
      core::Log(st.ok() ? core::LogLevel::kInfo : core::LogLevel::kWarn, "export.expired",
                {{"tenant", tenant}, {"job", job}, {"reason", std::string(st.message())}});
    }
  }
}

void ExportService::Run(store::ExportJobStore& jobs, const store::ExportJobRecord& record) {
  Job job;
  job.record = record;
  absl::Status parsed = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(json::value request, fhir::ParseJson(record.request));
    const json::object& r = request.as_object();
    job.level = Str(r.if_contains("level"));
    for (const json::value& t : r.at("types").as_array()) job.types.emplace_back(t.as_string());
    for (const auto& f : r.at("filters").as_object()) job.filters[std::string(f.key())] = Str(&f.value());
    for (const json::value& p : r.at("patients").as_array()) job.patients.emplace_back(p.as_string());
    if (const json::value* s = r.if_contains("since")) job.since = core::FromUnixMicros(s->to_number<int64_t>());
    ASSIGN_OR_RETURN(json::value state_v, fhir::ParseJson(record.state));
    const json::object& state = state_v.as_object();
    if (const json::value* t = state.if_contains("t")) {
      job.type_index = t->to_number<int64_t>();
      job.after = Str(state.if_contains("after"));
      job.cursor = Str(state.if_contains("cursor"));
      job.part = state.at("part").to_number<int64_t>();
      job.written = state.at("written").to_number<int64_t>();
      job.output = state.at("output").as_array();
    }
    return absl::OkStatus();
  }();
  const std::string& tenant = record.tenant;
  const std::string& id = record.id;
  absl::Status st = parsed.ok() ? RunJob(jobs, job) : parsed;
  if (st.ok()) {
    core::Log(core::LogLevel::kInfo, "export.done",
              {{"tenant", tenant}, {"job", id}, {"resources", std::to_string(job.written)},
               {"files", std::to_string(job.output.size())}});
    return;
  }
  if (absl::IsCancelled(st)) {  // Stop: the next instance goes on from the checkpoint
    (void)jobs.Release(tenant, id, owner_);
    return;
  }
  if (absl::IsAborted(st)) {  // cancelled (or taken over): drop what this run wrote
    core::Log(core::LogLevel::kInfo, "export.abandoned", {{"tenant", tenant}, {"job", id}});
    absl::StatusOr<store::ExportJobRecord> still = jobs.Get(tenant, id);
    if (!still.ok() && absl::IsNotFound(still.status())) (void)objects_.DeletePrefix(Prefix(tenant, id));
    return;
  }
  if (absl::IsInvalidArgument(st) || absl::IsFailedPrecondition(st) || absl::IsInternal(st)) {
    core::Log(core::LogLevel::kWarn, "export.failed",
              {{"tenant", tenant}, {"job", id}, {"reason", std::string(st.message())}});
    (void)jobs.Checkpoint(tenant, id, owner_, job.State(), config_.lease, "failed", std::string(st.message()),
                          clock_.Now() + config_.expiry);
    return;
  }
  // Transient (the database or the disk): the lease stays ours and the
  // job is claimed again after a pause, from its checkpoint.
  core::Log(core::LogLevel::kWarn, "export.retry", {{"tenant", tenant}, {"job", id}, {"reason", std::string(st.message())}});
  std::this_thread::sleep_for(Ms(200));
}

absl::Status ExportService::RunJob(store::ExportJobStore& jobs, Job& job) {
  const std::string& tenant = job.record.tenant;
  const std::string prefix = Prefix(tenant, job.record.id);
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  auto last_renewal = std::chrono::steady_clock::now();
  auto checkpoint = [&]() -> absl::Status {
    last_renewal = std::chrono::steady_clock::now();
    return jobs.Checkpoint(tenant, job.record.id, owner_, job.State(), config_.lease, "running", "", std::nullopt);
  };
  const int page_rows = std::max(1, config_.page_rows);
  for (; job.type_index < static_cast<int64_t>(job.types.size()); ++job.type_index) {
    const std::string& type = job.types[static_cast<std::size_t>(job.type_index)];
    store::ExportSelection sel;
    sel.tenant = tenant;
    sel.type = type;
    sel.as_of = job.record.transaction_time;
    sel.since = job.since;
    if (job.level != "system") {
      sel.patient_compartment = true;
      sel.compartment_params = compartments_.Params("Patient", type);
      sel.restrict_patients = job.level == "group";
      sel.patients = job.patients;
    }
    std::optional<search::SearchRequest> filter;
    if (auto f = job.filters.find(type); f != job.filters.end()) {
      std::optional<std::vector<std::pair<std::string, std::string>>> params = fhir::DecodeQuery(f->second);
      if (!params) return BadRequest("_typeFilter no longer parses");
      ASSIGN_OR_RETURN(filter, search::ParseSearch(*params, type, *engine_.ParamsFor(tenant), structures_, false));
      filter->count = std::min(page_rows, 1000);
    }
    std::unique_ptr<ObjectWriter> writer;
    int64_t part_lines = 0;
    std::string last_id;      // last id written to the open part
    std::string page_cursor = job.cursor;  // the search page being read
    std::string after = job.after;         // keyset position of the next page
    bool first_page = true;
    std::string line;
    auto commit_part = [&]() -> absl::Status {
      RETURN_IF_ERROR(writer->Commit());
      writer.reset();
      job.output.push_back(json::object{{"type", type}, {"name", FileName(type, job.part)}, {"count", part_lines}});
      job.after = last_id;
      job.cursor = page_cursor;
      ++job.part;
      part_lines = 0;
      return checkpoint();
    };
    for (bool more = true; more;) {
      if (stopping_) return absl::CancelledError("stopping");
      std::vector<store::ExportRow> rows;
      std::string next_cursor;
      if (filter) {
        filter->cursor = page_cursor;
        ASSIGN_OR_RETURN(store::SearchPage page, shard->Search(tenant, *filter, std::nullopt));
        std::vector<std::string> ids;
        for (const store::ResourceVersion& m : page.matches) ids.push_back(m.id);
        more = page.next_cursor.has_value();
        next_cursor = page.next_cursor.value_or("");
        if (!ids.empty()) {
          store::ExportSelection page_sel = sel;
          page_sel.ids = std::move(ids);
          // On the first page after a resume, skip what committed parts hold.
          ASSIGN_OR_RETURN(rows, shard->Exports().Page(page_sel, first_page ? job.after : "", 1000));
        }
      } else {
        ASSIGN_OR_RETURN(rows, shard->Exports().Page(sel, after, page_rows));
        more = static_cast<int>(rows.size()) == page_rows;
        if (!rows.empty()) after = rows.back().id;
      }
      first_page = false;
      for (const store::ExportRow& row : rows) {
        line.assign(row.body);
        // Stored bodies are compact JSON; a raw line break can only be
        // insignificant whitespace, which NDJSON must not have.
        std::replace(line.begin(), line.end(), '\n', ' ');
        std::replace(line.begin(), line.end(), '\r', ' ');
        line.push_back('\n');
        if (writer && writer->size() > 0 && writer->size() + line.size() > config_.max_file_bytes) {
          RETURN_IF_ERROR(commit_part());
        }
        if (!writer) {
          ASSIGN_OR_RETURN(writer, objects_.OpenWriter(prefix + FileName(type, job.part)));
        }
        RETURN_IF_ERROR(writer->Append(line));
        last_id = row.id;
        ++part_lines;
        ++job.written;
      }
      if (filter) page_cursor = next_cursor;
      if (std::chrono::steady_clock::now() - last_renewal > config_.lease / 3) {
        // Renew the lease with the last checkpoint (nothing newer is safe
        // to record before its part is committed).
        Job committed = job;
        committed.written -= part_lines;
        RETURN_IF_ERROR(jobs.Checkpoint(tenant, job.record.id, owner_, committed.State(), config_.lease, "running",
                                        "", std::nullopt));
        last_renewal = std::chrono::steady_clock::now();
      }
      if (config_.page_pause.count() > 0) std::this_thread::sleep_for(config_.page_pause);
    }
    if (writer) RETURN_IF_ERROR(commit_part());
    job.after.clear();
    job.cursor.clear();
    job.part = 0;
    if (part_lines > 0 || !job.output.empty()) {
      // Record the end of a type that wrote something; empty types are
      // cheap to look at again after a resume.
      Job next = job;
      ++next.type_index;
      RETURN_IF_ERROR(jobs.Checkpoint(tenant, job.record.id, owner_, next.State(), config_.lease, "running", "",
                                      std::nullopt));
      last_renewal = std::chrono::steady_clock::now();
    }
  }
  return jobs.Checkpoint(tenant, job.record.id, owner_, job.State(), config_.lease, "done", "",
                         clock_.Now() + config_.expiry);
}

}  // namespace medgrid::bulk
