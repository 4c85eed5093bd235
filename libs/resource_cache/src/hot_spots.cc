#include "medgrid/resource_cache/hot_spots.h"

#include <charconv>

#include "boost/json.hpp"
#include "fmt/format.h"
#include "medgrid/cache/l1_cache.h"
#include "medgrid/cache/rate_limiter.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace medgrid::resource_cache {
namespace json = boost::json;

namespace {

std::string_view KindName(cache::HotSpotKind kind) {
  switch (kind) {
    case cache::HotSpotKind::kPatient: return "patient";
    case cache::HotSpotKind::kTenant: return "tenant";
    case cache::HotSpotKind::kResourceType: return "resource_type";
  }
  return "unknown";
}

std::string_view CoalescingName(Coalescing c) {
  switch (c) {
    case Coalescing::kOff: return "off";
    case Coalescing::kHot: return "hot";
    case Coalescing::kAlways: return "always";
  }
  return "hot";
}

}  // namespace

bool SplitCacheKey(std::string_view key, std::string& tenant, std::string& rest) {
  const size_t colon = key.find(':');
  if (colon == std::string_view::npos) return false;
  size_t len = 0;
  auto [ptr, ec] = std::from_chars(key.data(), key.data() + colon, len);
  if (ec != std::errc() || ptr != key.data() + colon || colon + 1 + len >= key.size() ||
      key[colon + 1 + len] != '|') {
    return false;
  }
  tenant = std::string(key.substr(colon + 1, len));
  rest = std::string(key.substr(colon + 2 + len));
  return true;
}

HotSpots::HotSpots(HotSpotsConfig config, const core::Clock& clock, std::shared_ptr<cache::RedisClient> redis,
                   const std::string& redis_prefix, prometheus::Registry* metrics)
    : config_(std::move(config)),
      clock_(clock),
      detector_(clock, config_.detector),
      snapshot_(std::make_shared<const Snapshot>()) {
  if (config_.patient_rps > 0) {
    resilience::TokenBucketSettings limit;
    limit.rate_per_second = config_.patient_rps;
    limit.burst = config_.patient_burst > 0 ? config_.patient_burst : 2 * config_.patient_rps;
    patient_limit_ = std::make_unique<cache::RateLimiter>(limit, std::move(redis), redis_prefix, clock);
  }
  if (metrics != nullptr) {
    active_ = &prometheus::BuildGauge()
                   .Name("medgrid_hotspot_active")
                   .Help("Entities in hot-spot mode now, by kind (patient, tenant, resource_type)")
                   .Register(*metrics);
    for (auto kind : {cache::HotSpotKind::kPatient, cache::HotSpotKind::kTenant, cache::HotSpotKind::kResourceType}) {
      active_->Add({{"kind", std::string(KindName(kind))}}).Set(0);
    }
    throttled_family_ = &prometheus::BuildCounter()
                             .Name("medgrid_hotspot_throttled_total")
                             .Help("Requests refused (429) by the per-patient limit of a hot patient")
                             .Register(*metrics);
    throttled_family_->Add({});
  }
}

HotSpots::~HotSpots() { Stop(); }

void HotSpots::Start() {
  if (worker_) return;
  worker_ = std::make_unique<core::Worker>([this] {
    Evaluate();
    return std::optional<std::chrono::milliseconds>(config_.evaluate_every);
  });
  worker_->Start();
}

void HotSpots::Stop() {
  if (worker_) worker_->Stop();
}

void HotSpots::Record(std::string_view tenant, std::string_view type, std::string_view patient) {
  detector_.Record(tenant, type, patient);
}

std::shared_ptr<const HotSpots::Snapshot> HotSpots::Current() const {
  absl::ReaderMutexLock lock(&mu_);
  return snapshot_;
}

bool HotSpots::PatientHot(std::string_view tenant, std::string_view patient) const {
  if (patient.empty() || !any_hot_.load(std::memory_order_acquire)) return false;
  return Current()->patients.contains(cache::CacheKey(tenant, "Patient", patient));
}

bool HotSpots::Coalesce(std::string_view tenant, std::string_view type, std::string_view patient) const {
  switch (config_.coalescing) {
    case Coalescing::kOff: return false;
    case Coalescing::kAlways: return true;
    case Coalescing::kHot: break;
  }
  if (!any_hot_.load(std::memory_order_acquire)) return false;
  std::shared_ptr<const Snapshot> s = Current();
  if (s->tenants.contains(absl::string_view(tenant.data(), tenant.size())) ||
      s->types.contains(absl::string_view(type.data(), type.size()))) return true;
  return !patient.empty() && s->patients.contains(cache::CacheKey(tenant, "Patient", patient));
}

