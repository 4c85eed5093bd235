#include "medgrid/gateway/gateway.h"

#include <charconv>
#include <chrono>
#include <map>
#include <random>

#include "boost/beast/http.hpp"
#include "boost/json.hpp"
#include "boost/url/parse.hpp"
#include "fmt/format.h"
#include "medgrid/auth/principal.h"
#include "medgrid/core/logging.h"
#include "medgrid/core/request_context.h"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/json.h"
#include "medgrid/fhir/operation_outcome.h"
#include "medgrid/fhir/rest_path.h"
#include "medgrid/fhir/validator.h"
#include "medgrid/fhir/http_errors.h"
#include "medgrid/cache/rate_limiter.h"
#include "medgrid/resilience/degradation.h"
#include "medgrid/resilience/idempotency.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace medgrid::gateway {
namespace bhttp = boost::beast::http;
namespace json = boost::json;

namespace {

constexpr std::string_view kFhirJson = "application/fhir+json; charset=utf-8";

// Lower-cases ASCII.
std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The media type without parameters, lower-cased.
std::string MediaType(std::string_view header) {
  std::size_t semi = header.find(';');
  std::string_view t = header.substr(0, semi);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  return Lower(t);
}

bool IsJsonType(std::string_view t) { return t == "application/fhir+json" || t == "application/json"; }
bool IsXmlType(std::string_view t) {
  return t == "application/fhir+xml" || t == "application/xml" || t == "text/xml" || t == "xml";
}

// The route template used as the metric label, never the concrete path.
std::string RouteTemplate(const fhir::RestPath& p) {
  using K = fhir::RestPath::Kind;
  switch (p.kind) {
    case K::kSystem: return "/fhir/{tenant}";
    case K::kMetadata: return "/fhir/{tenant}/metadata";
    case K::kSystemHistory: return "/fhir/{tenant}/_history";
    case K::kType: return "/fhir/{tenant}/{type}";
    case K::kTypeHistory: return "/fhir/{tenant}/{type}/_history";
    case K::kInstance: return "/fhir/{tenant}/{type}/{id}";
    case K::kInstanceHistory: return "/fhir/{tenant}/{type}/{id}/_history";
    case K::kVersion: return "/fhir/{tenant}/{type}/{id}/_history/{vid}";
    case K::kSystemSearch: return "/fhir/{tenant}/_search";
    case K::kTypeSearch: return "/fhir/{tenant}/{type}/_search";
    case K::kCompartment: return "/fhir/{tenant}/{type}/{id}/{compartment_type}";
    case K::kSystemOperation: return p.operation == "reindex" ? "/fhir/{tenant}/$reindex" : "/fhir/{tenant}/$op";
    case K::kTypeOperation:
      if (p.operation == "reindex") return "/fhir/{tenant}/{type}/$reindex";
      return p.operation == "everything" ? "/fhir/{tenant}/{type}/$everything" : "/fhir/{tenant}/{type}/$op";
    case K::kInstanceOperation:
      return p.operation == "everything" ? "/fhir/{tenant}/{type}/{id}/$everything" : "/fhir/{tenant}/{type}/{id}/$op";
  }
  return "/fhir";
}

std::string NewRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

bool IsSafeToken(std::string_view s, std::size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':')) return false;
  }
  return true;
}

// Parses a FHIR dateTime/instant for _since; requires at least a full date.
std::optional<core::TimePoint> ParseSince(std::string_view s) {
  if (!fhir::IsValidDateTime(s) || s.size() < 10) return std::nullopt;
  std::tm tm{};
  auto num = [&](std::size_t pos, std::size_t len) {
    int v = 0;
    std::from_chars(s.data() + pos, s.data() + pos + len, v);
    return v;
  };
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  int64_t offset_s = 0;
  int64_t micros = 0;
  if (s.size() > 10) {
    tm.tm_hour = num(11, 2);
    tm.tm_min = num(14, 2);
    tm.tm_sec = num(17, 2);
    std::size_t pos = 19;
    if (pos < s.size() && s[pos] == '.') {
      std::size_t start = ++pos;
      while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) ++pos;
      std::string frac(s.substr(start, std::min<std::size_t>(pos - start, 6)));
      frac.resize(6, '0');
      micros = std::stoll(frac);
    }
    if (pos < s.size() && s[pos] != 'Z') {
      int sign = s[pos] == '-' ? -1 : 1;
      offset_s = sign * (num(pos + 1, 2) * 3600 + num(pos + 4, 2) * 60);
    }
  }
  time_t t = timegm(&tm);
  return core::FromUnixMicros((static_cast<int64_t>(t) - offset_s) * 1000000 + micros);
}

// Percent-encodes the bytes of the query part of `target` that RFC 3986
// does not allow there unencoded, leaving the path as it is.
std::string EncodeQueryDelimiters(std::string_view target) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::size_t q = target.find('?');
  if (q == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, q + 1));
  for (unsigned char c : target.substr(q + 1)) {
    const bool allowed = std::isalnum(c) || std::string_view("-._~!$&'()*+,;=:@/?%").find(static_cast<char>(c)) !=
                                                std::string_view::npos;
    if (allowed) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

struct RequestLog {
  std::chrono::steady_clock::time_point start;
  std::string request_id;
  std::string method;
  std::string route;   // route template, the metric label
  std::string tenant;
};

struct AsyncRead {
  boost::asio::io_context* io = nullptr;
  std::function<void(http::Response)> done;
  bool deferred = false;  // done will be (or was already) called
};

struct Query {
  std::vector<std::pair<std::string, std::string>> params;  // decoded
  std::string raw;                                          // as received
};

}  // namespace

struct Gateway::Impl {
  Impl(GatewayConfig c, engine::FhirApi& a, store::Store& s, prometheus::Registry& m)
      : config(std::move(c)),
        api(a),
        store(s),
        metrics(m),
        durations(prometheus::BuildHistogram()
                      .Name("http_server_request_duration_seconds")
                      .Help("Duration of HTTP server requests")
                      .Register(m)),
        pool_connections(prometheus::BuildGauge()
                             .Name("medgrid_db_pool_connections")
                             .Help("Database connections per shard: blocking pool (open, busy, max), "
                                   "non-blocking connections of the I/O threads (async_open), and the per-tenant "
                                   "cap (tenant_limit), the most one tenant holds (tenant_max) and the work waiting for "
                                   "a place of its tenant (tenant_waiting)")
                             .Register(m)),
        shed(prometheus::BuildCounter()
                 .Name("medgrid_bulkhead_rejections_total")
                 .Help("Requests refused by a bulkhead: the service pools critical, standard and ai, and each "
                       "tenant's database connections per shard, db_tenant (503 with Retry-After)")
                 .Register(m)),
        pool_in_flight(prometheus::BuildGauge()
                           .Name("medgrid_bulkhead_in_flight")
                           .Help("Requests holding a place in each service pool")
                           .Register(m)),
        read_retries(prometheus::BuildCounter()
                         .Name("medgrid_db_read_retries_total")
                         .Help("Reads on a shard's primary sent again after a connection failure, within the "
                               "shard's read retry budget")
                         .Register(m)),
        search_set_sizes(prometheus::BuildCounter()
                             .Name("medgrid_search_set_sizes_total")
                             .Help("Searches intersecting several id sets, by how the page query was planned: "
                                   "from remembered set sizes, from sizes counted first, or again because a "
                                   "remembered size no longer held (changed)")
                             .Register(m)),
        idempotency_requests(prometheus::BuildCounter()
                                 .Name("medgrid_idempotency_requests_total")
                                 .Help("Writes with an Idempotency-Key, by outcome: recorded (ran, response kept), "
                                       "replayed (the kept response), mismatch (422, the key of another request), "
                                       "in_flight (409, the key's first request still running)")
                                 .Register(m)) {
    for (const char* outcome : {"recorded", "replayed", "mismatch", "in_flight"}) {
      idempotency_by_outcome.emplace(outcome, &idempotency_requests.Add({{"outcome", outcome}}));
    }
  }

