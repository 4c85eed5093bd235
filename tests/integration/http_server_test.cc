// The Beast HTTP server on its own: keep-alive, limits, timeouts and the
// graceful drain on Stop() (what SIGTERM triggers in main.cc).
#include <future>
#include <latch>
#include <thread>

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/read.hpp"
#include "boost/asio/write.hpp"
#include "gtest/gtest.h"
#include "integration/harness.h"
#include "medgrid/http/server.h"

namespace medgrid::testing {
namespace {

namespace bhttp = boost::beast::http;

http::Response PlainError(int status, const std::string& message, unsigned version) {
  http::Response res{static_cast<bhttp::status>(status), version};
  res.body() = message;
  return res;
}

http::ServerConfig SmallConfig() {
  http::ServerConfig c;
  c.port = 0;
  c.io_threads = 2;
  c.worker_threads = 4;
  c.body_limit = 1024;
  c.header_limit = 2048;
  c.read_timeout = std::chrono::milliseconds(300);
  c.idle_timeout = std::chrono::milliseconds(5000);
  c.drain_timeout = std::chrono::milliseconds(10000);
  return c;
}

TEST(HttpServer, KeepAliveServesManyRequestsOnOneConnection) {
  std::atomic<int> calls{0};
  http::Server server(
      SmallConfig(),
      [&](http::Request&& req, const http::Peer& peer) {
        ++calls;
        http::Response res{bhttp::status::ok, req.version()};
        res.body() = std::string(req.target()) + (peer.loopback ? " loopback" : "");
        return res;
      },
      PlainError);
  ASSERT_TRUE(server.Start().ok());
  HttpClient client(server.port());
  for (int i = 0; i < 20; ++i) {
    auto res = client.Get("/x" + std::to_string(i));
    ASSERT_EQ(res.status, 200);
    EXPECT_EQ(res.body, "/x" + std::to_string(i) + " loopback");
  }
  EXPECT_EQ(calls.load(), 20);
  server.Stop();
}

TEST(HttpServer, LimitsAndTimeouts) {
  http::Server server(
      SmallConfig(), [](http::Request&& req, const http::Peer&) { return http::Response{bhttp::status::ok, req.version()}; },
      PlainError);
  ASSERT_TRUE(server.Start().ok());
  HttpClient client(server.port());
  EXPECT_EQ(client.Send("POST", "/", std::string(2000, 'x')).status, 413);
  EXPECT_EQ(client.Get("/", {{"X-Big", std::string(4000, 'y')}}).status, 431);
  // A request that stops half-way has its connection closed after the read
  // timeout, and the server goes on serving others.
  auto start = std::chrono::steady_clock::now();
  auto stalled = client.SendRaw("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
  EXPECT_EQ(stalled.status, -1) << "expected the connection to be closed";
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
  EXPECT_EQ(client.Get("/").status, 200);
  server.Stop();
}

TEST(HttpServer, StopDrainsInFlightRequestsThenRefuses) {
  std::latch entered(1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  http::Server server(
      SmallConfig(),
      [&](http::Request&& req, const http::Peer&) {
        if (req.target() == "/slow") {
          entered.count_down();
          released.wait();
        }
        http::Response res{bhttp::status::ok, req.version()};
        res.body() = "done";
        return res;
      },
      PlainError);
  ASSERT_TRUE(server.Start().ok());
  const uint16_t port = server.port();

  auto slow = std::async(std::launch::async, [port] {
    HttpClient client(port);
    return client.Get("/slow");
  });
  entered.wait();
  EXPECT_EQ(server.in_flight(), 1);
  auto stopper = std::async(std::launch::async, [&] { server.Stop(); });
  // Stop() is waiting on the in-flight request; let it finish.
  EXPECT_EQ(stopper.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  release.set_value();
  HttpResponse res = slow.get();
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.body, "done");
  EXPECT_EQ(res.Header("Connection"), "close");
  stopper.get();
  EXPECT_EQ(server.in_flight(), 0);

  // After Stop() nothing listens any more.
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket sock(io);
  boost::system::error_code ec;
  sock.connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec);
  EXPECT_TRUE(ec) << "connected after Stop()";
}

}  // namespace
}  // namespace medgrid::testing
