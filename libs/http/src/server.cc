// Invariants: every Session lives on exactly one io_context (its socket's
// executor) and touches its state only there; a handler runs on the worker
// pool with the request moved out of the session, and its response is posted
// back to the session's executor. in_flight_ counts requests between "fully
// read" and "response written"; Stop() waits for it to reach zero.
#include "medgrid/http/server.h"

#include <array>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/thread_pool.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/websocket/rfc6455.hpp"
#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"

namespace medgrid::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

struct Server::Impl {
  Impl(ServerConfig c, Handler h, ErrorResponder e, AsyncHandler a)
      : config(std::move(c)),
        handler(std::move(h)),
        errors(std::move(e)),
        async_handler(std::move(a)),
        workers(config.worker_threads > 0 ? config.worker_threads
                                          : 4 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))) {}

  ServerConfig config;
  Handler handler;
  ErrorResponder errors;
  AsyncHandler async_handler;
  UpgradeHandler upgrade_handler;  // set before Start
  Admission admission;             // set before Start
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
  asio::thread_pool workers;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::size_t next_context = 0;
  uint16_t bound_port = 0;

  std::atomic<bool> stopping{false};
  std::atomic<int> in_flight{0};
  std::mutex mu;
  std::condition_variable drained;
  bool stopped = false;  // guarded by mu

  void Accept();
  void RequestDone() {
    if (in_flight.fetch_sub(1) == 1) {
      std::lock_guard lock(mu);
      drained.notify_all();
    }
  }
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, asio::io_context& io, Server::Impl& server)
      : stream_(std::move(socket)), io_(io), server_(server) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) {
      peer_.address = ep.address().to_string();
      peer_.loopback = ep.address().is_loopback();
    }
  }

  void Start() { ReadRequest(); }

 private:
  void ReadRequest() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_.config.header_limit));
    parser_->body_limit(server_.config.body_limit);
    stream_.expires_after(first_read_ ? server_.config.read_timeout : server_.config.idle_timeout);
    first_read_ = false;
    // Read the header first so the idle timeout gives way to the request
    // timeout once a request has begun.
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  void OnHeader(beast::error_code ec, std::size_t) {
    if (ec) return OnReadError(ec);
    stream_.expires_after(server_.config.read_timeout);
    bhttp::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnReadError(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted) {
      return Close();
    }
    if (ec == beast::error::timeout) {
      // tcp_stream has already closed the socket: a stalled request or an
      // idle keep-alive connection just ends, with no response to write.
      return Close();
    }
    if (ec == bhttp::error::body_limit) {
      return WriteError(413, core::StrCat("Request body exceeds the limit of ", server_.config.body_limit, " bytes"));
    }
    if (ec == bhttp::error::header_limit) {
      return WriteError(431, core::StrCat("Request header exceeds the limit of ", server_.config.header_limit, " bytes"));
    }
    return WriteError(400, core::StrCat("Malformed HTTP request: ", ec.message()));
  }

  void WriteError(int status, const std::string& message) {
    auto res = std::make_shared<Response>(server_.errors(status, message, 11));
    res->keep_alive(false);
    res->prepare_payload();
    stream_.expires_after(server_.config.read_timeout);
    bhttp::async_write(stream_, *res,
                       [self = shared_from_this(), res](beast::error_code, std::size_t) { self->LingerClose(); });
  }

  // After an error response the client may still be sending a body we will
  // not read. Closing with unread data makes the kernel send RST, which can
  // destroy the response before the client reads it; so half-close, discard
  // what still arrives for a moment, then close (as nginx's lingering close).
  void LingerClose() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    Discard();
  }

  void Discard() {
    stream_.async_read_some(asio::buffer(discard_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->Close();
      self->Discard();
    });
  }

  void OnRead(beast::error_code ec, std::size_t) {
    if (ec) return OnReadError(ec);
    stream_.expires_never();
    if (server_.upgrade_handler && !server_.stopping.load() && beast::websocket::is_upgrade(parser_->get()) &&
        server_.upgrade_handler(parser_->get(), peer_, stream_.socket())) {
      return;  // the connection is the upgrade handler's now
    }
    Request req = parser_->release();
    server_.in_flight.fetch_add(1);
    if (server_.stopping.load()) {
      auto res = std::make_shared<Response>(server_.errors(503, "Server is shutting down", req.version()));
      res->keep_alive(false);
      res->prepare_payload();
      return Write(res);
    }
    const bool keep_alive = req.keep_alive();
    const unsigned version = req.version();
    const bool head = req.method() == bhttp::verb::head;
    std::shared_ptr<void> ticket;
    if (server_.admission) {
      if (std::optional<Response> refused = server_.admission(req, peer_, ticket)) {
        return Write(Finalize(*std::move(refused), keep_alive, version, head));
      }
    }
    if (server_.async_handler &&
        server_.async_handler(req, peer_, io_, [self = shared_from_this(), keep_alive, version, head, ticket](Response res) mutable {
          ticket.reset();
          self->Write(self->Finalize(std::move(res), keep_alive, version, head));
        })) {
      return;
    }
    asio::post(server_.workers, [self = shared_from_this(), req = std::move(req), keep_alive, version, head,
                                 ticket = std::move(ticket)]() mutable {
      auto res = self->Finalize(self->server_.handler(std::move(req), self->peer_), keep_alive, version, head);
      ticket.reset();
      asio::post(self->stream_.get_executor(), [self, res]() { self->Write(res); });
    });
  }

  std::shared_ptr<Response> Finalize(Response&& handled, bool keep_alive, unsigned version, bool head) {
    auto res = std::make_shared<Response>(std::move(handled));
    res->version(version);
    res->keep_alive(keep_alive && !server_.stopping.load());
    res->prepare_payload();
    if (head) {
      // HEAD answers with the headers of the GET, Content-Length included,
      // and no body.
      auto length = res->body().size();
      res->body().clear();
      res->content_length(length);
    }
    return res;
  }

  void Write(std::shared_ptr<Response> res) {
    stream_.expires_after(server_.config.read_timeout);
    bhttp::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
      self->server_.RequestDone();
      if (ec || !res->keep_alive()) return self->Close();
      self->ReadRequest();
    });
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  asio::io_context& io_;  // the one running this session
  Server::Impl& server_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Peer peer_;
  bool first_read_ = false;
  std::array<char, 16384> discard_;
};

}  // namespace

