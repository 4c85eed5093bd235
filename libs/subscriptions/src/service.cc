#include "medgrid/subscriptions/service.h"

#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"
#include "medgrid/search/query.h"

namespace medgrid::subscriptions {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;

constexpr const char* kSubscription = "Subscription";

bool Delivers(const fhir::SubscriptionSpec& s) { return s.status == "active" || s.status == "requested"; }

// The PUT target of a payload: [endpoint]/[type]/[id], before any query.
std::string ResourceTarget(const std::string& target, const std::string& type, const std::string& id) {
  const std::size_t q = target.find('?');
  std::string path = target.substr(0, q);
  while (!path.empty() && path.back() == '/') path.pop_back();
  std::string out = core::StrCat(path, "/", type, "/", id);
  if (q != std::string::npos) core::StrAppend(out, target.substr(q));
  return out;
}

}  // namespace

milliseconds DeliveryBackoff(int failures, const SubscriptionConfig& config) {
  milliseconds pause = config.initial_backoff;
  for (int i = 1; i < failures && pause < config.max_backoff; ++i) pause *= 2;
  return std::min(pause, config.max_backoff);
}

SubscriptionService::SubscriptionService(SubscriptionConfig config, engine::FhirEngine& engine,
                                         const fhir::StructureRegistry& structures, store::Store& store,
                                         const core::Clock& clock, prometheus::Registry& metrics)
    : config_(std::move(config)),
      engine_(engine),
      structures_(structures),
      store_(store),
      clock_(clock),
      hub_([this](const std::string& tenant, const std::string& id) {
             Spec s = Lookup(tenant, id);
             return s != nullptr && s->channel_type == "websocket" && Delivers(*s);
           },
           config_.websocket_send_timeout),
      counters_(prometheus::BuildCounter()
                    .Name("medgrid_subscription_notifications_total")
                    .Help("Subscription notifications of this process: queued, delivered, failed (deliveries that "
                          "failed, each try), dropped (undelivered: the subscription stopped), errored "
                          "(subscriptions set to error)")
                    .Register(metrics)),
      queued_(counters_.Add({{"state", "queued"}})),
      delivered_(counters_.Add({{"state", "delivered"}})),
      failed_(counters_.Add({{"state", "failed"}})),
      dropped_(counters_.Add({{"state", "dropped"}})),
      errored_(counters_.Add({{"state", "errored"}})),
      worker_([this] { return Step(); }) {}

SubscriptionService::~SubscriptionService() { Stop(); }

void SubscriptionService::Start() { worker_.Start(); }

void SubscriptionService::Stop() {
  worker_.Stop();
  hub_.Stop();
}

SubscriptionService::Stats SubscriptionService::stats() const {
  Stats s;
  s.queued = static_cast<int64_t>(queued_.Value());
  s.delivered = static_cast<int64_t>(delivered_.Value());
  s.failed = static_cast<int64_t>(failed_.Value());
  s.dropped = static_cast<int64_t>(dropped_.Value());
  s.errored = static_cast<int64_t>(errored_.Value());
  return s;
}

SubscriptionService::Spec SubscriptionService::Lookup(const std::string& tenant, const std::string& id) const {
  std::lock_guard lock(mu_);
  auto t = by_tenant_.find(tenant);
  if (t == by_tenant_.end()) return nullptr;
  auto s = t->second.find(id);
  return s == t->second.end() ? nullptr : s->second;
}

std::optional<fhir::SubscriptionSpec> SubscriptionService::Find(const std::string& tenant,
                                                                const std::string& id) const {
  Spec s = Lookup(tenant, id);
  if (!s) return std::nullopt;
  return *s;
}

