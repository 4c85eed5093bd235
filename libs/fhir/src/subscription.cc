#include "medgrid/fhir/subscription.h"

#include <charconv>

#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"
#include "medgrid/fhir/rest_path.h"

namespace medgrid::fhir {
namespace {

namespace json = boost::json;

absl::Status Bad(std::string_view path, std::string_view message) {
  return core::Error(absl::StatusCode::kInvalidArgument, core::StrCat(path, ": ", message))
      .Http(400)
      .Issue("invalid")
      .Path(path);
}

std::string StringAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->get_string()) : std::string();
}

bool IsTokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

absl::StatusOr<HttpEndpoint> ParseHttpEndpoint(std::string_view url) {
  const bool tls = url.rfind("https://", 0) == 0;
  if (!tls && url.rfind("http://", 0) != 0) return absl::InvalidArgumentError("must be an absolute http:// or https:// URL");
  std::string_view rest = url.substr(tls ? 8 : 7);
  if (std::size_t hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  const std::size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  HttpEndpoint ep;
  ep.tls = tls;
  ep.port = tls ? 443 : 80;
  ep.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (ep.target.front() == '?') ep.target = core::StrCat("/", ep.target);
  if (authority.find('@') != std::string_view::npos) return absl::InvalidArgumentError("user info is not allowed");
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {
    const std::size_t close = host.find(']');
    if (close == std::string_view::npos) return absl::InvalidArgumentError("malformed IPv6 host");
    std::string_view after = host.substr(close + 1);
    host = host.substr(1, close - 1);
    authority = after;
  } else {
    const std::size_t colon = host.rfind(':');
    authority = colon == std::string_view::npos ? std::string_view() : host.substr(colon);
    host = host.substr(0, colon);
  }
  if (host.empty()) return absl::InvalidArgumentError("has no host");
  for (char c : host) {
    if (c <= ' ' || c == '/' || c == '\\' || c == '%' || static_cast<unsigned char>(c) >= 0x7f) {
      return absl::InvalidArgumentError("has a malformed host");
    }
  }
  ep.host = std::string(host);
  if (!authority.empty()) {
    if (authority.front() != ':') return absl::InvalidArgumentError("has a malformed port");
    std::string_view port = authority.substr(1);
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || ptr != port.data() + port.size() || value == 0 || value > 65535) {
      return absl::InvalidArgumentError("has a malformed port");
    }
    ep.port = static_cast<uint16_t>(value);
  }
  for (char c : ep.target) {
    if (c <= ' ' || c == 0x7f) return absl::InvalidArgumentError("has spaces or control characters in its path");
  }
  return ep;
}

absl::StatusOr<SubscriptionSpec> ParseSubscription(const json::value& resource) {
  if (!resource.is_object()) return Bad("Subscription", "must be a JSON object");
  const json::object& o = resource.get_object();
  SubscriptionSpec s;
  s.id = StringAt(o, "id");
  if (const json::value* meta = o.if_contains("meta"); meta != nullptr && meta->is_object()) {
    const std::string v = StringAt(meta->get_object(), "versionId");
    std::from_chars(v.data(), v.data() + v.size(), s.version);
  }
  s.status = StringAt(o, "status");
  if (s.status != "requested" && s.status != "active" && s.status != "error" && s.status != "off") {
    return Bad("Subscription.status", "must be requested, active, error or off");
  }
  s.criteria = StringAt(o, "criteria");
  if (s.criteria.empty()) return Bad("Subscription.criteria", "is required");
  const std::size_t q = s.criteria.find('?');
  s.criteria_type = s.criteria.substr(0, q);
  if (s.criteria_type.empty() || s.criteria_type.find('/') != std::string::npos) {
    return Bad("Subscription.criteria", "must be a search URL of one resource type, e.g. Observation?code=1234-5");
  }
  if (q != std::string::npos) {
    auto params = DecodeQuery(std::string_view(s.criteria).substr(q + 1));
    if (!params) return Bad("Subscription.criteria", "has a malformed query");
    s.criteria_params = std::move(*params);
  }
  const json::value* channel = o.if_contains("channel");
  if (channel == nullptr || !channel->is_object()) return Bad("Subscription.channel", "is required");
  const json::object& ch = channel->get_object();
  s.channel_type = StringAt(ch, "type");
  if (s.channel_type != "rest-hook" && s.channel_type != "websocket") {
    return core::Error(absl::StatusCode::kInvalidArgument,
                       "Subscription.channel.type: only rest-hook and websocket are supported")
        .Http(400)
        .Issue("not-supported")
        .Path("Subscription.channel.type");
  }
  s.payload = StringAt(ch, "payload");
  if (!s.payload.empty() && s.payload != "application/fhir+json" && s.payload != "application/json") {
    return Bad("Subscription.channel.payload", "must be empty or application/fhir+json");
  }
  if (s.payload == "application/json") s.payload = "application/fhir+json";
  if (s.channel_type == "rest-hook") {
    s.endpoint_url = StringAt(ch, "endpoint");
    if (s.endpoint_url.empty()) return Bad("Subscription.channel.endpoint", "is required for a rest-hook");
    absl::StatusOr<HttpEndpoint> ep = ParseHttpEndpoint(s.endpoint_url);
    if (!ep.ok()) return Bad("Subscription.channel.endpoint", std::string(ep.status().message()));
    s.endpoint = std::move(*ep);
  }
  if (const json::value* headers = ch.if_contains("header"); headers != nullptr) {
    if (!headers->is_array()) return Bad("Subscription.channel.header", "must be an array of strings");
    for (const json::value& h : headers->get_array()) {
      if (!h.is_string()) return Bad("Subscription.channel.header", "must be an array of strings");
      std::string_view line = h.get_string();
      const std::size_t colon = line.find(':');
      std::string_view name = colon == std::string_view::npos ? std::string_view() : line.substr(0, colon);
      bool ok = !name.empty();
      for (char c : name) ok = ok && IsTokenChar(c);
      for (char c : line) ok = ok && c != '\r' && c != '\n' && c != '\0';
      if (!ok) return Bad("Subscription.channel.header", "each entry must be 'Name: value'");
      s.headers.emplace_back(std::string(name), std::string(Trim(line.substr(colon + 1))));
    }
  }
  return s;
}

}  // namespace medgrid::fhir