  GatewayConfig config;
  engine::FhirApi& api;
  store::Store& store;
  prometheus::Registry& metrics;
  prometheus::Family<prometheus::Histogram>& durations;
  prometheus::Family<prometheus::Gauge>& pool_connections;
  prometheus::Family<prometheus::Counter>& shed;
  prometheus::Family<prometheus::Gauge>& pool_in_flight;
  prometheus::Family<prometheus::Counter>& read_retries;
  prometheus::Family<prometheus::Counter>& search_set_sizes;
  prometheus::Family<prometheus::Counter>& idempotency_requests;
  std::map<std::string, prometheus::Counter*, std::less<>> idempotency_by_outcome;  // filled once, then read-only
  // Idempotency keys of the requests running in this process (the fast
  // path before the shard's advisory lock).
  resilience::InFlightKeys keys_in_flight;
  // The store keeps these counts; a scrape moves the counters up to them.
  std::mutex counters_mu;
  std::function<void()> metrics_hook;  // set before serving
  std::function<void(const AdminAction&)> admin_hook;  // set before serving
  Gateway::ExportHook export_hook;                     // set before serving
  // Histograms by "method|route|status": prometheus' own look-up builds and
  // hashes a label map on every request. The label sets are few and bounded
  // (route templates, not paths).
  std::mutex durations_mu;
  std::unordered_map<std::string, prometheus::Histogram*> duration_by_key;  // guarded by durations_mu

  prometheus::Histogram& DurationFor(const std::string& method, const std::string& route, const std::string& status);

  // `async`, when set, lets reads complete later through async->done; the
  // returned response is then meaningless if async->deferred was set.
  http::Response Route(http::Request& req, const http::Peer& peer, std::string& route, std::string& tenant,
                       AsyncRead* async);
  http::Response Fhir(http::Request& req, std::string_view path, const Query& query, std::string& route,
                      std::string& tenant, AsyncRead* async);
  // Fhir, for a write that carries an Idempotency-Key: checks the key,
  // refuses a duplicate in flight here (409), hands key and request
  // fingerprint to the engine through the request context, and marks a
  // replayed response.
  http::Response FhirWithKey(http::Request& req, std::string_view path, const Query& query, std::string& route,
                             std::string& tenant, AsyncRead* async);
  // Records the metric and the log line of a finished request.
  void Finish(const RequestLog& log, http::Response& res);
  // The admin API: AdminRoute answers, Admin also tells admin_hook.
  http::Response Admin(http::Request& req, std::string_view path, const Query& query, const http::Peer& peer,
                       std::string& route);
  http::Response AdminRoute(http::Request& req, std::string_view path, const Query& query, const http::Peer& peer,
                            std::string& route);
  http::Response Metrics();
  // Auth (config.authenticator set): the caller of a request, its 401, and
  // the checks of a FHIR path (token, tenant, public endpoints), which
  // answer a refused or public request themselves.
  absl::StatusOr<std::shared_ptr<const auth::Principal>> Authenticate(const http::Request& req);
  http::Response AuthError(const absl::Status& st, const http::Request& req) const;
  std::optional<http::Response> Authorize(const http::Request& req, std::string_view path, std::string& route,
                                          std::string& tenant);
  http::Response SmartConfiguration(const http::Request& req, const std::string& tenant) const;
  // GET, POST (override) and DELETE (clear the override) /admin/degradation.
  http::Response Degradation(http::Request& req);

  std::string BaseUrl(const http::Request& req, const std::string& tenant) const {
    if (!config.public_base_url.empty()) return core::StrCat(config.public_base_url, "/fhir/", tenant);
    std::string_view host = req[bhttp::field::host];
    if (!IsSafeToken(host, 255)) host = "localhost";
    return core::StrCat("http://", host, "/fhir/", tenant);
  }
};

namespace {

http::Response MakeResponse(bhttp::status status, unsigned version, std::string body,
                            std::string_view content_type = kFhirJson) {
  http::Response res{status, version};
  res.set(bhttp::field::server, "medgrid");
  if (!body.empty() || status != bhttp::status::no_content) {
    res.set(bhttp::field::content_type, content_type);
    res.body() = std::move(body);
  }
  return res;
}

http::Response ErrorOf(const absl::Status& st, unsigned version) {
  fhir::HttpError e = fhir::ToHttpError(st);
  http::Response res = MakeResponse(static_cast<bhttp::status>(e.status), version, std::move(e.outcome));
  if (std::optional<int64_t> seconds = core::RetryAfterOf(st)) res.set(bhttp::field::retry_after, std::to_string(*seconds));
  return res;
}

http::Response Error(int status, const std::string& message, unsigned version) {
  return MakeResponse(static_cast<bhttp::status>(status), version, fhir::OutcomeFor(status, message));
}

// Conditional read headers (http.html#cread). If-None-Match wins over
// If-Modified-Since when both are sent (RFC 9110 §13.2.2).
struct ReadConditions {
  std::string if_none_match;      // an ETag; empty if absent
  std::string if_modified_since;  // an HTTP date; empty if absent
};

ReadConditions ConditionsOf(const http::Request& req) {
  return {std::string(req[bhttp::field::if_none_match]), std::string(req[bhttp::field::if_modified_since])};
}

bool NotModified(const engine::ResourceResult& r, const ReadConditions& c) {
  if (!c.if_none_match.empty()) {
    auto ver = fhir::ParseETagVersion(c.if_none_match);
    return ver && *ver == r.version;
  }
  if (!c.if_modified_since.empty()) {
    // HTTP dates have whole seconds; compare at that precision.
    auto since = core::ParseHttpDate(c.if_modified_since);
    return since && std::chrono::floor<std::chrono::seconds>(r.last_updated) <= *since;
  }
  return false;
}

// The answer to a read or vread; a version the client already has gives
// 304 Not Modified.
http::Response ReadResponse(const absl::StatusOr<engine::ResourceResult>& r, unsigned v,
                            const ReadConditions& conditions) {
  if (!r.ok()) return ErrorOf(r.status(), v);
  if (NotModified(*r, conditions)) {
    http::Response res = MakeResponse(bhttp::status::not_modified, v, "");
    res.set(bhttp::field::etag, fhir::FormatETag(r->version));
    res.set(bhttp::field::last_modified, core::FormatHttpDate(r->last_updated));
    return res;
  }
  http::Response res = MakeResponse(bhttp::status::ok, v, r->body);
  res.set(bhttp::field::etag, fhir::FormatETag(r->version));
  res.set(bhttp::field::last_modified, core::FormatHttpDate(r->last_updated));
  return res;
}

// The answer to a create, update or patch, shaped by Prefer: return=.
http::Response WriteResponse(const absl::StatusOr<engine::ResourceResult>& r, unsigned v, const std::string& prefer,
                             const std::string& base) {
  if (!r.ok()) return ErrorOf(r.status(), v);
  bhttp::status status = r->created ? bhttp::status::created : bhttp::status::ok;
  std::string body;
  if (prefer == "operationoutcome") {
    body = fhir::OperationOutcomeJson({{"information", "informational",
                                        core::StrCat(r->created ? "Created " : "Updated ", r->type, "/", r->id,
                                                     " version ", r->version),
                                        ""}});
  } else if (prefer != "minimal") {
    body = r->body;
  }
  http::Response res = MakeResponse(status, v, std::move(body));
  res.set(bhttp::field::etag, fhir::FormatETag(r->version));
  res.set(bhttp::field::last_modified, core::FormatHttpDate(r->last_updated));
  std::string loc = core::StrCat(base, "/", r->type, "/", r->id, "/_history/", r->version);
  if (r->created) res.set(bhttp::field::location, loc);
  res.set(bhttp::field::content_location, loc);
  return res;
}

absl::Status BadParam(const std::string& name, const std::string& why) {
  return core::Error(absl::StatusCode::kInvalidArgument, core::StrCat("Parameter '", name, "': ", why))
      .Http(400)
      .Issue("not-supported");
}

}  // namespace

Gateway::Gateway(GatewayConfig config, engine::FhirApi& api, store::Store& store, prometheus::Registry& metrics)
    : impl_(std::make_unique<Impl>(std::move(config), api, store, metrics)) {}

Gateway::~Gateway() = default;

http::Response Gateway::ErrorResponse(int status, const std::string& message, unsigned version) const {
  return Error(status, message, version);
}

prometheus::Histogram& Gateway::Impl::DurationFor(const std::string& method, const std::string& route,
                                                 const std::string& status) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                   0.05,   0.1,   0.25,   0.5,   1,    2.5, 5, 10};
  std::string key = core::StrCat(method, "|", route, "|", status);
  std::lock_guard lock(durations_mu);
  auto it = duration_by_key.find(key);
  if (it != duration_by_key.end()) return *it->second;
  prometheus::Histogram& h = durations.Add(
      {{"http_request_method", method}, {"http_route", route}, {"http_response_status_code", status}}, kBuckets);
  duration_by_key.emplace(std::move(key), &h);
  return h;
}

