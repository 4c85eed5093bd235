#include "medgrid/cache/hot_spot.h"

#include <algorithm>
#include <cmath>
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
    const double qps = types_.Qps(t);
    const std::optional<double> baseline = LearnBaseline(t, qps, now);
    if (!baseline || *baseline <= 0) continue;
    Update(HotSpotKind::kResourceType, t, qps, config_.type_baseline_factor * *baseline, now);
  }
  // Learned baselines of types that left the sketch go with them.
  if (learned_.size() > 2 * k) {
    for (auto it = learned_.begin(); it != learned_.end();) {
      if (types.contains(it->first)) {
        ++it;
      } else {
        learned_.erase(it++);
      }
    }
  }
  return HotSetLocked();
}

std::optional<double> HotSpotDetector::LearnBaseline(const std::string& type, double qps, core::TimePoint now) {
  if (type_baselines_.contains(type)) return BaselineLocked(type, now);
  auto [it, inserted] = learned_.try_emplace(type, Learned{qps, now, now});
  Learned& b = it->second;
  const bool hot = hot_.contains(std::make_pair(HotSpotKind::kResourceType, type));
  if (!inserted && !hot && now > b.updated) {
    const double dt = std::chrono::duration<double>(now - b.updated).count();
    const double seen = std::chrono::duration<double>(now - b.first_seen).count();
    const double warmup = std::chrono::duration<double>(config_.type_baseline_warmup).count();
    const double tau = std::chrono::duration<double>(config_.type_baseline_time_constant).count();
    // The mean over the warm-up weighs each evaluation by the time it
    // covers; after it, older traffic fades with the time constant.
    const double weight = seen <= warmup ? dt / seen : 1 - std::exp(-dt / tau);
    b.qps += weight * (qps - b.qps);
  }
  b.updated = now;
  return BaselineLocked(type, now);
}

std::optional<double> HotSpotDetector::BaselineLocked(std::string_view type, core::TimePoint now) const {
  if (auto set = type_baselines_.find(type); set != type_baselines_.end()) return set->second;
  auto it = learned_.find(type);
  if (it == learned_.end() || now - it->second.first_seen < config_.type_baseline_warmup) return std::nullopt;
  return std::max(it->second.qps, config_.type_min_baseline_qps);
}

std::optional<double> HotSpotDetector::TypeBaseline(std::string_view resource_type) const {
  const core::TimePoint now = clock_.Now();
  std::lock_guard lock(mu_);
  return BaselineLocked(resource_type, now);
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
