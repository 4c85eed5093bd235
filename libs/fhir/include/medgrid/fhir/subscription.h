// The R4 Subscription resource (subscription.html) as this server supports
// it: criteria that are a search URL of one type, channel rest-hook or
// websocket, and the rest-hook endpoint parsed as a plain-http URL.
//
//   ASSIGN_OR_RETURN(fhir::SubscriptionSpec s, fhir::ParseSubscription(resource));
//   if (s.channel_type == "rest-hook") ... s.endpoint.host ...
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/json/value.hpp"

namespace medgrid::fhir {

// An http:// or https:// URL split for a client.
struct HttpEndpoint {
  bool tls = false;  // https
  std::string host;
  uint16_t port = 80;  // 443 by default for https
  std::string target;  // path and query, "/" at least; no fragment
};

struct SubscriptionSpec {
  std::string id;
  int64_t version = 0;  // meta.versionId, 0 when absent
  std::string status;   // requested | active | error | off
  std::string criteria;
  std::string criteria_type;                                      // "Observation" of "Observation?code=..."
  std::vector<std::pair<std::string, std::string>> criteria_params;  // the query, decoded
  std::string channel_type;  // rest-hook | websocket
  std::string endpoint_url;  // rest-hook: as written
  HttpEndpoint endpoint;     // rest-hook: parsed
  std::string payload;       // empty (no body) or application/fhir+json
  // channel.header, each "Name: value" split; values may hold secrets and
  // are never logged.
  std::vector<std::pair<std::string, std::string>> headers;
};

// Parses and checks a Subscription resource (a JSON object). The criteria's
// query is decoded here; whether its parameters exist for the type is the
// search parser's business. Errors: InvalidArgument naming the element
// (Subscription.channel.type and the like) for an unsupported channel type
// or payload, a rest-hook without an http(s):// endpoint, a malformed header
// or criteria.
absl::StatusOr<SubscriptionSpec> ParseSubscription(const boost::json::value& resource);

// Parses an absolute http:// or https:// URL. Errors: InvalidArgument
// (other schemes, user info, a bad port, no host).
absl::StatusOr<HttpEndpoint> ParseHttpEndpoint(std::string_view url);

}  // namespace medgrid::fhir