SubscriptionService::Spec SubscriptionService::Install(const std::string& tenant,
                                                       const store::ResourceVersion& resource) {
  absl::StatusOr<json::value> parsed = fhir::ParseJson(resource.body);
  absl::StatusOr<fhir::SubscriptionSpec> spec =
      parsed.ok() ? fhir::ParseSubscription(*parsed) : absl::StatusOr<fhir::SubscriptionSpec>(parsed.status());
  if (!spec.ok()) {
    // Written before this server checked Subscriptions, or by hand: never
    // notified, and said so.
    core::Log(core::LogLevel::kWarn, "subscription.unusable",
              {{"tenant", tenant}, {"subscription", resource.id}, {"error", std::string(spec.status().message())}});
    Forget(tenant, resource.id);
    return nullptr;
  }
  spec->id = resource.id;
  spec->version = resource.version;
  auto shared = std::make_shared<const fhir::SubscriptionSpec>(std::move(*spec));
  std::lock_guard lock(mu_);
  by_tenant_[tenant][resource.id] = shared;
  return shared;
}

void SubscriptionService::Forget(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  auto t = by_tenant_.find(tenant);
  if (t == by_tenant_.end()) return;
  t->second.erase(id);
  if (t->second.empty()) by_tenant_.erase(t);
}

absl::Status SubscriptionService::Load() {
  ASSIGN_OR_RETURN(std::vector<store::TenantInfo> tenants, store_.ListTenants());
  std::map<store::ResourceStore*, std::vector<std::string>> by_shard;
  for (const store::TenantInfo& t : tenants) {
    absl::StatusOr<store::ResourceStore*> shard = store_.ForTenant(t.id);
    if (shard.ok()) by_shard[*shard].push_back(t.id);  // a suspended tenant is skipped
  }
  int loaded = 0;
  for (const auto& [shard, ids] : by_shard) {
    ASSIGN_OR_RETURN(auto all, shard->AllLive(ids, kSubscription));
    for (const auto& [tenant, version] : all) {
      Spec spec = Install(tenant, version);
      if (spec == nullptr) continue;
      ++loaded;
      if (spec->status == "requested") {
        if (absl::Status s = Activate(tenant, *spec); !s.ok()) {
          core::Log(core::LogLevel::kWarn, "subscription.activate_failed",
                    {{"tenant", tenant}, {"subscription", spec->id}, {"error", std::string(s.message())}});
        }
      }
    }
  }
  core::Log(core::LogLevel::kInfo, "subscriptions.loaded", {{"subscriptions", std::to_string(loaded)}});
  loaded_ = true;
  return absl::OkStatus();
}

absl::Status SubscriptionService::Activate(const std::string& tenant, const fhir::SubscriptionSpec& spec) {
  ASSIGN_OR_RETURN(engine::ResourceResult current, engine_.VRead(tenant, kSubscription, spec.id, spec.version));
  ASSIGN_OR_RETURN(json::value resource, fhir::ParseJson(current.body));
  resource.as_object()["status"] = "active";
  resource.as_object().erase("error");
  absl::StatusOr<engine::ResourceResult> updated =
      engine_.Update(tenant, kSubscription, spec.id, fhir::SerializeJson(resource), spec.version);
  // 412: it changed meanwhile, and that change comes through here too.
  if (!updated.ok() && core::HttpStatusOf(updated.status()) != 412) return updated.status();
  return absl::OkStatus();
}

absl::Status SubscriptionService::Refresh(const std::string& tenant, const std::string& id) {
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(tenant));
  absl::StatusOr<store::ResourceVersion> current = shard->Read({tenant, kSubscription, id});
  if (!current.ok() && current.status().code() != absl::StatusCode::kNotFound) return current.status();
  Spec spec = current.ok() && !current->deleted ? Install(tenant, *current) : nullptr;
  if (spec == nullptr) {
    Forget(tenant, id);
    return shard->DropNotifications(tenant, id);
  }
  if (!Delivers(*spec)) return shard->DropNotifications(tenant, id);
  if (spec->status == "requested") return Activate(tenant, *spec);
  return absl::OkStatus();
}

