// A blocking HTTP/1.1 client for outbound calls: rest-hook deliveries, JWKS
// fetches. One request per connection; http, or https with TLS 1.2 or later,
// the peer's certificate checked against the system's trusted CAs and its
// name against the URL's host. No redirects, no proxies, no cookies.
//
//   http::FetchRequest req;
//   ASSIGN_OR_RETURN(req.url, http::ParseUrl("https://idp.example/jwks.json"));
//   absl::StatusOr<http::FetchResponse> res = http::Fetch(req);
//   if (res.ok() && res->status == 200) Use(res->body);
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace medgrid::http {

// An absolute http(s) URL, split for connecting. Callers that hold the
// parts already (a rest-hook endpoint) fill it in directly.
struct Url {
  bool tls = false;    // https
  std::string host;    // a name or an IP address (IPv6 without brackets)
  uint16_t port = 80;  // 443 by default for https
  std::string target;  // path and query, "/" at least; the fragment dropped
};

// Parses "http://host[:port][/path][?query][#fragment]" or https (RFC 3986
// syntax). Errors: InvalidArgument for another scheme, user info, a missing
// or malformed host or port, or characters a URL may not hold.
absl::StatusOr<Url> ParseUrl(std::string_view url);

struct FetchRequest {
  std::string method = "GET";
  Url url;
  // Sent in order after the defaults (User-Agent: medgrid); a later header of
  // the same name replaces an earlier one. Never logged or put in errors.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                                 // sent with Content-Length when not empty
  std::chrono::milliseconds connect_timeout{5000};  // resolve and connect
  std::chrono::milliseconds timeout{10000};         // TLS handshake, send the request, read the response
  std::size_t max_body = 1 << 20;                   // a longer response body is an error
};

struct FetchResponse {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
};

// Sends `request` and reads the whole response, whatever its status code.
// Errors: InvalidArgument for an empty host, a target that is not
// "/..." or holds a space or control character, an unknown method or a
// header with CR or LF;
// DeadlineExceeded past either timeout; Unavailable when the connection, the
// TLS handshake (certificate or name check included) or the exchange fails,
// or the body passes max_body. Messages name the stage and host:port, never
// headers or bodies. Blocking; thread-safe.
absl::StatusOr<FetchResponse> Fetch(const FetchRequest& request);

}  // namespace medgrid::http