void Gateway::Impl::Finish(const RequestLog& log, http::Response& res) {
  res.set("X-Request-Id", log.request_id);
  if (config.degradation != nullptr) {
    res.set("X-Degradation-Level", std::to_string(static_cast<int>(config.degradation->level())));
  }
  if (res.result_int() == 401 && res.find(bhttp::field::www_authenticate) == res.end()) {
    res.set(bhttp::field::www_authenticate, R"(Bearer realm="medgrid")");
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - log.start).count();
  std::string status = std::to_string(res.result_int());
  DurationFor(log.method, log.route, status).Observe(seconds);
  core::Log(core::LogLevel::kInfo, "http.request",
            {{"request_id", log.request_id},
             {"method", log.method},
             {"route", log.route},
             {"tenant", log.tenant},
             {"status", status},
             {"duration_ms", fmt::format("{:.3f}", seconds * 1000)}});
}

namespace {

std::shared_ptr<RequestLog> StartLog(const http::Request& req) {
  auto log = std::make_shared<RequestLog>();
  log->start = std::chrono::steady_clock::now();
  log->request_id = std::string(req["X-Request-Id"]);
  if (!IsSafeToken(log->request_id, 64)) log->request_id = NewRequestId();
  log->method = std::string(req.method_string());
  log->route = "unmatched";
  return log;
}

}  // namespace

// What the layers below record about who asked (the audit trail). The
// verified caller is set later, once the token is checked.
static void SetRequestContext(const http::Request& req, const http::Peer& peer) {
  core::RequestContext& ctx = core::CurrentRequest();
  ctx.tenant.clear();
  ctx.client_address = peer.address;
  // The purpose of use a client states (a v3-ActReason code such as TREAT);
  // the token's purpose_of_use claim counts when the header is absent.
  std::string_view purpose = req["X-Purpose-Of-Use"];
  ctx.purpose_of_use = IsSafeToken(purpose, 32) ? std::string(purpose) : "";
  // Free text: kept for the audit trail only, bounded, never logged.
  ctx.btg_reason = std::string(req["X-BTG-Reason"].substr(0, 1000));
  ctx.agent.clear();
  ctx.subject.clear();
  ctx.known_version = 0;
  if (req.method() == bhttp::verb::get || req.method() == bhttp::verb::head) {
    if (std::string_view inm = req[bhttp::field::if_none_match]; !inm.empty()) {
      if (std::optional<int64_t> known = fhir::ParseETagVersion(inm)) ctx.known_version = *known;
    }
  }
  ctx.idempotency = {};
  auth::CurrentPrincipal().reset();
}

// The verified caller, for the layers below and the audit trail.
static void SetCaller(const std::shared_ptr<const auth::Principal>& p) {
  auth::CurrentPrincipal() = p;
  core::RequestContext& ctx = core::CurrentRequest();
  ctx.agent = p->Agent();
  ctx.subject = p->subject;
  if (ctx.purpose_of_use.empty()) ctx.purpose_of_use = p->purpose_of_use;
}

http::Response Gateway::Handle(http::Request&& req, const http::Peer& peer) {
  SetRequestContext(req, peer);
  std::shared_ptr<RequestLog> log = StartLog(req);
  http::Response res = impl_->Route(req, peer, log->route, log->tenant, nullptr);
  auth::CurrentPrincipal().reset();  // this thread's next work is not this caller's
  core::CurrentRequest().tenant.clear();
  impl_->Finish(*log, res);
  return res;
}

bool Gateway::HandleAsync(http::Request& req, const http::Peer& peer, boost::asio::io_context& io,
                          std::function<void(http::Response)> done) {
  // Only reads by id and creates go this way; everything else may block and
  // belongs on a worker thread. So do large creates: parsing and validating
  // them would hold up every other connection of this I/O thread.
  constexpr std::size_t kMaxInlineBody = 64 * 1024;
  std::string_view target = req.target();
  if (target.rfind("/fhir/", 0) != 0) return false;
  auto parsed = fhir::ParseRestPath(target.substr(0, target.find('?')));
  if (!parsed.ok()) return false;
  const bool read = (req.method() == bhttp::verb::get || req.method() == bhttp::verb::head) &&
                    (parsed->kind == fhir::RestPath::Kind::kInstance || parsed->kind == fhir::RestPath::Kind::kVersion);
  // A create with an Idempotency-Key takes the blocking path, whose one
  // transaction records the key with the resource.
  const bool create = req.method() == bhttp::verb::post && parsed->kind == fhir::RestPath::Kind::kType &&
                      req["If-None-Exist"].empty() && req.find("Idempotency-Key") == req.end() &&
                      req.body().size() <= kMaxInlineBody;
  if (!read && !create) return false;
  // The first request of a tenant looks it up in the control database, a
  // blocking call: leave it to a worker thread.
  if (!impl_->api.ServesWithoutBlocking(parsed->tenant)) return false;
  SetRequestContext(req, peer);
  std::shared_ptr<RequestLog> log = StartLog(req);
  AsyncRead async;
  async.io = &io;
  async.done = [impl = impl_.get(), log, done = std::move(done)](http::Response res) {
    impl->Finish(*log, res);
    done(std::move(res));
  };
  http::Response res = impl_->Route(req, peer, log->route, log->tenant, &async);
  auth::CurrentPrincipal().reset();  // this I/O thread's next work is not this caller's
  core::CurrentRequest().tenant.clear();
  if (!async.deferred) async.done(std::move(res));
  return true;
}

std::optional<RequestClass> ClassifyRequest(std::string_view method, std::string_view target) {
  using Kind = fhir::RestPath::Kind;
  const std::string_view path = target.substr(0, target.find('?'));
  // The ops endpoints and the admin API (the operators' controls, needed
  // most during an overload) are never shed.
  if (path == "/livez" || path == "/readyz" || path == "/metrics" || path.rfind("/admin/", 0) == 0) {
    return std::nullopt;
  }
  const bool get_like = method == "GET" || method == "HEAD";
  if (path.rfind("/fhir/", 0) != 0) return RequestClass{resilience::ServiceClass::kCritical, get_like};
  // Bulk export: the kick-off, its status URL and its files
  // ($export-status/{job}, which is no FHIR path).
  if (path.find("/$export") != std::string_view::npos || path.find("/%24export") != std::string_view::npos) {
    return RequestClass{resilience::ServiceClass::kStandard, get_like};
  }
  auto parsed = fhir::ParseRestPath(path);
  if (!parsed.ok()) return RequestClass{resilience::ServiceClass::kCritical, get_like};
  switch (parsed->kind) {
    case Kind::kSystemHistory:
    case Kind::kTypeHistory:
      return RequestClass{resilience::ServiceClass::kStandard, get_like};
    case Kind::kSystemOperation:
    case Kind::kTypeOperation:
    case Kind::kInstanceOperation: {
      const std::string& op = parsed->operation;
      if (op.rfind("ai-", 0) == 0) return RequestClass{resilience::ServiceClass::kAi, false};
      if (op == "reindex" || op == "everything") {
        return RequestClass{resilience::ServiceClass::kStandard, false};
      }
      return RequestClass{resilience::ServiceClass::kCritical, get_like};
    }
    case Kind::kSystemSearch:
    case Kind::kTypeSearch:
      return RequestClass{resilience::ServiceClass::kCritical, get_like || method == "POST"};
    default:
      return RequestClass{resilience::ServiceClass::kCritical, get_like};
  }
}

std::optional<http::Response> Gateway::Admit(const http::Request& req, const http::Peer& peer,
                                             std::shared_ptr<void>& ticket) {
  resilience::ServicePools* pools = impl_->config.service_pools;
  if (pools == nullptr) return std::nullopt;
  const std::optional<RequestClass> cls = ClassifyRequest(req.method_string(), req.target());
  if (!cls) return std::nullopt;
  // Critical reads are never shed; a standard or ai read (type history,
  // $export status) is.
  resilience::ServicePools::Permit permit =
      pools->TryAcquire(cls->pool, cls->pool == resilience::ServiceClass::kCritical && cls->read);
  if (permit) {
    ticket = std::make_shared<resilience::ServicePools::Permit>(std::move(permit));
    return std::nullopt;
  }
  const std::string pool(resilience::ServiceClassName(cls->pool));
  impl_->shed.Add({{"pool", pool}}).Increment();
  core::RequestContext& ctx = core::CurrentRequest();
  ctx.tenant.clear();
  ctx.client_address = peer.address;
  std::shared_ptr<RequestLog> log = StartLog(req);
  log->route = "shed";
  http::Response res = MakeResponse(
      bhttp::status::service_unavailable, req.version(),
      fhir::OperationOutcomeJson({{"error", "transient",
                                   core::StrCat("The server is overloaded and sheds ", pool,
                                                " work first; retry after 1 s"),
                                   ""}}));
  res.set(bhttp::field::retry_after, "1");
  impl_->Finish(*log, res);
  return res;
}

