// Break-the-glass: a clinician's declared emergency access to a patient's
// data that Consent would deny, or that cannot be checked because the
// consent service is down.
//
// A request declares an emergency with a purpose of use BTG or ETREAT
// (header X-Purpose-Of-Use or the token's purpose_of_use claim). The first
// such access to a patient needs a reason (X-BTG-Reason) and a role the
// tenant allows (its btgRoles); it opens a grant for that user and patient
// that lasts `duration` and is not extended by stating a reason again. While
// the grant is open, emergency requests for the patient need no reason;
// once it expires, a new reason opens a new grant. Each opened grant is
// recorded (the on_open hook: the audit trail's security alert) and posted
// to the webhook, if one is configured.
//
// Grants live in memory and, when Redis is configured, in Redis too, so that
// every instance honours them; without Redis (or while it is down) a grant
// is known to the instance that opened it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "medgrid/core/clock.h"

namespace medgrid::cache {
class RedisClient;
}

namespace medgrid::http {
class ExternalDependency;
}

namespace medgrid::consent {

// Whether a purpose-of-use code declares an emergency.
bool IsEmergencyPurpose(std::string_view purpose);

struct BreakGlassConfig {
  std::chrono::seconds duration{3600};
  // Told of every opened grant (JSON POST); empty: no webhook.
  std::string webhook_url;
  std::chrono::milliseconds webhook_timeout{3000};
  // The webhook as an external dependency (retries, breaker, health): a
  // notice is retried until webhook_deadline after its first attempt. Null:
  // one attempt per notice. Not owned; must outlive the BreakGlass.
  http::ExternalDependency* webhook_dependency = nullptr;
  std::chrono::milliseconds webhook_deadline{15000};
  // Namespaces this deployment's Redis keys.
  std::string redis_prefix = "mg";
};

struct BreakGlassRequest {
  std::string tenant;
  std::string subject;  // the token's sub: whose grant it is
  std::string agent;    // for the record: Practitioner/123
  std::string patient;  // the patient id
  std::string purpose;  // BTG or ETREAT
  std::string reason;   // X-BTG-Reason; may be empty while a grant is open
  std::vector<std::string> roles;          // the caller's
  std::vector<std::string> allowed_roles;  // the tenant's btgRoles
};

struct BreakGlassGrant {
  core::TimePoint opened;
  core::TimePoint expires;
  bool opened_now = false;  // this request opened it
};

struct BreakGlassEvent {
  BreakGlassRequest request;
  BreakGlassGrant grant;
};

class BreakGlass {
 public:
  // `redis` may be null.
  BreakGlass(BreakGlassConfig config, std::shared_ptr<cache::RedisClient> redis, const core::Clock& clock);
  ~BreakGlass();

  // Set before use: called once per opened grant, on the calling thread.
  void SetOnOpen(std::function<void(const BreakGlassEvent&)> hook);

  // The open grant for the request, opening one when it states a reason.
  // Errors (Forbidden, HTTP 403): no role of the caller is allowed, or no
  // grant is open and no reason was given.
  absl::StatusOr<BreakGlassGrant> Check(const BreakGlassRequest& request);

  uint64_t webhook_failures() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::consent