absl::Status HotSpots::Admit(std::string_view tenant, std::string_view patient) {
  if (patient_limit_ == nullptr || !PatientHot(tenant, patient)) return absl::OkStatus();
  const resilience::TokenBucket::Decision d =
      patient_limit_->Acquire(core::StrCat("patient:", cache::CacheKey(tenant, "Patient", patient)));
  if (d.allowed) return absl::OkStatus();
  throttled_.fetch_add(1, std::memory_order_relaxed);
  if (throttled_family_ != nullptr) throttled_family_->Add({}).Increment();
  const int64_t seconds = std::max<int64_t>(1, (d.retry_after.count() + 999999) / 1000000);
  return core::Error(absl::StatusCode::kResourceExhausted,
                     fmt::format("Patient/{} is a hot spot and its request rate limit ({} per second) is "
                                 "exceeded; retry after {} s",
                                 patient, patient_limit_->limit().rate_per_second, seconds))
      .Http(429)
      .Issue("throttled")
      .RetryAfter(seconds);
}

std::vector<cache::HotSpot> HotSpots::Evaluate() {
  std::vector<cache::HotSpot> spots = detector_.Evaluate();
  auto next = std::make_shared<Snapshot>();
  int counts[3] = {0, 0, 0};
  for (const cache::HotSpot& h : spots) {
    switch (h.kind) {
      case cache::HotSpotKind::kPatient: next->patients.insert(h.key); ++counts[0]; break;
      case cache::HotSpotKind::kTenant: next->tenants.insert(h.key); ++counts[1]; break;
      case cache::HotSpotKind::kResourceType: next->types.insert(h.key); ++counts[2]; break;
    }
  }
  next->spots = spots;
  std::shared_ptr<const Snapshot> previous;
  {
    absl::MutexLock lock(&mu_);
    previous = std::move(snapshot_);
    snapshot_ = next;
  }
  any_hot_.store(!spots.empty(), std::memory_order_release);
  // Entering and leaving hot-spot mode are logged (ids only).
  for (const cache::HotSpot& h : spots) {
    const bool was = h.kind == cache::HotSpotKind::kPatient        ? previous->patients.contains(h.key)
                     : h.kind == cache::HotSpotKind::kTenant       ? previous->tenants.contains(h.key)
                                                                   : previous->types.contains(h.key);
    if (!was) {
      core::Log(core::LogLevel::kWarn, "hotspot.on",
                {{"kind", std::string(KindName(h.kind))}, {"key", h.key}, {"value", fmt::format("{:.2f}", h.value)},
                 {"threshold", fmt::format("{:.2f}", h.threshold)}});
    }
  }
  for (const cache::HotSpot& h : previous->spots) {
    const bool still = h.kind == cache::HotSpotKind::kPatient  ? next->patients.contains(h.key)
                       : h.kind == cache::HotSpotKind::kTenant ? next->tenants.contains(h.key)
                                                               : next->types.contains(h.key);
    if (!still) core::Log(core::LogLevel::kInfo, "hotspot.off", {{"kind", std::string(KindName(h.kind))}, {"key", h.key}});
  }
  if (active_ != nullptr) {
    active_->Add({{"kind", "patient"}}).Set(counts[0]);
    active_->Add({{"kind", "tenant"}}).Set(counts[1]);
    active_->Add({{"kind", "resource_type"}}).Set(counts[2]);
  }
  return spots;
}

std::string HotSpots::ToJson() const {
  std::shared_ptr<const Snapshot> s = Current();
  json::array patients, tenants, types;
  for (const cache::HotSpot& h : s->spots) {
    const std::string since = core::FormatInstant(h.since);
    switch (h.kind) {
      case cache::HotSpotKind::kPatient: {
        std::string tenant, rest;
        if (!SplitCacheKey(h.key, tenant, rest)) continue;
        const std::string_view id = std::string_view(rest).substr(rest.find('/') + 1);
        patients.push_back(json::object{
            {"tenant", tenant}, {"id", id}, {"qps", h.value}, {"threshold", h.threshold}, {"since", since}});
        break;
      }
      case cache::HotSpotKind::kTenant:
        tenants.push_back(
            json::object{{"tenant", h.key}, {"share", h.value}, {"threshold", h.threshold}, {"since", since}});
        break;
      case cache::HotSpotKind::kResourceType:
        types.push_back(
            json::object{{"type", h.key}, {"qps", h.value}, {"threshold", h.threshold}, {"since", since}});
        break;
    }
  }
  json::object o{{"coalescing", CoalescingName(config_.coalescing)},
                 {"patientRateLimit", config_.patient_rps},
                 {"patients", std::move(patients)},
                 {"tenants", std::move(tenants)},
                 {"types", std::move(types)}};
  return json::serialize(o);
}

}  // namespace medgrid::resource_cache