http::Response Gateway::Impl::Route(http::Request& req, const http::Peer& peer, std::string& route,
                                    std::string& tenant, AsyncRead* async) {
  const unsigned v = req.version();
  auto target = boost::urls::parse_origin_form(req.target());
  std::string lenient_target;
  if (!target) {
    // Clients send "|", "[", "]" and the like unencoded in search queries
    // (identifier=http://x|123); RFC 3986 wants them encoded. Encode them
    // in the query and try again; a malformed path stays an error.
    lenient_target = EncodeQueryDelimiters(req.target());
    target = boost::urls::parse_origin_form(lenient_target);
  }
  if (!target) return Error(400, "Malformed request target", v);
  // Percent-encoded: ParseRestPath decodes each segment after splitting, so
  // an encoded "/" cannot create a segment.
  const std::string path(target->encoded_path());
  Query query;
  query.raw = std::string(target->encoded_query());
  for (auto param : target->params()) query.params.emplace_back(param.key, param.has_value ? param.value : "");

  const bool get_like = req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
  if (path == "/livez") {
    route = "/livez";
    return MakeResponse(bhttp::status::ok, v, R"({"status":"ok"})", "application/json");
  }
  if (path == "/readyz") {
    route = "/readyz";
    int reachable = store.ReachableShards();
    if (reachable == 0) {
      return MakeResponse(bhttp::status::service_unavailable, v, R"({"status":"no shard reachable"})",
                          "application/json");
    }
    return MakeResponse(bhttp::status::ok, v, core::StrCat(R"({"status":"ready","shards_reachable":)", reachable, "}"),
                        "application/json");
  }
  if (path == "/metrics" && get_like) {
    route = "/metrics";
    return Metrics();
  }
  if (path.rfind("/admin/", 0) == 0) {
    if (config.authenticator != nullptr) {
      auto caller = Authenticate(req);
      if (!caller.ok()) {
        route = "/admin";
        return AuthError(caller.status(), req);
      }
      if (!(*caller)->admin()) {
        route = "/admin";
        return Error(403, "The admin API needs a token with the medgrid/admin scope", v);
      }
      SetCaller(*caller);
    }
    return Admin(req, path, query, peer, route);
  }
  if (path.rfind("/fhir/", 0) == 0) {
    if (config.authenticator != nullptr) {
      if (std::optional<http::Response> refused = Authorize(req, path, route, tenant)) return *std::move(refused);
    }
    if (config.tenant_rate_limit != nullptr) {
      std::string_view rest = std::string_view(path).substr(std::string_view("/fhir/").size());
      const std::string_view path_tenant = rest.substr(0, rest.find('/'));
      if (fhir::IsValidTenantId(path_tenant)) {
        const auto d = config.tenant_rate_limit->Acquire(core::StrCat("tenant:", path_tenant));
        if (!d.allowed) {
          route = "/fhir";
          tenant = std::string(path_tenant);
          const int64_t seconds = std::max<int64_t>(1, (d.retry_after.count() + 999999) / 1000000);
          http::Response res = MakeResponse(
              bhttp::status::too_many_requests, v,
              fhir::OperationOutcomeJson({{"error", "throttled",
                                           fmt::format("The tenant's request rate limit ({} per second) is "
                                                       "exceeded; retry after {} s",
                                                       config.tenant_rate_limit->limit().rate_per_second, seconds),
                                           ""}}));
          res.set(bhttp::field::retry_after, std::to_string(seconds));
          return res;
        }
      }
    }
    if (req.find("Idempotency-Key") != req.end()) return FhirWithKey(req, path, query, route, tenant, async);
    return Fhir(req, path, query, route, tenant, async);
  }
  return Error(404, core::StrCat("No endpoint at '", path, "'"), v);
}

namespace {

// Prefer: return=... as Fhir reads it, for the request fingerprint.
std::string PreferReturn(const http::Request& req) {
  std::string prefer = "representation";
  for (std::string_view header : core::StrSplit(req["Prefer"], ',')) {
    for (std::string_view part : core::StrSplit(header, ';')) {
      std::string t = Lower(MediaType(part));
      if (t.rfind("return=", 0) == 0) prefer = t.substr(7);
    }
  }
  return prefer;
}

}  // namespace

http::Response Gateway::Impl::FhirWithKey(http::Request& req, std::string_view path, const Query& query,
                                          std::string& route, std::string& tenant, AsyncRead* async) {
  using K = fhir::RestPath::Kind;
  const unsigned v = req.version();
  auto parsed = fhir::ParseRestPath(path);
  const bhttp::verb method = req.method();
  // The writes a key applies to: create, update, patch, conditional create
  // and update, batch and transaction Bundles. GET, HEAD and DELETE are
  // idempotent already, and POST _search and operations write nothing a
  // retry would duplicate: their key is ignored (not even checked).
  const bool keyed =
      parsed.ok() && ((method == bhttp::verb::post && (parsed->kind == K::kType || parsed->kind == K::kSystem)) ||
                      (method == bhttp::verb::put && (parsed->kind == K::kType || parsed->kind == K::kInstance)) ||
                      (method == bhttp::verb::patch && parsed->kind == K::kInstance));
  if (!keyed) return Fhir(req, path, query, route, tenant, async);
  route = RouteTemplate(*parsed);
  tenant = parsed->tenant;
  if (req.count("Idempotency-Key") > 1) {
    return Error(400, "Send one Idempotency-Key header, not several", v);
  }
  absl::StatusOr<std::string> key = resilience::ParseIdempotencyKey(req["Idempotency-Key"]);
  if (!key.ok()) return ErrorOf(key.status(), v);
  auto count = [&](std::string_view outcome) { idempotency_by_outcome.find(outcome)->second->Increment(); };
  auto in_flight = [&](http::Response res) {
    count("in_flight");
    res.set(bhttp::field::retry_after, std::to_string(config.idempotency_retry_after.count()));
    return res;
  };
  // With a request of the key already running here, this one may only be
  // answered from a recorded response (a retry after the first completed,
  // while another replay runs), else 409; it never tries the shard's lock.
  resilience::InFlightKeys::Claim claim = keys_in_flight.TryClaim(parsed->tenant, *key);
  core::RequestContext& ctx = core::CurrentRequest();
  resilience::RequestParts parts;
  parts.method = std::string(req.method_string());
  parts.path = std::string(path);
  parts.query = resilience::CanonicalQuery(query.params);
  parts.body = req.body();
  parts.prefer_return = PreferReturn(req);
  parts.caller = core::StrCat(ctx.agent, "\n", ctx.subject);
  ctx.idempotency.key = *std::move(key);
  ctx.idempotency.fingerprint = resilience::RequestFingerprint(parts);
  ctx.idempotency.outcome = core::IdempotencyOutcome::kNone;
  ctx.idempotency.replay_only = !claim;
  http::Response res = Fhir(req, path, query, route, tenant, async);
  const core::IdempotencyOutcome outcome = ctx.idempotency.outcome;
  ctx.idempotency = {};
  switch (outcome) {
    case core::IdempotencyOutcome::kRecorded:
      count("recorded");
      break;
    case core::IdempotencyOutcome::kReplayed:
      count("replayed");
      res.set("Idempotent-Replayed", "true");
      break;
    case core::IdempotencyOutcome::kMismatch:
      count("mismatch");
      break;
    case core::IdempotencyOutcome::kInFlight:
      return in_flight(std::move(res));
    case core::IdempotencyOutcome::kNone:
      break;
  }
  return res;
}

absl::StatusOr<std::shared_ptr<const auth::Principal>> Gateway::Impl::Authenticate(const http::Request& req) {
  return config.authenticator->Authenticate(req[bhttp::field::authorization]);
}

http::Response Gateway::Impl::AuthError(const absl::Status& st, const http::Request& req) const {
  http::Response res = ErrorOf(st, req.version());
  std::string challenge = R"(Bearer realm="medgrid")";
  if (!req[bhttp::field::authorization].empty()) {
    std::string why(st.message());
    std::erase_if(why, [](char c) { return c == '"' || c == '\\' || c < 0x20; });
    challenge += core::StrCat(R"(, error="invalid_token", error_description=")", why, "\"");
  }
  res.set(bhttp::field::www_authenticate, challenge);
  return res;
}