absl::StatusOr<bool> SubscriptionService::Matches(store::ResourceStore& shard, const std::string& tenant,
                                                  const fhir::SubscriptionSpec& spec, const std::string& id) {
  std::vector<std::pair<std::string, std::string>> params = spec.criteria_params;
  params.emplace_back("_id", id);
  absl::StatusOr<search::SearchRequest> request =
      search::ParseSearch(params, spec.criteria_type, *engine_.ParamsFor(tenant), structures_, false);
  if (!request.ok()) {
    // Criteria that parsed when written no longer do (a custom search
    // parameter of the tenant went away): nothing matches them.
    core::Log(core::LogLevel::kWarn, "subscription.criteria_invalid",
              {{"tenant", tenant}, {"subscription", spec.id}, {"error", std::string(request.status().message())}});
    return false;
  }
  // Only whether the resource is among the matches counts.
  request->count = 1;
  request->total.reset();
  request->summary = search::Summary::kFalse;
  request->sort.clear();
  request->includes.clear();
  request->elements.clear();
  request->cursor.clear();
  ASSIGN_OR_RETURN(store::SearchPage page, shard.Search(tenant, *request, std::nullopt));
  return !page.matches.empty();
}

absl::Status SubscriptionService::Handle(const events::ChangeEvent& event) {
  if (!loaded_) {
    return core::Error(absl::StatusCode::kUnavailable, "The subscriptions are not loaded yet").Http(503);
  }
  if (event.type == kSubscription) RETURN_IF_ERROR(Refresh(event.tenant, event.id));
  // A deletion matches no criteria (its resource is not live).
  if (event.operation == "delete") return absl::OkStatus();
  std::vector<Spec> candidates;
  {
    std::lock_guard lock(mu_);
    auto t = by_tenant_.find(event.tenant);
    if (t == by_tenant_.end()) return absl::OkStatus();
    for (const auto& [id, spec] : t->second) {
      if (spec->criteria_type == event.type && Delivers(*spec)) candidates.push_back(spec);
    }
  }
  if (candidates.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(store::ResourceStore * shard, store_.ForTenant(event.tenant));
  std::vector<store::Notification> queue;
  for (const Spec& spec : candidates) {
    ASSIGN_OR_RETURN(bool matches, Matches(*shard, event.tenant, *spec, event.id));
    if (!matches) continue;
    store::Notification& n = queue.emplace_back();
    n.tenant = event.tenant;
    n.subscription_id = spec->id;
    n.type = event.type;
    n.id = event.id;
    n.version = event.version;
  }
  if (queue.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(shard->QueueNotifications(queue, clock_.Now()));
  queued_.Increment(static_cast<double>(queue.size()));
  worker_.Wake();
  return absl::OkStatus();
}

absl::Status SubscriptionService::Deliver(store::ResourceStore& shard, const fhir::SubscriptionSpec& spec,
                                          const store::Notification& n) {
  if (spec.channel_type == "websocket") {
    if (hub_.Ping(n.tenant, spec.id)) return absl::OkStatus();
    return absl::UnavailableError("No websocket connection is bound to the subscription");
  }
  RestHookRequest request;
  request.endpoint = spec.endpoint;
  request.headers = spec.headers;
  if (!spec.payload.empty()) {
    // subscription.html: with a payload, the resource is PUT to
    // [endpoint]/[type]/[id]; without, an empty POST to the endpoint.
    absl::StatusOr<store::ResourceVersion> version = shard.ReadVersion({n.tenant, n.type, n.id}, n.version);
    if (!version.ok()) return version.status();
    request.method = "PUT";
    request.endpoint.target = ResourceTarget(spec.endpoint.target, n.type, n.id);
    request.content_type = "application/fhir+json";
    request.body = std::move(version->body);
  }
  return SendRestHook(request, config_.timeouts);
}

void SubscriptionService::SetError(const std::string& tenant, const std::string& id, const std::string& message) {
  // A few tries: a client may be updating it at the same moment.
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<engine::ResourceResult> current = engine_.Read(tenant, kSubscription, id);
    if (!current.ok()) return;  // gone meanwhile
    absl::StatusOr<json::value> resource = fhir::ParseJson(current->body);
    if (!resource.ok() || !resource->is_object()) return;
    resource->as_object()["status"] = "error";
    resource->as_object()["error"] = message;
    absl::StatusOr<engine::ResourceResult> updated =
        engine_.Update(tenant, kSubscription, id, fhir::SerializeJson(*resource), current->version);
    if (updated.ok()) {
      errored_.Increment();
      store::ResourceVersion stored;
      stored.id = id;
      stored.version = updated->version;
      stored.body = updated->body;
      Install(tenant, stored);
      core::Log(core::LogLevel::kWarn, "subscription.error", {{"tenant", tenant}, {"subscription", id}});
      return;
    }
    if (core::HttpStatusOf(updated.status()) != 412) {
      core::Log(core::LogLevel::kError, "subscription.set_error_failed",
                {{"tenant", tenant}, {"subscription", id}, {"error", std::string(updated.status().message())}});
      return;
    }
  }
}

std::optional<milliseconds> SubscriptionService::Step() {
  if (!loaded_) {
    if (absl::Status s = Load(); !s.ok()) {
      core::Log(core::LogLevel::kWarn, "subscriptions.load_failed", {{"error", std::string(s.message())}});
      return config_.poll_interval;
    }
  }
  bool claimed_any = false;
  bool store_failed = false;
  for (store::ResourceStore* shard : store_.AllShards()) {
    const core::TimePoint now = clock_.Now();
    absl::StatusOr<std::vector<store::Notification>> claimed =
        shard->ClaimNotifications(config_.batch, now, now + config_.lease);
    if (!claimed.ok()) {
      core::Log(core::LogLevel::kWarn, "subscription.claim_failed", {{"error", std::string(claimed.status().message())}});
      store_failed = true;
      continue;
    }
    claimed_any = claimed_any || !claimed->empty();
    // Subscriptions that failed this round, with their next attempt: their
    // later notifications claimed with it wait as long, so a down endpoint
    // is tried once a round. Later ones queued meanwhile are not claimed
    // while an older one waits (ClaimNotifications), so the order holds.
    std::map<std::pair<std::string, std::string>, core::TimePoint> held;
    for (const store::Notification& n : *claimed) {
      absl::Status done;
      const std::pair<std::string, std::string> key{n.tenant, n.subscription_id};
      Spec spec = Lookup(n.tenant, n.subscription_id);
      if (spec == nullptr || !Delivers(*spec)) {
        done = shard->RemoveNotification(n);
        if (done.ok()) dropped_.Increment();
      } else if (auto h = held.find(key); h != held.end()) {
        done = shard->RescheduleNotification(n, n.attempts, h->second);
      } else if (spec->status == "requested") {
        // Being activated: soon.
        done = shard->RescheduleNotification(n, n.attempts, clock_.Now() + config_.initial_backoff);
      } else if (absl::Status delivered = Deliver(*shard, *spec, n); delivered.ok()) {
        done = shard->RemoveNotification(n);
        if (done.ok()) delivered_.Increment();
      } else {
        failed_.Increment();
        const int attempts = n.attempts + 1;
        const std::string message(delivered.message());
        core::Log(core::LogLevel::kWarn, "subscription.delivery_failed",
                  {{"tenant", n.tenant},
                   {"subscription", n.subscription_id},
                   {"attempts", std::to_string(attempts)},
                   {"error", message}});
        if (attempts >= config_.max_failures) {
          SetError(n.tenant, n.subscription_id,
                   core::StrCat("Delivery failed ", attempts, " times in a row; last: ", message));
          done = shard->DropNotifications(n.tenant, n.subscription_id);
          held[key] = clock_.Now();  // its other claimed rows are gone
        } else {
          const core::TimePoint next = clock_.Now() + DeliveryBackoff(attempts, config_);
          done = shard->RescheduleNotification(n, attempts, next);
          held[key] = next;
        }
      }
      if (!done.ok()) {
        // The lease runs out and the row comes back.
        core::Log(core::LogLevel::kWarn, "subscription.queue_failed", {{"error", std::string(done.message())}});
        store_failed = true;
      }
    }
  }
  if (store_failed) return config_.poll_interval;
  return claimed_any ? milliseconds(0) : config_.poll_interval;
}

}  // namespace medgrid::subscriptions
