// A minimal HTTP/1.1 receiver for tests that need an endpoint the server
// calls (rest-hook Subscriptions, the break-the-glass webhook), and WaitFor,
// which polls a condition with a deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "medgrid/core/strings.h"

namespace medgrid::testing {

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

struct Received {
  std::string method;
  std::string target;
  std::string content_type;
  std::string authorization;
  std::string body;
};

// One scripted answer.
struct Reply {
  unsigned status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// A one-request-per-connection HTTP/1.1 receiver on 127.0.0.1, answering
// every request with `status`, or with the replies of a Script() first.
// Port 0 picks a free port.
class Receiver {
 public:
  using tcp = boost::asio::ip::tcp;
  explicit Receiver(uint16_t port = 0, unsigned status = 200) : acceptor_(io_), status_(status) {
    tcp::endpoint ep(boost::asio::ip::make_address("127.0.0.1"), port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(boost::asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Run(); });
  }
  ~Receiver() { Stop(); }

  uint16_t port() const { return port_; }
  std::string Url(const std::string& path) const { return core::StrCat("http://127.0.0.1:", port_, path); }
  std::vector<Received> Requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::size_t Count() {
    std::lock_guard lock(mu_);
    return requests_.size();
  }
  std::size_t CountAt(const std::string& target) {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const Received& r : requests_) n += r.target == target ? 1 : 0;
    return n;
  }
  // The next requests get these answers, in order; later ones `status` again.
  void Script(std::vector<Reply> replies) {
    std::lock_guard lock(mu_);
    script_.assign(std::make_move_iterator(replies.begin()), std::make_move_iterator(replies.end()));
  }
  // Closes the port: connections to it are refused from now on.
  void Stop() {
    if (!thread_.joinable()) return;
    stop_ = true;
    boost::beast::error_code ec;
    tcp::socket wake(io_);
    wake.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port_), ec);
    thread_.join();
    acceptor_.close(ec);
  }

 private:
  void Run() {
    while (true) {
      tcp::socket socket(io_);
      boost::beast::error_code ec;
      acceptor_.accept(socket, ec);
      if (stop_) return;
      if (ec) continue;
      boost::beast::flat_buffer buffer;
      boost::beast::http::request<boost::beast::http::string_body> req;
      boost::beast::http::read(socket, buffer, req, ec);
      if (ec) continue;
      Reply reply{status_, "", {}};
      {
        std::lock_guard lock(mu_);
        requests_.push_back({std::string(req.method_string()), std::string(req.target()),
                             std::string(req[boost::beast::http::field::content_type]),
                             std::string(req[boost::beast::http::field::authorization]), req.body()});
        if (!script_.empty()) {
          reply = std::move(script_.front());
          script_.pop_front();
        }
      }
      boost::beast::http::response<boost::beast::http::string_body> res{
          static_cast<boost::beast::http::status>(reply.status), 11};
      for (const auto& [name, value] : reply.headers) res.set(name, value);
      res.body() = std::move(reply.body);
      res.keep_alive(false);
      res.prepare_payload();
      boost::beast::http::write(socket, res, ec);
      socket.shutdown(tcp::socket::shutdown_both, ec);
    }
  }

  boost::asio::io_context io_;
  tcp::acceptor acceptor_;
  const unsigned status_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<Received> requests_;  // guarded by mu_
  std::deque<Reply> script_;        // guarded by mu_
};

}  // namespace medgrid::testing