std::optional<http::Response> Gateway::Impl::Authorize(const http::Request& req, std::string_view path,
                                                       std::string& route, std::string& tenant) {
  const unsigned v = req.version();
  std::string_view rest = path.substr(std::string_view("/fhir/").size());
  const std::size_t slash = rest.find('/');
  const std::string path_tenant(rest.substr(0, slash));
  const std::string after = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  const bool get_like = req.method() == bhttp::verb::get || req.method() == bhttp::verb::head;
  // Public: the CapabilityStatement and the SMART configuration.
  if (get_like && after == "/.well-known/smart-configuration" && fhir::IsValidTenantId(path_tenant)) {
    route = "/fhir/{tenant}/.well-known/smart-configuration";
    tenant = path_tenant;
    return SmartConfiguration(req, path_tenant);
  }
  if (get_like && after == "/metadata") return std::nullopt;
  auto caller = Authenticate(req);
  if (!caller.ok()) {
    route = "/fhir";
    return AuthError(caller.status(), req);
  }
  const auth::Principal& p = **caller;
  // A token is for one tenant: any other answers the same, whether or not
  // it exists.
  if (p.tenant.empty() || p.tenant != path_tenant) {
    route = "/fhir";
    return Error(403, "The token is not valid for this tenant", v);
  }
  // Bulk export: SMART Backend Services, system/ scopes reading every type.
  if (after.find("/$export") != std::string::npos || after.find("/%24export") != std::string::npos) {
    if (p.scopes.Check("*", auth::kRead, auth::ContextBit(auth::ResourceScope::Context::kSystem)) !=
        auth::ScopeSet::Grant::kFull) {
      route = "/fhir/{tenant}/$export";
      return Error(403, "Bulk export needs a system/*.read (or system/*.rs) scope", v);
    }
  }
  SetCaller(*caller);
  return std::nullopt;
}

http::Response Gateway::Impl::SmartConfiguration(const http::Request& req, const std::string&) const {
  const auth::Authenticator& a = *config.authenticator;
  json::object o{
      {"issuer", a.config().issuer},
      {"authorization_endpoint", a.AuthorizeUrl()},
      {"token_endpoint", a.TokenUrl()},
      {"grant_types_supported", json::array{"authorization_code", "client_credentials"}},
      {"token_endpoint_auth_methods_supported", json::array{"private_key_jwt", "client_secret_basic"}},
      {"response_types_supported", json::array{"code"}},
      {"scopes_supported",
       json::array{"openid", "fhirUser", "launch", "launch/patient", "offline_access", "patient/*.rs", "patient/*.cruds",
                   "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds", "patient/*.read", "user/*.read",
                   "system/*.read", "user/*.write", "system/*.write"}},
      {"capabilities", json::array{"launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                                   "client-confidential-asymmetric", "context-ehr-patient",
                                   "context-standalone-patient", "permission-patient", "permission-user",
                                   "permission-v1", "permission-v2"}},
      {"code_challenge_methods_supported", json::array{"S256"}}};
  if (a.config().jwks.rfind("http://", 0) == 0 || a.config().jwks.rfind("https://", 0) == 0) {
    o["jwks_uri"] = a.config().jwks;
  }
  http::Response res = MakeResponse(bhttp::status::ok, req.version(), json::serialize(o), "application/json");
  res.set(bhttp::field::cache_control, "public, max-age=3600");
  return res;
}

http::Response Gateway::Impl::Degradation(http::Request& req) {
  const unsigned v = req.version();
  resilience::DegradationController& d = *config.degradation;
  if (req.method() == bhttp::verb::post) {
    auto body = fhir::ParseJson(req.body());
    if (!body.ok()) return ErrorOf(body.status(), v);
    const json::object* o = body->if_object();
    const json::value* level = o ? o->if_contains("level") : nullptr;
    const json::value* reason = o ? o->if_contains("reason") : nullptr;
    if (level == nullptr || !level->is_int64() || level->as_int64() < 0 || level->as_int64() > 5 ||
        (reason != nullptr && !reason->is_string())) {
      return Error(400, "Body must be {\"level\": 0..5, \"reason\": \"...\"}", v);
    }
    for (const auto& kv : *o) {
      if (kv.key() != "level" && kv.key() != "reason") {
        return Error(400, core::StrCat("Unknown field '", std::string_view(kv.key()), "'"), v);
      }
    }
    d.SetOverride(static_cast<resilience::DegradationLevel>(level->as_int64()),
                  reason != nullptr ? std::string(reason->get_string()) : "operator override");
  } else if (req.method() == bhttp::verb::delete_) {
    d.ClearOverride();
  } else if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) {
    auto res = Error(405, "Use GET, POST or DELETE on /admin/degradation", v);
    res.set(bhttp::field::allow, "GET, POST, DELETE");
    return res;
  }
  const resilience::DegradationStatus st = d.Status();
  json::array reasons;
  for (const std::string& r : st.reasons) reasons.emplace_back(r);
  json::object o{{"level", static_cast<int>(st.level)},
                 {"name", resilience::DegradationLevelName(st.level)},
                 {"computed", static_cast<int>(st.computed)},
                 {"reasons", std::move(reasons)},
                 {"since", core::FormatInstant(st.since)}};
  if (st.override_level) {
    o["override"] = json::object{{"level", static_cast<int>(*st.override_level)}, {"reason", st.override_reason}};
  }
  return MakeResponse(bhttp::status::ok, v, json::serialize(o), "application/json");
}

void Gateway::SetMetricsHook(std::function<void()> hook) { impl_->metrics_hook = std::move(hook); }

void Gateway::SetAdminHook(std::function<void(const AdminAction&)> hook) { impl_->admin_hook = std::move(hook); }

void Gateway::SetExportHook(ExportHook hook) { impl_->export_hook = std::move(hook); }

http::Response Gateway::Impl::Metrics() {
  if (metrics_hook) metrics_hook();
  if (config.service_pools != nullptr) {
    for (int i = 0; i < resilience::kServiceClasses; ++i) {
      const auto cls = static_cast<resilience::ServiceClass>(i);
      pool_in_flight.Add({{"pool", std::string(resilience::ServiceClassName(cls))}})
          .Set(config.service_pools->stats(cls).in_flight);
    }
  }
  uint64_t tenant_rejections = 0;
  for (const store::PoolStats& p : store.Pools()) {
    pool_connections.Add({{"shard", p.shard_id}, {"state", "open"}}).Set(p.open);
    pool_connections.Add({{"shard", p.shard_id}, {"state", "busy"}}).Set(p.busy);
    pool_connections.Add({{"shard", p.shard_id}, {"state", "max"}}).Set(p.size);
    pool_connections.Add({{"shard", p.shard_id}, {"state", "async_open"}}).Set(p.async_open);
    if (p.tenant_limit > 0) {
      pool_connections.Add({{"shard", p.shard_id}, {"state", "tenant_max"}}).Set(p.tenant_max_in_use);
      pool_connections.Add({{"shard", p.shard_id}, {"state", "tenant_limit"}}).Set(p.tenant_limit);
      pool_connections.Add({{"shard", p.shard_id}, {"state", "tenant_waiting"}}).Set(p.tenant_waiting);
    }
    tenant_rejections += p.tenant_rejections;
    std::lock_guard lock(counters_mu);
    prometheus::Counter& retried = read_retries.Add({{"shard", p.shard_id}});
    if (static_cast<double>(p.read_retries) > retried.Value()) {
      retried.Increment(static_cast<double>(p.read_retries) - retried.Value());
    }
    for (const auto& [plan, n] : {std::pair{"remembered", p.sizes_remembered}, std::pair{"counted", p.sizes_counted},
                                  std::pair{"changed", p.sizes_changed}}) {
      prometheus::Counter& counter = search_set_sizes.Add({{"shard", p.shard_id}, {"plan", plan}});
      if (static_cast<double>(n) > counter.Value()) counter.Increment(static_cast<double>(n) - counter.Value());
    }
  }
  {
    // The database bulkhead of each tenant (libs/store TenantConnections).
    std::lock_guard lock(counters_mu);
    prometheus::Counter& counter = shed.Add({{"pool", "db_tenant"}});
    if (static_cast<double>(tenant_rejections) > counter.Value()) {
      counter.Increment(static_cast<double>(tenant_rejections) - counter.Value());
    }
  }
  prometheus::TextSerializer serializer;
  return MakeResponse(bhttp::status::ok, 11, serializer.Serialize(metrics.Collect()),
                      "text/plain; version=0.0.4; charset=utf-8");
}

http::Response Gateway::Impl::Admin(http::Request& req, std::string_view path, const Query& query,
                                    const http::Peer& peer, std::string& route) {
  http::Response res = AdminRoute(req, path, query, peer, route);
  if (admin_hook) {
    AdminAction a;
    a.method = std::string(req.method_string());
    a.target = std::string(req.target());
    a.status = static_cast<int>(res.result_int());
    a.client_address = peer.address;
    // The tenant it concerns: the one created, or the one explained.
    if (const auto location = res.find(bhttp::field::location);
        location != res.end() && path == "/admin/tenants") {
      a.tenant = std::string(location->value().substr(std::string_view("/admin/tenants/").size()));
    } else if (path.rfind("/admin/explain/", 0) == 0) {
      std::string_view rest = path.substr(std::string_view("/admin/explain/").size());
      if (std::string_view t = rest.substr(0, rest.find('/')); fhir::IsValidTenantId(t)) a.tenant = std::string(t);
    }
    admin_hook(a);
  }
  return res;
}

