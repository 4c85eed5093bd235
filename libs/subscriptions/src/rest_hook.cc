#include "medgrid/subscriptions/rest_hook.h"

#include <optional>

#include "boost/asio/connect.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/ssl.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"
#include "medgrid/core/strings.h"

namespace medgrid::subscriptions {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace ssl = boost::asio::ssl;

// A receiver's answer is only looked at for its status.
constexpr std::size_t kMaxResponseBody = 1 << 20;

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

}  // namespace

absl::Status SendRestHook(const RestHookRequest& request, const RestHookTimeouts& timeouts) {
  asio::io_context io;
  tcp::resolver resolver(io);
  // Plain http uses `plain`; https a TLS stream over its own tcp_stream.
  beast::tcp_stream plain(io);
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  if (request.endpoint.tls) {
    secure.emplace(io, ClientTlsContext());
    // SNI, and the certificate must name the host.
    SSL_set_tlsext_host_name(secure->native_handle(), request.endpoint.host.c_str());
    secure->set_verify_callback(ssl::host_name_verification(request.endpoint.host));
  }
  beast::tcp_stream& stream = secure ? beast::get_lowest_layer(*secure) : plain;
  bhttp::request<bhttp::string_body> req{request.method == "PUT" ? bhttp::verb::put : bhttp::verb::post,
                                         request.endpoint.target, 11};
  req.set(bhttp::field::host, request.endpoint.port == (request.endpoint.tls ? 443 : 80)
                                  ? request.endpoint.host
                                  : core::StrCat(request.endpoint.host, ":", request.endpoint.port));
  req.set(bhttp::field::user_agent, "medgrid-subscriptions");
  for (const auto& [name, value] : request.headers) req.set(name, value);
  if (!request.content_type.empty()) req.set(bhttp::field::content_type, request.content_type);
  req.body() = request.body;
  req.keep_alive(false);
  req.prepare_payload();

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(kMaxResponseBody);
  beast::error_code failure;
  std::string stage = "resolve";
  // The resolve and connect share the connect deadline: a timer closes the
  // stream (cancelling the resolve as well) when it passes.
  asio::steady_timer connect_deadline(io, timeouts.connect);
  bool connect_timed_out = false;
  connect_deadline.async_wait([&](beast::error_code ec) {
    if (ec) return;
    connect_timed_out = true;
    resolver.cancel();
    stream.close();
  });
  resolver.async_resolve(
      request.endpoint.host, std::to_string(request.endpoint.port),
      [&](beast::error_code ec, tcp::resolver::results_type results) {
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
          stream.expires_after(timeouts.response);
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
  const std::string where = core::StrCat(request.endpoint.host, ":", request.endpoint.port);
  if (connect_timed_out) {
    return absl::DeadlineExceededError(core::StrCat("No connection to ", where, " within ", timeouts.connect.count(), " ms"));
  }
  if (failure == beast::error::timeout) {
    return absl::DeadlineExceededError(
        core::StrCat("No response from ", where, " within ", timeouts.response.count(), " ms"));
  }
  if (failure) return absl::UnavailableError(core::StrCat(stage, " ", where, ": ", failure.message()));
  const unsigned status = parser.get().result_int();
  if (status < 200 || status >= 300) {
    return absl::UnavailableError(core::StrCat("The endpoint ", where, " answered HTTP ", status));
  }
  return absl::OkStatus();
}

}  // namespace medgrid::subscriptions
