// A tenant's own search parameters (its SearchParameter resources) and the
// online reindex that applies them to resources stored before they existed.
#include "internal.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/engine/fhir_engine.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/subscription.h"

namespace medgrid::engine {
namespace json = boost::json;

namespace {

constexpr auto kParamsTtl = std::chrono::seconds(30);
constexpr int kMaxCustomParams = 1000;

}  // namespace

namespace {
thread_local ParamsPin* pinned_params = nullptr;
}  // namespace

ParamsPin::ParamsPin(std::string tenant, std::shared_ptr<const fhir::SearchParamRegistry> params)
    : previous_(pinned_params), tenant_(std::move(tenant)), params_(std::move(params)) {
  pinned_params = this;
}

ParamsPin::~ParamsPin() { pinned_params = previous_; }

std::shared_ptr<const fhir::SearchParamRegistry> ParamsPin::Find(const std::string& tenant) {
  for (const ParamsPin* p = pinned_params; p != nullptr; p = p->previous_) {
    if (p->tenant_ == tenant) return p->params_;
  }
  return nullptr;
}

std::shared_ptr<const fhir::SearchParamRegistry> FhirEngine::ParamsFor(const std::string& tenant) const {
  if (auto pinned = ParamsPin::Find(tenant)) return pinned;
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(params_mu_);
    auto it = params_.find(tenant);
    if (it != params_.end() && now - it->second.loaded < kParamsTtl) return it->second.registry;
  }
  // The standard registry, shared without ownership.
  std::shared_ptr<const fhir::SearchParamRegistry> standard(std::shared_ptr<void>(), &search_params_);
  auto shard = store_.ForTenant(tenant);
  if (!shard.ok()) return standard;  // an unknown tenant: the request fails elsewhere
  search::SearchRequest all;
  all.type = "SearchParameter";
  all.count = kMaxCustomParams;
  absl::StatusOr<store::SearchPage> page = (*shard)->Search(tenant, all, std::nullopt);
  if (!page.ok()) {
    core::Log(core::LogLevel::kWarn, "search_params.load_failed",
              {{"tenant", tenant}, {"reason", std::string(page.status().message())}});
    return standard;
  }
  if (page->next_cursor) {
    core::Log(core::LogLevel::kWarn, "search_params.too_many",
              {{"tenant", tenant}, {"used", std::to_string(kMaxCustomParams)}});
  }
  std::vector<std::unique_ptr<const fhir::SearchParamDef>> custom;
  for (const store::ResourceVersion& v : page->matches) {
    absl::StatusOr<json::value> resource = fhir::ParseJson(v.body);
    if (!resource.ok() || !resource->is_object()) continue;
    const json::value* status = resource->get_object().if_contains("status");
    if (status != nullptr && status->is_string() && status->get_string() == "retired") continue;
    absl::StatusOr<std::unique_ptr<const fhir::SearchParamDef>> def =
        search_params_.CustomDef(resource->get_object(), registry_);
    if (!def.ok()) {
      // Written before a rule it breaks existed; it stays stored, unused.
      core::Log(core::LogLevel::kWarn, "search_params.unusable",
                {{"tenant", tenant}, {"id", v.id}, {"reason", std::string(def.status().message())}});
      continue;
    }
    custom.push_back(*std::move(def));
  }
  std::shared_ptr<const fhir::SearchParamRegistry> registry = standard;
  if (!custom.empty()) {
    absl::StatusOr<std::unique_ptr<const fhir::SearchParamRegistry>> extended =
        search_params_.Extend(std::move(custom), registry_);
    if (extended.ok()) registry = std::shared_ptr<const fhir::SearchParamRegistry>(*std::move(extended));
  }
  std::lock_guard lock(params_mu_);
  params_[tenant] = TenantParams{registry, now};
  return registry;
}

void FhirEngine::InvalidateParams(const std::string& tenant) const {
  std::lock_guard lock(params_mu_);
  params_.erase(tenant);
}

absl::Status FhirEngine::CheckSearchParameter(const std::string& tenant, const json::value& resource) const {
  const json::object& o = resource.get_object();
  const json::value* type = o.if_contains("resourceType");
  if (type == nullptr || !type->is_string() || type->get_string() != "SearchParameter") return absl::OkStatus();
  const json::value* status = o.if_contains("status");
  if (status != nullptr && status->is_string() && status->get_string() == "retired") return absl::OkStatus();
  // Checked against the tenant's parameters, so a code clash with another
  // of its own is caught too.
  return ParamsFor(tenant)->CustomDef(o, registry_).status();
}