http::Response Gateway::Impl::AdminRoute(http::Request& req, std::string_view path, const Query& query,
                                         const http::Peer& peer, std::string& route) {
  const unsigned v = req.version();
  if (config.authenticator == nullptr && config.admin_loopback_only && !peer.loopback) {
    route = "/admin";
    return Error(403, "The admin API answers loopback clients only", v);
  }
  auto tenant_json = [](const store::TenantInfo& t) {
    json::object o;
    o["id"] = t.id;
    o["region"] = t.region;
    o["shard"] = t.shard_id;
    o["status"] = t.status;
    o["eventsIncludeBody"] = t.events_include_body;
    o["everythingTypeLevel"] = t.everything_type_level;
    o["consentPolicy"] = t.consent_policy;
    json::array roles;
    for (const std::string& r : t.btg_roles) roles.emplace_back(r);
    o["btgRoles"] = std::move(roles);
    o["created"] = core::FormatInstant(t.created_at);
    return o;
  };
  if (path == "/admin/tenants") {
    route = "/admin/tenants";
    if (req.method() == bhttp::verb::get) {
      auto tenants = store.ListTenants();
      if (!tenants.ok()) return ErrorOf(tenants.status(), v);
      json::array arr;
      for (const auto& t : *tenants) arr.push_back(tenant_json(t));
      return MakeResponse(bhttp::status::ok, v, json::serialize(json::object{{"tenants", arr}}), "application/json");
    }
    if (req.method() == bhttp::verb::post) {
      auto body = fhir::ParseJson(req.body());
      if (!body.ok()) return ErrorOf(body.status(), v);
      const json::object* o = body->if_object();
      const json::value* id = o ? o->if_contains("id") : nullptr;
      const json::value* region = o ? o->if_contains("region") : nullptr;
      const json::value* with_body = o ? o->if_contains("eventsIncludeBody") : nullptr;
      const json::value* everything = o ? o->if_contains("everythingTypeLevel") : nullptr;
      const json::value* policy = o ? o->if_contains("consentPolicy") : nullptr;
      const json::value* btg_roles = o ? o->if_contains("btgRoles") : nullptr;
      if (id == nullptr || !id->is_string() || !fhir::IsValidTenantId(std::string_view(id->get_string()))) {
        return Error(400, "Body must be {\"id\": \"<tenant>\", \"region\": \"<region>\"} with id matching [a-z0-9][a-z0-9-]{0,62}", v);
      }
      if (region != nullptr && (!region->is_string() || !IsSafeToken(std::string_view(region->get_string()), 63))) {
        return Error(400, "region must be a short token such as \"us\"", v);
      }
      if (with_body != nullptr && !with_body->is_bool()) return Error(400, "eventsIncludeBody must be true or false", v);
      if (everything != nullptr && !everything->is_bool()) {
        return Error(400, "everythingTypeLevel must be true or false", v);
      }
      if (policy != nullptr && !(policy->is_string() && (policy->get_string() == "opt-in" ||
                                                          policy->get_string() == "opt-out"))) {
        return Error(400, "consentPolicy must be \"opt-in\" or \"opt-out\"", v);
      }
      std::vector<std::string> roles;
      if (btg_roles != nullptr) {
        const json::array* arr = btg_roles->if_array();
        if (arr == nullptr) return Error(400, "btgRoles must be an array of role names", v);
        for (const json::value& r : *arr) {
          if (!r.is_string() || !IsSafeToken(std::string_view(r.get_string()), 64)) {
            return Error(400, "btgRoles must be an array of role names such as \"physician\"", v);
          }
          roles.emplace_back(r.get_string());
        }
      }
      for (const auto& kv : *o) {
        if (kv.key() != "id" && kv.key() != "region" && kv.key() != "eventsIncludeBody" &&
            kv.key() != "everythingTypeLevel" && kv.key() != "consentPolicy" && kv.key() != "btgRoles") {
          return Error(400, core::StrCat("Unknown field '", std::string_view(kv.key()), "'"), v);
        }
      }
      store::TenantOptions options;
      if (region != nullptr) options.region = std::string(region->get_string());
      options.events_include_body = with_body != nullptr && with_body->get_bool();
      options.everything_type_level = everything != nullptr && everything->get_bool();
      if (policy != nullptr) options.consent_policy = std::string(policy->get_string());
      options.btg_roles = std::move(roles);
      auto t = store.CreateTenant(std::string_view(id->get_string()), options);
      if (!t.ok()) return ErrorOf(t.status(), v);
      auto res = MakeResponse(bhttp::status::created, v, json::serialize(tenant_json(*t)), "application/json");
      res.set(bhttp::field::location, core::StrCat("/admin/tenants/", t->id));
      return res;
    }
    auto res = Error(405, "Use GET or POST on /admin/tenants", v);
    res.set(bhttp::field::allow, "GET, POST");
    return res;
  }
  if (path == "/admin/shards") {
    route = "/admin/shards";
    if (req.method() != bhttp::verb::get) {
      auto res = Error(405, "Use GET on /admin/shards", v);
      res.set(bhttp::field::allow, "GET");
      return res;
    }
    auto shards = store.ListShards();
    if (!shards.ok()) return ErrorOf(shards.status(), v);
    json::array arr;
    for (const auto& s : *shards) arr.push_back(json::object{{"id", s.id}, {"dsn", s.dsn}, {"tenants", s.tenants}});
    return MakeResponse(bhttp::status::ok, v, json::serialize(json::object{{"shards", arr}}), "application/json");
  }
  if (path == "/admin/degradation") {
    route = "/admin/degradation";
    if (config.degradation == nullptr) return Error(404, "Degradation levels are not enabled", v);
    return Degradation(req);
  }
  if (path == "/admin/hotspots") {
    route = "/admin/hotspots";
    if (!config.hotspots) return Error(404, "Hot-spot detection is not enabled (the resource cache is off)", v);
    if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) {
      auto res = Error(405, "Use GET on /admin/hotspots", v);
      res.set(bhttp::field::allow, "GET");
      return res;
    }
    return MakeResponse(bhttp::status::ok, v, config.hotspots(), "application/json");
  }
  if (path.rfind("/admin/explain/", 0) == 0) {
    // /admin/explain/{tenant}/{type}?{search}: the plans of that search.
    route = "/admin/explain";
    if (req.method() != bhttp::verb::get) {
      auto res = Error(405, "Use GET on /admin/explain", v);
      res.set(bhttp::field::allow, "GET");
      return res;
    }
    std::vector<std::string_view> parts;
    for (std::string_view part : core::StrSplit(path.substr(std::string_view("/admin/explain/").size()), '/')) {
      parts.push_back(part);
    }
    if (parts.size() != 2 || !fhir::IsValidTenantId(parts[0])) {
      return Error(404, "Use /admin/explain/{tenant}/{type}?{search parameters}", v);
    }
    auto plan = api.ExplainSearch(std::string(parts[0]), std::string(parts[1]), query.params);
    if (!plan.ok()) return ErrorOf(plan.status(), v);
    return MakeResponse(bhttp::status::ok, v, std::move(*plan), "text/plain; charset=utf-8");
  }
  route = "/admin";
  return Error(404, core::StrCat("No admin endpoint at '", path, "'"), v);
}