void Server::Impl::Accept() {
  asio::io_context& ctx = *contexts[next_context];
  next_context = (next_context + 1) % contexts.size();
  acceptor->async_accept(ctx, [this, &ctx](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping.load()) return;
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);
      std::make_shared<Session>(std::move(socket), ctx, *this)->Start();
    }
    Accept();
  });
}

Server::Server(ServerConfig config, Handler handler, ErrorResponder errors, AsyncHandler async)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(handler), std::move(errors), std::move(async))) {}

Server::~Server() { Stop(); }

void Server::SetUpgradeHandler(UpgradeHandler upgrade) { impl_->upgrade_handler = std::move(upgrade); }
void Server::SetAdmission(Admission admission) { impl_->admission = std::move(admission); }

absl::Status Server::Start() {
  int n = impl_->config.io_threads > 0 ? impl_->config.io_threads
                                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) {
    impl_->contexts.push_back(std::make_unique<asio::io_context>(1));
    impl_->guards.push_back(asio::make_work_guard(*impl_->contexts.back()));
  }
  beast::error_code ec;
  auto address = asio::ip::make_address(impl_->config.address, ec);
  if (ec) return absl::InvalidArgumentError("Bad listen address " + impl_->config.address);
  tcp::endpoint endpoint(address, impl_->config.port);
  auto acceptor = std::make_unique<tcp::acceptor>(*impl_->contexts[0]);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        core::StrCat("Cannot listen on ", impl_->config.address, ":", impl_->config.port, ": ", ec.message()));
  }
  impl_->bound_port = acceptor->local_endpoint().port();
  impl_->acceptor = std::move(acceptor);
  impl_->Accept();
  for (auto& ctx : impl_->contexts) {
    impl_->threads.emplace_back([c = ctx.get()]() { c->run(); });
  }
  return absl::OkStatus();
}

uint16_t Server::port() const { return impl_->bound_port; }

int Server::in_flight() const { return impl_->in_flight.load(); }

void Server::Stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
  }
  impl_->stopping.store(true);
  if (impl_->acceptor) {
    asio::post(impl_->acceptor->get_executor(), [a = impl_->acceptor.get()]() {
      beast::error_code ec;
      a->close(ec);
    });
  }
  {
    std::unique_lock lock(impl_->mu);
    impl_->drained.wait_for(lock, impl_->config.drain_timeout, [this] { return impl_->in_flight.load() == 0; });
  }
  int left = impl_->in_flight.load();
  if (left > 0) core::Log(core::LogLevel::kWarn, "http.drain_timeout", {{"in_flight", std::to_string(left)}});
  impl_->guards.clear();
  for (auto& ctx : impl_->contexts) ctx->stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  impl_->workers.join();
  impl_->acceptor.reset();
  impl_->contexts.clear();
}

}  // namespace medgrid::http
