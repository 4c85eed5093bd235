// Invariants: a WebsocketSession lives on its socket's I/O thread and
// touches its stream and queue only there; others reach it by posting to
// its executor, under the hub's lock while the hub is not stopped (so never
// after the HTTP server's I/O threads are gone). The hub holds weak
// references: a connection ends when its reads fail, and forgets itself.
#include "medgrid/subscriptions/websocket.h"

#include <condition_variable>
#include <deque>

#include "boost/asio/post.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/websocket.hpp"
#include "medgrid/core/logging.h"
#include "medgrid/core/strings.h"

namespace medgrid::subscriptions {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = boost::beast::websocket;
using tcp = asio::ip::tcp;

namespace {

constexpr std::string_view kWebsocketPath = "$subscription-websocket";
// A client's message is a command ("bind <id>"), never large.
constexpr std::size_t kMaxMessage = 4096;

// What a Ping waits for: the writes it posted.
struct Waiter {
  std::mutex mu;
  std::condition_variable done;
  int pending = 0;
  bool delivered = false;
};

}  // namespace

class WebsocketSession : public std::enable_shared_from_this<WebsocketSession> {
 public:
  WebsocketSession(tcp::socket&& socket, std::string tenant, WebsocketHub& hub)
      : ws_(std::move(socket)), tenant_(std::move(tenant)), hub_(hub) {}
  ~WebsocketSession() { hub_.Forget(this); }

  void Start(http::Request request) {
    request_ = std::move(request);
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.read_message_max(kMaxMessage);
    ws_.async_accept(request_, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      self->Read();
    });
  }

  // On this session's thread: queues a text message; `done` (may be empty)
  // gets whether it was written.
  void Send(std::string text, std::function<void(bool)> done) {
    out_.push_back({std::move(text), std::move(done)});
    if (out_.size() == 1) Write();
  }

  asio::any_io_executor executor() { return ws_.get_executor(); }

 private:
  struct Outgoing {
    std::string text;
    std::function<void(bool)> done;
  };

  void Read() {
    ws_.async_read(buffer_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) {
        self->closed_ = true;
        self->hub_.Forget(self.get());
        return;
      }
      std::string message = beast::buffers_to_string(self->buffer_.data());
      self->buffer_.consume(self->buffer_.size());
      self->OnMessage(message);
      self->Read();
    });
  }

  void OnMessage(std::string_view message) {
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r' || message.back() == ' ')) {
      message.remove_suffix(1);
    }
    constexpr std::string_view kBind = "bind ";
    if (message.rfind(kBind, 0) != 0) {
      Send("error unknown command (expected: bind <subscription id>)", nullptr);
      return;
    }
    const std::string id(message.substr(kBind.size()));
    if (id.empty() || !hub_.CanBindNow(tenant_, id)) {
      // Another tenant's subscription is as unknown as a missing one.
      Send(core::StrCat("error ", id, " no websocket Subscription with this id in this tenant"), nullptr);
      return;
    }
    hub_.Bind(tenant_, id, shared_from_this());
    Send(core::StrCat("bound ", id), nullptr);
  }

  void Write() {
    if (closed_) {
      while (!out_.empty()) {
        if (out_.front().done) out_.front().done(false);
        out_.pop_front();
      }
      return;
    }
    ws_.text(true);
    ws_.async_write(asio::buffer(out_.front().text), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (self->out_.front().done) self->out_.front().done(!ec);
      self->out_.pop_front();
      if (ec) self->closed_ = true;
      if (!self->out_.empty()) self->Write();
    });
  }

  websocket::stream<beast::tcp_stream> ws_;
  http::Request request_;  // the upgrade request, until the handshake is answered
  const std::string tenant_;
  WebsocketHub& hub_;
  beast::flat_buffer buffer_;
  std::deque<Outgoing> out_;
  bool closed_ = false;
};

WebsocketHub::WebsocketHub(CanBind can_bind, std::chrono::milliseconds send_timeout)
    : can_bind_(std::move(can_bind)), send_timeout_(send_timeout) {}

WebsocketHub::~WebsocketHub() { Stop(); }

bool WebsocketHub::TakeUpgrade(http::Request& request, const http::Peer&, tcp::socket& socket) {
  // /fhir/{tenant}/$subscription-websocket, the query ignored.
  std::string_view target = request.target();
  target = target.substr(0, target.find('?'));
  constexpr std::string_view kPrefix = "/fhir/";
  if (target.rfind(kPrefix, 0) != 0) return false;
  target.remove_prefix(kPrefix.size());
  const std::size_t slash = target.find('/');
  if (slash == 0 || slash == std::string_view::npos || target.substr(slash + 1) != kWebsocketPath) return false;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return false;
  }
  auto session = std::make_shared<WebsocketSession>(std::move(socket), std::string(target.substr(0, slash)), *this);
  session->Start(std::move(request));
  return true;
}

void WebsocketHub::Bind(const std::string& tenant, const std::string& id,
                        const std::shared_ptr<WebsocketSession>& session) {
  std::lock_guard lock(mu_);
  auto& sessions = bound_[{tenant, id}];
  for (const auto& s : sessions) {
    if (s.first == session.get()) return;
  }
  sessions.emplace_back(session.get(), session);
}

void WebsocketHub::Forget(const WebsocketSession* session) {
  std::lock_guard lock(mu_);
  for (auto it = bound_.begin(); it != bound_.end();) {
    auto& sessions = it->second;
    // Never lock() here: the last reference dropped inside this lock would
    // run the session's destructor, which calls Forget.
    std::erase_if(sessions, [session](const Binding& b) { return b.first == session || b.second.expired(); });
    it = sessions.empty() ? bound_.erase(it) : std::next(it);
  }
}

bool WebsocketHub::Ping(const std::string& tenant, const std::string& id) {
  auto waiter = std::make_shared<Waiter>();
  {
    std::lock_guard lock(mu_);
    if (stopped_) return false;
    auto it = bound_.find({tenant, id});
    if (it == bound_.end()) return false;
    for (const auto& bound : it->second) {
      std::shared_ptr<WebsocketSession> session = bound.second.lock();
      if (!session) continue;
      {
        std::lock_guard wl(waiter->mu);
        ++waiter->pending;
      }
      asio::post(session->executor(), [session, waiter, text = core::StrCat("ping ", id)]() mutable {
        session->Send(std::move(text), [waiter](bool written) {
          std::lock_guard wl(waiter->mu);
          --waiter->pending;
          waiter->delivered = waiter->delivered || written;
          waiter->done.notify_all();
        });
      });
    }
  }
  std::unique_lock wl(waiter->mu);
  // Done at the first write that succeeded, or when every write has ended.
  waiter->done.wait_for(wl, send_timeout_, [&] { return waiter->delivered || waiter->pending == 0; });
  return waiter->delivered;
}

int WebsocketHub::Bound(const std::string& tenant, const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = bound_.find({tenant, id});
  if (it == bound_.end()) return 0;
  int n = 0;
  for (const auto& b : it->second) n += b.second.expired() ? 0 : 1;
  return n;
}

void WebsocketHub::Stop() {
  std::lock_guard lock(mu_);
  stopped_ = true;
}

}  // namespace medgrid::subscriptions
