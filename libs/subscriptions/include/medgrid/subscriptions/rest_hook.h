// The rest-hook channel's HTTP/1.1 client, http or https (TLS 1.2+, the
// certificate verified against the system's CAs and the host name). One
// request per connection, with a deadline on the connect and another on
// the TLS handshake and response together.
//
//   RestHookRequest r{.method = "POST", .endpoint = spec.endpoint, .headers = spec.headers};
//   absl::Status delivered = SendRestHook(r, timeouts);
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "medgrid/fhir/subscription.h"

namespace medgrid::subscriptions {

struct RestHookRequest {
  std::string method = "POST";  // POST (no payload) or PUT (the resource)
  fhir::HttpEndpoint endpoint;  // target already extended with /type/id for PUT
  std::vector<std::pair<std::string, std::string>> headers;  // channel.header; never logged
  std::string content_type;  // empty with no body
  std::string body;
};

struct RestHookTimeouts {
  std::chrono::milliseconds connect{5000};   // resolve and connect
  std::chrono::milliseconds response{10000};  // send the request and read the whole response
};

// Sends `request` and waits for the response. OK on a 2xx status. Errors:
// Unavailable for a connection that fails or a non-2xx status,
// DeadlineExceeded past a timeout; the message says which (and the status
// code) without the headers. Blocking; thread-safe.
absl::Status SendRestHook(const RestHookRequest& request, const RestHookTimeouts& timeouts);

}  // namespace medgrid::subscriptions
