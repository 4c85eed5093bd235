#include "medgrid/consent/break_glass.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "boost/json.hpp"
#include "medgrid/cache/redis.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/http/client.h"
#include "medgrid/http/external.h"

namespace medgrid::consent {
namespace json = boost::json;

bool IsEmergencyPurpose(std::string_view purpose) { return purpose == "BTG" || purpose == "ETREAT"; }

namespace {

absl::Status Forbidden(std::string_view why) {
  return core::Error(absl::StatusCode::kPermissionDenied, std::string(why)).Http(403).Issue("forbidden");
}

}  // namespace

struct BreakGlass::Impl {
  BreakGlassConfig config;
  std::shared_ptr<cache::RedisClient> redis;
  const core::Clock& clock;
  std::function<void(const BreakGlassEvent&)> on_open;

  std::mutex mu;
  std::unordered_map<std::string, BreakGlassGrant> grants;  // guarded by mu

  // The webhook's queue and thread.
  std::mutex hook_mu;
  std::condition_variable hook_cv;
  std::deque<std::string> notices;  // guarded by hook_mu
  bool stopping = false;            // guarded by hook_mu
  std::thread hook_thread;
  std::atomic<uint64_t> webhook_failures{0};

  Impl(BreakGlassConfig c, std::shared_ptr<cache::RedisClient> r, const core::Clock& cl)
      : config(std::move(c)), redis(std::move(r)), clock(cl) {
    if (!config.webhook_url.empty()) hook_thread = std::thread([this] { Deliver(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(hook_mu);
      stopping = true;
    }
    hook_cv.notify_all();
    if (hook_thread.joinable()) hook_thread.join();
  }

  void Deliver() {
    for (;;) {
      std::string notice;
      {
        std::unique_lock lock(hook_mu);
        hook_cv.wait(lock, [&] { return stopping || !notices.empty(); });
        if (notices.empty()) return;  // stopping with nothing left
        notice = std::move(notices.front());
        notices.pop_front();
      }
      absl::StatusOr<http::Url> url = http::ParseUrl(config.webhook_url);
      if (!url.ok()) {
        ++webhook_failures;
        continue;
      }
      http::FetchRequest req;
      req.method = "POST";
      req.url = *url;
      req.headers = {{"Content-Type", "application/json"}};
      req.body = std::move(notice);
      req.timeout = config.webhook_timeout;
      // The notice is delivered at least once: a receiver must take a repeat
      // (the grant's tenant, agent, patient and opened instant identify it),
      // so a POST that may have arrived is retried like an idempotent call.
      http::ExternalCallOptions at_least_once;
      at_least_once.retry_non_idempotent = true;
      // A stop ends a retry's wait: the notices left get one attempt each.
      at_least_once.wait = [this](std::chrono::microseconds delay) {
        std::unique_lock lock(hook_mu);
        return !hook_cv.wait_for(lock, delay, [&] { return stopping; });
      };
      http::ExternalDependency* dep = config.webhook_dependency;
      absl::StatusOr<http::FetchResponse> res =
          dep != nullptr ? http::FetchExternal(*dep, req, dep->clock().Now() + config.webhook_deadline, at_least_once)
                         : http::Fetch(req);
      if (!res.ok() || res->status < 200 || res->status >= 300) {
        ++webhook_failures;
        core::Log(core::LogLevel::kWarn, "btg.webhook_failed",
                  {{"status", res.ok() ? std::to_string(res->status) : std::string(res.status().message())}});
      }
    }
  }

  void Notify(const BreakGlassEvent& e) {
    if (config.webhook_url.empty()) return;
    json::object o{{"event", "break-the-glass"},
                   {"tenant", e.request.tenant},
                   {"agent", e.request.agent},
                   {"patient", core::StrCat("Patient/", e.request.patient)},
                   {"purposeOfUse", e.request.purpose},
                   {"reason", e.request.reason},
                   {"opened", core::FormatInstant(e.grant.opened)},
                   {"expires", core::FormatInstant(e.grant.expires)}};
    {
      std::lock_guard lock(hook_mu);
      if (notices.size() >= 10000) notices.pop_front();
      notices.push_back(json::serialize(o));
    }
    hook_cv.notify_one();
  }
};

BreakGlass::BreakGlass(BreakGlassConfig config, std::shared_ptr<cache::RedisClient> redis, const core::Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(redis), clock)) {}

BreakGlass::~BreakGlass() = default;

void BreakGlass::SetOnOpen(std::function<void(const BreakGlassEvent&)> hook) { impl_->on_open = std::move(hook); }

uint64_t BreakGlass::webhook_failures() const { return impl_->webhook_failures.load(); }

absl::StatusOr<BreakGlassGrant> BreakGlass::Check(const BreakGlassRequest& r) {
  bool role_ok = false;
  for (const std::string& role : r.roles) {
    if (std::find(r.allowed_roles.begin(), r.allowed_roles.end(), role) != r.allowed_roles.end()) role_ok = true;
  }
  if (!role_ok) return Forbidden("Break-the-glass access is not permitted for the caller's roles in this tenant");
  if (r.subject.empty()) return Forbidden("Break-the-glass access needs a token with a subject");
  const core::TimePoint now = impl_->clock.Now();
  const std::string key = core::StrCat(impl_->config.redis_prefix, ":btg:{", r.tenant, "}:", r.subject, ":", r.patient);
  {
    std::lock_guard lock(impl_->mu);
    if (auto it = impl_->grants.find(key); it != impl_->grants.end()) {
      if (now < it->second.expires) {
        BreakGlassGrant g = it->second;
        g.opened_now = false;
        return g;
      }
      impl_->grants.erase(it);
    }
  }
  // A grant another instance opened.
  if (impl_->redis != nullptr) {
    absl::StatusOr<std::optional<std::string>> v = impl_->redis->Get(key);
    if (v.ok() && v->has_value()) {
      const std::string& s = **v;  // "opened_us expires_us"
      const std::size_t sp = s.find(' ');
      if (sp != std::string::npos) {
        BreakGlassGrant g;
        g.opened = core::FromUnixMicros(std::stoll(s.substr(0, sp)));
        g.expires = core::FromUnixMicros(std::stoll(s.substr(sp + 1)));
        if (now < g.expires) {
          std::lock_guard lock(impl_->mu);
          impl_->grants[key] = g;
          return g;
        }
      }
    }
  }
  if (r.reason.empty()) {
    return Forbidden("Break-the-glass access needs a reason (X-BTG-Reason) to open an emergency grant");
  }
  BreakGlassGrant g;
  g.opened = now;
  g.expires = now + impl_->config.duration;
  g.opened_now = true;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->grants.size() > 100000) impl_->grants.clear();
    impl_->grants[key] = g;
  }
  if (impl_->redis != nullptr) {
    absl::Status st = impl_->redis->SetEx(
        key, core::StrCat(core::ToUnixMicros(g.opened), " ", core::ToUnixMicros(g.expires)), impl_->config.duration);
    if (!st.ok()) core::Log(core::LogLevel::kWarn, "btg.redis_failed", {{"error", std::string(st.message())}});
  }
  core::Log(core::LogLevel::kWarn, "btg.opened",
            {{"tenant", r.tenant}, {"agent", r.agent}, {"patient", r.patient}, {"purpose", r.purpose},
             {"expires", core::FormatInstant(g.expires)}});
  BreakGlassEvent e{r, g};
  if (impl_->on_open) impl_->on_open(e);
  impl_->Notify(e);
  return g;
}

}  // namespace medgrid::consent