absl::Status FhirEngine::CheckSubscription(const std::string& tenant, const json::value& resource,
                                           int http_status) const {
  const json::value* type = resource.get_object().if_contains("resourceType");
  if (type == nullptr || !type->is_string() || type->get_string() != "Subscription") return absl::OkStatus();
  auto invalid = [&](const absl::Status& s) {
    return core::Error(absl::StatusCode::kInvalidArgument, std::string(s.message()))
        .Http(http_status)
        .Issue(core::IssueCodeOf(s).value_or("invalid"))
        .Path("Subscription.criteria");
  };
  absl::StatusOr<fhir::SubscriptionSpec> spec = fhir::ParseSubscription(resource);
  if (!spec.ok()) {
    if (http_status == 400) return spec.status();
    return core::Error(absl::StatusCode::kInvalidArgument, std::string(spec.status().message()))
        .Http(http_status)
        .Issue(core::IssueCodeOf(spec.status()).value_or("invalid"));
  }
  if (!registry_.IsResourceType(spec->criteria_type)) {
    return invalid(absl::InvalidArgumentError(
        core::StrCat("Subscription.criteria: unknown resource type '", spec->criteria_type, "'")));
  }
  // The same parser as a search, with the tenant's own parameters, so the
  // criteria are exactly what the notification check will run.
  absl::Status parsed =
      search::ParseSearch(spec->criteria_params, spec->criteria_type, *ParamsFor(tenant), registry_, false).status();
  if (!parsed.ok()) return invalid(absl::InvalidArgumentError(core::StrCat("Subscription.criteria: ", std::string(parsed.message()))));
  return absl::OkStatus();
}

store::IndexFn FhirEngine::IndexerFor(const std::string& tenant) const {
  std::shared_ptr<const fhir::SearchParamRegistry> params = ParamsFor(tenant);
  return [params](const std::string& type, const std::string& body) -> absl::StatusOr<search::IndexEntries> {
    ASSIGN_OR_RETURN(json::value resource, fhir::ParseJson(body));
    return search::ExtractIndex(resource, type, *params);
  };
}

namespace {

void AppendJob(std::string& out, const store::ReindexJob& job) {
  const double elapsed =
      std::chrono::duration<double>((job.finished ? *job.finished : job.updated) - job.created).count();
  const double rate = elapsed > 0 ? static_cast<double>(job.processed) / elapsed : 0;
  core::StrAppend(out, R"({"name":"job","part":[{"name":"id","valueString":")", job.id,
                  R"("},{"name":"status","valueCode":")", job.status, R"("},{"name":"types","valueString":")");
  std::string types;
  for (const std::string& t : job.types) core::StrAppend(types, types.empty() ? "" : ",", t);
  core::AppendJsonEscaped(out, types.empty() ? "*" : types);
  core::StrAppend(out, R"("},{"name":"processed","valueInteger":)", job.processed,
                  R"(},{"name":"total","valueInteger":)", job.total, R"(},{"name":"started","valueInstant":")",
                  core::FormatInstant(job.created), R"("},{"name":"updated","valueInstant":")",
                  core::FormatInstant(job.updated), "\"}");
  if (job.finished) {
    core::StrAppend(out, R"(,{"name":"finished","valueInstant":")", core::FormatInstant(*job.finished), "\"}");
  }
  core::StrAppend(out, R"(,{"name":"ratePerSecond","valueDecimal":)", static_cast<int64_t>(rate), "}");
  if (job.status == "running" && rate > 0) {
    const int64_t left = std::max<int64_t>(job.total - job.processed, 0);
    core::StrAppend(out, R"(,{"name":"etaSeconds","valueInteger":)", static_cast<int64_t>(left / rate), "}");
  }
  if (!job.error.empty()) {
    out += R"(,{"name":"error","valueString":")";
    core::AppendJsonEscaped(out, job.error);
    out += "\"}";
  }
  out += "]}";
}

}  // namespace

absl::StatusOr<std::string> FhirEngine::StartReindex(const std::string& tenant,
                                                     const std::vector<std::string>& types) {
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  for (const std::string& t : types) RETURN_IF_ERROR(CheckType(t));
  ASSIGN_OR_RETURN(store::ReindexJob job, shard->StartReindex(tenant, types));
  core::Log(core::LogLevel::kInfo, "reindex.started",
            {{"tenant", tenant}, {"job", std::to_string(job.id)}, {"total", std::to_string(job.total)}});
  std::string out = R"({"resourceType":"Parameters","parameter":[)";
  AppendJob(out, job);
  return out + "]}";
}

absl::StatusOr<std::string> FhirEngine::ReindexStatus(const std::string& tenant) {
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  ASSIGN_OR_RETURN(std::vector<store::ReindexJob> jobs, shard->ReindexJobs(tenant));
  std::string out = R"({"resourceType":"Parameters","parameter":[)";
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (i > 0) out += ',';
    AppendJob(out, jobs[i]);
  }
  return out + "]}";
}

}  // namespace medgrid::engine
