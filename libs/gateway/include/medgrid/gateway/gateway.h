// The HTTP front of medgrid: FHIR REST under /fhir/{tenant}, the admin API
// under /admin/, and the ops endpoints /livez, /readyz and /metrics.
//
// Gateway::Handle is an http::Handler: it maps each request onto FhirApi
// (content negotiation, ETag and conditional headers, Prefer, Location) and
// every error onto an OperationOutcome with the right status. It records
// http_server_request_duration_seconds by route template and logs one JSON
// line per request with ids only.
//
//   gateway::Gateway gw(config, api, store, registry);
//   http::Server server(http_config,
//       [&](http::Request&& r, const http::Peer& p) { return gw.Handle(std::move(r), p); },
//       [&](int s, const std::string& m, unsigned v) { return gw.ErrorResponse(s, m, v); });
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>
#include <string>
#include <string_view>

#include "medgrid/engine/fhir_api.h"
#include "medgrid/http/server.h"
#include "medgrid/resilience/bulkhead.h"
#include "medgrid/store/store.h"

namespace boost::asio {
class io_context;
}

namespace prometheus {
class Registry;
}

namespace medgrid::auth {
class Authenticator;
}

namespace medgrid::resilience {
class DegradationController;
}

namespace medgrid::cache {
class RateLimiter;
}

namespace medgrid::gateway {

struct GatewayConfig {
  // Base used in Location, fullUrl and links, e.g. "https://fhir.example.org".
  // Empty: taken from the request's Host header (http://<host>).
  std::string public_base_url;
  // Bearer-token auth (SMART on FHIR). Null: auth is off, every FHIR
  // caller is trusted and the admin API answers loopback peers only
  // (admin_loopback_only). Set: every request but /livez, /readyz,
  // /metrics, metadata and .well-known/smart-configuration needs a valid
  // token of the path's tenant; /admin/* needs the medgrid/admin scope.
  auth::Authenticator* authenticator = nullptr;
  // Admin API answers only loopback peers when auth is off.
  bool admin_loopback_only = true;
  // Degradation levels (the seed's 0-5). Set: every response carries
  // X-Degradation-Level, FHIR writes are refused with 503 from level 4
  // (read-only), and /admin/degradation shows and overrides the level.
  resilience::DegradationController* degradation = nullptr;
  // Per-tenant rate limit of FHIR requests (shared through Redis when the
  // limiter has it). Null: none. Over it: 429 with Retry-After and an
  // OperationOutcome.
  cache::RateLimiter* tenant_rate_limit = nullptr;
  // Service bulkheads (critical, standard, ai), applied by Admit before a
  // request is queued for a worker. Null: no admission control.
  resilience::ServicePools* service_pools = nullptr;
  // GET /admin/hotspots: the JSON of the current hot patients, tenants and
  // resource types. Null: 404.
  std::function<std::string()> hotspots;
  // Retry-After of the 409 that answers a write whose Idempotency-Key is
  // still in flight.
  std::chrono::seconds idempotency_retry_after{1};
};

// The service pool a request belongs to, and whether it is a read (a
// critical read is never shed).
struct RequestClass {
  resilience::ServiceClass pool = resilience::ServiceClass::kCritical;
  bool read = false;
};
// Classifies by method and target alone (it runs on the I/O thread):
//   standard: $export*, $reindex, $everything, type- and system-level
//             _history;
//   ai:       FHIR operations named $ai-* (the AI service's);
//   critical: every other FHIR interaction; reads are GET/HEAD and POST
//             _search.
// nullopt for /livez, /readyz, /metrics and the admin API, which no pool
// limits (operators need them most during an overload).
std::optional<RequestClass> ClassifyRequest(std::string_view method, std::string_view target);

// An admin API request, for the audit trail.
struct AdminAction {
  std::string tenant;  // the tenant it concerns (created, explained), or empty
  std::string method;
  std::string target;  // path and query
  int status = 0;
  std::string client_address;
};

class Gateway {
 public:
  // All references must outlive the gateway. Thread-safe.
  Gateway(GatewayConfig config, engine::FhirApi& api, store::Store& store, prometheus::Registry& metrics);
  ~Gateway();

  http::Response Handle(http::Request&& request, const http::Peer& peer);
  // For an http::AsyncHandler: takes reads by id (read, vread) and creates
  // with bodies up to 64 KiB, and answers
  // them without blocking the calling I/O thread, calling `done` on it
  // later (or at once for errors). Returns false, leaving `request`
  // untouched, for every other request, which then goes to Handle.
  bool HandleAsync(http::Request& request, const http::Peer& peer, boost::asio::io_context& io,
                   std::function<void(http::Response)> done);
  // The HTTP server's admission check (http::Admission): a place in the
  // request's service pool, held in `ticket` until its answer is ready, or
  // 503 with Retry-After and an OperationOutcome when the pool is full.
  std::optional<http::Response> Admit(const http::Request& request, const http::Peer& peer,
                                      std::shared_ptr<void>& ticket);
  // Responses for requests the HTTP server rejects before routing.
  http::Response ErrorResponse(int status, const std::string& message, unsigned version) const;
  // Called on each GET /metrics before the registry is collected, to bring
  // other components' metrics up to date. Set before serving.
  void SetMetricsHook(std::function<void()> hook);
  // Called after every admin API request has its answer. Set before serving.
  void SetAdminHook(std::function<void(const AdminAction&)> hook);
  // Bulk data export (libs/bulk): tried first for every FHIR path with a
  // segment starting "$export" ($export, $export-status, $export-file),
  // with the tenant, the path after /fhir/{tenant} (its "%24" read as "$"),
  // the decoded query and the tenant's base URL; it sets `route` (the
  // metric's template) and answers, or returns nullopt to leave the request
  // to the FHIR API. Set before serving.
  using ExportHook = std::function<std::optional<http::Response>(
      const http::Request& request, const std::string& tenant, const std::string& rest,
      const std::vector<std::pair<std::string, std::string>>& params, const std::string& base_url,
      std::string& route)>;
  void SetExportHook(ExportHook hook);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::gateway