http::Response Gateway::Impl::Fhir(http::Request& req, std::string_view path, const Query& query,
                                   std::string& route, std::string& tenant, AsyncRead* async) {
  using K = fhir::RestPath::Kind;
  const unsigned v = req.version();
  if (export_hook) {
    // Bulk export paths go to libs/bulk before content negotiation: their
    // files are NDJSON.
    std::string_view after_fhir = path.substr(std::string_view("/fhir/").size());
    const std::size_t slash = after_fhir.find('/');
    if (slash != std::string_view::npos) {
      std::string rest = core::StrReplaceAll(after_fhir.substr(slash), "%24", "$");
      std::string export_tenant(after_fhir.substr(0, slash));
      if (rest.find("/$export") != std::string::npos && fhir::IsValidTenantId(export_tenant)) {
        tenant = export_tenant;
        core::CurrentRequest().tenant = export_tenant;
        std::optional<http::Response> res =
            export_hook(req, export_tenant, rest, query.params, BaseUrl(req, export_tenant), route);
        if (res) return *std::move(res);
      }
    }
  }
  auto parsed = fhir::ParseRestPath(path);
  if (!parsed.ok()) return ErrorOf(parsed.status(), v);
  const fhir::RestPath& p = *parsed;
  route = RouteTemplate(p);
  tenant = p.tenant;
  core::CurrentRequest().tenant = p.tenant;
  const std::string base = BaseUrl(req, p.tenant);
  const bhttp::verb method = req.method();
  // Read-only from level 4: what changes data is refused; searches by POST
  // and operations that only read are not.
  if (config.degradation != nullptr &&
      !resilience::DegradationController::WritesAllowed(config.degradation->level())) {
    const bool post_search = method == bhttp::verb::post && (p.kind == K::kSystemSearch || p.kind == K::kTypeSearch);
    const bool writes = (method == bhttp::verb::post && !post_search) || method == bhttp::verb::put ||
                        method == bhttp::verb::patch || method == bhttp::verb::delete_;
    if (writes) {
      http::Response res = Error(503, core::StrCat("The service is read-only at degradation level ",
                                                   static_cast<int>(config.degradation->level()),
                                                   " (database degraded); writes are refused until it recovers"),
                                 v);
      res.set(bhttp::field::retry_after, "30");
      return res;
    }
  }

  // Content negotiation: JSON only. XML gets a clear 406/415.
  std::string format;
  for (const auto& [k, val] : query.params) {
    if (k == "_format") format = Lower(val);
  }
  if (!format.empty()) {
    if (IsXmlType(format)) return Error(406, "Only JSON is supported; XML (_format=" + format + ") is not", v);
    if (format != "json" && !IsJsonType(format)) return Error(406, "Unsupported _format '" + format + "'", v);
  } else if (auto accept = req[bhttp::field::accept]; !accept.empty()) {
    bool acceptable = false;
    bool wants_xml = false;
    for (std::string_view part : core::StrSplit(accept, ',')) {
      std::string t = MediaType(part);
      if (IsJsonType(t) || t == "*/*" || t == "application/*" || t == "application/json-patch+json") acceptable = true;
      if (IsXmlType(t)) wants_xml = true;
    }
    if (!acceptable) {
      return Error(406, wants_xml ? "Only JSON is supported; XML is not" : "No acceptable content type; use application/fhir+json", v);
    }
  }
  const bool form_search = method == bhttp::verb::post && (p.kind == K::kTypeSearch || p.kind == K::kSystemSearch);
  // An operation invoked by POST without parameters has no body to type.
  const bool bodiless_operation = req.body().empty() && (p.kind == K::kSystemOperation || p.kind == K::kTypeOperation ||
                                                         p.kind == K::kInstanceOperation);
  const bool has_body = (method == bhttp::verb::post || method == bhttp::verb::put || method == bhttp::verb::patch) &&
                        !bodiless_operation;
  if (form_search) {
    std::string ct = MediaType(req[bhttp::field::content_type]);
    if (ct != "application/x-www-form-urlencoded" && !(ct.empty() && req.body().empty())) {
      return Error(415, "POST _search takes an application/x-www-form-urlencoded body", v);
    }
  } else if (has_body) {
    std::string ct = MediaType(req[bhttp::field::content_type]);
    bool ok = method == bhttp::verb::patch ? ct == "application/json-patch+json" : IsJsonType(ct);
    if (!ok) {
      std::string msg = IsXmlType(ct) ? "XML request bodies are not supported; send application/fhir+json"
                        : method == bhttp::verb::patch
                            ? "PATCH requires Content-Type application/json-patch+json (JSON Patch)"
                            : "Content-Type must be application/fhir+json";
      if (ct.empty()) msg = "Missing Content-Type; " + msg;
      return Error(415, msg, v);
    }
  }

  // Every parameter must be understood; unknown ones are an error, not ignored.
  std::optional<int> count;
  std::optional<core::TimePoint> since;
  std::optional<int64_t> cursor;
  const bool history = p.kind == K::kSystemHistory || p.kind == K::kTypeHistory || p.kind == K::kInstanceHistory;
  // Searches and conditional interactions hand their parameters to the
  // search parser, which refuses what it does not know.
  const bool searchish = p.kind == K::kSystemSearch || p.kind == K::kTypeSearch || p.kind == K::kCompartment ||
                         (p.kind == K::kSystem && (method == bhttp::verb::get || method == bhttp::verb::head)) ||
                         (p.kind == K::kType && method != bhttp::verb::post);
  // Patient $everything checks its own parameters in the engine.
  const bool everything = p.operation == "everything" && p.type == "Patient" &&
                          (p.kind == K::kTypeOperation || p.kind == K::kInstanceOperation);
  for (const auto& [k, val] : query.params) {
    if (searchish) break;
    if (k == "_format" || k == "_pretty") continue;
    if (everything) continue;
    if (p.kind == K::kSystemOperation && p.operation == "reindex" && k == "type") continue;
    if (p.kind == K::kMetadata && k == "mode") {
      if (val != "full") return ErrorOf(BadParam(k, "only mode=full is supported"), v);
      continue;
    }
    if (history && k == "_count") {
      int c = 0;
      auto [ptr, ec] = std::from_chars(val.data(), val.data() + val.size(), c);
      if (ec != std::errc() || ptr != val.data() + val.size() || c < 1) {
        return ErrorOf(BadParam(k, "must be a positive integer"), v);
      }
      count = std::min(c, 1000);
      continue;
    }
    if (history && k == "_since") {
      since = ParseSince(val);
      if (!since) return ErrorOf(BadParam(k, "must be a FHIR instant such as 2026-01-01T00:00:00Z"), v);
      continue;
    }
    if (history && k == "_cursor") {
      int64_t c = 0;
      auto [ptr, ec] = std::from_chars(val.data(), val.data() + val.size(), c);
      if (ec != std::errc() || ptr != val.data() + val.size() || c < 1) return ErrorOf(BadParam(k, "is malformed"), v);
      cursor = c;
      continue;
    }
    return ErrorOf(BadParam(k, "is not supported by this interaction"), v);
  }

  auto if_match = [&]() -> absl::StatusOr<std::optional<int64_t>> {
    auto h = req[bhttp::field::if_match];
    if (h.empty()) return std::optional<int64_t>();
    auto version = fhir::ParseETagVersion(h);
    if (!version) {
      return core::Error(absl::StatusCode::kInvalidArgument, "If-Match must be an ETag such as W/\"1\"").Http(400);
    }
    return std::optional<int64_t>(*version);
  };

  // Prefer: return=minimal|representation|OperationOutcome, handling=strict|lenient
  std::string prefer = "representation";
  bool lenient = false;
  for (std::string_view header : core::StrSplit(req["Prefer"], ',')) {
    for (std::string_view part : core::StrSplit(header, ';')) {
      std::string t = Lower(MediaType(part));
      if (t.rfind("return=", 0) == 0) prefer = t.substr(7);
      if (t == "handling=lenient") lenient = true;
    }
  }

  auto search = [&](engine::SearchInput in) -> http::Response {
    in.params = query.params;
    in.lenient = lenient;
    in.base_url = base;
    if (form_search) {
      auto form = fhir::DecodeQuery(req.body());
      if (!form) return Error(400, "The form body has a malformed percent escape", v);
      for (auto& kv : *form) in.params.push_back(std::move(kv));
    }
    auto bundle = api.Search(p.tenant, in);
    if (!bundle.ok()) return ErrorOf(bundle.status(), v);
    return MakeResponse(bhttp::status::ok, v, std::move(*bundle));
  };
  const bool get_like = method == bhttp::verb::get || method == bhttp::verb::head;

  auto resource_response = [&](const absl::StatusOr<engine::ResourceResult>& r, bool write) {
    return write ? WriteResponse(r, v, prefer, base) : ReadResponse(r, v, ConditionsOf(req));
  };

  auto not_allowed = [&](std::string_view allow) {
    http::Response res = Error(405, core::StrCat("Method ", std::string(req.method_string()), " is not allowed at ", route), v);
    res.set(bhttp::field::allow, allow);
    return res;
  };

  switch (p.kind) {
    case K::kMetadata: {
      if (!(method == bhttp::verb::get || method == bhttp::verb::head)) return not_allowed("GET");
      auto caps = api.Capabilities(p.tenant, base);
      if (!caps.ok()) return ErrorOf(caps.status(), v);
      return MakeResponse(bhttp::status::ok, v, std::move(*caps));
    }
    case K::kSystem: {
      if (get_like) return search({});
      if (method != bhttp::verb::post) return not_allowed("GET, POST");
      // A batch or transaction Bundle (http.html#transaction).
      engine::BundleInput in;
      in.body = std::move(req.body());
      in.base_url = base;
      in.prefer_return = prefer;
      auto bundle = api.ProcessBundle(p.tenant, in);
      if (!bundle.ok()) return ErrorOf(bundle.status(), v);
      return MakeResponse(bhttp::status::ok, v, std::move(*bundle));
    }
    case K::kSystemSearch:
    case K::kTypeSearch: {
      if (method != bhttp::verb::post && !get_like) return not_allowed("GET, POST");
      engine::SearchInput in;
      in.type = p.type;
      return search(std::move(in));
    }
    case K::kSystemOperation:
    case K::kTypeOperation:
    case K::kInstanceOperation: {
      if (everything) {
        // Parameters in the URL only; a Parameters body is not read.
        if (!get_like) return not_allowed("GET");
        engine::EverythingInput in;
        in.id = p.id;
        in.base_url = base;
        for (const auto& kv : query.params) {
          if (kv.first != "_format" && kv.first != "_pretty") in.params.push_back(kv);
        }
        auto bundle = api.Everything(p.tenant, in);
        if (!bundle.ok()) return ErrorOf(bundle.status(), v);
        return MakeResponse(bhttp::status::ok, v, std::move(*bundle));
      }
      if (p.operation != "reindex" || p.kind == K::kInstanceOperation) {
        return Error(404, core::StrCat("Operation $", p.operation, " is not supported"), v);
      }
      if (get_like) {
        auto status = api.ReindexStatus(p.tenant);
        if (!status.ok()) return ErrorOf(status.status(), v);
        return MakeResponse(bhttp::status::ok, v, std::move(*status));
      }
      if (method != bhttp::verb::post) return not_allowed("GET, POST");
      std::vector<std::string> types;
      if (p.kind == K::kTypeOperation) types.push_back(p.type);
      for (const auto& [k, val] : query.params) {
        if (k != "type") continue;
        for (std::string_view t : core::StrSplit(val, ',')) types.emplace_back(t);
      }
      // The same from a Parameters body: {"name": "type", "valueCode": "Patient"}.
      if (!req.body().empty()) {
        auto body = fhir::ParseJson(req.body());
        if (!body.ok()) return ErrorOf(body.status(), v);
        const json::object* o = body->if_object();
        const json::value* rt = o ? o->if_contains("resourceType") : nullptr;
        if (rt == nullptr || !rt->is_string() || rt->get_string() != "Parameters") {
          return Error(400, "The body of $reindex must be a Parameters resource", v);
        }
        if (const json::value* ps = o->if_contains("parameter"); ps != nullptr && ps->is_array()) {
          for (const json::value& param : ps->get_array()) {
            const json::object* po = param.if_object();
            const json::value* name = po ? po->if_contains("name") : nullptr;
            if (name == nullptr || !name->is_string() || name->get_string() != "type") {
              return Error(400, "$reindex takes only the parameter 'type'", v);
            }
            for (const char* key : {"valueCode", "valueString"}) {
              if (const json::value* t = po->if_contains(key); t != nullptr && t->is_string()) {
                types.emplace_back(t->get_string());
              }
            }
          }
        }
      }
      auto job = api.StartReindex(p.tenant, types);
      if (!job.ok()) return ErrorOf(job.status(), v);
      http::Response res = MakeResponse(bhttp::status::accepted, v, std::move(*job));
      res.set(bhttp::field::content_location, core::StrCat(base, "/$reindex"));
      return res;
    }
    case K::kCompartment: {
      if (!get_like) return not_allowed("GET");
      engine::SearchInput in;
      in.compartment = p.type;
      in.compartment_id = p.id;
      if (p.target == "*") {
        in.all_types = true;
      } else {
        in.type = p.target;
      }
      return search(std::move(in));
    }
    case K::kType: {
      if (get_like) {
        engine::SearchInput in;
        in.type = p.type;
        return search(std::move(in));
      }
      if (method == bhttp::verb::put) {
        if (query.params.empty()) return Error(400, "PUT on a type needs search criteria (conditional update)", v);
        return resource_response(api.ConditionalUpdate(p.tenant, p.type, query.params, req.body()), true);
      }
      if (method == bhttp::verb::delete_) {
        if (query.params.empty()) return Error(400, "DELETE on a type needs search criteria (conditional delete)", v);
        auto r = api.ConditionalDelete(p.tenant, p.type, query.params);
        if (!r.ok()) return ErrorOf(r.status(), v);
        http::Response res = MakeResponse(bhttp::status::no_content, v, "");
        if (*r) res.set(bhttp::field::etag, fhir::FormatETag((*r)->version));
        return res;
      }
      if (method != bhttp::verb::post) return not_allowed("GET, POST, PUT, DELETE");
      if (auto ine = req["If-None-Exist"]; !ine.empty()) {
        std::string criteria(ine);
        if (!criteria.empty() && criteria[0] == '?') criteria.erase(0, 1);
        auto parsed_criteria = fhir::DecodeQuery(criteria);
        if (!parsed_criteria) return Error(400, "If-None-Exist has a malformed percent escape", v);
        return resource_response(api.ConditionalCreate(p.tenant, p.type, req.body(), *parsed_criteria), true);
      }
      if (async != nullptr) {
        async->deferred = true;
        api.CreateAsync(p.tenant, p.type, req.body(), *async->io,
                        [v, prefer, base, done = async->done](const absl::StatusOr<engine::ResourceResult>& r) {
                          done(WriteResponse(r, v, prefer, base));
                        });
        return {};
      }
      return resource_response(api.Create(p.tenant, p.type, req.body()), true);
    }
    case K::kInstance: {
      if (method == bhttp::verb::get || method == bhttp::verb::head) {
        ReadConditions conditions = ConditionsOf(req);
        if (async != nullptr) {
          async->deferred = true;
          api.ReadAsync(p.tenant, p.type, p.id, std::nullopt, *async->io,
                        [v, conditions, done = async->done](const absl::StatusOr<engine::ResourceResult>& r) {
                          done(ReadResponse(r, v, conditions));
                        });
          return {};
        }
        return ReadResponse(api.Read(p.tenant, p.type, p.id), v, conditions);
      }
      if (method == bhttp::verb::put) {
        auto im = if_match();
        if (!im.ok()) return ErrorOf(im.status(), v);
        return resource_response(api.Update(p.tenant, p.type, p.id, req.body(), *im), true);
      }
      if (method == bhttp::verb::patch) {
        auto im = if_match();
        if (!im.ok()) return ErrorOf(im.status(), v);
        return resource_response(api.Patch(p.tenant, p.type, p.id, req.body(), *im), true);
      }
      if (method == bhttp::verb::delete_) {
        auto im = if_match();
        if (!im.ok()) return ErrorOf(im.status(), v);
        auto r = api.Delete(p.tenant, p.type, p.id, *im);
        if (!r.ok()) return ErrorOf(r.status(), v);
        http::Response res = MakeResponse(bhttp::status::no_content, v, "");
        res.set(bhttp::field::etag, fhir::FormatETag(r->version));
        if (prefer == "operationoutcome") {
          res = MakeResponse(bhttp::status::ok, v,
                             fhir::OperationOutcomeJson({{"information", "informational",
                                                          core::StrCat("Deleted ", p.type, "/", p.id), ""}}));
        }
        return res;
      }
      return not_allowed("GET, PUT, PATCH, DELETE");
    }
    case K::kVersion: {
      if (!(method == bhttp::verb::get || method == bhttp::verb::head)) return not_allowed("GET");
      int64_t version = std::stoll(p.version);
      if (async != nullptr) {
        async->deferred = true;
        api.ReadAsync(p.tenant, p.type, p.id, version, *async->io,
                      [v, conditions = ConditionsOf(req), done = async->done](
                          const absl::StatusOr<engine::ResourceResult>& r) { done(ReadResponse(r, v, conditions)); });
        return {};
      }
      return resource_response(api.VRead(p.tenant, p.type, p.id, version), false);
    }
    case K::kSystemHistory:
    case K::kTypeHistory:
    case K::kInstanceHistory: {
      if (!(method == bhttp::verb::get || method == bhttp::verb::head)) return not_allowed("GET");
      engine::HistoryRequest h;
      if (!p.type.empty()) h.type = p.type;
      if (!p.id.empty()) h.id = p.id;
      h.since = since;
      h.count = count.value_or(50);
      h.cursor = cursor;
      h.base_url = base;
      h.self_query = query.raw;
      auto bundle = api.History(p.tenant, h);
      if (!bundle.ok()) return ErrorOf(bundle.status(), v);
      return MakeResponse(bhttp::status::ok, v, std::move(*bundle));
    }
  }
  return Error(404, "No such FHIR endpoint", v);
}

}  // namespace medgrid::gateway
