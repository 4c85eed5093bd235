#include "medgrid/cache/hot_spot.h"

#include <algorithm>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "medgrid/cache/l1_cache.h"

namespace medgrid::cache {

HotSpotDetector::HotSpotDetector(const core::Clock& clock, HotSpotConfig config)
    : clock_(clock),
      config_(config),
      patients_(clock, config.window),
      tenants_(clock, config.window),
      types_(clock, config.window) {}

void HotSpotDetector::Record(std::string_view tenant, std::string_view resource_type,
                             std::string_view patient_id, uint64_t weight) {
  tenants_.Add(tenant, weight);
  types_.Add(resource_type, weight);
  // Patient ids are only unique within a tenant.
  if (!patient_id.empty()) patients_.Add(CacheKey(tenant, "Patient", patient_id), weight);
}

void HotSpotDetector::SetTypeBaseline(std::string_view resource_type, double qps) {
  std::lock_guard lock(mu_);
  type_baselines_[std::string(resource_type)] = qps;
}

void HotSpotDetector::Update(HotSpotKind kind, const std::string& key, double value, double threshold,
                             core::TimePoint now) {
  auto it = hot_.find(std::make_pair(kind, key));
  if (it == hot_.end()) {
    if (value > threshold) hot_.emplace(std::make_pair(kind, key), HotSpot{kind, key, value, threshold, now});
    return;
  }
  if (value < threshold * config_.release_fraction && now - it->second.since >= config_.cool_down) {
    hot_.erase(it);
    return;
  }
  it->second.value = value;
  it->second.threshold = threshold;
}

std::vector<HotSpot> HotSpotDetector::Evaluate() {
  const core::TimePoint now = clock_.Now();
  const size_t k = config_.window.capacity;
  std::lock_guard lock(mu_);

  // Candidates: the sketches' heavy hitters plus whatever is hot now, so a hot
  // entity whose traffic vanished from the sketches is still released.
  absl::flat_hash_set<std::string> patients, tenants, types;
  for (auto& h : patients_.Top(k)) patients.insert(std::move(h.item));
  for (auto& h : tenants_.Top(k)) tenants.insert(std::move(h.item));
  for (auto& h : types_.Top(k)) types.insert(std::move(h.item));
  for (const auto& [id, spot] : hot_) {
    switch (id.first) {
      case HotSpotKind::kPatient: patients.insert(id.second); break;
      case HotSpotKind::kTenant: tenants.insert(id.second); break;
      case HotSpotKind::kResourceType: types.insert(id.second); break;
    }
  }

  for (const std::string& p : patients) {
    Update(HotSpotKind::kPatient, p, patients_.Qps(p), config_.patient_qps, now);
  }
  const uint64_t total = tenants_.Total();
  const bool enough_traffic = total > 0 && tenants_.TotalQps() >= config_.tenant_min_total_qps;
  for (const std::string& t : tenants) {
    const double share =
        enough_traffic ? static_cast<double>(tenants_.Estimate(t)) / static_cast<double>(total) : 0.0;
    Update(HotSpotKind::kTenant, t, share, config_.tenant_share, now);
  }
  for (const std::string& t : types) {
    auto baseline = type_baselines_.find(t);
    if (baseline == type_baselines_.end() || baseline->second <= 0) continue;
    Update(HotSpotKind::kResourceType, t, types_.Qps(t), config_.type_baseline_factor * baseline->second, now);
  }
  return HotSetLocked();
}

std::vector<HotSpot> HotSpotDetector::HotSet() const {
  std::lock_guard lock(mu_);
  return HotSetLocked();
}

std::vector<HotSpot> HotSpotDetector::HotSetLocked() const {
  std::vector<HotSpot> out;
  out.reserve(hot_.size());
  for (const auto& [id, spot] : hot_) out.push_back(spot);
  std::sort(out.begin(), out.end(), [](const HotSpot& a, const HotSpot& b) {
    return std::tie(a.kind, a.key) < std::tie(b.kind, b.key);
  });
  return out;
}

}  // namespace medgrid::cache
