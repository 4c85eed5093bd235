#include "medgrid/http/client.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include "boost/asio/connect.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/ssl.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"
#include "boost/url/parse.hpp"
#include "medgrid/core/status.h"
#include "medgrid/core/strings.h"

namespace medgrid::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

// https: TLS 1.2 or later, the peer's certificate checked against the
// system's trusted CAs (/etc/ssl/certs) and its name against the host.
ssl::context& ClientTlsContext() {
  static ssl::context ctx = [] {
    ssl::context c(ssl::context::tls_client);
    c.set_default_verify_paths();
    c.set_verify_mode(ssl::verify_peer);
    c.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    return c;
  }();
  return ctx;
}

// Request-line injection: a space or control character would end the target.
bool SafeTarget(std::string_view target) {
  if (target.empty() || target.front() != '/') return false;
  return std::none_of(target.begin(), target.end(),
                      [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; });
}

// Header injection: a CR or LF would start a new header or the body.
bool SafeHeader(std::string_view name, std::string_view value) {
  auto control = [](char c) { return c == '\r' || c == '\n' || c == '\0'; };
  if (name.empty() || name.find(':') != std::string_view::npos) return false;
  for (char c : name) {
    if (control(c) || c == ' ') return false;
  }
  for (char c : value) {
    if (control(c)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Url> ParseUrl(std::string_view text) {
  auto parsed = boost::urls::parse_uri(text);
  if (!parsed) return absl::InvalidArgumentError("must be an absolute http:// or https:// URL");
  const boost::urls::url_view& u = *parsed;
  Url url;
  if (u.scheme_id() == boost::urls::scheme::https) {
    url.tls = true;
    url.port = 443;
  } else if (u.scheme_id() != boost::urls::scheme::http) {
    return absl::InvalidArgumentError("must be an absolute http:// or https:// URL");
  }
  if (u.has_userinfo()) return absl::InvalidArgumentError("user info is not allowed");
  const std::string_view host = u.encoded_host_address();
  if (host.empty()) return absl::InvalidArgumentError("has no host");
  if (host.find('%') != std::string_view::npos) return absl::InvalidArgumentError("has a malformed host");
  url.host = std::string(host);
  if (u.has_port()) {
    // port_number() wraps values above 65535, so parse the digits here.
    const std::string_view port = u.port();
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return absl::InvalidArgumentError("has a malformed port");
    }
    url.port = static_cast<uint16_t>(value);
  }
  url.target = u.encoded_path().empty() ? "/" : std::string(u.encoded_path());
  if (u.has_query()) core::StrAppend(url.target, "?", std::string_view(u.encoded_query()));
  return url;
}

absl::StatusOr<FetchResponse> Fetch(const FetchRequest& request) {
  const Url& url = request.url;
  if (url.host.empty()) return absl::InvalidArgumentError("the URL has no host");
  if (!SafeTarget(url.target)) return absl::InvalidArgumentError("the URL's path or query is malformed");
  const bhttp::verb verb = bhttp::string_to_verb(request.method);
  if (verb == bhttp::verb::unknown) return absl::InvalidArgumentError("unsupported HTTP method");
  bhttp::request<bhttp::string_body> req{verb, url.target, 11};
  const bool ipv6 = url.host.find(':') != std::string::npos;
  const std::string where = core::StrCat(ipv6 ? "[" : "", url.host, ipv6 ? "]" : "", ":", url.port);
  req.set(bhttp::field::host, url.port == (url.tls ? 443 : 80) ? where.substr(0, where.rfind(':')) : where);
  req.set(bhttp::field::user_agent, "medgrid");
  for (const auto& [name, value] : request.headers) {
    if (!SafeHeader(name, value)) return absl::InvalidArgumentError("a request header is malformed");
    req.set(name, value);
  }
  req.body() = request.body;
  req.keep_alive(false);
  req.prepare_payload();

  asio::io_context io;
  tcp::resolver resolver(io);
  // Plain http uses `plain`; https a TLS stream over its own tcp_stream.
  beast::tcp_stream plain(io);
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  if (url.tls) {
    secure.emplace(io, ClientTlsContext());
    beast::error_code not_ip;
    asio::ip::make_address(url.host, not_ip);
    // SNI carries names only (RFC 6066); the certificate must name the host either way.
    if (not_ip) SSL_set_tlsext_host_name(secure->native_handle(), url.host.c_str());
    secure->set_verify_callback(ssl::host_name_verification(url.host));
  }
  beast::tcp_stream& stream = secure ? beast::get_lowest_layer(*secure) : plain;

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(request.max_body);
  beast::error_code failure;
  std::string stage = "resolve";
  // The resolve and connect share the connect deadline: a timer closes the
  // stream (cancelling the resolve as well) when it passes.
  asio::steady_timer connect_deadline(io, request.connect_timeout);
  bool connect_timed_out = false;
  connect_deadline.async_wait([&](beast::error_code ec) {
    if (ec) return;
    connect_timed_out = true;
    resolver.cancel();
    stream.close();
  });
  resolver.async_resolve(
      url.host, std::to_string(url.port), [&](beast::error_code ec, tcp::resolver::results_type results) {
        if (ec) {
          failure = ec;
          connect_deadline.cancel();
          return;
        }
        stage = "connect";
        stream.async_connect(results, [&](beast::error_code ec, const tcp::endpoint&) {
          connect_deadline.cancel();
          if (ec) {
            failure = ec;
            return;
          }
          stream.expires_after(request.timeout);
          auto exchange = [&](auto& s) {
            stage = "response";
            bhttp::async_write(s, req, [&](beast::error_code ec, std::size_t) {
              if (ec) {
                failure = ec;
                return;
              }
              bhttp::async_read(s, buffer, parser, [&](beast::error_code ec, std::size_t) { failure = ec; });
            });
          };
          if (!secure) return exchange(plain);
          stage = "tls handshake";
          secure->async_handshake(ssl::stream_base::client, [&, exchange](beast::error_code ec) {
            if (ec) {
              failure = ec;
              return;
            }
            exchange(*secure);
          });
        });
      });
  io.run();
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  if (connect_timed_out) {
    return absl::DeadlineExceededError(
        core::StrCat("No connection to ", where, " within ", request.connect_timeout.count(), " ms"));
  }
  if (failure == beast::error::timeout) {
    return absl::DeadlineExceededError(
        core::StrCat("No response from ", where, " within ", request.timeout.count(), " ms"));
  }
  if (failure) return absl::UnavailableError(core::StrCat(stage, " ", where, ": ", failure.message()));
  FetchResponse response;
  response.status = static_cast<int>(parser.get().result_int());
  for (const auto& field : parser.get()) {
    response.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  response.body = std::move(parser.get().body());
  return response;
}

}  // namespace medgrid::http
