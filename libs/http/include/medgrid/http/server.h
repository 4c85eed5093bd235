// Asynchronous HTTP/1.1 server on Boost.Beast.
//
// One io_context per I/O thread accepts and parses requests (keep-alive,
// header and body limits, read and idle timeouts). Handlers may block on
// databases, so they run on a separate worker pool; the response is written
// back on the connection's own I/O thread.
//
//   http::Server server(config, [](http::Request&& req, const http::Peer& peer) {
//     http::Response res{boost::beast::http::status::ok, req.version()};
//     res.body() = "hello";
//     return res;
//   });
//   RETURN_IF_ERROR(server.Start());
//   ...
//   server.Stop();  // refuses new work, finishes in-flight requests, joins threads
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/http/message.hpp"
#include "boost/beast/http/string_body.hpp"

namespace boost::asio {
class io_context;
}

namespace medgrid::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

struct ServerConfig {
  // Address to bind; loopback by default.
  std::string address = "127.0.0.1";
  // Port to bind; 0 picks a free one (see Server::port()).
  uint16_t port = 8080;
  // I/O threads, each with its own io_context; 0 = one per core.
  int io_threads = 0;
  // Threads that run handlers (which may block on the database); 0 = four
  // per core. More threads than the database can use at once only add
  // context switches: on 2 cores, 32 workers gave a read p99 of 675 ms
  // where 8 gave 5 ms (docs/BENCHMARKS.md).
  int worker_threads = 0;
  // Largest request head (request line + headers) accepted; larger gets 431.
  std::size_t header_limit = 16 * 1024;
  // Largest request body accepted; larger gets 413.
  std::size_t body_limit = 16 * 1024 * 1024;
  // Time allowed to receive one whole request once it has started; a
  // request that stalls longer has its connection closed.
  std::chrono::milliseconds read_timeout{30000};
  // How long an idle keep-alive connection stays open.
  std::chrono::milliseconds idle_timeout{60000};
  // Longest Stop() waits for in-flight requests.
  std::chrono::milliseconds drain_timeout{30000};
};

struct Peer {
  std::string address;  // remote IP address
  bool loopback = false;
};

// Runs on a worker thread. Must not throw.
using Handler = std::function<Response(Request&& request, const Peer& peer)>;
// Runs on the I/O thread first, for requests that can be answered without
// blocking. Returns true when it took the request (it may move from it) and
// will call `done` exactly once on this thread, now or later; false sends
// the request to the Handler on a worker thread.
using AsyncHandler = std::function<bool(Request& request, const Peer& peer, boost::asio::io_context& io,
                                        std::function<void(Response)> done)>;
// Builds the response for a request the server itself rejects (400, 413,
// 431, 503 while draining), so the caller controls the error format.
using ErrorResponder = std::function<Response(int status, const std::string& message, unsigned version)>;

// Takes over a connection whose request asks for a websocket upgrade
// (RFC 6455): runs on the connection's I/O thread with the request and its
// socket, and returns true when it took them (it then owns the socket,
// moved out, and answers the handshake itself). False leaves the request to
// the other handlers. Upgraded connections are not in-flight requests:
// Stop() does not wait for them, and closes them with the I/O threads.
using UpgradeHandler =
    std::function<bool(Request& request, const Peer& peer, boost::asio::ip::tcp::socket& socket)>;

// Admission control (load shedding): runs on the I/O thread for every
// request before the handlers. Returns a response that refuses the request
// (say 503 when overloaded), or nullopt to let it through; it may set
// `ticket` to whatever must live while the request is handled (a place in a
// bulkhead), which the server drops once the handler's response is ready.
using Admission =
    std::function<std::optional<Response>(const Request& request, const Peer& peer, std::shared_ptr<void>& ticket)>;

class Server {
 public:
  // `async` may be empty.
  Server(ServerConfig config, Handler handler, ErrorResponder errors, AsyncHandler async = nullptr);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Sets the websocket upgrade handler. Before Start(); none by default.
  void SetUpgradeHandler(UpgradeHandler upgrade);
  // Sets the admission check. Before Start(); none by default.
  void SetAdmission(Admission admission);
  // Binds and starts the threads. Errors: Unavailable if the address cannot
  // be bound.
  absl::Status Start();
  // The bound port (after Start()).
  uint16_t port() const;
  // Graceful drain: stops accepting, lets in-flight requests finish (up to
  // drain_timeout), then closes every connection and joins all threads.
  // Idempotent; thread-safe.
  void Stop();
  // Requests currently being handled.
  int in_flight() const;

 // Implementation detail, public only so the connection code in server.cc
  // can name it.
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace medgrid::http
